"""End to end delivery under faults: the real publisher and outbox, a real broker restarted
without persistence, a gateway agent killed with SIGKILL, and the real ingester writing to
PostgreSQL. Every sequence number must end up in the database exactly once.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from mimamori.edge.outbox import Outbox
from mimamori.edge.publisher import Backoff, Publisher, drive
from mimamori.protocol import FlowBatch, FlowSummary, Heartbeat
from mimamori.simulators.services import Mosquitto
from test_delivery_acker import Acker, wait_until

pytestmark = pytest.mark.fault

GW = "gw1"


@pytest.fixture
def ingester(broker: Mosquitto, plain_db: Any, topic_prefix: str) -> Iterator[str]:
    """The real ingester for this test's tenant, on a fresh database; yields its DSN."""
    from mimamori.cloud.settings import Settings
    from mimamori.cloud.testing import IngesterThread, prepare_database, tenant_subscription

    prepare_database(plain_db.dsn, tenant=topic_prefix, gateways=[GW])
    settings = Settings(dsn=plain_db.dsn, mqtt_port=broker.port, batch_delay_s=0.05,
                        mqtt_client_id=f"ing-{topic_prefix}")  # fmt: skip
    with IngesterThread(settings=settings, subscription=tenant_subscription(topic_prefix)):
        yield plain_db.dsn


def query(dsn: str, sql: str, *params: object) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql, params).fetchall()


def receipts(dsn: str) -> dict[int, str]:
    rows = query(dsn, "SELECT seq, kind FROM receipts WHERE gateway = %s", GW)
    return {seq: kind for seq, kind in rows}


def _has_receipts(dsn: str, n: int) -> Callable[[], bool]:
    return lambda: len(receipts(dsn)) >= n


def flow_batch(i: int) -> FlowBatch:
    rows = [
        FlowSummary(ts=time.time(), local_ip=f"192.168.1.{j + 1}", remote_ip="198.51.100.9",
                    remote_port=443, proto=6, bytes_out=i * 100 + j, conns=1)
        for j in range(5)
    ]  # fmt: skip
    return FlowBatch(gateway=GW, seq=0, sent_at=time.time(), interval_s=60, flows=rows)


def test_broker_restart_without_persistence_loses_nothing(
    broker: Mosquitto, topic_prefix: str, ingester: str, tmp_path: Path
) -> None:
    dsn = ingester
    outbox = Outbox(path=tmp_path / "outbox.db")
    pub = Publisher(
        outbox=outbox, tenant=topic_prefix, gateway=GW, host=broker.host, port=broker.port,
        ssl_context=None, insecure_plaintext=True, client_id=f"{topic_prefix}-{GW}",
        window=16, ack_timeout=1.0, keepalive=5, backoff=Backoff(initial=0.1, maximum=0.5),
    )  # fmt: skip
    stop = threading.Event()
    loop = threading.Thread(target=drive, args=([pub], stop), kwargs={"drain": 5.0})
    loop.start()
    appended: dict[int, str] = {}
    try:
        wait_until(lambda: pub.connected, 10, "the publisher to connect")
        # Produce steadily across the outage: 5 s at about 60 messages a second.
        start = time.monotonic()
        restarted = False
        i = 0
        while time.monotonic() - start < 5.0:
            i += 1
            seq = outbox.append(
                flow_batch(i) if i % 4 == 0
                else Heartbeat(gateway=GW, seq=0, sent_at=time.time(), uptime_s=float(i))
            )  # fmt: skip
            assert seq is not None
            appended[seq] = "flows" if i % 4 == 0 else "heartbeat"
            if not restarted and time.monotonic() - start > 1.5:
                broker.restart(downtime=1.5)  # everything the broker held is gone
                restarted = True
            time.sleep(0.015)
        wait_until(lambda: outbox.depth() == 0, 60, "the outbox to drain after the outage")
    finally:
        stop.set()
        loop.join(20)
        outbox.close()
    assert pub.stats.connects >= 2, "the publisher never saw the outage"
    stored = receipts(dsn)
    missing = set(appended) - set(stored)
    assert not missing, f"{len(missing)} message(s) lost"
    assert all(stored[s] == kind for s, kind in appended.items())
    # Exactly once: one heartbeat row per heartbeat message, five flow rows per batch.
    beats = [s for s, k in appended.items() if k == "heartbeat"]
    assert query(dsn, "SELECT count(*), count(DISTINCT seq) FROM heartbeats WHERE gateway = %s",
                 GW) == [(len(beats), len(beats))]  # fmt: skip
    batches = len(appended) - len(beats)
    assert query(dsn, "SELECT count(*) FROM flows WHERE gateway = %s", GW) == [(5 * batches,)]


