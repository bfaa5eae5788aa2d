"""The MQTT publisher against a real Mosquitto, with a protocol-speaking acker on the far side."""

from __future__ import annotations

import contextlib
import random
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mimamori.edge.errors import PublisherError
from mimamori.edge.outbox import Outbox
from mimamori.edge.publisher import Backoff, Publisher, drive
from mimamori.protocol import Command, Heartbeat, Status
from mimamori.simulators.services import Mosquitto, free_port, wait_port
from test_delivery_acker import Acker, wait_until

GW = "gw1"


def heartbeat(i: int = 0) -> Heartbeat:
    return Heartbeat(gateway=GW, seq=0, sent_at=time.time(), uptime_s=float(i))


def make_publisher(
    broker: Mosquitto, tenant: str, outbox: Outbox, gateway: str = GW, **kw: object
) -> Publisher:
    # Tests reuse gateway ids across tenants on one broker: keep their sessions apart.
    kw.setdefault("client_id", f"{tenant}-{gateway}")
    kw.setdefault("ssl_context", None)
    kw.setdefault("insecure_plaintext", True)
    kw.setdefault("backoff", Backoff(initial=0.05, maximum=0.3))
    return Publisher(
        outbox=outbox, tenant=tenant, gateway=gateway, host=broker.host, port=broker.port,
        **kw,
    )  # fmt: skip


@contextlib.contextmanager
def running(*publishers: Publisher, drain: float = 1.0) -> Iterator[threading.Event]:
    stop = threading.Event()
    thread = threading.Thread(target=drive, args=(publishers, stop), kwargs={"drain": drain})
    thread.start()
    try:
        yield stop
    finally:
        stop.set()
        thread.join(15)
        assert not thread.is_alive(), "publisher loop did not stop"


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    with Outbox(path=tmp_path / "outbox.db") as box:
        yield box


@pytest.fixture
def acker(broker: Mosquitto, topic_prefix: str) -> Iterator[Acker]:
    a = Acker(broker, topic_prefix)
    yield a
    a.close()


def test_backoff_is_capped_jittered_and_resets() -> None:
    b = Backoff(initial=1.0, maximum=8.0, rng=random.Random(7))
    delays = [b.next_delay() for _ in range(8)]
    ceilings = [1, 2, 4, 8, 8, 8, 8, 8]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert len(set(delays)) == len(delays)  # jittered, not lockstep
    b.reset()
    assert b.next_delay() <= 1.0


def test_refuses_plaintext_unless_asked(outbox: Outbox, broker: Mosquitto) -> None:
    with pytest.raises(PublisherError, match="no TLS context"):
        make_publisher(broker, "t", outbox, insecure_plaintext=False)


def test_publishes_in_order_and_cloud_acks_empty_the_outbox(
    broker: Mosquitto, topic_prefix: str, outbox: Outbox, acker: Acker
) -> None:
    stored = [outbox.append(heartbeat(i)) for i in range(60)]
    pub = make_publisher(broker, topic_prefix, outbox, window=8)
    with running(pub):
        wait_until(lambda: outbox.depth() == 0, 20, "an empty outbox")
        # New messages keep flowing once the backlog is gone.
        late = [outbox.append(heartbeat(i)) for i in range(5)]
        wait_until(lambda: outbox.depth() == 0, 20, "the late messages acked")
    hb = acker.seqs(GW, "heartbeat")
    assert hb == stored + late  # in sequence order, each once (nothing was lost or resent)
    status = acker.seqs(GW, "status")
    # "online" comes ahead of the backlog although its number is newer.
    assert acker.snapshot()[0].kind == "status" and status[0] > stored[-1]
    assert pub.stats.republished == 0 and pub.stats.acked_messages == 66
    # The clean shutdown asked the broker for our will: "offline" arrives with the
    # number reserved at connect time, which no other message uses.
    wait_until(lambda: len(acker.seqs(GW, "status")) == 2, 10, "the offline status")
    offline = [r for r in acker.snapshot() if r.state == "offline"]
    assert len(offline) == 1 and stored[-1] < offline[0].seq < status[0]
    assert offline[0].seq not in hb


