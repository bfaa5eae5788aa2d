"""Cloud maintenance jobs, each a function of a database connection and an explicit ``now``.

=============  ===========================================================================
job            what it does
=============  ===========================================================================
partitions     plain PostgreSQL: create daily partitions ahead (and for late rows sitting in
               the DEFAULT partition); every flavour: retention of receipts and quarantine,
               and on plain PostgreSQL of partitions and rollup rows (storage_policies)
rollups        plain PostgreSQL: refresh flows_5m/flows_1h for the hours flows changed in;
               TimescaleDB: refresh the continuous aggregates now (policies also do it)
liveness       mark gateways offline after missed heartbeats; raise ``gateway_offline``
sensors        ``canary_touch`` alerts from relayed canary messages, ``sensor_offline``
               for silent sensors (rules in :mod:`mimamori.cloud.sensors`)
incidents      group new alerts into incidents by (tenant, dedup_key); escalate severity
=============  ===========================================================================

Thresholds live in :mod:`.config`. ``mimamori cloud jobs run-once|loop`` runs them.
"""
