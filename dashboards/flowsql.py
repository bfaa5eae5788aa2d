"""SQL over flow summaries that reads the rollup fitting the dashboard's time range.

Every flow panel reads ``flows`` (raw, 1-minute summaries), ``flows_5m`` or ``flows_1h``
through :func:`flow_rows`: a ``UNION ALL`` of the three whose branches are guarded by the
range length, computed from ``$__timeFrom()`` and ``$__timeTo()``. After Grafana's
expansion those are literals, so PostgreSQL folds each guard to true or false while
planning and drops the false branches: exactly one relation is scanned. The SQL names only
relations and columns that exist on both storages (continuous aggregates on TimescaleDB,
rollup tables on plain PostgreSQL).

Thresholds (why these): raw rows for ranges up to 6 hours (investigation of a live
event, minute detail); the 5-minute rollup up to 4 days (the default 24-hour view:
288 points); the hourly rollup beyond (a 30-day view has 720 hourly points).
"""

from __future__ import annotations

from collections.abc import Sequence

#: Longest range read from raw ``flows``.
RAW_MAX = "interval '6 hours'"
#: Longest range read from ``flows_5m``; longer ranges read ``flows_1h``.
FIVE_MIN_MAX = "interval '4 days'"

_SPAN = "($__timeTo()::timestamptz - $__timeFrom()::timestamptz)"

#: Width of a time-series bucket in milliseconds: Grafana's interval, never finer than the
#: relation read (raw summaries cover 60 s each).
STEP_MS = (
    f"greatest($__interval_ms, CASE WHEN {_SPAN} <= {RAW_MAX} THEN 60000"
    f" WHEN {_SPAN} <= {FIVE_MIN_MAX} THEN 300000 ELSE 3600000 END)"
)


def flow_rows(columns: Sequence[str], where: str) -> str:
    """Rows ``t, <columns>`` of the one flow relation the range selects.

    ``where`` filters every branch (tenant, gateway, mac); it must use only columns that
    the raw table and the rollups share.
    """
    cols = ", ".join(columns)
    return (
        f"SELECT ts AS t, {cols} FROM flows\n"
        f"  WHERE {_SPAN} <= {RAW_MAX} AND $__timeFilter(ts) AND {where}\n"
        f"UNION ALL\n"
        f"SELECT bucket, {cols} FROM flows_5m\n"
        f"  WHERE {_SPAN} > {RAW_MAX} AND {_SPAN} <= {FIVE_MIN_MAX}\n"
        f"    AND $__timeFilter(bucket) AND {where}\n"
        f"UNION ALL\n"
        f"SELECT bucket, {cols} FROM flows_1h\n"
        f"  WHERE {_SPAN} > {FIVE_MIN_MAX} AND $__timeFilter(bucket) AND {where}"
    )


def time_bucket(column: str = "t") -> str:
    """``column`` floored to the panel's step (UTC-aligned, like the rollups' buckets)."""
    return f"date_bin({STEP_MS} * interval '1 ms', {column}, timestamptz '2000-01-01 00:00:00+00')"


def per_second(expr: str) -> str:
    """``expr`` summed over one bucket, as a rate per second."""
    return f"sum({expr}) / ({STEP_MS} / 1000.0)"
