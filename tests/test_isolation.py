"""Broker isolation with the dynamic security plugin and TLS (real Mosquitto).

A gateway's credential confines it to its own topics: it cannot publish into another
gateway's subtree, read another gateway's acknowledgements or commands, borrow another
gateway's client id, or connect at all without a valid credential.
"""

from __future__ import annotations

import os
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from mimamori.cloud import broker
from mimamori.protocol import topics
from mimamori.simulators.services import Mosquitto, free_port
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion


@dataclass
class SecureBroker:
    proc: Mosquitto
    files: broker.BrokerFiles
    admin: broker.BrokerAdmin

    @property
    def port(self) -> int:
        return self.proc.port

    def tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.files.ca))


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    workdir = tmp_path_factory.mktemp("dynsec")
    port = free_port()
    files = broker.prepare(
        workdir,
        hosts=["127.0.0.1", "localhost"],
        port=port,
        bind="127.0.0.1",
        user="root" if os.geteuid() == 0 else None,
    )
    proc = Mosquitto(port=port, workdir=workdir).start()  # uses the config prepare wrote
    user, password = broker.read_credential(files.admin_credential)
    admin = broker.BrokerAdmin(
        host="127.0.0.1",
        port=port,
        username=user,
        password=password,
        ssl_context=ssl.create_default_context(cafile=str(files.ca)),
    )
    try:
        yield SecureBroker(proc, files, admin)
    finally:
        admin.close()
        proc.cleanup()


