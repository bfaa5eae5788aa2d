"""SQL over flow summaries that reads the rollups fitting the dashboard's time range.

Flow panels never name a flow relation themselves: they read the rows of
:func:`flow_rows` (time series) or :func:`flow_totals` (sums and top-N over the whole
range), a ``UNION ALL`` of branches guarded by the range length, computed from
``$__timeFrom()`` and ``$__timeTo()``. After Grafana's expansion those are literals, so
PostgreSQL folds each guard to true or false while planning and drops the false branches.
The SQL names only relations and columns that exist on both storages (continuous
aggregates on TimescaleDB, rollup tables kept by the rollup job on plain PostgreSQL).

Relations, finest first: ``flows`` (1-minute summaries), ``flows_5m``, ``flows_1h``,
``flows_1d`` (every grouping column), and ``flows_app_1h`` (per site and application
only, for a site's traffic over time).

Time series need a point per step, so they read the coarsest relation whose buckets are
no wider than the step: raw rows up to 6 hours (minute detail for a live event), the
5-minute rollup up to 4 days (the default 24-hour view: 288 points), the hourly rollup
beyond (a 30-day view has 720 hourly points).

Totals need no time detail, only the right rows: over a range longer than 6 hours they
read whole buckets of a coarse rollup for the middle of the range and the next finer one
for the partial buckets at both ends (``flows_1h`` between ``flows_5m`` edges up to 4
days, ``flows_1d`` between ``flows_1h`` edges beyond). The rows summed are exactly those a
single scan of the finer rollup would give, at a fraction of the reads: a month of a
site is about 30 x 300 daily rows instead of 720 x 150 hourly ones.
"""

from __future__ import annotations

from collections.abc import Sequence

#: Longest range read from raw ``flows``.
RAW_MAX = "interval '6 hours'"
#: Longest range whose series read ``flows_5m`` (and whose totals have 5-minute edges);
#: longer ranges read ``flows_1h`` (and ``flows_1d`` for totals).
FIVE_MIN_MAX = "interval '4 days'"

ORIGIN = "timestamptz '2000-01-01 00:00:00+00'"

_SPAN = "($__timeTo()::timestamptz - $__timeFrom()::timestamptz)"
_FROM = "$__timeFrom()::timestamptz"
_TO = "$__timeTo()::timestamptz"

#: Width of a time-series bucket in milliseconds: Grafana's interval, never finer than the
#: relation read (raw summaries cover 60 s each).
STEP_MS = (
    f"greatest($__interval_ms, CASE WHEN {_SPAN} <= {RAW_MAX} THEN 60000"
    f" WHEN {_SPAN} <= {FIVE_MIN_MAX} THEN 300000 ELSE 3600000 END)"
)

_SHORT = f"{_SPAN} <= {RAW_MAX}"
_MEDIUM = f"{_SPAN} > {RAW_MAX} AND {_SPAN} <= {FIVE_MIN_MAX}"
_LONG = f"{_SPAN} > {FIVE_MIN_MAX}"


def flow_rows(columns: Sequence[str], where: str, *, hourly: str = "flows_1h") -> str:
    """Rows ``t, <columns>`` of the one flow relation whose buckets suit the range's series.

    ``where`` filters every branch (tenant, gateway, mac); it must use only columns that
    the raw table and the rollups share. ``hourly`` is the relation of long ranges:
    ``flows_app_1h`` when ``columns`` and ``where`` need no more than site and application.
    """
    cols = ", ".join(columns)
    return (
        f"SELECT ts AS t, {cols} FROM flows\n"
        f"  WHERE {_SHORT} AND $__timeFilter(ts) AND {where}\n"
        f"UNION ALL\n"
        f"SELECT bucket, {cols} FROM flows_5m\n"
        f"  WHERE {_MEDIUM} AND $__timeFilter(bucket) AND {where}\n"
        f"UNION ALL\n"
        f"SELECT bucket, {cols} FROM {hourly}\n"
        f"  WHERE {_LONG} AND $__timeFilter(bucket) AND {where}"
    )


def _ceil(width: str) -> str:
    # The first bucket boundary at or after the range's start ('24 hours', not '1 day':
    # timestamptz arithmetic in days follows the session's time zone).
    return f"(date_bin(interval '{width}', {_FROM} - interval '1 microsecond', {ORIGIN}) + interval '{width}')"


def _floor(width: str) -> str:
    return f"date_bin(interval '{width}', {_TO}, {ORIGIN})"


def _tiered(cols: str, where: str, guard: str, fine: str, coarse: str, width: str) -> str:
    """Whole ``coarse`` buckets inside the range, ``fine`` buckets for the two ends."""
    lo, hi = _ceil(width), _floor(width)
    return (
        f"SELECT bucket AS t, {cols} FROM {fine}\n"
        f"  WHERE {guard} AND bucket >= {_FROM} AND bucket < {lo} AND {where}\n"
        f"UNION ALL\n"
        f"SELECT bucket, {cols} FROM {coarse}\n"
        f"  WHERE {guard} AND bucket >= {lo} AND bucket < {hi} AND {where}\n"
        f"UNION ALL\n"
        f"SELECT bucket, {cols} FROM {fine}\n"
        f"  WHERE {guard} AND bucket >= {hi} AND bucket <= {_TO} AND {where}"
    )


def flow_totals(columns: Sequence[str], where: str) -> str:
    """Rows ``t, <columns>`` covering the range with the fewest rows, for sums and top-N.

    The same rows as :func:`flow_rows` would sum to, but ``t`` is as coarse as a day:
    use it only for first/last seen, never to draw a series.
    """
    cols = ", ".join(columns)
    return (
        f"SELECT ts AS t, {cols} FROM flows\n"
        f"  WHERE {_SHORT} AND $__timeFilter(ts) AND {where}\n"
        f"UNION ALL\n"
        + _tiered(cols, where, _MEDIUM, "flows_5m", "flows_1h", "1 hour")
        + "\nUNION ALL\n"
        + _tiered(cols, where, _LONG, "flows_1h", "flows_1d", "24 hours")
    )


def time_bucket(column: str = "t") -> str:
    """``column`` floored to the panel's step (UTC-aligned, like the rollups' buckets)."""
    return f"date_bin({STEP_MS} * interval '1 ms', {column}, {ORIGIN})"


def per_second(expr: str) -> str:
    """``expr`` summed over one bucket, as a rate per second."""
    return f"sum({expr}) / ({STEP_MS} / 1000.0)"
