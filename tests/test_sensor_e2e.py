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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
from mimamori.cloud.sensors import SensorSeen, canary_alert, offline_alerts
from mimamori.cloud.settings import Settings
from mimamori.cloud.testing import IngesterThread, prepare_database, tenant_subscription
from mimamori.edge.outbox import Outbox
from mimamori.edge.publisher import Backoff, Publisher, drive
from mimamori.edge.sensors import Relay
from mimamori.protocol import SensorMessage
from mimamori.simulators.services import Mosquitto
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
                state, last_seen = conn.execute(
                    "SELECT state, extract(epoch FROM last_seen) FROM sensors"
                    " WHERE tenant = %s AND sensor_id = %s",
                    (topic_prefix, FRONT),
                ).fetchone() or (None, None)
    assert [r[3] for r in rows] == ["self_report", "heartbeat", "canary"]
    gateway, seq, sensor_id, kind, sent_at, received_at, body = rows[2]
    stored = SensorMessage(gateway=gateway, seq=seq, sent_at=float(sent_at),
                           sensor_id=sensor_id, sensor_kind=kind,
                           received_at=float(received_at), body=body)  # fmt: skip
    alert = canary_alert(stored)
    assert (alert.category, alert.severity, alert.actor) == ("canary_touch", "high", "127.0.0.1")
    assert alert.target == f"{FRONT}:{port}" and alert.evidence["src_port"] == src_port
    assert alert.evidence["gateway"] == GATEWAY

    # The same sensor, silent for longer than three heartbeats, is reported offline.
    assert state == "online" and last_seen is not None
    seen = [SensorSeen(GATEWAY, FRONT, float(last_seen), heartbeat_s=60)]
    assert offline_alerts(seen, now=float(last_seen) + 60) == []
    [offline] = offline_alerts(seen, now=float(last_seen) + 181)
    assert offline.category == "sensor_offline" and offline.actor == FRONT
