"""Schema migrations on plain PostgreSQL and TimescaleDB: idempotent, same names on both."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from mimamori.cloud import registry
from mimamori.cloud.cli import main as cloud_main
from mimamori.cloud.errors import MigrationError, RegistryError
from mimamori.cloud.migrate import migrate, migrations
from mimamori.simulators.services import Postgres

#: Relations dashboards and jobs rely on, with the columns they read.
EXPECTED = {
    "tenants": {"id", "name", "created_at"},
    "gateways": {"id", "tenant", "site", "name", "state", "last_seen", "created_at",
                 "revoked_at", "credential_hash"},
    "flows": {"ts", "tenant", "gateway", "mac", "local_ip", "remote_ip", "remote_port",
              "proto", "dir", "app", "sni", "pkts_out", "pkts_in", "bytes_out", "bytes_in",
              "conns", "first_seen", "last_seen"},
    "flows_5m": {"bucket", "tenant", "gateway", "mac", "local_ip", "remote_ip", "bytes_out",
                 "bytes_in", "pkts_out", "pkts_in", "conns", "summaries"},
    "flows_1h": {"bucket", "tenant", "gateway", "mac", "local_ip", "remote_ip", "bytes_out",
                 "bytes_in", "pkts_out", "pkts_in", "conns", "summaries"},
    "heartbeats": {"ts", "tenant", "gateway", "uptime_s", "outbox_depth"},
    "devices": {"tenant", "mac", "ips", "vendor", "hostname", "first_seen", "last_seen"},
    "alerts": {"tenant", "gateway", "alert_id", "category", "severity", "evidence",
               "received_at", "dedup_key", "incident_id"},
    "incidents": {"tenant", "dedup_key", "severity", "status", "alert_count"},
    "quarantine": {"received_at", "topic", "gateway", "reason", "detail", "payload"},
    "receipts": {"gateway", "seq", "committed_at"},
    "sensors": {"tenant", "sensor_id", "last_seen"},
    "sensor_messages": {"ts", "tenant", "gateway", "sensor_id", "body"},
}  # fmt: skip


def _fresh(cluster: Postgres) -> str:
    """A new empty database in ``cluster`` (for tests that need both flavours at once)."""
    name = f"mig_{uuid.uuid4().hex[:12]}"
    admin = f"postgresql://{cluster.user}@{cluster.host}:{cluster.port}/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"postgresql://{cluster.user}@{cluster.host}:{cluster.port}/{name}"


def _columns(dsn: str) -> dict[str, dict[str, str]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            """
            SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod)
            FROM pg_class c
            JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
            WHERE c.relnamespace = 'public'::regnamespace
            """
        ).fetchall()
    out: dict[str, dict[str, str]] = {}
    for rel, col, typ in rows:
        out.setdefault(rel, {})[col] = typ
    return out


def _schema_fingerprint(dsn: str) -> list[tuple[str, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            """
            SELECT c.relname, c.relkind::text, count(a.attnum)::text
            FROM pg_class c LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0
            WHERE c.relnamespace = 'public'::regnamespace GROUP BY 1, 2 ORDER BY 1
            """
        ).fetchall()


def test_migrate_twice_is_idempotent(db) -> None:
    first = migrate(db.dsn)
    assert first.storage == db.storage
    assert first.applied == [m.version for m in migrations(first.storage)]
    before = _schema_fingerprint(db.dsn)
    second = migrate(db.dsn)
    assert second.applied == []
    assert second.version == first.version
    assert _schema_fingerprint(db.dsn) == before
    with psycopg.connect(db.dsn) as conn:
        stored = conn.execute("SELECT DISTINCT storage FROM schema_migrations").fetchall()
    assert stored == [(db.storage,)]


def test_same_relations_and_types_on_both_flavours(pg_plain, pg_timescale) -> None:
    plain, tsdb = _fresh(pg_plain), _fresh(pg_timescale)
    migrate(plain)
    migrate(tsdb)
    cols_plain, cols_tsdb = _columns(plain), _columns(tsdb)
    for rel, needed in EXPECTED.items():
        assert needed <= set(cols_plain[rel]), (rel, needed - set(cols_plain[rel]))
        # Same names and the same types: one query works on both.
        assert cols_plain[rel] == cols_tsdb[rel], rel
    assert cols_plain["flows"]["local_ip"] == "inet"
    assert cols_plain["flows"]["mac"] == "macaddr"
    assert cols_plain["flows"]["ts"] == "timestamp with time zone"


def test_timescaledb_features(pg_timescale) -> None:
    dsn = _fresh(pg_timescale)
    migrate(dsn)
    with psycopg.connect(dsn) as conn:
        hypertables = {r[0] for r in conn.execute(
            "SELECT hypertable_name FROM timescaledb_information.hypertables")}  # fmt: skip
        caggs = {r[0] for r in conn.execute(
            "SELECT view_name FROM timescaledb_information.continuous_aggregates")}  # fmt: skip
        jobs = {(r[0], r[1]) for r in conn.execute(
            "SELECT proc_name, coalesce(hypertable_name, '') FROM timescaledb_information.jobs")}  # fmt: skip
    assert {"flows", "heartbeats", "sensor_messages"} <= hypertables
    assert caggs == {"flows_5m", "flows_1h", "flows_app_1h", "flows_1d"}
    procs = {p for p, _ in jobs}
    assert {
        "policy_compression",
        "policy_retention",
        "policy_refresh_continuous_aggregate",
    } <= procs


def test_forcing_another_flavour_after_creation_fails(plain_db) -> None:
    migrate(plain_db.dsn, storage="postgresql")
    with pytest.raises(MigrationError, match="created for postgresql"):
        migrate(plain_db.dsn, storage="timescaledb")


def test_plain_cluster_with_installed_but_unloaded_extension_is_plain(plain_db) -> None:
    # The plain test cluster has TimescaleDB's files but does not preload it.
    assert migrate(plain_db.dsn).storage == "postgresql"


def test_cli_migrate_and_gateway_registry(plain_db, capsys) -> None:
    assert cloud_main(["migrate", "--dsn", plain_db.dsn]) == 0
    assert cloud_main(["migrate", "--dsn", plain_db.dsn]) == 0
    assert "up to date" in capsys.readouterr().out
    args = ["gateway", "add", "--dsn", plain_db.dsn, "--tenant", "acme", "--gateway", "gw1"]
    assert cloud_main(args) == 0
    assert cloud_main(args) == 0  # again: no error, no change
    assert "exists" in capsys.readouterr().out
    with psycopg.connect(plain_db.dsn) as conn:
        gw = registry.get_gateway(conn, "gw1")
        assert gw is not None and gw.tenant == "acme" and gw.state == "unknown"
        with pytest.raises(RegistryError):
            registry.add_gateway(conn, tenant="other", gateway="gw1")
        with pytest.raises(RegistryError):
            registry.add_gateway(conn, tenant="acme", gateway="Bad/Id")
    assert cloud_main(["gateway", "revoke", "--dsn", plain_db.dsn, "--gateway", "gw1"]) == 0
    # The registry alone cannot delete the broker login: the command says how.
    assert "mimamori cloud broker revoke --gateway gw1" in capsys.readouterr().err
    assert cloud_main(["gateway", "revoke", "--dsn", plain_db.dsn, "--gateway", "nope"]) == 1
    assert cloud_main(["gateway", "list", "--dsn", plain_db.dsn]) == 0
    assert "revoked" in capsys.readouterr().out


def test_plain_partitions_route_and_move_out_of_default(plain_db) -> None:
    migrate(plain_db.dsn)
    with psycopg.connect(plain_db.dsn) as conn:
        # A row far in the past lands in the DEFAULT partition...
        conn.execute(
            "INSERT INTO heartbeats (ts, tenant, gateway, seq, interval_s, uptime_s, load1,"
            " mem_used_pct, disk_used_pct, packets_seen, packets_dropped, outbox_depth,"
            " outbox_bytes, agent_version, config_hash)"
            " VALUES ('2020-01-02 03:00+00', 't', 'g', 1, 30, 1, 0, 0, 0, 0, 0, 0, 0, '', '')"
        )
        n = conn.execute("SELECT count(*) FROM heartbeats_default").fetchone()
        assert n == (1,)
        # ...and moves to its own partition when the job creates it.
        created = conn.execute(
            "SELECT mimamori_ensure_partition('heartbeats', '2020-01-02')"
        ).fetchone()
        assert created == (True,)
        assert conn.execute("SELECT count(*) FROM heartbeats_default").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM heartbeats_p20200102").fetchone() == (1,)
        dropped = conn.execute(
            "SELECT mimamori_drop_partitions('heartbeats', '2020-01-05+00')"
        ).fetchone()
        assert dropped == (1,)
        assert conn.execute("SELECT count(*) FROM heartbeats").fetchone() == (0,)