def test_window_bounds_unacknowledged_messages(
    broker: Mosquitto, topic_prefix: str, outbox: Outbox, acker: Acker
) -> None:
    acker.paused = True
    for i in range(40):
        outbox.append(heartbeat(i))
    pub = make_publisher(broker, topic_prefix, outbox, window=5, ack_timeout=60)
    with running(pub):
        wait_until(lambda: len(acker.seqs(GW)) >= 5, 10, "a window's worth")
        time.sleep(0.5)
        assert len(acker.seqs(GW)) == 5  # status + 4 heartbeats, then it waits
        acker.paused = False
        acker.ack(GW, acker.seqs(GW))
        wait_until(lambda: outbox.depth() == 0, 20, "everything acked")
    assert sorted(set(acker.seqs(GW, "heartbeat"))) == acker.seqs(GW, "heartbeat")


def test_unacknowledged_messages_are_published_again(
    broker: Mosquitto, topic_prefix: str, outbox: Outbox
) -> None:
    acker = Acker(broker, topic_prefix, ack_from=2)  # ignores every first delivery
    try:
        stored = [outbox.append(heartbeat(i)) for i in range(10)]
        pub = make_publisher(broker, topic_prefix, outbox, window=4, ack_timeout=0.3)
        with running(pub):
            wait_until(lambda: outbox.depth() == 0, 20, "acks after re-publication")
        hb = acker.seqs(GW, "heartbeat")
        assert sorted(set(hb)) == stored
        assert all(hb.count(s) >= 2 for s in stored)
        assert pub.stats.republished >= len(stored)
    finally:
        acker.close()


def test_refused_messages_do_not_block_the_window(
    broker: Mosquitto, topic_prefix: str, outbox: Outbox
) -> None:
    """Messages the cloud never acknowledges (quarantined) leave the window to the others."""
    poison = {3.0, 4.0, 7.0}
    acker = Acker(
        broker, topic_prefix,
        refuse=lambda m: isinstance(m, Heartbeat) and m.uptime_s in poison,
    )  # fmt: skip
    try:
        seqs = [outbox.append(heartbeat(i)) for i in range(30)]
        bad = [s for i, s in enumerate(seqs) if float(i) in poison]
        # A window of 3 would be blocked for good by three refused messages.
        pub = make_publisher(broker, topic_prefix, outbox, window=3, ack_timeout=0.3)
        with running(pub, drain=0):
            wait_until(lambda: outbox.depth() == 3, 20, "everything but the refused acked")
            assert sorted(p.seq for p in outbox.pending()) == bad
            wait_until(lambda: pub.stats.set_aside == 3, 10, "the refused set aside")
            # Set aside, they are re-sent only every 10 ack timeouts (3 s), not every 0.3 s.
            before = len(acker.seqs(GW))
            time.sleep(1.0)
            assert len(acker.seqs(GW)) - before <= 3
            late = outbox.append(heartbeat(100))
            wait_until(lambda: outbox.get(late) is None, 10, "new messages still flow")
    finally:
        acker.close()


