"""Fault suite, the parts the delivery and ingest tests leave out: the ingester process
killed with SIGKILL mid-stream, the database restarted under real gateways, and a gateway
cut off from the broker for half a minute.

Each test drives the real Publisher and Outbox (as the agent does, through ``drive``) while
messages are produced, injects the fault, lets the outbox drain, and then checks the
database holds every sequence number exactly once: one receipt per number, one heartbeat
row per heartbeat, five flow rows per flow batch.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from mimamori.edge.outbox import Outbox
from mimamori.edge.publisher import Backoff, Publisher, drive
from mimamori.protocol import Heartbeat
from mimamori.simulators.fleet import Link
from mimamori.simulators.services import Mosquitto, Postgres
from test_delivery import GW, flow_batch, query, receipts
from test_delivery_acker import wait_until

pytestmark = pytest.mark.fault


def make_publisher(outbox: Outbox, tenant: str, port: int) -> Publisher:
    """A gateway publisher with short timers, so a test sees several resend rounds."""
    return Publisher(
        outbox=outbox, tenant=tenant, gateway=GW, host="127.0.0.1", port=port,
        ssl_context=None, insecure_plaintext=True, client_id=f"{tenant}-{GW}",
        window=16, ack_timeout=1.0, keepalive=5, backoff=Backoff(initial=0.1, maximum=1.0),
    )  # fmt: skip


@contextmanager
def gateway(pub: Publisher) -> Iterator[None]:
    """Run the publisher's I/O loop in a thread for the duration of the block."""
    stop = threading.Event()
    loop = threading.Thread(target=drive, args=([pub], stop), kwargs={"drain": 2.0})
    loop.start()
    try:
        yield
    finally:
        stop.set()
        loop.join(20)


def produce(
    outbox: Outbox, seconds: float, events: dict[float, Callable[[], None]]
) -> dict[int, str]:
    """Append a heartbeat or a flow batch about every 20 ms for ``seconds``; run each event
    once its offset (seconds from the start) has passed. Returns seq -> kind."""
    appended: dict[int, str] = {}
    pending = sorted(events.items())
    start = time.monotonic()
    i = 0
    while time.monotonic() - start < seconds:
        i += 1
        if i % 4 == 0:
            seq = outbox.append(flow_batch(i))
            kind = "flows"
        else:
            seq = outbox.append(Heartbeat(gateway=GW, seq=0, sent_at=time.time(), uptime_s=i))
            kind = "heartbeat"
        assert seq is not None, "the outbox dropped a message"
        appended[seq] = kind
        while pending and time.monotonic() - start >= pending[0][0]:
            pending.pop(0)[1]()
        time.sleep(0.02)
    for _, late in pending:
        late()
    return appended


def assert_exactly_once(dsn: str, appended: dict[int, str]) -> None:
    """Every appended number stored once, with its own kind and its rows once."""
    stored = receipts(dsn)
    missing = set(appended) - set(stored)
    assert not missing, f"{len(missing)} message(s) lost, e.g. {sorted(missing)[:3]}"
    # Besides ours, only the publisher's own "online" status messages (one per connect).
    extra = {stored[s] for s in set(stored) - set(appended)}
    assert extra <= {"status"}, f"receipts of kinds never appended: {extra}"
    assert all(stored[s] == kind for s, kind in appended.items())
    beats = sum(1 for k in appended.values() if k == "heartbeat")
    assert query(dsn, "SELECT count(*), count(DISTINCT seq) FROM heartbeats WHERE gateway = %s",
                 GW) == [(beats, beats)]  # fmt: skip
    batches = len(appended) - beats
    # Five rows per batch and no row twice: flow_batch gives every row its own bytes_out.
    assert query(dsn, "SELECT count(*), count(DISTINCT bytes_out) FROM flows WHERE gateway = %s",
                 GW) == [(5 * batches, 5 * batches)]  # fmt: skip


def start_ingester(dsn: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    """``mimamori cloud ingest`` as its own process, logging to ``log``."""
    env = {**os.environ, "MIMAMORI_DSN": dsn}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "mimamori", "cloud", "ingest", "--mqtt-port", str(port),
             "--client-id", "fault-ingester", "--batch-delay", "0.05", "--log-format", "json"],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip


