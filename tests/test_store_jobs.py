"""Cloud jobs on both storage flavours: rollups equal raw sums, liveness, incidents,
partitions and retention."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from mimamori.cloud import _pgcopy, registry
from mimamori.cloud.cli import main as cloud_main
from mimamori.cloud.jobs import incidents
from mimamori.cloud.jobs.config import JobsConfig
from mimamori.cloud.jobs.runner import run_once
from mimamori.cloud.migrate import migrate
from mimamori.protocol import FlowSummary

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC).timestamp()


def _copy_flows(dsn: str, tenant: str, gateway: str, rows: list[FlowSummary]) -> None:
    cols = ", ".join(_pgcopy.FLOW_COLUMNS)
    sql = f"COPY flows ({cols}) FROM STDIN (FORMAT BINARY)"
    with psycopg.connect(dsn) as conn, conn.cursor() as cur, cur.copy(sql) as copy:
        copy.write(_pgcopy.HEADER + _pgcopy.encode_flows(tenant, gateway, rows))
        copy.write(_pgcopy.TRAILER)


def _rows(start: float, n: int, step: float, salt: int = 0) -> list[FlowSummary]:
    return [
        FlowSummary(
            ts=start + i * step, mac="" if i % 5 == 0 else "02:00:00:00:00:%02x" % (i % 3),
            local_ip=f"10.0.0.{i % 3 + 1}", remote_ip="2001:db8::%x" % (i % 4),
            remote_port=443, proto=6, app="TLS", pkts_out=i + salt, pkts_in=2 * i,
            bytes_out=100 * i + salt, bytes_in=7 * i, conns=1,
        )
        for i in range(n)
    ]  # fmt: skip


def _sums(conn: psycopg.Connection[Any], rel: str, time_col: str) -> list[tuple[Any, ...]]:
    return conn.execute(
        f"SELECT tenant, gateway, date_bin('1 hour', {time_col}, '2000-01-01 00:00+00'),"
        " sum(bytes_out), sum(bytes_in), sum(pkts_out), sum(conns)"
        f" FROM {rel} GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
    ).fetchall()


def test_rollups_equal_raw_sums(db: Any) -> None:
    migrate(db.dsn)
    # Three hours of 1-minute rows for two gateways...
    _copy_flows(db.dsn, "acme", "gw1", _rows(T0, 180, 60.0))
    _copy_flows(db.dsn, "acme", "gw2", _rows(T0 + 1800, 90, 60.0, salt=3))
    run_once(db.dsn, only=["partitions", "rollups"])
    # ...then late rows into an hour that was already rolled up.
    _copy_flows(db.dsn, "acme", "gw1", _rows(T0 + 600, 40, 30.0, salt=11))
    run_once(db.dsn, only=["rollups"])
    with psycopg.connect(db.dsn) as conn:
        raw = _sums(conn, "flows", "ts")
        assert raw and len(raw) >= 5
        assert _sums(conn, "flows_5m", "bucket") == raw
        assert _sums(conn, "flows_1h", "bucket") == raw
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM flows), (SELECT sum(summaries) FROM flows_5m),"
            " (SELECT sum(summaries) FROM flows_1h),"
            " (SELECT count(*) FROM flows_5m WHERE mac IS NULL) > 0"
        ).fetchone()
    assert counts == (310, 310, 310, True)


@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
def test_rollup_refresh_is_incremental(db: Any) -> None:
    migrate(db.dsn)
    _copy_flows(db.dsn, "acme", "gw1", _rows(T0, 10, 60.0))
    assert run_once(db.dsn, only=["rollups"])["rollups"] == 1
    assert run_once(db.dsn, only=["rollups"])["rollups"] == 0  # nothing new
    with psycopg.connect(db.dsn) as conn:
        assert conn.execute("SELECT count(*) FROM flow_invalidations").fetchone() == (0,)


def _gateway(dsn: str, gw: str, *, last_seen: datetime | None, state: str = "online") -> None:
    with psycopg.connect(dsn) as conn:
        registry.add_gateway(conn, tenant="acme", gateway=gw, name=f"{gw} box")
        conn.execute(
            "UPDATE gateways SET last_seen = %s, state = %s, heartbeat_interval_s = 30"
            " WHERE id = %s",
            (last_seen, state, gw),
        )


def test_liveness_marks_offline_and_alerts_once(db: Any) -> None:
    migrate(db.dsn)
    now = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    _gateway(db.dsn, "fresh", last_seen=now - timedelta(seconds=60))  # 2 intervals: fine
    _gateway(db.dsn, "stale", last_seen=now - timedelta(seconds=95))  # > 3 intervals
    _gateway(db.dsn, "never", last_seen=None, state="unknown")
    result = run_once(db.dsn, only=["liveness", "incidents"], now=now)
    assert result["liveness"] == ["stale"]
    assert run_once(db.dsn, only=["liveness"], now=now)["liveness"] == []  # once per outage
    later = run_once(db.dsn, only=["liveness"], now=now + timedelta(minutes=5))
    assert later["liveness"] == ["fresh"]  # fresh went silent too; stale not re-alerted
    with psycopg.connect(db.dsn) as conn:
        states = dict(conn.execute("SELECT id, state FROM gateways").fetchall())
        alerts = conn.execute(
            "SELECT gateway, category, severity, source, dedup_key, summary_ja <> '',"
            " incident_id IS NOT NULL FROM alerts ORDER BY id"
        ).fetchall()
    assert states == {"fresh": "offline", "stale": "offline", "never": "unknown"}
    assert alerts == [
        ("stale", "gateway_offline", "medium", "cloud", "gateway_offline:stale", True, True),
        ("fresh", "gateway_offline", "medium", "cloud", "gateway_offline:fresh", True, False),
    ]


def _alert(conn: psycopg.Connection[Any], n: int, key: str, severity: str = "low") -> None:
    conn.execute(
        "INSERT INTO alerts (tenant, gateway, alert_id, category, severity, detected_at, actor,"
        " summary_en, summary_ja, dedup_key)"
        " SELECT 'acme', 'gw1', %s || '-' || g, 'scan', %s, now(), '10.0.0.9', 's', 's', %s"
        " FROM generate_series(1, %s) g",
        (f"{key}-{severity}-{datetime.now().timestamp()}", severity, key, n),
    )


@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
def test_incidents_group_escalate_and_reopen(db: Any) -> None:
    migrate(db.dsn)
    with psycopg.connect(db.dsn, autocommit=True) as conn:
        _alert(conn, 3, "scan:10.0.0.9")
        _alert(conn, 1, "other")
        assert incidents.group(conn, config=JobsConfig()) == 4
        _alert(conn, 8, "scan:10.0.0.9")  # 11 in all: crosses 10, one level up
        incidents.group(conn, config=JobsConfig())
        rows = conn.execute(
            "SELECT dedup_key, severity, alert_count, status FROM incidents ORDER BY dedup_key"
        ).fetchall()
        assert rows == [("other", "low", 1, "open"), ("scan:10.0.0.9", "medium", 11, "open")]
        conn.execute("UPDATE incidents SET status = 'resolved' WHERE dedup_key = 'other'")
        _alert(conn, 1, "other", severity="high")
        incidents.group(conn, config=JobsConfig())
        reopened = conn.execute(
            "SELECT count(*), max(severity) FILTER (WHERE status = 'open') FROM incidents"
            " WHERE dedup_key = 'other'"
        ).fetchone()
        assert reopened == (2, "high")
        assert conn.execute("SELECT count(*) FROM alerts WHERE incident_id IS NULL").fetchone() == (
            0,
        )


def test_escalation_table() -> None:
    c = JobsConfig(escalate_at_counts=(10, 100), escalate_cap="high")
    assert incidents.escalated("low", "low", 0, 9, c) == "low"
    assert incidents.escalated("low", "low", 9, 10, c) == "medium"
    assert incidents.escalated("low", "low", 0, 100, c) == "high"
    assert incidents.escalated("high", "low", 99, 150, c) == "high"  # capped
    assert incidents.escalated("low", "critical", 1, 2, c) == "critical"  # never lowered
    with pytest.raises(ValueError):
        JobsConfig(escalate_cap="urgent")


@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
def test_partitions_ahead_and_retention(db: Any) -> None:
    migrate(db.dsn)
    now = datetime.now(UTC)
    old = now - timedelta(days=40)
    _copy_flows(db.dsn, "acme", "gw1", _rows(old.timestamp(), 3, 60.0))
    with psycopg.connect(db.dsn) as conn:
        conn.execute(
            "INSERT INTO receipts (gateway, seq, kind, committed_at) VALUES"
            " ('gw1', 1, 'flows', now() - interval '40 days'), ('gw1', 2, 'flows', now())"
        )
    result = run_once(db.dsn, only=["partitions"], now=now)["partitions"]
    ahead = f"flows_p{(now + timedelta(days=3)):%Y%m%d}"
    assert ahead in result.created
    with psycopg.connect(db.dsn) as conn:
        assert conn.execute("SELECT count(*) FROM flows").fetchone() == (0,)  # 40 > 31 days
        assert conn.execute("SELECT seq FROM receipts").fetchall() == [(2,)]
        assert conn.execute("SELECT to_regclass(%s) IS NOT NULL", (ahead,)).fetchone() == (True,)


@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
def test_cli_jobs_run_once(db: Any, capsys: Any) -> None:
    assert cloud_main(["jobs", "run-once", "--dsn", db.dsn]) == 1  # not migrated: clear error
    assert "not migrated" in capsys.readouterr().err
    migrate(db.dsn)
    assert cloud_main(["jobs", "run-once", "--dsn", db.dsn]) == 0
    out = capsys.readouterr().out
    assert all(
        f"{job}:" in out for job in ("partitions", "rollups", "liveness", "sensors", "incidents")
    )


@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
def test_sensor_canary_and_offline_alerts(db: Any) -> None:
    migrate(db.dsn)
    now = datetime.now(UTC)
    with psycopg.connect(db.dsn) as conn:
        conn.execute(
            "INSERT INTO sensor_messages (ts, tenant, gateway, seq, sensor_id, sensor_kind,"
            " sent_at, body) VALUES (now(), 'acme', 'gw1', 42, 's1', 'canary', now(),"
            ' \'{"port": 445, "src_ip": "192.168.1.66", "src_port": 50000}\'),'
            " (now(), 'acme', 'gw1', 43, 's1', 'canary', now(), '{\"port\": \"bad\"}')"
        )
        conn.execute(
            "INSERT INTO sensors (tenant, sensor_id, gateway, state, first_seen, last_seen)"
            " VALUES ('acme', 's1', 'gw1', 'online', now(), now()),"
            " ('acme', 's2', 'gw1', 'online', now() - interval '1 hour',"
            " now() - interval '1 hour')"
        )
    first = run_once(db.dsn, only=["sensors", "incidents"], now=now)["sensors"]
    again = run_once(db.dsn, only=["sensors"], now=now)["sensors"]
    assert (first.canary_alerts, first.offline) == (1, 1)
    assert (again.canary_alerts, again.offline) == (0, 0)
    with psycopg.connect(db.dsn) as conn:
        alerts = conn.execute(
            "SELECT category, actor, severity, source, incident_id IS NOT NULL FROM alerts"
            " ORDER BY category"
        ).fetchall()
        states = dict(conn.execute("SELECT sensor_id, state FROM sensors").fetchall())
    assert alerts == [
        ("canary_touch", "192.168.1.66", "high", "cloud", True),
        ("sensor_offline", "s2", "medium", "cloud", True),
    ]
    assert states == {"s1": "online", "s2": "offline"}


def test_loop_paces_jobs_with_a_minimum_interval() -> None:
    from mimamori.cloud.jobs.config import JobsConfig
    from mimamori.cloud.jobs.runner import JOBS, due

    config = JobsConfig(min_interval_s=(("labels", 3600.0),))
    assert due(JOBS, {}, 100.0, config) == list(JOBS)  # the first pass runs everything
    last = dict.fromkeys(JOBS, 100.0)
    later = due(JOBS, last, 160.0, config)
    assert "labels" not in later and "liveness" in later and len(later) == len(JOBS) - 1
    assert "labels" in due(JOBS, last, 3700.0, config)
    assert due(["sensors"], last, 160.0, config) == ["sensors"]
    with pytest.raises(ValueError, match="min_interval_s"):
        JobsConfig(min_interval_s=(("labels", -1.0),))
