"""Migration 0008's rollups (``flows_1d``, ``flows_app_1h``) on both storage flavours: equal
to the raw sums per UTC day and per hour and application, kept up to date by the rollup
job when late rows arrive, trimmed by retention on plain PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from mimamori.cloud import _pgcopy
from mimamori.cloud.jobs.runner import run_once
from mimamori.cloud.migrate import migrate
from mimamori.protocol import FlowSummary

#: 21:00 UTC: the rows below straddle two UTC days.
T0 = datetime(2026, 11, 19, 21, 0, tzinfo=UTC)
SUMS = "sum(bytes_out), sum(bytes_in), sum(pkts_out), sum(conns)"
GROUPS = "tenant, gateway, mac, local_ip, remote_ip, remote_port, proto, dir, app, sni"


def _copy_flows(dsn: str, tenant: str, gateway: str, rows: list[FlowSummary]) -> None:
    cols = ", ".join(_pgcopy.FLOW_COLUMNS)
    sql = f"COPY flows ({cols}) FROM STDIN (FORMAT BINARY)"
    with psycopg.connect(dsn) as conn, conn.cursor() as cur, cur.copy(sql) as copy:
        copy.write(_pgcopy.HEADER + _pgcopy.encode_flows(tenant, gateway, rows))
        copy.write(_pgcopy.TRAILER)


def _rows(start: datetime, n: int, step_s: float, salt: int = 0) -> list[FlowSummary]:
    apps = ["TLS", "DNS", "TLS.Teams"]
    return [
        FlowSummary(
            ts=start.timestamp() + i * step_s,
            mac="" if i % 7 == 0 else "02:00:00:00:00:%02x" % (i % 3),
            local_ip=f"10.0.0.{i % 3 + 1}", remote_ip="2001:db8::%x" % (i % 4),
            remote_port=443, proto=6, app=apps[(i + salt) % 3], pkts_out=i + salt,
            pkts_in=2 * i, bytes_out=100 * i + salt, bytes_in=7 * i + 1, conns=1 + i % 2,
        )
        for i in range(n)
    ]  # fmt: skip


def _by(conn: psycopg.Connection[Any], sql: str) -> list[tuple[Any, ...]]:
    return conn.execute(sql).fetchall()


def _daily_raw(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return _by(
        conn,
        f"SELECT date_bin('1 day', ts, '2000-01-01 00:00+00'), {GROUPS}, {SUMS}, count(*)"
        f" FROM flows GROUP BY 1, {GROUPS} ORDER BY 1, {GROUPS}",
    )


def _daily_rollup(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return _by(
        conn,
        f"SELECT bucket, {GROUPS}, {SUMS}, sum(summaries)"
        f" FROM flows_1d GROUP BY 1, {GROUPS} ORDER BY 1, {GROUPS}",
    )


def _app_raw(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return _by(
        conn,
        f"SELECT date_bin('1 hour', ts, '2000-01-01 00:00+00'), tenant, gateway, app,"
        f" {SUMS}, count(*) FROM flows GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4",
    )


def _app_rollup(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return _by(
        conn,
        f"SELECT bucket, tenant, gateway, app, {SUMS}, sum(summaries)"
        f" FROM flows_app_1h GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4",
    )


def test_daily_and_app_rollups_equal_raw_sums(db: Any) -> None:
    migrate(db.dsn)
    # Six hours of 1-minute rows over midnight UTC for two gateways...
    _copy_flows(db.dsn, "acme", "gw1", _rows(T0, 360, 60.0))
    _copy_flows(db.dsn, "acme", "gw2", _rows(T0 + timedelta(minutes=90), 200, 60.0, salt=1))
    run_once(db.dsn, only=["partitions", "rollups"])
    with psycopg.connect(db.dsn) as conn:
        raw = _daily_raw(conn)
        assert {r[0] for r in raw} == {
            datetime(2026, 11, 19, tzinfo=UTC),
            datetime(2026, 11, 20, tzinfo=UTC),
        }
        assert _daily_rollup(conn) == raw
        assert _app_rollup(conn) == _app_raw(conn)
    # ...then late rows into both days, already rolled up: the job folds them in.
    _copy_flows(db.dsn, "acme", "gw1", _rows(T0 + timedelta(hours=2, minutes=30), 90, 40.0, 5))
    run_once(db.dsn, only=["rollups"])
    with psycopg.connect(db.dsn) as conn:
        raw = _daily_raw(conn)
        assert sum(r[-1] for r in raw) == 650
        assert _daily_rollup(conn) == raw
        assert _app_rollup(conn) == _app_raw(conn)


def test_daily_rollup_matches_hourly_rollup(db: Any) -> None:
    """flows_1d is built from flows_1h: its days hold exactly the hourly rows' sums."""
    migrate(db.dsn)
    _copy_flows(db.dsn, "acme", "gw1", _rows(T0, 300, 55.0, salt=2))
    run_once(db.dsn, only=["partitions", "rollups"])
    with psycopg.connect(db.dsn) as conn:
        hourly = _by(
            conn,
            f"SELECT date_bin('1 day', bucket, '2000-01-01 00:00+00'), {GROUPS}, {SUMS},"
            f" sum(summaries) FROM flows_1h GROUP BY 1, {GROUPS} ORDER BY 1, {GROUPS}",
        )
        assert hourly and _daily_rollup(conn) == hourly


