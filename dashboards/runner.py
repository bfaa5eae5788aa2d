"""Run built dashboards' queries against a store, as Grafana would, without Grafana.

For a dashboard JSON model: resolve its template variables by running their queries in
order (a multi-value variable with "All" selected takes every value, otherwise the first
one), then expand each panel target's SQL (:mod:`.macros`) with the panel's time range
and interval, execute it, and check that the result has the shape the panel type reads.
Tests and ``mimamori bench dashboards`` use this; nothing here talks to Grafana.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import psycopg
from mimamori.dashboards.build import iter_panels
from mimamori.dashboards.errors import DashboardError
from mimamori.dashboards.macros import (
    TimeRange,
    Variable,
    auto_interval_ms,
    expand,
    parse_interval,
)

# PostgreSQL type OIDs Grafana reads as numbers and as times.
_NUMERIC = {20, 21, 23, 26, 700, 701, 1700}
_TIME = {1082, 1114, 1184}


@dataclass(frozen=True, kw_only=True)
class PanelQuery:
    """One panel target ready to run."""

    dashboard: str
    panel_id: int
    title: str
    panel_type: str
    fmt: str
    raw_sql: str
    x_field: str | None
    time_range: TimeRange
    interval_ms: int


@dataclass(frozen=True, kw_only=True)
class PanelResult:
    """What a panel query returned."""

    query: PanelQuery
    sql: str
    columns: list[tuple[str, int]]
    rows: list[tuple[Any, ...]]
    seconds: float


def panel_time_range(panel: Mapping[str, Any], dashboard_range: TimeRange) -> TimeRange:
    """The range Grafana queries a panel with: its relative override (``timeFrom``) if set."""
    relative = panel.get("timeFrom")
    if relative:
        return TimeRange.last(
            timedelta(milliseconds=parse_interval(relative)), now=dashboard_range.end
        )
    return dashboard_range


def panel_queries(model: Mapping[str, Any], time_range: TimeRange) -> Iterator[PanelQuery]:
    """Every SQL target of every panel of ``model``, in panel order."""
    for panel in iter_panels(dict(model)):
        tr = panel_time_range(panel, time_range)
        # Grafana's max data points default to the panel's width in pixels (~75 px a column).
        width = int(panel.get("maxDataPoints") or panel.get("gridPos", {}).get("w", 24) * 75)
        interval_ms = auto_interval_ms(tr, max_data_points=width)
        for target in panel.get("targets") or []:
            if "rawSql" not in target:
                continue
            yield PanelQuery(
                dashboard=model["uid"],
                panel_id=panel["id"],
                title=panel.get("title", ""),
                panel_type=panel["type"],
                fmt=target.get("format", "time_series"),
                raw_sql=target["rawSql"],
                x_field=(panel.get("options") or {}).get("xField"),
                time_range=tr,
                interval_ms=interval_ms,
            )


def resolve_variables(
    conn: psycopg.Connection[Any], model: Mapping[str, Any], time_range: TimeRange
) -> dict[str, Variable]:
    """Current values of the dashboard's variables, computed from the store."""
    resolved: dict[str, Variable] = {}
    interval_ms = auto_interval_ms(time_range)
    for var in model.get("templating", {}).get("list", []):
        multi, include_all = bool(var.get("multi")), bool(var.get("includeAll"))
        current = (var.get("current") or {}).get("value")
        if var["type"] == "query":
            sql = expand(var["query"], time_range=time_range, interval_ms=interval_ms,
                         variables=resolved)  # fmt: skip
            cur = conn.execute(sql.encode())
            names = [c.name for c in cur.description or []]
            col = names.index("__value") if "__value" in names else 0
            options = [str(r[col]) for r in cur.fetchall()]
        elif var["type"] == "custom":
            options = [str(o["value"]) for o in var.get("options", [])]
        else:
            raise DashboardError(f"variable type {var['type']!r} is not supported here")
        if not options:
            raise DashboardError(f"variable ${var['name']} has no values in this store")
        if include_all and current in ("$__all", ["$__all"]):
            values = options
        elif isinstance(current, list) and current:
            values = [str(v) for v in current]
        elif isinstance(current, str) and current:
            values = [current]
        else:
            values = options[:1]
        resolved[var["name"]] = Variable(values=tuple(values), multi=multi,
                                         include_all=include_all)  # fmt: skip
    return resolved


def run(
    conn: psycopg.Connection[Any], query: PanelQuery, variables: Mapping[str, Variable]
) -> PanelResult:
    """Expand and execute one panel query."""
    sql = expand(query.raw_sql, time_range=query.time_range, interval_ms=query.interval_ms,
                 variables=variables)  # fmt: skip
    t0 = time.perf_counter()
    cur = conn.execute(sql.encode())
    rows = cur.fetchall()
    seconds = time.perf_counter() - t0
    columns = [(c.name, c.type_code) for c in cur.description or []]
    return PanelResult(query=query, sql=sql, columns=columns, rows=rows, seconds=seconds)


def shape_problems(result: PanelResult) -> list[str]:
    """Why Grafana could not draw this result in its panel type (empty when it can)."""
    q = result.query
    names = [n for n, _ in result.columns]
    numeric = [n for n, oid in result.columns if oid in _NUMERIC]
    problems = []
    if len(set(names)) != len(names) or "?column?" in names:
        problems.append(f"columns must be uniquely named: {names}")
    if q.panel_type == "timeseries":
        if q.fmt != "time_series":
            problems.append("a time series panel needs format time_series")
        time_cols = [oid for n, oid in result.columns if n == "time"]
        if not time_cols or time_cols[0] not in _TIME | _NUMERIC:
            problems.append(f"no time column (timestamp or epoch) named 'time': {names}")
        if not [n for n in numeric if n != "time"]:
            problems.append(f"no numeric value column: {result.columns}")
        times = [r[names.index("time")] for r in result.rows] if "time" in names else []
        if times != sorted(times):
            problems.append("rows are not sorted by time")
    elif q.panel_type == "stat":
        if not numeric:
            problems.append(f"a stat needs a numeric column: {result.columns}")
        if len(result.rows) > 1:
            problems.append(f"a stat reads one row, got {len(result.rows)}")
    elif q.panel_type == "barchart":
        if q.x_field not in names:
            problems.append(f"x field {q.x_field!r} missing from {names}")
        if not numeric:
            problems.append(f"a bar chart needs a numeric column: {result.columns}")
    elif q.panel_type == "table":
        if not names:
            problems.append("a table needs columns")
    else:
        problems.append(f"no shape rule for panel type {q.panel_type!r}")
    return problems
