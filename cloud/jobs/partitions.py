"""Partition maintenance and retention.

Plain PostgreSQL: daily partitions of flows, heartbeats and sensor_messages are created
ahead of time, and for any day whose rows sit in the DEFAULT partition (late or early
rows); partitions older than ``storage_policies`` are dropped whole, rollup rows deleted.
TimescaleDB does all of that with its own policies. On both, ``receipts`` and
``quarantine`` are trimmed to their windows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from mimamori.cloud.jobs.config import JobsConfig

PARTITIONED = ("flows", "heartbeats", "sensor_messages")
#: Plain tables trimmed by DELETE on every flavour, with their time column.
TRIMMED = {"receipts": "committed_at", "quarantine": "received_at"}
#: Rollup tables trimmed by DELETE on plain PostgreSQL (continuous aggregates on TimescaleDB
#: have retention policies).
ROLLUPS = {"flows_5m": "bucket", "flows_1h": "bucket"}


@dataclass
class MaintenanceResult:
    created: list[str] = field(default_factory=list)
    dropped: int = 0
    deleted: dict[str, int] = field(default_factory=dict)


def maintain(
    conn: psycopg.Connection[Any], *, storage: str, now: datetime, config: JobsConfig
) -> MaintenanceResult:
    """Create partitions ahead and apply retention. ``now`` is timezone-aware."""
    result = MaintenanceResult()
    policies: dict[str, timedelta] = {
        r[0]: r[1] for r in conn.execute("SELECT relation, retain FROM storage_policies")
    }
    today = now.astimezone(UTC).date()
    if storage == "postgresql":
        for parent in PARTITIONED:
            cutoff = now - policies.get(parent, timedelta(days=3650))
            days = {today + timedelta(days=d) for d in range(-1, config.partition_days_ahead + 1)}
            late = conn.execute(
                f"SELECT DISTINCT (ts AT TIME ZONE 'UTC')::date FROM {parent}_default"
            ).fetchall()
            days |= {r[0] for r in late}
            for day in sorted(days):
                if datetime.combine(day, datetime.min.time(), UTC) + timedelta(days=1) <= cutoff:
                    continue  # would be dropped right away
                with conn.transaction():
                    made = conn.execute(
                        "SELECT mimamori_ensure_partition(%s, %s)", (parent, day)
                    ).fetchone()
                if made and made[0]:
                    result.created.append(f"{parent}_p{day:%Y%m%d}")
            with conn.transaction():
                dropped = conn.execute(
                    "SELECT mimamori_drop_partitions(%s, %s)", (parent, cutoff)
                ).fetchone()
            result.dropped += int(dropped[0]) if dropped else 0
        trimmed = {**TRIMMED, **ROLLUPS}
    else:
        trimmed = dict(TRIMMED)
    for table, column in trimmed.items():
        if table not in policies:
            continue
        with conn.transaction():
            cur = conn.execute(
                f"DELETE FROM {table} WHERE {column} < %s",
                (now - policies[table],),
            )
        result.deleted[table] = cur.rowcount
    return result