@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
def test_plain_rollup_job_trims_by_storage_policies(db: Any) -> None:
    migrate(db.dsn)
    old = datetime.now(UTC) - timedelta(days=900)
    _copy_flows(db.dsn, "acme", "gw1", _rows(old, 30, 60.0))
    _copy_flows(db.dsn, "acme", "gw1", _rows(T0, 30, 60.0))
    run_once(db.dsn, only=["rollups"])
    with psycopg.connect(db.dsn) as conn:
        counts = _by(
            conn,
            f"""
            SELECT (SELECT count(*) FROM flows_1h WHERE bucket < '{T0:%Y-%m-%d}'),
                   (SELECT count(*) FROM flows_1d WHERE bucket < '{T0:%Y-%m-%d}'),
                   (SELECT count(*) FROM flows_app_1h WHERE bucket < '{T0:%Y-%m-%d}'),
                   (SELECT count(*) FROM flows_1d), (SELECT count(*) FROM flows_app_1h)
            """,
        )[0]
    # The old hours were rolled up (flows_1h is trimmed by the partitions job, not run
    # here), but the rollup job trimmed its own tables past their 800 and 400 days.
    assert counts[0] > 0
    assert counts[1:3] == (0, 0)
    assert counts[3] > 0 and counts[4] > 0


def test_migration_backfills_from_existing_hourly_rollup(plain_db: Any) -> None:
    """A store at version 7 with flows_1h filled gets flows_1d and flows_app_1h from 0008."""
    from mimamori.cloud import migrate as migrate_module

    full = migrate_module.migrations("postgresql")
    with psycopg.connect(plain_db.dsn, autocommit=True) as conn:
        conn.execute(migrate_module._BOOKKEEPING)
        for m in full[:7]:
            conn.execute(m.sql)
            conn.execute(
                "INSERT INTO schema_migrations (version, name, storage)"
                " VALUES (%s, %s, 'postgresql')",
                (m.version, m.name),
            )
    _copy_flows(plain_db.dsn, "acme", "gw1", _rows(T0, 240, 60.0))
    with psycopg.connect(plain_db.dsn, autocommit=True) as conn:
        # What the rollup job of version 7 left: flows_1h only.
        conn.execute(
            f"INSERT INTO flows_1h SELECT date_bin('1 hour', ts, '2000-01-01 00:00+00'),"
            f" {GROUPS}, {', '.join(f'sum({c})' for c in ('pkts_out', 'pkts_in', 'bytes_out', 'bytes_in', 'conns'))},"
            f" count(*) FROM flows GROUP BY 1, {GROUPS}"
        )  # fmt: skip
    result = migrate(plain_db.dsn)
    assert result.applied == [m.version for m in full[7:]] and result.applied[0] == 8
    with psycopg.connect(plain_db.dsn) as conn:
        assert _daily_rollup(conn) == _daily_raw(conn)
        assert _app_rollup(conn) == _app_raw(conn)
