"""Thresholds of the cloud jobs, in one commented place.

Change them here (or build a ``JobsConfig`` with other values and pass it to the runner);
the values are validated when the config is created.
"""

from __future__ import annotations

from dataclasses import dataclass

from mimamori.cloud.sensors import DEFAULT as SENSORS_DEFAULT
from mimamori.cloud.sensors import SensorsConfig
from mimamori.protocol import SEVERITIES


@dataclass(frozen=True, kw_only=True)
class JobsConfig:
    # --- liveness ---------------------------------------------------------------------
    #: A gateway is offline when its newest heartbeat is older than this many of its own
    #: heartbeat intervals. 3 tolerates one lost heartbeat and a slow reconnect without
    #: paging anyone, and still notices an outage within ~90 s at the 30 s default.
    offline_after_intervals: float = 3.0
    #: Interval assumed when a gateway never announced one (the protocol's default).
    default_heartbeat_interval_s: float = 30.0
    #: Severity of gateway_offline: a dark gateway means the site is unwatched, which the
    #: SOC must follow up (medium pages; see protocol.PAGING_SEVERITIES).
    offline_severity: str = "medium"

    # --- incidents --------------------------------------------------------------------
    #: An open incident's severity goes up one level each time its alert count reaches one
    #: of these numbers: a problem that keeps recurring deserves more attention than its
    #: single alerts suggest (e.g. a scan repeated 10 times, then 100 times).
    escalate_at_counts: tuple[int, ...] = (10, 100)
    #: Escalation never goes above this; "critical" comes only from detectors themselves.
    escalate_cap: str = "high"
    #: Alerts grouped per run (bounds one transaction; the next run takes the rest).
    incident_batch: int = 5000

    # --- partitions and rollups (plain PostgreSQL) ------------------------------------
    #: Daily partitions kept ready ahead of today, so inserts never fall into DEFAULT.
    partition_days_ahead: int = 3
    #: Hours of invalidated flows folded into the rollups per transaction.
    rollup_hours_per_tx: int = 24

    # --- pacing of the loop -------------------------------------------------------------
    #: Least seconds between two runs of a job in ``mimamori cloud jobs loop`` (others run
    #: every pass). Device labels read every device and a lookback of flows and alerts of
    #: every tenant: hourly is fresh enough for a label, and cheap. Long-window detection
    #: judges complete hours (the same answer all hour) over a day of flows per gateway:
    #: four times an hour keeps an hour's verdict at most 15 minutes late.
    min_interval_s: tuple[tuple[str, float], ...] = (("labels", 3600.0), ("longwindow", 900.0))

    # --- sensors ----------------------------------------------------------------------
    #: The sensors job's thresholds, commented where the rules are (cloud/sensors.py);
    #: ``mimamori cloud jobs`` reads them from MIMAMORI_SENSORS_* (cloud/settings.py).
    sensors: SensorsConfig = SENSORS_DEFAULT

    def __post_init__(self) -> None:
        for name in ("offline_severity", "escalate_cap"):
            if getattr(self, name) not in SEVERITIES:
                raise ValueError(f"{name} must be one of {SEVERITIES}")
        if self.offline_after_intervals <= 1:
            raise ValueError("offline_after_intervals must be more than 1")
        if list(self.escalate_at_counts) != sorted(set(self.escalate_at_counts)):
            raise ValueError("escalate_at_counts must be strictly increasing")
        if any(seconds < 0 for _, seconds in self.min_interval_s):
            raise ValueError("min_interval_s must not be negative")
        if self.partition_days_ahead < 1 or self.rollup_hours_per_tx < 1:
            raise ValueError("partition_days_ahead and rollup_hours_per_tx must be >= 1")


DEFAULT = JobsConfig()
