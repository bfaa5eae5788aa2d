"""A canary touch, end to end through the real components.

firmware modules (CPython, real sockets) -> site listener (Mosquitto written by
edge/sensors.py) -> relay -> outbox (SQLite) -> publisher -> cloud broker -> ingester ->
PostgreSQL (sensor_messages, sensors) -> cloud/sensors.py -> canary_touch and
sensor_offline alerts.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import pytest
from mimamori.cloud.cli import main as cloud_main
from mimamori.cloud.jobs.runner import run_once
from mimamori.cloud.sensors import SensorSeen, canary_alert, offline_alerts
from mimamori.cloud.settings import Settings
from mimamori.cloud.testing import IngesterThread, prepare_database, tenant_subscription
from mimamori.edge.outbox import Outbox
from mimamori.edge.publisher import Backoff, Publisher, drive
from mimamori.edge.sensors import Relay
from mimamori.protocol import SensorMessage, codec, topics
from mimamori.simulators.services import Mosquitto
from paho.mqtt.enums import CallbackAPIVersion
from psycopg.types.json import Jsonb
from test_firmware_mqtt import FRONT, GATEWAY, SiteBroker, node, site, wait_for  # noqa: F401


@contextlib.contextmanager
def running(publisher: Publisher) -> Iterator[None]:
    """The gateway's publisher loop in a thread, stopped (and drained) on exit."""
    stop = threading.Event()
    thread = threading.Thread(target=drive, args=([publisher], stop), kwargs={"drain": 1.0})
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(15)


def test_canary_touch_reaches_the_database_and_becomes_an_alert(
    site: SiteBroker,  # noqa: F811 - the fixture imported above
    broker: Mosquitto,
    plain_db: Any,
    topic_prefix: str,
    tmp_path: Path,
) -> None:
    prepare_database(plain_db.dsn, tenant=topic_prefix, gateways=[GATEWAY])
    settings = Settings(dsn=plain_db.dsn, mqtt_port=broker.port, batch_delay_s=0.05,
                        mqtt_client_id=f"ing-{topic_prefix}")  # fmt: skip
    with Outbox(path=tmp_path / "outbox.db", synchronous="OFF") as outbox:
        relay = Relay(host="127.0.0.1", port=site.port, password=site.relay_password,
                      gateway=GATEWAY, outbox=outbox, known=dict(site.creds),
                      client_id=f"relay-{topic_prefix}")  # fmt: skip
        publisher = Publisher(
            outbox=outbox, tenant=topic_prefix, gateway=GATEWAY, host=broker.host,
            port=broker.port, client_id=f"{topic_prefix}-{GATEWAY}", ssl_context=None,
            insecure_plaintext=True, backoff=Backoff(initial=0.05, maximum=0.3),
        )  # fmt: skip
        relay.start()
        assert relay.wait_ready()
        sensor = node(site, tmp_path)
        with (
            IngesterThread(settings=settings, subscription=tenant_subscription(topic_prefix)),
            running(publisher),
        ):
            sensor.run(iterations=1)
            port = sensor.canary.listening()[0]
            with socket.create_connection(("127.0.0.1", port), timeout=5) as attacker:
                src_port = attacker.getsockname()[1]
                sensor.run(iterations=1)
            sensor.session.close()
            relay.stop()
            with psycopg.connect(plain_db.dsn, autocommit=True) as conn:
                wait_for(lambda: conn.execute(
                    "SELECT count(*) FROM sensor_messages WHERE sensor_kind = 'canary'"
                ).fetchone() == (1,), timeout=20)  # fmt: skip
                # Everything relayed was committed, so the outbox empties.
                wait_for(lambda: outbox.depth() == 0, timeout=20)
                rows = conn.execute(
                    "SELECT gateway, seq, sensor_id, sensor_kind, extract(epoch FROM sent_at),"
                    " extract(epoch FROM ts), body FROM sensor_messages ORDER BY seq"
                ).fetchall()
                state, last_heard, heartbeat_s = conn.execute(
                    "SELECT state, extract(epoch FROM last_heard), heartbeat_s FROM sensors"
                    " WHERE tenant = %s AND sensor_id = %s",
                    (topic_prefix, FRONT),
                ).fetchone() or (None, None, None)
    assert [r[3] for r in rows] == ["self_report", "heartbeat", "canary"]
    gateway, seq, sensor_id, kind, sent_at, received_at, body = rows[2]
    stored = SensorMessage(gateway=gateway, seq=seq, sent_at=float(sent_at),
                           sensor_id=sensor_id, sensor_kind=kind,
                           received_at=float(received_at), body=body)  # fmt: skip
    alert = canary_alert(stored)
    assert (alert.category, alert.severity, alert.actor) == ("canary_touch", "high", "127.0.0.1")
    assert alert.target == f"{FRONT}:{port}" and alert.evidence["src_port"] == src_port
    assert alert.evidence["gateway"] == GATEWAY

    # The same sensor, not heard for longer than three of its heartbeats (its self-report
    # announced the firmware's 60 s), is reported offline.
    assert state == "online" and last_heard is not None and heartbeat_s == 60
    seen = [SensorSeen(GATEWAY, FRONT, float(last_heard), heartbeat_s=heartbeat_s)]
    assert offline_alerts(seen, now=float(last_heard) + 60) == []
    [offline] = offline_alerts(seen, now=float(last_heard) + 181)
    assert offline.category == "sensor_offline" and offline.actor == FRONT


