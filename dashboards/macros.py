"""Expand a panel's SQL the way Grafana does before it reaches PostgreSQL.

Grafana runs a PostgreSQL panel query in three steps, reproduced here so that tests and
the benchmark execute exactly the SQL Grafana would send:

1. the browser replaces template variables (``$tenant``, ``${gateway}``, ``[[mac]]``,
   ``${mac:csv}``) and the built-ins ``$__interval``, ``$__interval_ms``, ``$__from``,
   ``$__to``; a multi-value or include-all variable becomes a list of quoted literals
   (``'a','b'``), a single-value one its text with quotes doubled, unquoted;
2. the data source replaces ``$__interval_ms``, ``$__interval``, ``$__unixEpochFrom()`` and
   ``$__unixEpochTo()`` again (harmless after step 1);
3. the PostgreSQL macro engine replaces ``$__name(args)`` (``$__timeFilter``,
   ``$__timeFrom``, ``$__timeGroup``, ...); an unknown macro is an error.

Times are rendered as Go's RFC 3339 with nanoseconds (trailing zeros trimmed), UTC.
``$__timeGroup`` follows the plain-PostgreSQL form (``floor(extract(epoch ...))``); the
data source is provisioned with ``timescaledb: false`` so that the same SQL runs on both
storages.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from mimamori.dashboards.errors import MacroError

__all__ = [
    "TimeRange",
    "Variable",
    "auto_interval_ms",
    "expand",
    "expand_macros",
    "format_interval",
    "format_time",
    "interpolate_variables",
    "parse_interval",
]


@dataclass(frozen=True, kw_only=True)
class TimeRange:
    """The dashboard's time range (aware datetimes; converted to UTC when rendered)."""

    start: datetime
    end: datetime

    @classmethod
    def last(cls, span: timedelta, *, now: datetime | None = None) -> TimeRange:
        """The range ``now - span .. now`` (Grafana's ``now-24h`` to ``now``)."""
        end = now or datetime.now(UTC)
        return cls(start=end - span, end=end)


@dataclass(frozen=True, kw_only=True)
class Variable:
    """A template variable's current value(s) and the flags that decide its formatting."""

    values: tuple[str, ...]
    multi: bool = False
    include_all: bool = False


# --- intervals -----------------------------------------------------------------------

_UNIT_MS = {
    "ms": 1,
    "s": 1000,
    "m": 60_000,
    "h": 3_600_000,
    "d": 86_400_000,
    "w": 7 * 86_400_000,
    "y": 365 * 86_400_000,
}
_INTERVAL_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")


def parse_interval(text: str) -> int:
    """Milliseconds of a Grafana interval such as ``5m``, ``1h30m``, ``'10s'`` or ``1d``."""
    raw = text.strip().strip("'\"")
    pos, total = 0, 0.0
    for m in _INTERVAL_PART.finditer(raw):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT_MS[m.group(2)]
        pos = m.end()
    if not raw or pos != len(raw):
        raise MacroError(f"cannot parse interval {text!r}")
    return int(total)


def format_interval(ms: int) -> str:
    """Grafana's short form of an interval: the largest whole unit, truncated (90 s -> 1m)."""
    for unit in ("y", "d", "h", "m", "s", "ms"):
        if ms >= _UNIT_MS[unit]:
            return f"{ms // _UNIT_MS[unit]}{unit}"
    return "1ms"


# Grafana's rounding of range / max data points to a "nice" interval: (upper bound, value).
_ROUNDING_MS: tuple[tuple[int, int], ...] = (
    (10, 1), (15, 10), (35, 20), (75, 50), (150, 100), (350, 200), (750, 500),
    (1_500, 1_000), (3_500, 2_000), (7_500, 5_000), (12_500, 10_000), (17_500, 15_000),
    (25_000, 20_000), (45_000, 30_000), (90_000, 60_000), (210_000, 120_000),
    (450_000, 300_000), (750_000, 600_000), (1_050_000, 900_000), (1_500_000, 1_200_000),
    (2_700_000, 1_800_000), (5_400_000, 3_600_000), (9_000_000, 7_200_000),
    (16_200_000, 10_800_000), (24_300_000, 21_600_000), (64_800_000, 43_200_000),
    (604_800_000, 86_400_000), (1_814_400_000, 604_800_000), (3_628_800_000, 2_592_000_000),
)  # fmt: skip


def auto_interval_ms(
    time_range: TimeRange, *, max_data_points: int = 1000, min_interval_ms: int = 1
) -> int:
    """The ``$__interval_ms`` Grafana computes: range / max data points, rounded.

    ``max_data_points`` defaults to the width of a wide panel in pixels, which is what
    Grafana uses when the panel sets none.
    """
    span_ms = (time_range.end - time_range.start).total_seconds() * 1000
    raw = max(span_ms / max(max_data_points, 1), min_interval_ms)
    for bound, value in _ROUNDING_MS:
        if raw < bound:
            return max(value, min_interval_ms)
    return 365 * 86_400_000


# --- step 1: template variables (Grafana's browser) ---------------------------------

