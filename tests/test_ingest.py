"""The ingester against a real broker and database: exactly-once rows, acks, quarantine,
graceful shutdown, database restart."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import pytest
from mimamori.cloud.settings import Settings
from mimamori.cloud.testing import IngesterThread, prepare_database, tenant_subscription
from mimamori.protocol import (
    Ack,
    Alert,
    AlertBatch,
    Device,
    DeviceBatch,
    FlowBatch,
    FlowSummary,
    Heartbeat,
    SensorMessage,
    Status,
    decode_down,
    encode,
    kind_of,
    topics,
)
from mimamori.simulators.services import Postgres
from paho.mqtt.enums import CallbackAPIVersion

SEQ0 = 1_700_000_000_000_000


class FakeGateway:
    """Publishes like a gateway: keeps every message until an Ack covers it."""

    def __init__(self, port: int, tenant: str, gateway: str) -> None:
        self.tenant, self.gateway = tenant, gateway
        self.unacked: dict[int, tuple[str, bytes]] = {}
        self.acked: set[int] = set()
        self.acks: list[Ack] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"{tenant}-{gateway}-{id(self):x}",
            protocol=mqtt.MQTTv5,
        )  # fmt: skip
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        deadline = time.monotonic() + 10
        while not self.client.is_connected():
            assert time.monotonic() < deadline, "fake gateway cannot connect"
            time.sleep(0.02)
        info = self.client.subscribe(topics.ack(tenant, gateway), qos=1)
        assert info[0] == mqtt.MQTT_ERR_SUCCESS
        time.sleep(0.2)

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        ack = decode_down(msg.payload)
        assert isinstance(ack, Ack)
        with self._lock:
            self.acks.append(ack)
            for first, last in ack.ranges:
                for seq in range(first, last + 1):
                    self.acked.add(seq)
                    self.unacked.pop(seq, None)

    def publish(self, message: Any, *, raw: bytes | None = None, topic: str | None = None) -> None:
        topic = topic or topics.up(self.tenant, self.gateway, kind_of(message))
        payload = raw if raw is not None else encode(message)
        if message is not None:
            with self._lock:
                self.unacked[message.seq] = (topic, payload)
        self.client.publish(topic, payload, qos=1).wait_for_publish(10)

    def resend_unacked(self) -> int:
        with self._lock:
            pending = list(self.unacked.values())
        for topic, payload in pending:
            self.client.publish(topic, payload, qos=1).wait_for_publish(10)
        return len(pending)

    def wait_acked(self, seqs: set[int], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if seqs <= self.acked:
                    return
            time.sleep(0.05)
        with self._lock:
            missing = sorted(seqs - self.acked)
        raise AssertionError(f"not acked after {timeout} s: {missing[:10]} ({len(missing)})")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def flows(n: int, *, seq: int, gateway: str = "gw1", ts: float | None = None) -> FlowBatch:
    t = ts if ts is not None else time.time() - 120
    rows = [
        FlowSummary(
            ts=t, mac="02:00:00:00:00:%02x" % (i % 7), local_ip=f"192.168.1.{i % 7 + 10}",
            remote_ip=f"203.0.113.{i % 250}", remote_port=1000 + i, proto=6, app="TLS",
            sni="example.com", pkts_out=i, pkts_in=2 * i, bytes_out=100 * i,
            bytes_in=1000 + i, conns=1, first_seen=t, last_seen=t + 30,
        )
        for i in range(n)
    ]  # fmt: skip
    return FlowBatch(gateway=gateway, seq=seq, sent_at=time.time(), flows=rows)


def heartbeat(seq: int, gateway: str = "gw1") -> Heartbeat:
    return Heartbeat(gateway=gateway, seq=seq, sent_at=time.time(), uptime_s=100.0,
                     outbox_depth=3, agent_version="0.1.0")  # fmt: skip


@pytest.fixture
def env(db: Any, broker: Any, topic_prefix: str) -> Iterator[tuple[Any, FakeGateway, Settings]]:
    prepare_database(db.dsn, tenant=topic_prefix, gateways=["gw1", "gw2"])
    settings = Settings(dsn=db.dsn, mqtt_port=broker.port, batch_delay_s=0.05,
                        mqtt_client_id=f"ing-{topic_prefix}")  # fmt: skip
    gw = FakeGateway(broker.port, topic_prefix, "gw1")
    yield db, gw, settings
    gw.close()


def _count(dsn: str, sql: str, *params: Any) -> Any:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(sql, params).fetchone()  # type: ignore[arg-type]
    assert row is not None
    return row[0] if len(row) == 1 else row


def test_every_kind_stored_exactly_once_and_acked(env: Any, topic_prefix: str) -> None:
    db, gw, settings = env
    now = time.time()
    messages = [
        flows(500, seq=SEQ0 + 1),
        flows(300, seq=SEQ0 + 2),
        heartbeat(SEQ0 + 3),
        DeviceBatch(gateway="gw1", seq=SEQ0 + 4, sent_at=now, devices=[
            Device(mac="02:00:00:00:00:01", ips=["192.168.1.11"], vendor="Acme",
                   hostname="printer", first_seen=now - 50, last_seen=now),
        ]),
        AlertBatch(gateway="gw1", seq=SEQ0 + 5, sent_at=now, alerts=[
            Alert(id="a1", category="scan", severity="high", detected_at=now,
                  actor="192.168.1.11", summary_en="scan", summary_ja="スキャン",
                  dedup_key="scan:192.168.1.11", evidence={"ports": [22, 23]}),
        ]),
        SensorMessage(gateway="gw1", seq=SEQ0 + 6, sent_at=now, sensor_id="s1",
                      sensor_kind="heartbeat", received_at=now, body={"uptime_s": 5}),
        Status(gateway="gw1", seq=SEQ0 + 8, sent_at=now, state="online"),
    ]  # fmt: skip
    with IngesterThread(settings=settings, subscription=tenant_subscription(topic_prefix)) as ing:
        for m in messages:
            gw.publish(m)
        # The same messages again, as a gateway does after a lost ack.
        for m in messages[:3]:
            gw.publish(m)
        seqs = {m.seq for m in messages}
        gw.wait_acked(seqs)
        deadline = time.monotonic() + 10
        while ing.ingester.duplicates < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ing.ingester.duplicates == 3
    assert _count(db.dsn, "SELECT count(*) FROM flows") == 800
    assert _count(db.dsn, "SELECT sum(bytes_in) FROM flows") == sum(
        1000 + i for i in range(500)
    ) + sum(1000 + i for i in range(300))
    assert _count(db.dsn, "SELECT count(*) FROM receipts") == len(messages)
    assert _count(db.dsn, "SELECT count(*) FROM heartbeats") == 1
    assert _count(db.dsn, "SELECT state, last_seen IS NOT NULL FROM gateways WHERE id='gw1'") == (
        "online", True)  # fmt: skip
    assert _count(db.dsn, "SELECT hostname || ' ' || host(ips[1]) FROM devices") == (
        "printer 192.168.1.11")  # fmt: skip
    assert _count(db.dsn, "SELECT evidence->'ports'->>1 FROM alerts WHERE alert_id='a1'") == "23"
    assert _count(db.dsn, "SELECT count(*) FROM sensor_messages") == 1
    assert _count(db.dsn, "SELECT state FROM sensors WHERE sensor_id='s1'") == "online"
    assert _count(db.dsn, "SELECT count(*) FROM quarantine") == 0
    # Acks carry collapsed ranges of committed (or duplicate) sequence numbers.
    covered = {s for a in gw.acks for lo, hi in a.ranges for s in range(lo, hi + 1)}
    assert covered == {m.seq for m in messages}
    assert ing.metrics.registry.get_sample_value(
        "mimamori_ingest_rows_total", {"table": "flows"}) == 800  # fmt: skip


def test_ack_ranges_collapse_committed_sequences(env: Any, topic_prefix: str) -> None:
    _, gw, settings = env
    # Held back until all are queued, so they commit in one batch and one ack.
    settings = Settings(**{**settings.__dict__, "batch_delay_s": 1.0})
    with IngesterThread(settings=settings, subscription=tenant_subscription(topic_prefix)):
        for seq in [SEQ0 + 10, SEQ0 + 11, SEQ0 + 12, SEQ0 + 20, SEQ0 + 21, SEQ0 + 30]:
            gw.publish(heartbeat(seq))
        gw.wait_acked({SEQ0 + 30})
    ranges = [r for a in gw.acks for r in a.ranges]
    assert sorted(ranges) == [(SEQ0 + 10, SEQ0 + 12), (SEQ0 + 20, SEQ0 + 21), (SEQ0 + 30,) * 2]


@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
def test_hostile_messages_quarantined_good_ones_flow(env: Any, topic_prefix: str) -> None:
    db, gw, settings = env
    t = topic_prefix
    good = [flows(50, seq=SEQ0 + 100 + i) for i in range(5)]
    bad_ip = flows(3, seq=SEQ0 + 200)
    bad_ip.flows[1].remote_ip = "not-an-ip"  # valid for the schema, not for inet
    hostile: list[tuple[str, bytes]] = [
        (topics.up(t, "gw1", "flows"), b"\x00garbage\xff" * 10),
        (topics.up(t, "gw1", "heartbeat"), b'{"v":1,"kind":"heartbeat","gateway":"gw1"}'),
        (topics.up(t, "gw1", "flows"), b"{" + b" " * (300 * 1024) + b"}"),
        # gw1's topic, gw2's identity in the payload
        (topics.up(t, "gw1", "heartbeat"), encode(heartbeat(SEQ0 + 201, gateway="gw2"))),
        (topics.up(t, "ghost", "heartbeat"), encode(heartbeat(SEQ0 + 202, gateway="ghost"))),
        (topics.up(t, "gw1", "flows"), encode(bad_ip)),
        (f"{topics.UP}/{t}/gw1/nonsense", b"{}"),
    ]
    with IngesterThread(settings=settings, subscription=tenant_subscription(t)) as ing:
        for i, (topic, payload) in enumerate(hostile):
            gw.client.publish(topic, payload, qos=1).wait_for_publish(10)
            gw.publish(good[i % len(good)])
        gw.wait_acked({m.seq for m in good})
        deadline = time.monotonic() + 10
        while ing.ingester.quarantined < len(hostile) and time.monotonic() < deadline:
            time.sleep(0.05)
    with psycopg.connect(db.dsn) as conn:
        reasons = sorted(r[0] for r in conn.execute("SELECT reason FROM quarantine"))
        sizes = conn.execute("SELECT max(length(payload)), max(payload_size) FROM quarantine")
        max_kept, max_size = sizes.fetchone()  # type: ignore[misc]
    assert reasons == sorted(["malformed", "schema", "too_large", "topic_mismatch",
                              "unknown_gateway", "invalid_value", "topic_mismatch"])  # fmt: skip
    assert max_kept <= settings.quarantine_bytes < max_size
    assert _count(db.dsn, "SELECT count(*) FROM flows") == 250
    # gw1's own unstorable message is kept in quarantine and acknowledged, so it cannot
    # stall gw1's window; nothing is acknowledged for an identity the sender lacks.
    assert SEQ0 + 200 in gw.acked
    assert SEQ0 + 201 not in gw.acked and SEQ0 + 202 not in gw.acked


@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
def test_refused_message_resent_is_quarantined_once_and_acked_each_time(
    env: Any, topic_prefix: str
) -> None:
    db, gw, settings = env
    bad = flows(3, seq=SEQ0 + 300)
    bad.flows[0].local_ip = "bad\x00ip"  # schema-valid, refused by the store
    wire = encode(bad)
    with IngesterThread(settings=settings, subscription=tenant_subscription(topic_prefix)):
        for _ in range(3):  # a gateway re-sending it after each ack timeout
            gw.client.publish(topics.up(topic_prefix, "gw1", "flows"), wire, qos=1)
            gw.publish(flows(1, seq=SEQ0 + 301))
            gw.wait_acked({SEQ0 + 300, SEQ0 + 301})
            with gw._lock:
                gw.acked.clear()
    assert _count(db.dsn, "SELECT count(*) FROM quarantine") == 1
    assert _count(db.dsn, "SELECT count(*) FROM receipts WHERE kind = 'quarantine'") == 1
    assert _count(db.dsn, "SELECT count(*) FROM flows") == 1


@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
def test_revoked_gateway_and_wrong_tenant_quarantined(
    env: Any, topic_prefix: str, broker: Any
) -> None:
    db, gw, settings = env
    with psycopg.connect(db.dsn) as conn:
        conn.execute("UPDATE gateways SET revoked_at = now() WHERE id = 'gw2'")
        conn.execute("INSERT INTO tenants (id) VALUES ('other')")
        conn.execute("INSERT INTO gateways (id, tenant) VALUES ('gw3', 'other')")
    with IngesterThread(settings=settings, subscription=tenant_subscription(topic_prefix)) as ing:
        for topic, msg in [
            (topics.up(topic_prefix, "gw2", "heartbeat"), heartbeat(SEQ0 + 1, gateway="gw2")),
            (topics.up(topic_prefix, "gw3", "heartbeat"), heartbeat(SEQ0 + 2, gateway="gw3")),
        ]:
            gw.client.publish(topic, encode(msg), qos=1).wait_for_publish(10)
        gw.publish(heartbeat(SEQ0 + 3))
        gw.wait_acked({SEQ0 + 3})
        deadline = time.monotonic() + 10
        while ing.ingester.quarantined < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    with psycopg.connect(db.dsn) as conn:
        reasons = sorted(r[0] for r in conn.execute("SELECT reason FROM quarantine"))
    assert reasons == ["revoked_gateway", "tenant_mismatch"]
    assert _count(db.dsn, "SELECT count(*) FROM heartbeats") == 1


@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
def test_graceful_shutdown_flushes(env: Any, topic_prefix: str) -> None:
    db, gw, settings = env
    # A batch that would wait a minute: only the shutdown flush can commit it.
    settings = Settings(**{**settings.__dict__, "batch_delay_s": 60.0, "batch_rows": 10**6})
    ing = IngesterThread(settings=settings, subscription=tenant_subscription(topic_prefix))
    ing.start()
    seqs = {SEQ0 + i for i in range(1, 6)}
    for seq in seqs:
        gw.publish(flows(100, seq=seq))
    deadline = time.monotonic() + 10
    while ing.metrics.registry.get_sample_value(
        "mimamori_ingest_messages_total", {"kind": "flows"}) != 5:  # fmt: skip
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert _count(db.dsn, "SELECT count(*) FROM flows") == 0  # still held in the batch
    ing.stop()
    assert _count(db.dsn, "SELECT count(*) FROM flows") == 500
    gw.wait_acked(seqs, timeout=5)  # acked before disconnecting


@pytest.mark.fault
def test_database_restart_loses_nothing(broker: Any, topic_prefix: str) -> None:
    with Postgres(timescaledb=False) as pg:
        prepare_database(pg.dsn, tenant=topic_prefix, gateways=["gw1"])
        settings = Settings(dsn=pg.dsn, mqtt_port=broker.port, batch_delay_s=0.05)
        gw = FakeGateway(broker.port, topic_prefix, "gw1")
        sent: set[int] = set()
        with IngesterThread(settings=settings, subscription=tenant_subscription(topic_prefix)):
            for i in range(60):
                if i == 20:
                    pg.stop()  # fast shutdown while batches are in flight
                if i == 35:
                    pg.start()
                seq = SEQ0 + i
                gw.publish(flows(100, seq=seq))
                sent.add(seq)
                time.sleep(0.02)
                if i == 25:
                    # Nothing can be acked while the database is down.
                    acked_during_outage = set(gw.acked)
            # Like a gateway, re-send whatever is still unacknowledged until all is acked.
            deadline = time.monotonic() + 60
            while gw.unacked and time.monotonic() < deadline:
                time.sleep(1.0)
                gw.resend_unacked()
            gw.wait_acked(sent, timeout=30)
        gw.close()
        assert acked_during_outage <= {SEQ0 + i for i in range(20)}
        with psycopg.connect(pg.dsn) as conn:
            n = conn.execute("SELECT count(*) FROM flows").fetchone()
            receipts = conn.execute("SELECT count(*) FROM receipts").fetchone()
    assert receipts == (60,)
    assert n == (60 * 100,)  # nothing lost, nothing twice


@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
def test_backpressure_bounds_what_is_taken_while_the_database_stalls(
    env: Any, topic_prefix: str
) -> None:
    db, gw, settings = env
    settings = Settings(**{**settings.__dict__, "queue_messages": 16, "batch_rows": 4})
    blocker = psycopg.connect(db.dsn)
    blocker.execute("LOCK TABLE receipts IN ACCESS EXCLUSIVE MODE")  # the writer will wait
    seqs = {SEQ0 + i for i in range(200)}
    with IngesterThread(settings=settings, subscription=tenant_subscription(topic_prefix)) as ing:
        for seq in sorted(seqs):
            gw.publish(heartbeat(seq))
        time.sleep(2.0)
        taken = ing.metrics.registry.get_sample_value(
            "mimamori_ingest_messages_total", {"kind": "heartbeat"}
        )
        # One stuck batch (4) + a full queue (16) + the one the reader holds; the rest
        # waits in the broker, unacknowledged by MQTT (receive maximum 16).
        assert taken is not None and taken <= 4 + 16 + 1
        assert not gw.acked
        blocker.rollback()  # the database is back
        gw.wait_acked(seqs, timeout=60)
    blocker.close()
    assert _count(db.dsn, "SELECT count(*) FROM heartbeats") == 200


@pytest.mark.fault
@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
def test_broker_restart_ingester_reconnects(env: Any, topic_prefix: str, broker: Any) -> None:
    db, gw, settings = env
    with IngesterThread(settings=settings, subscription=tenant_subscription(topic_prefix)) as ing:
        gw.publish(heartbeat(SEQ0 + 1))
        gw.wait_acked({SEQ0 + 1})
        broker.restart(downtime=0.5)  # no persistence: the broker forgets every session
        gw2 = FakeGateway(broker.port, topic_prefix, "gw1")  # subscribes to its acks again
        try:
            gw2.publish(heartbeat(SEQ0 + 2))
            # Like a gateway: re-send until acked (the ingester may not be back yet).
            deadline = time.monotonic() + 30
            while SEQ0 + 2 not in gw2.acked and time.monotonic() < deadline:
                time.sleep(1.0)
                gw2.resend_unacked()
            gw2.wait_acked({SEQ0 + 2})
        finally:
            gw2.close()
    reconnects = ing.metrics.registry.get_sample_value(
        "mimamori_ingest_reconnects_total", {"peer": "broker"}
    )
    assert reconnects is not None and reconnects >= 1
    assert _count(db.dsn, "SELECT count(*) FROM heartbeats") == 2
