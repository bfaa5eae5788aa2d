"""A minimal cloud side for delivery tests: record upstream messages, publish protocol Acks.

This is the other end of the MQTT transport, not a fake of the publisher: it speaks the
protocol over a real broker, the way the ingester does, without a database. Tests that
need the real ingester use it instead (tests/test_delivery.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from mimamori.protocol import Ack, Command, UpMessage, decode_up, encode, topics
from mimamori.protocol.sequence import ranges
from mimamori.simulators.services import Mosquitto
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion


@dataclass(frozen=True)
class Received:
    gateway: str
    seq: int
    kind: str
    state: str = ""  # for status messages
    payload: bytes = b""


class Acker:
    """Subscribes to every gateway of ``tenant`` and acknowledges what it receives.

    ``ack_from``: acknowledge a sequence number only from its n-th receipt on (2 makes
    every first delivery go unacknowledged, to exercise re-publication). ``paused``: record
    but do not acknowledge. ``refuse``: messages never to acknowledge, like the cloud's
    quarantine.
    """

    def __init__(
        self,
        broker: Mosquitto,
        tenant: str,
        *,
        ack_from: int = 1,
        refuse: Callable[[UpMessage], bool] | None = None,
    ) -> None:
        self.tenant = tenant
        self.ack_from = ack_from
        self.refuse = refuse
        self.paused = False
        self.received: list[Received] = []
        self._counts: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"acker-{tenant}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert self._subscribed.wait(10), "acker could not subscribe"

    def _on_connect(self, client: mqtt.Client, *_: object) -> None:
        # Broker without persistence: subscribe again on every connection.
        client.subscribe(f"{topics.UP}/{self.tenant}/+/+", qos=1)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        message = decode_up(bytes(msg.payload), msg.topic)
        kind = type(message).__struct_config__.tag
        state = getattr(message, "state", "")
        key = (message.gateway, message.seq)
        with self._lock:
            self.received.append(
                Received(message.gateway, message.seq, str(kind), state, bytes(msg.payload))
            )
            self._counts[key] = n = self._counts.get(key, 0) + 1
            paused = self.paused
        refused = self.refuse is not None and self.refuse(message)
        if not paused and not refused and n >= self.ack_from:
            self.ack(message.gateway, [message.seq])

    def ack(self, gateway: str, seqs: list[int]) -> None:
        ack = Ack(gateway=gateway, ranges=ranges(seqs), committed_at=time.time())
        self.client.publish(topics.ack(self.tenant, gateway), encode(ack), qos=1)

    def command(self, gateway: str, command: Command | bytes) -> None:
        payload = command if isinstance(command, bytes) else encode(command)
        self.client.publish(topics.command(self.tenant, gateway), payload, qos=1)

    def seqs(self, gateway: str, kind: str | None = None) -> list[int]:
        """Sequence numbers received from ``gateway``, in arrival order, with repeats."""
        with self._lock:
            return [
                r.seq for r in self.received
                if r.gateway == gateway and (kind is None or r.kind == kind)
            ]  # fmt: skip

    def messages(self, gateway: str, kind: str) -> list[UpMessage]:
        """Decoded messages of one kind from ``gateway``, in arrival order."""
        return [
            decode_up(r.payload) for r in self.snapshot() if r.gateway == gateway and r.kind == kind
        ]

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.received)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    """Poll ``predicate`` until it holds; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")


def test_acker_acknowledges_over_a_real_broker(broker: Mosquitto, topic_prefix: str) -> None:
    """The helper itself: a message in, an Ack for exactly its number out."""
    from mimamori.protocol import Heartbeat

    acker = Acker(broker, topic_prefix)
    got: list[Ack] = []
    sub = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                      protocol=MQTTProtocolVersion.MQTTv5)  # fmt: skip
    ready = threading.Event()
    sub.on_subscribe = lambda *a: ready.set()
    sub.on_message = lambda c, u, m: got.append(_ack(bytes(m.payload)))
    sub.connect(broker.host, broker.port)
    sub.subscribe(topics.ack(topic_prefix, "gw1"), qos=1)
    sub.loop_start()
    try:
        assert ready.wait(10)
        hb = Heartbeat(gateway="gw1", seq=41, sent_at=time.time(), uptime_s=1)
        acker.client.publish(topics.up(topic_prefix, "gw1", "heartbeat"), encode(hb), qos=1)
        wait_until(lambda: len(got) == 1, 10, "an ack")
        assert got[0].ranges == [(41, 41)] and got[0].gateway == "gw1"
        assert acker.seqs("gw1") == [41]
    finally:
        sub.loop_stop()
        sub.disconnect()
        acker.close()


def _ack(payload: bytes) -> Ack:
    from mimamori.protocol import decode_down

    message = decode_down(payload)
    assert isinstance(message, Ack)
    return message
