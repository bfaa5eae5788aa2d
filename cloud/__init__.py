"""mimamori.cloud: the cloud side of mimamori.

Storage and ingest (this package's core):

* :mod:`.migrate` and ``migrations/``: versioned schema for TimescaleDB or plain
  PostgreSQL 15+ (docs/schema.md);
* :mod:`.registry`: tenants and gateways;
* :mod:`.ingest`: the ingester (MQTT → validate → COPY → ack), with :mod:`.rows` (per-kind
  row mapping), :mod:`.batch` (one transaction per batch, exactly-once by receipts),
  :mod:`.metrics`, :mod:`.settings` (environment) and :mod:`.errors`;
* :mod:`.jobs`: partitions and retention, rollups, liveness, sensor alerts, incidents;
* :mod:`.testing`: run an ingester in-process from synchronous tests and tools;
* :mod:`.cli`: ``mimamori cloud ...`` (docs/operations.md).

Modules are imported on use; importing this package pulls in no database driver.
"""
