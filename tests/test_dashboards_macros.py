"""The Grafana macro expander: hand-worked expansions, then the expanded SQL on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from mimamori.dashboards.errors import MacroError
from mimamori.dashboards.macros import (
    TimeRange,
    Variable,
    auto_interval_ms,
    expand,
    expand_macros,
    format_interval,
    format_time,
    interpolate_variables,
    parse_interval,
)

FROM = datetime(2026, 11, 20, 1, 2, 3, tzinfo=UTC)
TO = datetime(2026, 11, 21, 1, 2, 3, 450000, tzinfo=UTC)
TR = TimeRange(start=FROM, end=TO)


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("$__timeFilter(ts)",
         "ts BETWEEN '2026-11-20T01:02:03Z' AND '2026-11-21T01:02:03.45Z'"),
        ("$__timeFrom()", "'2026-11-20T01:02:03Z'"),
        ("$__timeTo()", "'2026-11-21T01:02:03.45Z'"),
        ("$__time(ts)", 'ts AS "time"'),
        ("$__timeEpoch(ts)", 'extract(epoch from ts) as "time"'),
        ("SELECT $__timeGroup(ts, '5m') AS t",
         "SELECT floor(extract(epoch from ts)/300)*300 AS t"),
        # A comma right after $__timeGroup: Grafana adds the alias itself (pre-5.3 usage).
        ("SELECT $__timeGroup(ts,1h), x",
         'SELECT floor(extract(epoch from ts)/3600)*3600 AS "time", x'),
        ("$__timeGroupAlias(ts, 30s)", 'floor(extract(epoch from ts)/30)*30 AS "time"'),
        ("$__timeGroupAlias(ts, $__interval)", 'floor(extract(epoch from ts)/60)*60 AS "time"'),
        ("$__unixEpochFilter(t)", "t >= 1795136523 AND t <= 1795222923"),
        ("$__unixEpochFrom() $__unixEpochTo()", "1795136523 1795222923"),
        ("$__unixEpochGroupAlias(t, 5m)", 'floor((t)/300)*300 AS "time"'),
        ("$__interval_ms $__interval", "60000 1m"),
    ],
)  # fmt: skip
def test_macros_expand_as_grafana_does(sql: str, expected: str) -> None:
    assert expand(sql, time_range=TR, interval_ms=60000) == expected


def test_timefrom_to_match_unix_seconds() -> None:
    assert int(FROM.timestamp()) == 1795136523


@pytest.mark.parametrize(
    ("var", "expected"),
    [
        (Variable(values=("acme",)), "acme"),
        (Variable(values=("o'neil",)), "o''neil"),
        (Variable(values=("a",), multi=True), "'a'"),
        (Variable(values=("a", "b'c"), multi=True), "'a','b''c'"),
        (Variable(values=("a", "b"), multi=True, include_all=True), "'a','b'"),
        (Variable(values=("a",), include_all=True), "'a'"),
    ],
)
def test_variables_are_formatted_like_sql_data_sources(var: Variable, expected: str) -> None:
    out = interpolate_variables("$x", {"x": var}, time_range=TR, interval_ms=1000)
    assert out == expected


def test_variable_syntaxes_and_formats() -> None:
    v = {"t": Variable(values=("a", "b"), multi=True)}
    sql = "$t|${t}|[[t]]|${t:csv}|${t:sqlstring}|${t:raw}|$other|$__timeFilter(ts)"
    out = interpolate_variables(sql, v, time_range=TR, interval_ms=1000)
    assert out == "'a','b'|'a','b'|'a','b'|a,b|'a','b'|a,b|$other|$__timeFilter(ts)"


def test_builtin_browser_variables() -> None:
    out = interpolate_variables("$__from $__to", {}, time_range=TR, interval_ms=1000)
    assert out == "1795136523000 1795222923450"


def test_unknown_macro_and_bad_interval_are_errors() -> None:
    with pytest.raises(MacroError, match="unknown macro"):
        expand_macros("$__nope(x)", time_range=TR, interval_ms=1000)
    with pytest.raises(MacroError, match="interval"):
        expand_macros("$__timeGroup(ts, 5 minutes)", time_range=TR, interval_ms=1000)
    with pytest.raises(MacroError, match="format"):
        interpolate_variables("${x:json}", {"x": Variable(values=("a",))}, time_range=TR,
                              interval_ms=1)  # fmt: skip


@pytest.mark.parametrize(
    ("text", "ms"),
    [("5m", 300_000), ("'10s'", 10_000), ("1h30m", 5_400_000), ("1d", 86_400_000),
     ("100ms", 100), ("1w", 604_800_000)],
)  # fmt: skip
def test_parse_interval(text: str, ms: int) -> None:
    assert parse_interval(text) == ms


@pytest.mark.parametrize(
    ("ms", "text"),
    [(300_000, "5m"), (90_000, "1m"), (3_600_000, "1h"), (500, "500ms"), (86_400_000, "1d")],
)
def test_format_interval(ms: int, text: str) -> None:
    assert format_interval(ms) == text


@pytest.mark.parametrize(
    ("span", "points", "ms"),
    [
        (timedelta(hours=24), 1000, 60_000),  # 86.4 s -> 1m
        (timedelta(days=30), 1000, 1_800_000),  # 43.2 min -> 30m
        (timedelta(hours=1), 1000, 5_000),  # 3.6 s -> 5s
        (timedelta(days=7), 900, 600_000),  # 11.2 min -> 10m
    ],
)
def test_auto_interval_rounds_like_grafana(span: timedelta, points: int, ms: int) -> None:
    tr = TimeRange.last(span, now=TO)
    assert auto_interval_ms(tr, max_data_points=points) == ms


def test_format_time_is_rfc3339nano_utc() -> None:
    jst = datetime(2026, 1, 2, 9, 0, 0, 120000, tzinfo=UTC) + timedelta()
    assert format_time(jst) == "2026-01-02T09:00:00.12Z"


def test_expanded_sql_runs_on_postgresql(plain_db) -> None:
    """The expansions are valid PostgreSQL and mean what Grafana means."""
    sql = expand(
        """
        SELECT $__timeGroupAlias(t, $__interval), count(*) AS n,
               $__timeFrom()::timestamptz AS lo, $__timeTo()::timestamptz AS hi
        FROM (VALUES (timestamptz '2026-11-20 01:02:03+00'),
                     (timestamptz '2026-11-20 01:05:00+00'),
                     (timestamptz '2026-11-21 01:02:03.45+00'),
                     (timestamptz '2026-11-21 01:02:04+00')) v(t)
        WHERE $__timeFilter(t) AND 'x' IN ($tags)
        GROUP BY 1 ORDER BY 1
        """,
        time_range=TR,
        interval_ms=300_000,
        variables={"tags": Variable(values=("x", "y"), multi=True)},
    )
    with psycopg.connect(plain_db.dsn) as conn:
        rows = conn.execute(sql.encode()).fetchall()
    # BETWEEN is inclusive at both ends; the last value is after the range.
    assert [(float(r[0]), r[1]) for r in rows] == [
        (1795136400.0, 1),  # 01:00:00 bucket (01:02:03)
        (1795136700.0, 1),  # 01:05:00 bucket
        (1795222800.0, 1),  # next day 01:00:00 bucket (01:02:03.45)
    ]
    assert rows[0][2] == FROM and rows[0][3] == TO