# $name | [[name]] | [[name:fmt]] | ${name} | ${name:fmt}   (Grafana's variable regex)
_VARIABLE = re.compile(r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?::([^}]+))?\}")


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _format_variable(name: str, var: Variable, fmt: str | None) -> str:
    values = var.values
    if fmt is None:
        # The SQL data sources' own formatting (interpolateVariable).
        if len(values) != 1 or var.multi or var.include_all:
            if not values:
                raise MacroError(f"variable ${name} has no value")
            return ",".join(_quote(v) for v in values)
        return values[0].replace("'", "''")
    if fmt == "raw":
        return ",".join(values)
    if fmt == "csv":
        return ",".join(values)
    if fmt == "singlequote":
        return ",".join("'" + v.replace("'", "\\'") + "'" for v in values)
    if fmt == "sqlstring":
        return ",".join(_quote(v) for v in values)
    raise MacroError(f"unsupported format {fmt!r} for variable ${name}")


def interpolate_variables(
    sql: str,
    variables: Mapping[str, Variable],
    *,
    time_range: TimeRange,
    interval_ms: int,
) -> str:
    """Replace template variables and the browser's built-ins; unknown names stay as they are
    (Grafana leaves them for the data source: ``$__timeFilter`` and friends)."""
    builtins = {
        "__interval": Variable(values=(format_interval(interval_ms),)),
        "__interval_ms": Variable(values=(str(interval_ms),)),
        "__from": Variable(values=(str(int(time_range.start.timestamp() * 1000)),)),
        "__to": Variable(values=(str(int(time_range.end.timestamp() * 1000)),)),
    }

    def replace(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(4)
        fmt = m.group(3) or m.group(5)
        var = variables.get(name) or builtins.get(name)
        if var is None:
            return m.group(0)
        return _format_variable(name, var, fmt)

    return _VARIABLE.sub(replace, sql)


# --- steps 2 and 3: the data source -------------------------------------------------

_MACRO = re.compile(r"\$([_a-zA-Z0-9]+)\(([^)]*)\)")


def format_time(t: datetime) -> str:
    """A time as Go formats ``time.RFC3339Nano`` in UTC: fraction trimmed, ``Z`` suffix."""
    u = t.astimezone(UTC)
    text = u.strftime("%Y-%m-%dT%H:%M:%S")
    if u.microsecond:
        text += f".{u.microsecond:06d}".rstrip("0")
    return text + "Z"


def _seconds(ms: int) -> str:
    # Go's %v of a float64 number of seconds: 300, 0.5, 86400
    s = ms / 1000
    return str(int(s)) if s == math.floor(s) else repr(s)


def _macro(name: str, args: Sequence[str], tr: TimeRange) -> str:
    frm, to = _quote(format_time(tr.start)), _quote(format_time(tr.end))
    need_column = {"__time", "__timeEpoch", "__timeFilter", "__unixEpochFilter"}
    if name in need_column and not args[0]:
        raise MacroError(f"macro ${name} needs a column argument")
    if name == "__time":
        return f'{args[0]} AS "time"'
    if name == "__timeEpoch":
        return f'extract(epoch from {args[0]}) as "time"'
    if name == "__timeFilter":
        return f"{args[0]} BETWEEN {frm} AND {to}"
    if name == "__timeFrom":
        return frm
    if name == "__timeTo":
        return to
    if name in ("__timeGroup", "__timeGroupAlias", "__unixEpochGroup", "__unixEpochGroupAlias"):
        if len(args) < 2:
            raise MacroError(f"macro ${name} needs a column and an interval")
        step = _seconds(parse_interval(args[1]))
        if name.startswith("__timeGroup"):
            expr = f"floor(extract(epoch from {args[0]})/{step})*{step}"
        else:
            expr = f"floor(({args[0]})/{step})*{step}"
        return expr + (' AS "time"' if name.endswith("Alias") else "")
    if name == "__unixEpochFilter":
        lo, hi = int(tr.start.timestamp()), int(tr.end.timestamp())
        return f"{args[0]} >= {lo} AND {args[0]} <= {hi}"
    if name == "__unixEpochFrom":
        return str(int(tr.start.timestamp()))
    if name == "__unixEpochTo":
        return str(int(tr.end.timestamp()))
    raise MacroError(f"unknown macro ${name}")


def expand_macros(sql: str, *, time_range: TimeRange, interval_ms: int) -> str:
    """The data source's step: global substitutions, then ``$__macro(args)``."""
    sql = sql.replace("$__interval_ms", str(interval_ms))
    sql = sql.replace("$__interval", format_interval(interval_ms))
    sql = sql.replace("$__unixEpochFrom()", str(int(time_range.start.timestamp())))
    sql = sql.replace("$__unixEpochTo()", str(int(time_range.end.timestamp())))

    def replace(m: re.Match[str]) -> str:
        name = m.group(1)
        # Before Grafana 5.3 $__timeGroup added the alias itself; Grafana still does when
        # a comma follows the call (a select-list item), so this does too.
        if name == "__timeGroup" and sql[m.end() : m.end() + 1] == ",":
            name = "__timeGroupAlias"
        args = [a.strip() for a in m.group(2).split(",")]
        return _macro(name, args, time_range)

    return _MACRO.sub(replace, sql)


def expand(
    sql: str,
    *,
    time_range: TimeRange,
    interval_ms: int,
    variables: Mapping[str, Variable] | None = None,
) -> str:
    """Both steps: the SQL PostgreSQL receives from Grafana for this panel query."""
    with_vars = interpolate_variables(
        sql, variables or {}, time_range=time_range, interval_ms=interval_ms
    )
    return expand_macros(with_vars, time_range=time_range, interval_ms=interval_ms)