def write_agent_config(tmp_path: Path, broker: Mosquitto, tenant: str) -> Path:
    path = tmp_path / "edge.toml"
    path.write_text(f"""
[gateway]
id = "{GW}"
tenant = "{tenant}"

[mqtt]
host = "{broker.host}"
port = {broker.port}
insecure_plaintext = true
client_id = "{tenant}-{GW}"
keepalive_s = 5
ack_timeout_s = 1
backoff_initial_s = 0.1
backoff_max_s = 0.5

[outbox]
path = "{tmp_path / "outbox.db"}"

[heartbeat]
interval_s = 0.02
""")
    return path


def start_agent(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "mimamori", "edge", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip


def test_agent_killed_mid_stream_every_number_stored_exactly_once(
    broker: Mosquitto, topic_prefix: str, ingester: str, tmp_path: Path
) -> None:
    dsn = ingester
    config = write_agent_config(tmp_path, broker, topic_prefix)
    # A second subscriber sees everything on the wire (it never acknowledges anything).
    wire = Acker(broker, topic_prefix)
    wire.paused = True
    try:
        for round_ in range(2):
            agent = start_agent(config)
            # Let it run long enough to have messages stored, in flight and acknowledged.
            target = len(receipts(dsn)) + 40
            wait_until(_has_receipts(dsn, target), 30, "receipts before the kill")
            time.sleep(0.05 * (round_ + 1))
            agent.send_signal(signal.SIGKILL)
            agent.wait(10)
            assert agent.stderr is not None
            agent.stderr.close()
        # A last run drains what the killed ones left, then stops cleanly.
        agent = start_agent(config)
        # Running (its signal handler in place) once it stores new heartbeats.
        wait_until(_has_receipts(dsn, len(receipts(dsn)) + 20), 30, "the last run's receipts")
        agent.send_signal(signal.SIGTERM)
        _, err = agent.communicate(timeout=30)
        assert agent.returncode == 0, err.decode()[-2000:]
        with Outbox(path=tmp_path / "outbox.db", check=True) as box:
            assert box.depth() == 0, "the clean stop should have drained the outbox"
        time.sleep(0.5)  # the last will reaches the wire observer
    finally:
        wire.close()

    on_wire: dict[int, set[bytes]] = {}
    for r in wire.snapshot():
        on_wire.setdefault(r.seq, set()).add(r.payload)
    # No number was ever given to two different messages, kill -9 or not: every copy of a
    # number on the wire is byte for byte the same message.
    reused = {seq for seq, copies in on_wire.items() if len(copies) > 1}
    assert not reused, f"sequence numbers reused: {sorted(reused)[:5]}"
    # Everything that was published is stored, and the database holds each number once.
    stored = receipts(dsn)
    assert set(on_wire) <= set(stored)
    beats = [s for s, k in stored.items() if k == "heartbeat"]
    assert len(beats) > 80
    assert query(dsn, "SELECT count(*), count(DISTINCT seq) FROM heartbeats WHERE gateway = %s",
                 GW) == [(len(beats), len(beats))]  # fmt: skip
    # Each killed agent's will and the clean stop's will told the cloud: offline at the end.
    offline = [r for r in wire.snapshot() if r.state == "offline"]
    assert len(offline) >= 3
    wait_until(lambda: query(dsn, "SELECT state FROM gateways WHERE id = %s", GW) == [("offline",)],
               10, "the gateway marked offline")  # fmt: skip
