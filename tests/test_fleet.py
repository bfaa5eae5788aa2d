"""A small simulated fleet through a real broker, the real ingester and PostgreSQL.

Four gateways (one with a ransomware infection, one that loses power, one whose site
goes offline, one ordinary) run three simulated minutes at 6x speed. Everything their
outboxes numbered must be committed exactly once, the power-cut gateway must resume
from its outbox, the offline site must drain after its link comes back, and the
infection must arrive as a lateral_movement alert raised by the real engine.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Database
from mimamori.simulators.fleet import FleetConfig, register_fleet, run_fleet
from mimamori.simulators.services import Mosquitto

pytestmark = pytest.mark.slow


@pytest.fixture
def ingester(broker: Mosquitto, plain_db: Database, tmp_path: Path) -> Iterator[Database]:
    from mimamori.cloud.migrate import migrate

    migrate(plain_db.dsn, storage="postgresql")
    log = open(tmp_path / "ingester.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "mimamori", "cloud", "ingest", "--dsn", plain_db.dsn,
         "--mqtt-port", str(broker.port), "--client-id", f"test-ingest-{plain_db.name}",
         "--log-format", "console"],
        stdout=log, stderr=log,
    )  # fmt: skip
    try:
        yield plain_db
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_small_fleet_is_stored_exactly_once(
    broker: Mosquitto, ingester: Database, topic_prefix: str, tmp_path: Path
) -> None:
    import psycopg

    config = FleetConfig(
        gateways=4, devices=12, minutes=3, speed=6,
        scenarios=("ransomware", "power_cut", "site_offline"), port=broker.port,
        prefix=topic_prefix, workdir=str(tmp_path / "fleet"), drain_s=90,
        power_cut_after=0.3, power_cut_downtime_s=4, offline_after=0.3, offline_for=0.3,
        local_hour=10.5,
    )  # fmt: skip
    assert register_fleet(ingester.dsn, config) == 4
    result = run_fleet(config)
    entries = list(result.entries())
    assert result.undelivered == 0
    assert result.power_cuts == 1
    offline = result.gateways[config.gateway(2)]
    assert offline["link_cuts"] == 1 and offline["publisher"]["connects"] >= 2
    kinds = {e.kind for e in entries}
    assert {"flows", "heartbeat", "devices", "alerts"} <= kinds
    power_cut_seqs = sorted(e.seq for e in entries if e.gateway == config.gateway(1))
    assert len(power_cut_seqs) == len(set(power_cut_seqs))  # numbering survived the kill

    with psycopg.connect(ingester.dsn) as conn:
        receipts = {
            (g, s): (kind, rows)
            for g, s, kind, rows in conn.execute("SELECT gateway, seq, kind, rows FROM receipts")
        }
        missing = [e for e in entries if (e.gateway, e.seq) not in receipts]
        assert missing == []
        assert all(receipts[(e.gateway, e.seq)] == (e.kind, e.rows) for e in entries)
        # Receipts the ledger does not know are the publisher's own status messages
        # (online at connect; offline as the last will).
        ledger_keys = {(e.gateway, e.seq) for e in entries}
        assert {v[0] for k, v in receipts.items() if k not in ledger_keys} <= {"status"}
        flows = conn.execute("SELECT count(*) FROM flows").fetchone()
        assert flows is not None
        assert flows[0] == sum(e.rows for e in entries if e.kind == "flows")
        hb = conn.execute(
            "SELECT count(*), count(DISTINCT (gateway, seq)) FROM heartbeats"
        ).fetchone()
        assert hb is not None and hb[0] == hb[1] == sum(e.kind == "heartbeat" for e in entries)
        alerts = conn.execute(
            "SELECT gateway, category, rule FROM alerts ORDER BY detected_at"
        ).fetchall()
        assert (config.gateway(0), "lateral_movement") in {(g, c) for g, c, _ in alerts}
        assert all(not rule.startswith("sim.") for _, _, rule in alerts)
        quarantined = conn.execute("SELECT count(*) FROM quarantine").fetchone()
        assert quarantined == (0,)
        devices = conn.execute("SELECT count(*), count(vendor) FROM devices").fetchone()
        assert devices is not None and devices[0] >= 4 * 8