# --- liveness on the cloud's clock, with each sensor's own interval ----------------------

LIVE_GW = "gw-sensors"


@pytest.fixture
def ingested(broker: Mosquitto, plain_db: Any, topic_prefix: str) -> Iterator[str]:
    """The real ingester for this test's tenant on a fresh database; yields its DSN."""
    prepare_database(plain_db.dsn, tenant=topic_prefix, gateways=[LIVE_GW])
    settings = Settings(dsn=plain_db.dsn, mqtt_port=broker.port, batch_delay_s=0.05,
                        mqtt_client_id=f"ing-{topic_prefix}")  # fmt: skip
    with IngesterThread(settings=settings, subscription=tenant_subscription(topic_prefix)):
        yield plain_db.dsn


class Gateway:
    """Publishes relayed sensor messages as a gateway's publisher does (numbered, QoS 1),
    and waits until the ingester has committed them."""

    def __init__(self, broker: Mosquitto, tenant: str, dsn: str) -> None:
        self.tenant, self.dsn, self.seq = tenant, dsn, 0
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                                  client_id=f"{tenant}-{LIVE_GW}")  # fmt: skip
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def relay(self, sensor: str, kind: str, received_at: float, **body: Any) -> None:
        self.seq += 1
        message = SensorMessage(gateway=LIVE_GW, seq=self.seq, sent_at=received_at,
                                sensor_id=sensor, sensor_kind=kind,  # type: ignore[arg-type]
                                received_at=received_at, body=body)  # fmt: skip
        self.client.publish(topics.up(self.tenant, LIVE_GW, "sensor"), codec.encode(message),
                            qos=1).wait_for_publish(5)  # fmt: skip

    def committed(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            wait_for(lambda: conn.execute(
                "SELECT count(*) FROM receipts WHERE gateway = %s", (LIVE_GW,)
            ).fetchone() == (self.seq,), timeout=20)  # fmt: skip

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def gateway(broker: Mosquitto, topic_prefix: str, ingested: str) -> Iterator[Gateway]:
    gw = Gateway(broker, topic_prefix, ingested)
    try:
        yield gw
    finally:
        gw.close()


def _job(dsn: str, now: datetime) -> int:
    """Run the sensors job at ``now``; how many sensors it found offline."""
    return int(run_once(dsn, only=["sensors"], now=now)["sensors"].offline)


def _offline(dsn: str) -> dict[str, tuple[str, dict[str, Any]]]:
    """sensor_offline alerts by sensor: (alert id, evidence)."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT actor, alert_id, evidence FROM alerts WHERE category = 'sensor_offline'"
        ).fetchall()
    return {actor: (alert_id, evidence) for actor, alert_id, evidence in rows}


def test_late_backlog_is_not_offline_but_silence_in_cloud_time_is(
    gateway: Gateway, ingested: str
) -> None:
    """A gateway back from a two-hour outage is draining its outbox (oldest first): the
    sensor behind it was heartbeating all along, and the newest of its messages the cloud
    holds so far is stamped an hour ago. The cloud has just heard it: not offline. Another
    sensor, heard once just now, is not offline either. Both are, once the cloud has not
    heard them for more than three intervals."""
    dsn = ingested
    start = time.time()
    gateway.relay("s-late", "self_report", start - 7200, heartbeat_s=60, fw="0.1.0")
    for minute in range(61):  # the first hour of the outage's backlog, every 60 s
        gateway.relay("s-late", "heartbeat", start - 7200 + 60 * minute, uptime_s=minute)
    gateway.relay("s-silent", "heartbeat", start, uptime_s=5)
    gateway.committed()
    heard = time.time()

    now = datetime.now(UTC)
    assert _job(dsn, now) == 0
    assert _offline(dsn) == {}
    with psycopg.connect(dsn) as conn:
        state, last_seen, last_heard, hb = conn.execute(
            "SELECT state, extract(epoch FROM last_seen), extract(epoch FROM last_heard),"
            " heartbeat_s FROM sensors WHERE sensor_id = 's-late'"
        ).fetchone() or (None, None, None, None)
    assert state == "online" and hb == 60
    assert float(last_seen) == pytest.approx(start - 3600, abs=1)  # the gateway's stamp
    assert start - 1 <= float(last_heard) <= heard + 1  # the cloud's clock

    # Three intervals (180 s) later still fine; past them, both are silent on our clock.
    assert _job(dsn, now + timedelta(seconds=170)) == 0
    later = now + timedelta(seconds=200)
    assert _job(dsn, later) == 2
    found = _offline(dsn)
    assert sorted(found) == ["s-late", "s-silent"]
    alert_id, evidence = found["s-late"]
    # The outage is named by when the cloud last heard the sensor, not by the stamp.
    assert start - 1 <= int(alert_id.rsplit(":", 1)[1]) <= heard + 1
    assert evidence["heartbeat_s"] == 60 and evidence["missed_intervals"] == 3
    assert evidence["last_seen"] == pytest.approx(start - 3600, abs=1)
    # Same outage, next run: nothing new. The sensor is heard again: online, even when its
    # gateway stamps the message before the newest one stored (its clock went back).
    assert _job(dsn, later + timedelta(minutes=1)) == 0
    gateway.relay("s-late", "heartbeat", start - 5000, uptime_s=61)
    gateway.committed()
    with psycopg.connect(dsn) as conn:
        state = conn.execute("SELECT state FROM sensors WHERE sensor_id = 's-late'").fetchone()
    assert state == ("online",)


def test_each_sensor_is_judged_on_its_own_self_reported_interval(
    gateway: Gateway, ingested: str
) -> None:
    """Only self-reports carry heartbeat_s; heartbeats after them must not make the job
    forget it. A slow sensor (600 s) is fine after 20 min of silence, a fast one (10 s)
    is offline after 31 s, one without a self-report gets the default (60 s), and a
    re-sent older self-report does not overwrite a newer one."""
    dsn = ingested
    t = time.time()
    gateway.relay("s-slow", "self_report", t - 5, heartbeat_s=300)
    gateway.relay("s-slow", "self_report", t - 2, heartbeat_s=600)
    gateway.relay("s-slow", "heartbeat", t - 1, uptime_s=10)
    gateway.relay("s-fast", "self_report", t - 1, heartbeat_s=10)
    gateway.relay("s-fast", "heartbeat", t, uptime_s=10)
    gateway.relay("s-plain", "heartbeat", t, uptime_s=10)
    # An older self-report of s-slow arriving late (a re-sent batch): ignored.
    gateway.relay("s-slow", "self_report", t - 4, heartbeat_s=30)
    # A faulty one (not a number) is stored but leaves the interval alone.
    gateway.relay("s-fast", "self_report", t, heartbeat_s="10")
    gateway.committed()
    with psycopg.connect(dsn) as conn:
        intervals = dict(conn.execute("SELECT sensor_id, heartbeat_s FROM sensors").fetchall())
    assert intervals == {"s-slow": 600, "s-fast": 10, "s-plain": None}

    now = datetime.now(UTC)
    assert _job(dsn, now + timedelta(seconds=25)) == 0
    _job(dsn, now + timedelta(seconds=35))
    assert sorted(_offline(dsn)) == ["s-fast"]
    _job(dsn, now + timedelta(minutes=20))
    assert sorted(_offline(dsn)) == ["s-fast", "s-plain"]
    _job(dsn, now + timedelta(minutes=31))
    found = _offline(dsn)
    assert sorted(found) == ["s-fast", "s-plain", "s-slow"]
    assert {s: e["heartbeat_s"] for s, (_, e) in found.items()} == {
        "s-fast": 10, "s-plain": 60, "s-slow": 600
    }  # fmt: skip


def test_sensor_thresholds_from_the_environment(
    gateway: Gateway, ingested: str, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """``mimamori cloud jobs`` reads MIMAMORI_SENSORS_*: a one-second interval makes a
    sensor silent for three seconds offline; a bad value stops the command, naming it."""
    dsn = ingested
    gateway.relay("s-env", "self_report", time.time(), heartbeat_s=60)
    gateway.committed()
    args = ["jobs", "run-once", "--dsn", dsn, "--only", "sensors"]
    monkeypatch.setenv("MIMAMORI_SENSORS_OFFLINE_AFTER_INTERVALS", "1.5")
    monkeypatch.setenv("MIMAMORI_SENSORS_DEFAULT_HEARTBEAT_S", "1")
    monkeypatch.setenv("MIMAMORI_SENSORS_MAX_HEARTBEAT_S", "1")
    monkeypatch.setenv("MIMAMORI_SENSORS_OFFLINE_SEVERITY", "high")
    time.sleep(2.0)
    assert cloud_main(args) == 0
    [(alert_id, evidence)] = _offline(dsn).values()
    assert evidence["heartbeat_s"] == 1  # capped: the self-report said 60
    with psycopg.connect(dsn) as conn:
        assert conn.execute(
            "SELECT severity FROM alerts WHERE alert_id = %s", (alert_id,)
        ).fetchone() == ("high",)

    capsys.readouterr()
    monkeypatch.setenv("MIMAMORI_SENSORS_OFFLINE_AFTER_INTERVALS", "1")
    assert cloud_main(args) == 1
    err = capsys.readouterr().err
    assert "MIMAMORI_SENSORS_OFFLINE_AFTER_INTERVALS='1'" in err and "more than 1" in err


def test_migration_backfills_sensor_liveness_from_stored_messages(db: Any) -> None:
    """A database migrated before 0009, with sensors stored the old way: 0009 fills
    last_heard from the messages' ingested_at and heartbeat_s from the newest self-report
    with a usable one; migrating again changes nothing."""
    from mimamori.cloud.migrate import _BOOKKEEPING, migrate, migrations

    plan = [m for m in migrations(db.storage) if m.version < 9]
    with psycopg.connect(db.dsn, autocommit=True) as conn:
        conn.execute(_BOOKKEEPING)
        for m in plan:
            conn.execute(m.sql)
            conn.execute("INSERT INTO schema_migrations (version, name, storage) "
                         "VALUES (%s, %s, %s)", (m.version, m.name, db.storage))  # fmt: skip
        conn.execute("INSERT INTO tenants (id, name) VALUES ('t', 't')")
        t0 = datetime(2026, 11, 1, tzinfo=UTC)
        messages = [  # (sensor, kind, gateway stamp, committed, body)
            ("s-a", "self_report", t0, t0 + timedelta(hours=2), {"heartbeat_s": 120}),
            ("s-a", "self_report", t0 + timedelta(minutes=1), t0 + timedelta(hours=2),
             {"heartbeat_s": "oops"}),
            ("s-a", "heartbeat", t0 + timedelta(minutes=2), t0 + timedelta(hours=2, seconds=5),
             {"uptime_s": 1}),
            ("s-b", "heartbeat", t0, t0 + timedelta(seconds=1), {"heartbeat_s": 30}),
        ]  # fmt: skip
        for seq, (sensor, kind, ts, ingested, body) in enumerate(messages):
            conn.execute(
                "INSERT INTO sensor_messages (ts, tenant, gateway, seq, sensor_id, sensor_kind,"
                " sent_at, ingested_at, body) VALUES (%s, 't', 'gw', %s, %s, %s, %s, %s, %s)",
                (ts, seq, sensor, kind, ts, ingested, Jsonb(body)),
            )
        for sensor, last in (("s-a", t0 + timedelta(minutes=2)), ("s-b", t0)):
            conn.execute(
                "INSERT INTO sensors (tenant, sensor_id, gateway, state, first_seen, last_seen)"
                " VALUES ('t', %s, 'gw', 'online', %s, %s)",
                (sensor, t0, last),
            )
    assert migrate(db.dsn).applied == [9]
    with psycopg.connect(db.dsn) as conn:
        rows = conn.execute(
            "SELECT sensor_id, last_heard, heartbeat_s, self_report_at FROM sensors"
            " ORDER BY sensor_id"
        ).fetchall()
    assert rows == [
        ("s-a", t0 + timedelta(hours=2, seconds=5), 120, t0),
        ("s-b", t0 + timedelta(seconds=1), None, None),  # heartbeats announce no interval
    ]
    assert migrate(db.dsn).applied == []


def test_sensors_behind_an_offline_gateway_wait_for_its_return(plain_db: Any) -> None:
    """One page per outage: while the gateway is offline its sensors are not judged (the
    cloud cannot hear them); after its return their silence counts from the return, so
    the outbox can deliver what they said meanwhile. A sensor still silent three intervals
    after the return is raised."""
    dsn = plain_db.dsn
    gw = "gw-parent"
    prepare_database(dsn, tenant="t-parent", gateways=[gw])
    now = datetime.now(UTC)
    heard = now - timedelta(hours=2)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "UPDATE gateways SET state = 'offline', state_changed_at = %s WHERE id = %s",
            (heard + timedelta(minutes=3), gw),
        )
        conn.execute(
            "INSERT INTO sensors (tenant, sensor_id, gateway, state, first_seen, last_seen,"
            " last_heard, heartbeat_s) VALUES ('t-parent', 's-behind', %s, 'online', %s, %s,"
            " %s, 60)",
            (gw, heard, heard, heard),
        )
    assert _job(dsn, now) == 0  # its gateway is offline: gateway_offline says it all
    back = now + timedelta(minutes=5)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "UPDATE gateways SET state = 'online', state_changed_at = %s WHERE id = %s",
            (back, gw),
        )
    assert _job(dsn, back + timedelta(seconds=30)) == 0  # the backlog may still come
    assert _job(dsn, back + timedelta(seconds=200)) == 1  # it did not: silent for real
    assert list(_offline(dsn)) == ["s-behind"]