def test_lost_connection_fires_will_and_reconnects(
    broker: Mosquitto, topic_prefix: str, outbox: Outbox, acker: Acker
) -> None:
    pub = make_publisher(broker, topic_prefix, outbox, keepalive=5)
    with running(pub):
        wait_until(lambda: pub.connected, 10, "a connection")
        first = outbox.append(heartbeat())
        wait_until(lambda: outbox.depth() == 0, 10, "the first heartbeat acked")
        sock = pub.socket()
        assert sock is not None
        sock.shutdown(socket.SHUT_RDWR)  # the network drops us: no DISCONNECT packet
        wait_until(lambda: pub.stats.connects == 2, 10, "a reconnection")
        second = outbox.append(heartbeat())
        wait_until(lambda: outbox.depth() == 0, 10, "the second heartbeat acked")
    wait_until(lambda: len(acker.seqs(GW, "status")) == 4, 10, "two online, two offline")
    states = [(r.state, r.seq) for r in acker.snapshot() if r.kind == "status"]
    offline = [seq for state, seq in states if state == "offline"]
    online = [seq for state, seq in states if state == "online"]
    assert len(online) == 2 and len(offline) == 2  # will on the drop, and on the shutdown
    every = offline + online + [first, second]
    assert len(set(every)) == len(every)  # each will had its own reserved number
    assert acker.seqs(GW, "heartbeat") == [first, second]
    reasons = [m.reason for m in acker.messages(GW, "status") if isinstance(m, Status)]
    assert [r for r in reasons if r != "connection ended"] == ["started", "reconnected"]


def test_commands_reach_their_hooks_once(
    broker: Mosquitto, topic_prefix: str, outbox: Outbox, acker: Acker
) -> None:
    calls: list[str] = []

    def boom(cmd: Command) -> None:
        raise RuntimeError("hook failure must not stop delivery")

    pub = make_publisher(
        broker, topic_prefix, outbox,
        commands={"resend_inventory": lambda c: calls.append(c.id), "refresh_intel": boom},
    )  # fmt: skip
    now = time.time()

    def cmd(id_: str, name: str, expires: float = now + 60) -> Command:
        return Command(id=id_, command=name, issued_at=now, expires_at=expires)

    with running(pub):
        wait_until(lambda: pub.connected, 10, "a connection")
        time.sleep(0.2)  # subscriptions in place
        acker.command(GW, cmd("c1", "resend_inventory"))
        acker.command(GW, cmd("c1", "resend_inventory"))  # redelivery: same id
        acker.command(GW, cmd("c2", "resend_inventory", expires=now - 1))
        acker.command(GW, cmd("c3", "rotate_credential"))  # no handler
        acker.command(GW, cmd("c4", "refresh_intel"))
        acker.command(GW, b'{"kind": "command", "v": 1}')  # malformed
        acker.command(GW, cmd("c5", "resend_inventory"))
        wait_until(lambda: calls == ["c1", "c5"], 10, "both resend_inventory commands")
        wait_until(lambda: pub.stats.bad_downstream == 1, 10, "the malformed one counted")
        outbox.append(heartbeat())
        wait_until(lambda: outbox.depth() == 0, 10, "delivery still working")
    assert pub.stats.commands_ignored == 2 and pub.stats.commands == 3


def test_many_publishers_share_one_thread(
    broker: Mosquitto, topic_prefix: str, tmp_path: Path, acker: Acker
) -> None:
    boxes = [Outbox(path=tmp_path / f"gw{i}.db", synchronous="OFF", check=False) for i in range(25)]
    pubs = [
        make_publisher(broker, topic_prefix, box, gateway=f"gw{i}", window=4)
        for i, box in enumerate(boxes)
    ]
    try:
        with running(*pubs):
            for _ in range(8):
                for i, box in enumerate(boxes):
                    box.append(Heartbeat(gateway=f"gw{i}", seq=0, sent_at=time.time(), uptime_s=1))
            wait_until(lambda: all(b.depth() == 0 for b in boxes), 30, "all outboxes empty")
            assert threading.active_count() < 10  # no thread per gateway
        for i in range(len(boxes)):
            assert len(set(acker.seqs(f"gw{i}", "heartbeat"))) == 8
    finally:
        for box in boxes:
            box.close()


