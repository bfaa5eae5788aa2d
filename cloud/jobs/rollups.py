"""Refresh the flow rollups: ``flows_5m``, ``flows_1h``, ``flows_app_1h`` and ``flows_1d``.

Plain PostgreSQL: a statement trigger on ``flows`` appends the hours each insert touched to
``flow_invalidations``; this job recomputes exactly those hours from raw flows (5-minute),
from ``flows_5m`` (hourly) and from ``flows_1h`` (hourly per application), and the UTC days
holding them from ``flows_1h`` (daily), then deletes the invalidation rows it read. Rows of
``flows_app_1h`` and ``flows_1d`` older than ``storage_policies`` are trimmed. It runs in a
REPEATABLE READ snapshot, so an insert committing meanwhile is either wholly visible (its
rows and its invalidation) or wholly invisible (left for the next run). A session
advisory lock keeps two refreshers from interleaving.

TimescaleDB: the continuous aggregates' own policies refresh them; this job refreshes them
on demand (tests, after a bulk load, after migration 0008 on a database with data).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import psycopg
from mimamori.cloud.jobs.config import JobsConfig

LOCK_KEY = 0x726F6C6C757073  # "rollups"
ORIGIN = "timestamptz '2000-01-01 00:00:00+00'"
_GROUP = "tenant, gateway, mac, local_ip, remote_ip, remote_port, proto, dir, app, sni"
_SUMS = "pkts_out, pkts_in, bytes_out, bytes_in, conns"


def _sum_cols(count: str) -> str:
    return ", ".join(f"sum({c})::bigint" for c in _SUMS.split(", ")) + f", {count}"


REFRESH_5M = f"""
INSERT INTO flows_5m (bucket, {_GROUP}, {_SUMS}, summaries)
SELECT date_bin(interval '5 minutes', f.ts, {ORIGIN}), {_GROUP}, {_sum_cols("count(*)")}
FROM flows f
JOIN unnest(%s::timestamptz[]) AS h(hour) ON f.ts >= h.hour AND f.ts < h.hour + interval '1 hour'
GROUP BY 1, {_GROUP}
"""

REFRESH_1H = f"""
INSERT INTO flows_1h (bucket, {_GROUP}, {_SUMS}, summaries)
SELECT date_bin(interval '1 hour', r.bucket, {ORIGIN}), {_GROUP},
       {_sum_cols("sum(summaries)::bigint")}
FROM flows_5m r
JOIN unnest(%s::timestamptz[]) AS h(hour)
  ON r.bucket >= h.hour AND r.bucket < h.hour + interval '1 hour'
GROUP BY 1, {_GROUP}
"""

REFRESH_APP_1H = f"""
INSERT INTO flows_app_1h (bucket, tenant, gateway, app, {_SUMS}, summaries)
SELECT r.bucket, tenant, gateway, app, {_sum_cols("sum(summaries)::bigint")}
FROM flows_1h r
JOIN unnest(%s::timestamptz[]) AS h(hour) ON r.bucket = h.hour
GROUP BY 1, tenant, gateway, app
"""

#: Whole UTC days holding the invalidated hours, recomputed from ``flows_1h`` (which this
#: transaction has just brought up to date for those hours; its other hours are current or
#: have invalidations of their own that will recompute the day again).
REFRESH_1D = f"""
INSERT INTO flows_1d (bucket, {_GROUP}, {_SUMS}, summaries)
SELECT date_bin(interval '1 day', r.bucket, {ORIGIN}), {_GROUP},
       {_sum_cols("sum(summaries)::bigint")}
FROM flows_1h r
JOIN unnest(%s::timestamptz[]) AS d(day)
  ON r.bucket >= d.day AND r.bucket < d.day + interval '24 hours'
GROUP BY 1, {_GROUP}
ORDER BY tenant, gateway, 1
"""

CLEAR_1D = """
DELETE FROM flows_1d r USING unnest(%s::timestamptz[]) AS d(day) WHERE r.bucket = d.day
"""

#: Rollups only this job trims on plain PostgreSQL (continuous aggregates have retention
#: policies; flows_5m and flows_1h are trimmed by the partitions job).
TRIMMED = ("flows_app_1h", "flows_1d")

CLEAR = """
DELETE FROM {table} r USING unnest(%s::timestamptz[]) AS h(hour)
WHERE r.bucket >= h.hour AND r.bucket < h.hour + interval '1 hour'
"""


def refresh(conn: psycopg.Connection[Any], *, storage: str, config: JobsConfig) -> int:
    """Bring the rollups up to date; return the number of hours recomputed (plain PG)."""
    if storage == "timescaledb":
        _refresh_timescaledb(conn)
        return 0
    total = 0
    conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
    try:
        while True:
            done = _refresh_some(conn, config.rollup_hours_per_tx)
            total += done
            if done == 0:
                _trim(conn)
                return total
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))


def _refresh_some(conn: psycopg.Connection[Any], max_hours: int) -> int:
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    try:
        rows = conn.execute(
            """
            SELECT array_agg(id), array_agg(DISTINCT hour)
            FROM (SELECT id, hour FROM flow_invalidations
                  WHERE hour IN (SELECT DISTINCT hour FROM flow_invalidations
                                 ORDER BY hour LIMIT %s)) AS pending
            """,
            (max_hours,),
        ).fetchone()
        ids, hours = rows if rows else (None, None)
        if not ids:
            conn.execute("COMMIT")
            return 0
        conn.execute(CLEAR.format(table="flows_5m"), (hours,))
        conn.execute(REFRESH_5M, (hours,))
        conn.execute(CLEAR.format(table="flows_1h"), (hours,))
        conn.execute(REFRESH_1H, (hours,))
        conn.execute(CLEAR.format(table="flows_app_1h"), (hours,))
        conn.execute(REFRESH_APP_1H, (hours,))
        days = sorted({_day(h) for h in hours or ()})
        conn.execute(CLEAR_1D, (days,))
        conn.execute(REFRESH_1D, (days,))
        conn.execute("DELETE FROM flow_invalidations WHERE id = ANY(%s)", (ids,))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return len(hours or ())


def _day(hour: datetime) -> datetime:
    """Start of the UTC day holding ``hour`` (the bucket of ``flows_1d``)."""
    return hour.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def _trim(conn: psycopg.Connection[Any]) -> None:
    for table in TRIMMED:
        conn.execute(
            f"""
            DELETE FROM {table}
            WHERE bucket < now() - (SELECT retain FROM storage_policies WHERE relation = %s)
            """,
            (table,),
        )


#: TimescaleDB refuses a refresh while its own policy job refreshes the same window; wait
#: for it rather than fail the run (the policy runs every few minutes and takes seconds).
CONCURRENT_REFRESH_RETRIES = 40
CONCURRENT_REFRESH_WAIT_S = 0.5


#: Continuous aggregates in refresh order: each is built on the one before it.
VIEWS = ("flows_5m", "flows_1h", "flows_app_1h", "flows_1d")


def _refresh_timescaledb(conn: psycopg.Connection[Any]) -> None:
    # CALL refresh_continuous_aggregate cannot run inside a transaction block.
    for view in VIEWS:
        for attempt in range(CONCURRENT_REFRESH_RETRIES):
            try:
                conn.execute(f"CALL refresh_continuous_aggregate('{view}', NULL, NULL)")
                break
            except psycopg.Error as exc:
                if (
                    "concurrent refresh" not in str(exc)
                    or attempt + 1 == CONCURRENT_REFRESH_RETRIES
                ):
                    raise
                time.sleep(CONCURRENT_REFRESH_WAIT_S)
