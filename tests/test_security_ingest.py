"""The real ingester behind a dynsec broker: a gateway's forgeries never become rows.

Gateway A publishes (1) a heartbeat on its own topic whose payload claims to be gateway
B, (2) a heartbeat for B on B's topic, (3) a genuine heartbeat. The broker refuses (2);
the ingester quarantines (1) and stores (3), and its acknowledgement reaches A through
A's ACLs (so the ingester's role works too).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import psycopg
from conftest import Database
from mimamori.cloud import broker
from mimamori.cloud.settings import Settings
from mimamori.cloud.testing import IngesterThread, prepare_database
from mimamori.protocol import Heartbeat, decode_down, encode, topics
from test_isolation import Client, SecureBroker, secure, wait_for  # noqa: F401 - a fixture

SEQ0 = 1_800_000_000_000_000


def _heartbeat(gateway: str, seq: int) -> Heartbeat:
    return Heartbeat(
        gateway=gateway,
        seq=seq,
        sent_at=time.time(),
        uptime_s=5.0,
        outbox_depth=0,
        agent_version="test",
    )


def _rows(dsn: str, sql: str) -> list[Any]:
    with psycopg.connect(dsn) as conn:
        return [tuple(r) for r in conn.execute(sql).fetchall()]


def test_forged_identity_is_refused_or_quarantined(
    secure: SecureBroker,  # noqa: F811
    plain_db: Database,
) -> None:
    tenant = f"t{uuid.uuid4().hex[:8]}"
    a, b = "gw-a", "gw-b"
    prepare_database(plain_db.dsn, tenant=tenant, gateways=[a, b])
    user, password = f"ingest-{tenant}", broker.new_password()
    secure.admin.provision_ingester(username=user, password=password)
    pw_a = broker.new_password()
    secure.admin.provision_gateway(tenant=tenant, gateway=a, password=pw_a)
    settings = Settings(
        dsn=plain_db.dsn,
        mqtt_host="127.0.0.1",
        mqtt_port=secure.port,
        mqtt_username=user,
        mqtt_password=password,
        mqtt_tls_ca=str(secure.files.ca),
        mqtt_client_id=user,
        batch_delay_s=0.05,
    )
    gw = Client(secure, username=a, password=pw_a, client_id=a)
    assert gw.connect()
    assert gw.subscribe(topics.ack(tenant, a)) == [1]
    with IngesterThread(settings=settings) as ing:
        gw.publish(topics.up(tenant, a, "heartbeat"), encode(_heartbeat(b, SEQ0 + 1)))
        gw.publish(topics.up(tenant, b, "heartbeat"), encode(_heartbeat(b, SEQ0 + 2)))
        gw.publish(topics.up(tenant, a, "heartbeat"), encode(_heartbeat(a, SEQ0 + 3)))
        assert wait_for(lambda: bool(gw.received), timeout=10)
        assert wait_for(lambda: ing.ingester.quarantined >= 1, timeout=10)
    gw.close()
    acks = [decode_down(p) for _t, p in gw.received]
    assert [(ack.gateway, [list(r) for r in ack.ranges]) for ack in acks] == [
        (a, [[SEQ0 + 3, SEQ0 + 3]])
    ]
    assert _rows(plain_db.dsn, "SELECT gateway, seq FROM receipts") == [(a, SEQ0 + 3)]
    quarantined = _rows(plain_db.dsn, "SELECT gateway, reason, detail FROM quarantine")
    assert len(quarantined) == 1 and "claims gateway 'gw-b'" in quarantined[0][2]