class Client:
    """A paho client that records what it receives and how its requests were answered."""

    def __init__(
        self,
        sb: SecureBroker,
        *,
        username: str | None,
        password: str | None,
        client_id: str | None = None,
        tls: bool = True,
    ) -> None:
        self.received: list[tuple[str, bytes | bytearray]] = []
        self.connected = threading.Event()
        self.done = threading.Event()
        self.reason: mqtt.ReasonCode | None = None
        self.disconnected = threading.Event()
        self.granted: list[int] = []
        self.subscribed = threading.Event()
        self.c = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id or f"test-{uuid.uuid4().hex[:8]}",
            protocol=MQTTProtocolVersion.MQTTv5,
            reconnect_on_failure=False,
        )
        if username is not None:
            self.c.username_pw_set(username, password)
        if tls:
            self.c.tls_set_context(sb.tls())
        self.c.on_connect = self._on_connect
        self.c.on_message = lambda _c, _u, m: self.received.append((m.topic, m.payload))
        self.c.on_disconnect = lambda *_a: self.disconnected.set()
        self.c.on_subscribe = self._on_subscribe
        self.sb = sb

    def _on_connect(
        self, _c: object, _u: object, _f: object, rc: mqtt.ReasonCode, _p: object
    ) -> None:
        self.reason = rc
        if not rc.is_failure:
            self.connected.set()
        self.done.set()

    def _on_subscribe(
        self, _c: object, _u: object, _m: object, rcs: list[mqtt.ReasonCode], _p: object
    ) -> None:
        self.granted = [rc.value for rc in rcs]
        self.subscribed.set()

    def connect(self) -> bool:
        """Connect and wait for the broker's answer; True if accepted."""
        try:
            self.c.connect("127.0.0.1", self.sb.port)
        except (OSError, ssl.SSLError):
            return False
        self.c.loop_start()
        wait_for(lambda: self.done.is_set() or self.disconnected.is_set())
        return self.connected.is_set() and not self.disconnected.is_set()

    def subscribe(self, topic: str) -> list[int]:
        self.subscribed.clear()
        self.c.subscribe(topic, qos=1)
        assert self.subscribed.wait(5)
        return self.granted

    def publish(self, topic: str, payload: bytes) -> None:
        self.c.publish(topic, payload, qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def wait_for(pred: object, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def gateway(sb: SecureBroker, tenant: str, gw: str) -> Client:
    password = broker.new_password()
    sb.admin.provision_gateway(tenant=tenant, gateway=gw, password=password)
    c = Client(sb, username=gw, password=password, client_id=gw)
    assert c.connect(), c.reason
    return c


def ingester(sb: SecureBroker) -> Client:
    name, password = f"ingest-{uuid.uuid4().hex[:6]}", broker.new_password()
    sb.admin.provision_ingester(username=name, password=password)
    c = Client(sb, username=name, password=password)
    assert c.connect(), c.reason
    assert c.subscribe(topics.INGEST_SUBSCRIPTION) == [1]
    return c


def test_anonymous_and_wrong_password_and_plaintext_are_refused(secure: SecureBroker) -> None:
    assert not Client(secure, username=None, password=None).connect()
    gw = f"g{uuid.uuid4().hex[:8]}"
    secure.admin.provision_gateway(tenant="ta", gateway=gw, password="right-password-1234")
    assert not Client(secure, username=gw, password="wrong", client_id=gw).connect()
    # The listener speaks TLS only: a plaintext MQTT client gets nowhere.
    plain = Client(secure, username=gw, password="right-password-1234", client_id=gw, tls=False)
    assert not plain.connect()
    plain.close()


def test_gateway_cannot_publish_into_another_gateways_topics(secure: SecureBroker) -> None:
    tenant = f"t{uuid.uuid4().hex[:8]}"
    ing = ingester(secure)
    a_id, b_id = "gw-a-" + tenant, "gw-b-" + tenant
    a = gateway(secure, tenant, a_id)
    gateway(secure, tenant, b_id).close()
    try:
        a.publish(topics.up(tenant, b_id, "alerts"), b"forged")
        a.publish(topics.up("other-" + tenant[:6], "x", "flows"), b"forged-tenant")
        a.publish(topics.ack(tenant, b_id), b"forged-ack")
        a.publish(topics.up(tenant, a_id, "heartbeat"), b"genuine")
        assert wait_for(lambda: any(p == b"genuine" for _t, p in ing.received))
        time.sleep(0.2)
        assert [p for _t, p in ing.received] == [b"genuine"]
    finally:
        a.close()
        ing.close()


def test_gateway_reads_only_its_own_acks_commands_and_tenant_intel(
    secure: SecureBroker,
) -> None:
    tenant = f"t{uuid.uuid4().hex[:8]}"
    a_id, b_id = "gw-a-" + tenant, "gw-b-" + tenant
    ing = ingester(secure)
    a = gateway(secure, tenant, a_id)
    gateway(secure, tenant, b_id).close()
    try:
        # Subscriptions to B's topics, another tenant's intel or everything are refused.
        for topic in (
            topics.ack(tenant, b_id),
            topics.command(tenant, b_id),
            topics.intel("zz" + tenant),
            "mimamori/v1/#",
            "#",
        ):
            assert a.subscribe(topic) == [0x87], topic
        for topic in (topics.ack(tenant, a_id), topics.command(tenant, a_id), topics.intel(tenant)):
            assert a.subscribe(topic) == [1], topic
        ing.publish(topics.ack(tenant, b_id), b"ack-of-b")
        ing.publish(topics.command(tenant, b_id), b"command-of-b")
        ing.publish(topics.ack(tenant, a_id), b"ack-of-a")
        ing.publish(topics.intel(tenant), b"intel")
        assert wait_for(lambda: len(a.received) >= 2)
        time.sleep(0.2)
        assert sorted(p for _t, p in a.received) == [b"ack-of-a", b"intel"]
    finally:
        a.close()
        ing.close()


def test_gateway_cannot_take_another_gateways_client_id(secure: SecureBroker) -> None:
    tenant = f"t{uuid.uuid4().hex[:8]}"
    a_id, b_id = "gw-a-" + tenant, "gw-b-" + tenant
    pw_a = broker.new_password()
    secure.admin.provision_gateway(tenant=tenant, gateway=a_id, password=pw_a)
    b = gateway(secure, tenant, b_id)
    try:
        # A's credential with B's client id would otherwise kick B off and take its session.
        thief = Client(secure, username=a_id, password=pw_a, client_id=b_id)
        assert not thief.connect()
        thief.close()
        time.sleep(0.1)
        assert not b.disconnected.is_set()
    finally:
        b.close()


def test_revoked_gateway_is_disconnected_and_cannot_reconnect(secure: SecureBroker) -> None:
    tenant = f"t{uuid.uuid4().hex[:8]}"
    gw = "gw-" + tenant
    password = broker.new_password()
    secure.admin.provision_gateway(tenant=tenant, gateway=gw, password=password)
    c = Client(secure, username=gw, password=password, client_id=gw)
    assert c.connect()
    secure.admin.revoke_gateway(gw)
    assert c.disconnected.wait(5)
    c.close()
    assert not Client(secure, username=gw, password=password, client_id=gw).connect()


def test_dynsec_init_writes_private_files_and_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "dynamic-security.json"
    cred = broker.init_dynsec(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert cred.stat().st_mode & 0o777 == 0o600
    user, password = broker.read_credential(cred)
    assert user == broker.ADMIN_USER and len(password) >= 40
    assert password not in path.read_text()  # only its salted hash is in the broker's file
    with pytest.raises(broker.BrokerAdminError):
        broker.init_dynsec(path)
