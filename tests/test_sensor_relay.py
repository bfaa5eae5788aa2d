"""edge/sensors.py without a broker: validation, conversion, ACL and config writing."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from mimamori.edge.sensors import (
    MAX_SENSOR_MESSAGE,
    RELAY_USER,
    BadSensorMessage,
    Relay,
    SensorCredential,
    SensorError,
    TlsFiles,
    acl_text,
    new_credential,
    to_message,
    validate,
    write_site_broker,
)
from mimamori.protocol import Message, SensorMessage, codec

KNOWN = {"s1": {}, "s2": {}}
OK = {"v": 1, "sensor": "s1", "seq": 0}


def body(**extra: object) -> bytes:
    return json.dumps({**OK, **extra}).encode()


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        ("site/sensors/s1/heartbeat", b"x" * (MAX_SENSOR_MESSAGE + 1), "too_large"),
        ("site/sensors/s1", body(), "topic"),
        ("site/other/s1/heartbeat", body(), "topic"),
        ("site/sensors/s1/heartbeat/x", body(), "topic"),
        ("site/sensors/s1/config", body(), "kind"),
        ("site/sensors/s9/heartbeat", body(), "unknown_sensor"),
        ("site/sensors/s1/heartbeat", b"{nope", "json"),
        ("site/sensors/s1/heartbeat", b"\xff\xfe", "json"),
        ("site/sensors/s1/heartbeat", b"[]", "json"),
        ("site/sensors/s1/heartbeat", b"[" * 2000, "json"),
        ("site/sensors/s1/heartbeat", body(fw="a\u0000b"), "json"),
        ("site/sensors/s1/heartbeat", body(sensor="s2"), "sensor_mismatch"),
        ("site/sensors/s1/heartbeat", json.dumps({"seq": 1}).encode(), "sensor_mismatch"),
        ("site/sensors/s1/canary", body(src_ip="10.0.0.1", src_port=1), "schema"),
        ("site/sensors/s1/canary", body(port=0, src_ip="10.0.0.1", src_port=1), "schema"),
        ("site/sensors/s1/canary", body(port=23, src_ip=5, src_port=1), "schema"),
        ("site/sensors/s1/canary", body(port=23, src_ip="10.0.0.1", src_port=-1), "schema"),
    ],
)
def test_validate_refuses(topic: str, payload: bytes, reason: str) -> None:
    with pytest.raises(BadSensorMessage) as info:
        validate(topic, payload, KNOWN)
    assert info.value.reason == reason


def test_validate_and_convert_canary() -> None:
    payload = body(port=445, src_ip="192.168.1.66", src_port=50000, age_ms=1500)
    sid, kind, parsed = validate("site/sensors/s1/canary", payload, KNOWN)
    assert (sid, kind) == ("s1", "canary")
    msg = to_message(gateway="gw1", seq=7, sensor_id=sid, kind=kind, body=parsed,
                     received_at=1000.0)  # fmt: skip
    decoded = codec.decode_up(codec.encode(msg), "mimamori/v1/up/t1/gw1/sensor")
    assert isinstance(decoded, SensorMessage)
    assert decoded.body["at"] == 998.5  # received 1000.0, 1.5 s after the touch
    assert decoded.body["src_ip"] == "192.168.1.66"
    assert (decoded.seq, decoded.sent_at, decoded.received_at) == (7, 1000.0, 1000.0)


class ListSink:
    def __init__(self, fail: Exception | None = None, full: bool = False) -> None:
        self.messages: list[Message] = []
        self.fail, self.full = fail, full

    def append(self, message: Callable[[int], Message]) -> int | None:
        if self.fail:
            raise self.fail
        if self.full:
            return None
        self.messages.append(message(100 + len(self.messages)))
        return 99 + len(self.messages)


def relay(sink: ListSink) -> Relay:
    return Relay(host="127.0.0.1", port=1, password="x" * 20, gateway="gw1", outbox=sink,
                 known=KNOWN, clock=lambda: 5000.0)  # fmt: skip


def test_relay_counts_and_never_raises() -> None:
    sink = ListSink()
    r = relay(sink)
    assert r.handle("site/sensors/s1/heartbeat", body(uptime_s=3)) == 100
    assert r.handle("site/sensors/s1/heartbeat", b"{nope") is None
    assert r.handle("site/sensors/zz/heartbeat", body()) is None
    assert dict(r.counters) == {"relayed": 1, "dropped.json": 1, "dropped.unknown_sensor": 1}
    [msg] = sink.messages
    assert isinstance(msg, SensorMessage) and msg.body["uptime_s"] == 3
    # A failing or full outbox: counted, the relay keeps going.
    for broken in (ListSink(fail=OSError("disk")), ListSink(full=True)):
        r = relay(broken)
        assert r.handle("site/sensors/s1/heartbeat", body()) is None
        assert r.counters["dropped.outbox"] == 1


def test_acl_text() -> None:
    text = acl_text(["s2", "s1"])
    sections = text.split("\n\n")
    assert sections[0].splitlines()[1:] == [
        f"user {RELAY_USER}",
        "topic read site/sensors/+/+",
        "topic write site/sensors/+/config",
    ]
    assert sections[1].splitlines() == [
        "user s1",
        "topic write site/sensors/s1/heartbeat",
        "topic write site/sensors/s1/canary",
        "topic write site/sensors/s1/self_report",
        "topic read site/sensors/s1/config",
    ]
    assert "user s2" in sections[2]


def test_write_site_broker(tmp_path: Path) -> None:
    creds = [new_credential("s1"), new_credential("s2")]
    assert len({c.password for c in creds}) == 2 and len(creds[0].password) == 32
    tls = TlsFiles(cafile=tmp_path / "ca.pem", certfile=tmp_path / "c.pem",
                   keyfile=tmp_path / "k.pem")  # fmt: skip
    conf = write_site_broker(workdir=tmp_path / "b", credentials=creds,
                             relay_password="r" * 20, bind="192.168.1.2", port=0, tls=tls,
                             tls_port=8883)  # fmt: skip
    text = conf.read_text()
    assert "allow_anonymous false" in text
    assert "listener 8883 192.168.1.2" in text and "listener 1883" not in text
    assert f"cafile {tmp_path / 'ca.pem'}" in text
    passwd = (tmp_path / "b" / "passwd").read_text()
    assert "r" * 20 not in passwd and creds[0].password not in passwd
    assert [line.split(":")[0] for line in passwd.splitlines()] == [RELAY_USER, "s1", "s2"]
    # mosquitto_passwd wrote PBKDF2 hashes ($7$ in Mosquitto 2.0).
    assert all(line.split(":")[1].startswith("$") for line in passwd.splitlines())
    # That Mosquitto runs with it is tested in test_firmware_mqtt.py (the site fixture).


@pytest.mark.parametrize(
    ("creds", "kwargs", "match"),
    [
        ([SensorCredential("s1", "p" * 20)] * 2, {}, "duplicate"),
        ([SensorCredential("S1", "p" * 20)], {}, "not usable"),
        ([SensorCredential(RELAY_USER, "p" * 20)], {}, "not usable"),
        ([SensorCredential("s1", "short")], {}, "shorter"),
        ([SensorCredential("s1", "p" * 20)], {"port": 0}, "no listener"),
        ([SensorCredential("s1", "p" * 20 + "\ns2:x")], {}, "control character"),
        ([SensorCredential("s1", "p" * 20)], {"relay_password": "r"}, "the relay"),
        ([SensorCredential("s1", "p" * 20)], {"bind": "0.0.0.0"}, "LAN address"),
    ],
)
def test_write_site_broker_refuses(tmp_path: Path, creds: list[SensorCredential],
                                   kwargs: dict, match: str) -> None:  # fmt: skip
    args: dict = {"relay_password": "r" * 20, "bind": "192.168.1.2", **kwargs}
    with pytest.raises(SensorError, match=match):
        write_site_broker(workdir=tmp_path, credentials=creds, **args)
    assert not (tmp_path / "passwd").exists()  # refused before writing anything
    with pytest.raises(SensorError):
        new_credential("Bad/Id")