# --- TLS and credentials -------------------------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def tls_broker() -> Iterator[tuple[Mosquitto, Path, int]]:
    """A broker with a TLS listener (certificate for 127.0.0.1) and one gateway account."""
    # Mosquitto started as root reads its files after dropping to its own user: keep them
    # outside pytest's private (0700) temporary tree.
    d = Path(tempfile.mkdtemp(prefix="mimamori-tls-"))
    d.chmod(0o755)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
             "-keyout", "ca.key", "-out", "ca.pem", cwd=d)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
             "-keyout", "server.key", "-out", "server.csr", cwd=d)  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.pem", cwd=d)  # fmt: skip
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=other",
             "-keyout", "other.key", "-out", "other.pem", cwd=d)  # fmt: skip
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(d / "passwd"), "gw1", "right-pass"],
                   check=True, capture_output=True)  # fmt: skip
    for f in d.iterdir():
        f.chmod(0o644)  # mosquitto may drop privileges before reading them
    tls_port = free_port()
    extra = "\n".join([
        f"listener {tls_port} 127.0.0.1",
        f"cafile {d / 'ca.pem'}",
        f"certfile {d / 'server.pem'}",
        f"keyfile {d / 'server.key'}",
        f"password_file {d / 'passwd'}",
    ])  # fmt: skip
    try:
        with Mosquitto(extra_config=extra) as broker:
            wait_port(tls_port)
            yield broker, d, tls_port
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_tls_with_gateway_credential(
    tls_broker: tuple[Mosquitto, Path, int], topic_prefix: str, outbox: Outbox
) -> None:
    broker, certs, tls_port = tls_broker
    acker = Acker(broker, topic_prefix)
    try:
        good = ssl.create_default_context(cafile=str(certs / "ca.pem"))
        pub = Publisher(
            outbox=outbox, tenant=topic_prefix, gateway=GW, host="127.0.0.1", port=tls_port,
            ssl_context=good, username="gw1", password="right-pass", client_id=topic_prefix,
            backoff=Backoff(initial=0.05, maximum=0.2),
        )  # fmt: skip
        seq = outbox.append(heartbeat())
        with running(pub):
            wait_until(lambda: outbox.depth() == 0, 15, "delivery over TLS")
        assert acker.seqs(GW, "heartbeat") == [seq]
    finally:
        acker.close()


@pytest.mark.parametrize("failure", ["wrong CA", "wrong password"])
def test_tls_refuses_wrong_ca_or_password(
    tls_broker: tuple[Mosquitto, Path, int], topic_prefix: str, outbox: Outbox, failure: str
) -> None:
    _, certs, tls_port = tls_broker
    ca = "other.pem" if failure == "wrong CA" else "ca.pem"
    pub = Publisher(
        outbox=outbox, tenant=topic_prefix, gateway=GW, host="127.0.0.1", port=tls_port,
        ssl_context=ssl.create_default_context(cafile=str(certs / ca)),
        username="gw1", password="wrong-pass" if failure == "wrong password" else "right-pass",
        client_id=topic_prefix,
        backoff=Backoff(initial=0.05, maximum=0.2),
    )  # fmt: skip
    outbox.append(heartbeat())
    with running(pub, drain=0):
        wait_until(lambda: pub.stats.connect_failures >= 2, 10, "refused connections")
        assert not pub.connected
    assert outbox.depth() == 1  # the heartbeat is kept (and no online status was stored)


def test_a_failing_step_does_not_stop_the_loop(
    broker: Mosquitto, topic_prefix: str, outbox: Outbox, acker: Acker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """A bug in one step (here: an unexpected error from the outbox) is logged and counted;
    the loop, and delivery, carry on."""
    real = outbox.pending
    calls = {"n": 0}

    def flaky(after_seq: int = -1, limit: int = 100) -> list[Any]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("injected fault")
        return real(after_seq, limit)

    monkeypatch.setattr(outbox, "pending", flaky)
    seq = outbox.append(heartbeat())
    pub = make_publisher(broker, topic_prefix, outbox)
    with running(pub):
        wait_until(lambda: outbox.get(seq) is None, 10, "delivery after the fault")
    assert pub.stats.loop_errors == 1
