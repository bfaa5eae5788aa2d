"""Prometheus metrics of the ingester.

Each :class:`IngestMetrics` registers its collectors in the registry it is given, so tests
and the demo can run several ingesters in one process without clashing; the CLI uses the
process-wide default registry and serves it on ``--metrics-port``.
"""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

# Batches hold from one message to batch_rows (20k) rows; commit latency from ~1 ms up.
_ROW_BUCKETS = (1, 10, 100, 500, 1000, 2000, 5000, 10000, 20000, 50000)
_SECONDS_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class IngestMetrics:
    """The ingester's counters, gauges and histograms."""

    def __init__(self, *, registry: CollectorRegistry | None = None) -> None:
        r = REGISTRY if registry is None else registry
        self.registry = r
        self.messages = Counter(
            "mimamori_ingest_messages", "Upstream messages received, by kind", ["kind"],
            registry=r,
        )  # fmt: skip
        self.rows = Counter(
            "mimamori_ingest_rows", "Rows committed, by table", ["table"], registry=r
        )
        self.quarantined = Counter(
            "mimamori_ingest_quarantined", "Messages quarantined, by reason", ["reason"],
            registry=r,
        )  # fmt: skip
        self.duplicates = Counter(
            "mimamori_ingest_duplicates",
            "Messages already committed (acknowledged again, not stored)",
            registry=r,
        )
        self.acks = Counter("mimamori_ingest_acks", "Ack messages published", registry=r)
        self.batch_rows = Histogram(
            "mimamori_ingest_batch_rows", "Rows per committed batch", buckets=_ROW_BUCKETS,
            registry=r,
        )  # fmt: skip
        self.batch_seconds = Histogram(
            "mimamori_ingest_batch_seconds", "Time to write and commit one batch",
            buckets=_SECONDS_BUCKETS, registry=r,
        )  # fmt: skip
        self.queue_depth = Gauge(
            "mimamori_ingest_queue_depth", "Messages waiting for the database", registry=r
        )
        self.reconnects = Counter(
            "mimamori_ingest_reconnects", "Reconnections after a failure, by peer", ["peer"],
            registry=r,
        )  # fmt: skip