def test_ingester_killed_mid_stream_every_number_stored_once(
    plain_db: object, topic_prefix: str, tmp_path: Path
) -> None:
    from mimamori.cloud.testing import prepare_database

    dsn: str = plain_db.dsn  # type: ignore[attr-defined]
    prepare_database(dsn, tenant=topic_prefix, gateways=[GW])
    log = tmp_path / "ingest.log"
    # A broker of its own: the process joins the fleet-wide shared subscription.
    with Mosquitto() as broker:
        procs = [start_ingester(dsn, broker.port, log)]
        outbox = Outbox(path=tmp_path / "outbox.db")
        pub = make_publisher(outbox, topic_prefix, broker.port)
        try:
            with gateway(pub):
                wait_until(lambda: pub.connected, 10, "the publisher to connect")

                def kill() -> None:
                    procs[-1].send_signal(signal.SIGKILL)  # no flush, no acks, no goodbye
                    procs[-1].wait(10)

                def restart() -> None:
                    procs.append(start_ingester(dsn, broker.port, log))

                appended = produce(outbox, 6.0, {2.0: kill, 3.5: restart})
                wait_until(lambda: outbox.depth() == 0, 45, "the outbox to drain")
        finally:
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
                    p.wait(20)
            outbox.close()
    assert procs[0].returncode == -signal.SIGKILL
    assert procs[1].returncode == 0, log.read_text()[-2000:]
    assert len(appended) > 150
    assert_exactly_once(dsn, appended)


def test_database_restart_under_gateways_every_number_stored_once(
    broker: Mosquitto, topic_prefix: str, tmp_path: Path
) -> None:
    from mimamori.cloud.settings import Settings
    from mimamori.cloud.testing import IngesterThread, prepare_database, tenant_subscription

    with Postgres(timescaledb=False) as pg:
        prepare_database(pg.dsn, tenant=topic_prefix, gateways=[GW])
        settings = Settings(dsn=pg.dsn, mqtt_port=broker.port, batch_delay_s=0.05,
                            mqtt_client_id=f"ing-{topic_prefix}")  # fmt: skip
        outbox = Outbox(path=tmp_path / "outbox.db")
        pub = make_publisher(outbox, topic_prefix, broker.port)
        held: list[int] = []
        try:
            ingester = IngesterThread(
                settings=settings, subscription=tenant_subscription(topic_prefix)
            )
            with ingester, gateway(pub):
                wait_until(lambda: pub.connected, 10, "the publisher to connect")

                def down() -> None:
                    pg.stop()  # fast shutdown while batches are being written

                def up() -> None:
                    held.append(outbox.depth())  # what waited out the outage
                    pg.start()

                appended = produce(outbox, 6.0, {1.5: down, 4.0: up})
                wait_until(lambda: outbox.depth() == 0, 45, "the outbox to drain")
        finally:
            outbox.close()
        assert held and held[0] > 16, "the outage should have kept messages unacknowledged"
        assert_exactly_once(pg.dsn, appended)


@pytest.mark.slow
def test_gateway_cut_off_for_half_a_minute_every_number_stored_once(
    broker: Mosquitto, topic_prefix: str, tmp_path: Path, plain_db: object
) -> None:
    from mimamori.cloud.settings import Settings
    from mimamori.cloud.testing import IngesterThread, prepare_database, tenant_subscription

    dsn: str = plain_db.dsn  # type: ignore[attr-defined]
    prepare_database(dsn, tenant=topic_prefix, gateways=[GW])
    settings = Settings(dsn=dsn, mqtt_port=broker.port, batch_delay_s=0.05,
                        mqtt_client_id=f"ing-{topic_prefix}")  # fmt: skip
    link = Link(upstream=(broker.host, broker.port)).start()
    outbox = Outbox(path=tmp_path / "outbox.db")
    pub = make_publisher(outbox, topic_prefix, link.port)
    during: list[int] = []
    try:
        ingester = IngesterThread(settings=settings, subscription=tenant_subscription(topic_prefix))
        with ingester, gateway(pub):
            wait_until(lambda: pub.connected, 10, "the publisher to connect")

            def restore() -> None:
                during.append(len(receipts(dsn)))
                link.restore()

            # Cut at 2 s, restored at 32 s: the gateway keeps producing meanwhile and
            # its reconnect attempts are refused throughout.
            appended = produce(outbox, 34.0, {2.0: link.cut, 32.0: restore})
            wait_until(lambda: outbox.depth() == 0, 45, "the outbox to drain")
    finally:
        link.close()
        outbox.close()
    assert pub.stats.connects >= 2
    # Almost nothing reached the cloud while the link was down.
    assert during and during[0] < len(appended) // 5
    assert_exactly_once(dsn, appended)
