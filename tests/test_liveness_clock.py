"""Liveness on the cloud's clock: the ingester records when it heard a gateway
(``gateways.last_heard``) and the liveness job compares that, not the heartbeat's
``sent_at`` (the gateway's clock), with the cloud's time."""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import pytest
from conftest import wait_until
from mimamori.cloud.jobs.runner import run_once
from mimamori.protocol import Heartbeat, codec, topics
from mimamori.simulators.services import Mosquitto
from paho.mqtt.enums import CallbackAPIVersion

GW_SKEWED, GW_SILENT = "gw-skewed", "gw-silent"


@pytest.fixture
def ingested(broker: Mosquitto, plain_db: Any, topic_prefix: str) -> Iterator[str]:
    """The real ingester for this test's tenant on a fresh database; yields its DSN."""
    from mimamori.cloud.settings import Settings
    from mimamori.cloud.testing import IngesterThread, prepare_database, tenant_subscription

    prepare_database(plain_db.dsn, tenant=topic_prefix, gateways=[GW_SKEWED, GW_SILENT])
    settings = Settings(dsn=plain_db.dsn, mqtt_port=broker.port, batch_delay_s=0.05,
                        mqtt_client_id=f"ing-{topic_prefix}")  # fmt: skip
    with IngesterThread(settings=settings, subscription=tenant_subscription(topic_prefix)):
        yield plain_db.dsn


_wait = functools.partial(wait_until, timeout=15.0)


def _receipts(dsn: str, gateway: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM receipts WHERE gateway = %s", (gateway,))
        return int(row.fetchall()[0][0])


def test_skewed_clock_is_not_offline_but_silence_is(
    broker: Mosquitto, topic_prefix: str, ingested: str
) -> None:
    dsn = ingested
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                         client_id=f"{topic_prefix}-pub")  # fmt: skip
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        sent = time.time()
        # The silent gateway spoke once, on time; the skewed one's clock is an hour behind.
        for gateway, sent_at in ((GW_SILENT, sent), (GW_SKEWED, sent - 3600)):
            beat = Heartbeat(gateway=gateway, seq=1, sent_at=sent_at, interval_s=30,
                             uptime_s=100)  # fmt: skip
            client.publish(topics.up(topic_prefix, gateway, "heartbeat"), codec.encode(beat),
                           qos=1).wait_for_publish(5)  # fmt: skip
        _wait(lambda: _receipts(dsn, GW_SKEWED) == 1 and _receipts(dsn, GW_SILENT) == 1)
    finally:
        client.loop_stop()
        client.disconnect()

    now = datetime.now(UTC)
    assert run_once(dsn, only=["liveness"], now=now)["liveness"] == []
    with psycopg.connect(dsn) as conn:
        [(seen, heard)] = conn.execute(
            "SELECT last_seen, last_heard FROM gateways WHERE id = %s", (GW_SKEWED,)
        ).fetchall()
    # last_seen keeps the gateway's own (skewed) time for display; last_heard is ours.
    assert abs(seen.timestamp() - (sent - 3600)) < 1
    assert abs(heard.timestamp() - sent) < 30

    # Five minutes of silence from both (10 intervals of 30 s): both are offline now.
    later = now + timedelta(minutes=5)
    assert sorted(run_once(dsn, only=["liveness"], now=later)["liveness"]) == [GW_SILENT, GW_SKEWED]
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT gateway, alert_id FROM alerts WHERE category = 'gateway_offline' "
            "ORDER BY gateway"
        ).fetchall()
    # The outage is named by when the cloud last heard the gateway, not by its clock.
    assert [g for g, _ in rows] == [GW_SILENT, GW_SKEWED]
    skewed_id = dict(rows)[GW_SKEWED]
    assert abs(int(skewed_id.split(":")[1]) - sent) < 30
