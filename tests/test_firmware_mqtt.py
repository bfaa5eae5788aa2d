"""The firmware's MQTT exchange under CPython, against a real Mosquitto configured by the
gateway (edge/sensors.py: per-sensor passwords hashed by mosquitto_passwd, the ACL, TLS).

The firmware's own modules run unchanged (link, supervisor, canary, reports, auth) with a
real TCP canary on 127.0.0.1. Two seams stand in for MicroPython's modules: umqtt.simple's
``MQTTClient`` API on top of paho-mqtt (the real umqtt.simple is not installable from a
package registry: its PyPI sdist has no setup.py), and ``select.poll().ipoll`` on top of
CPython's ``select.poll``. End to end: a TCP connection to the canary becomes a canary
message, the relay appends it to a real outbox as a SensorMessage, and cloud/sensors.py
turns the decoded message into a ``canary_touch`` alert.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import select
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from mimamori.cloud.sensors import canary_alert, sign_config
from mimamori.edge.outbox import Outbox
from mimamori.edge.sensors import (
    RELAY_USER,
    Relay,
    SensorCredential,
    TlsFiles,
    new_credential,
    write_site_broker,
)
from mimamori.protocol import SensorMessage, codec
from mimamori.simulators.services import free_port, mosquitto_binary, wait_port
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion

FIRMWARE = Path(__file__).resolve().parent.parent / "firmware"
sys.path.append(str(FIRMWARE))  # the firmware package, importable as on the board

from mimamori_sensor.auth import Verifier  # noqa: E402
from mimamori_sensor.backoff import Backoff  # noqa: E402
from mimamori_sensor.canary import Canary  # noqa: E402
from mimamori_sensor.link import LinkError, Session, tls_context  # noqa: E402
from mimamori_sensor.reports import Reporter  # noqa: E402
from mimamori_sensor.settings import Settings  # noqa: E402
from mimamori_sensor.supervisor import Supervisor  # noqa: E402

GATEWAY = "gw-site1"
FRONT, BACK = "s-front-desk", "s-back-office"
KEY = bytes(range(32))
#: P-256 keys: generated in milliseconds (RSA takes seconds on a busy CI machine), and
#: what an ESP32's mbedTLS handshakes fastest with.
EC = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1")


# --- seams: MicroPython's umqtt.simple and select.ipoll on CPython -----------------------


class MQTTException(Exception):
    """umqtt.simple's error for a refused CONNECT."""


class PahoUmqtt:
    """umqtt.simple's ``MQTTClient`` API (MQTT 3.1.1, blocking calls) on top of paho."""

    def __init__(self, client_id: str, server: str, port: int = 0, user: str | None = None,
                 password: str | None = None, keepalive: int = 0,
                 ssl: ssl.SSLContext | None = None) -> None:  # fmt: skip
        self.server, self.port, self.keepalive = server, port, keepalive or 60
        c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                        client_id=client_id, protocol=MQTTProtocolVersion.MQTTv311)  # fmt: skip
        if user is not None:
            c.username_pw_set(user, password)
        if ssl is not None:
            c.tls_set_context(ssl)
        c.on_connect = self._on_connect
        c.on_subscribe = lambda *a: self._acks.append(a[2])
        c.on_message = lambda _c, _u, m: self._inbox.append((m.topic.encode(), m.payload))
        self._c = c
        self._connack: Any = None
        self._acks: list[int] = []
        self._inbox: list[tuple[bytes, bytes]] = []
        self.cb: Callable[[bytes, bytes], None] | None = None

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self._connack = reason

    def _loop(self, timeout: float = 0.0) -> None:
        if self._c.loop(timeout) != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise OSError(errno.ECONNRESET, "connection lost")

    def set_callback(self, f: Callable[[bytes, bytes], None]) -> None:
        self.cb = f

    def connect(self, clean_session: bool = True, timeout: float | None = None) -> bool:
        self._c.connect(self.server, self.port, keepalive=self.keepalive)  # OSError as umqtt
        deadline = time.monotonic() + (timeout or 5)
        while self._connack is None:
            if time.monotonic() > deadline:
                raise OSError(errno.ETIMEDOUT, "no CONNACK")
            self._loop(0.05)
        if self._connack.is_failure:
            raise MQTTException(self._connack.value)
        return False

    def publish(self, topic: bytes, msg: Any, retain: bool = False, qos: int = 0) -> None:
        info = self._c.publish(topic.decode(), bytes(msg), qos, retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise OSError(errno.ECONNRESET, "publish failed")
        deadline = time.monotonic() + 5
        # umqtt.simple returns once the bytes are written, at QoS 1 once PUBACK arrived.
        while self._c.want_write() or (qos and not info.is_published()):
            if time.monotonic() > deadline:
                raise OSError(errno.ETIMEDOUT, "no PUBACK")
            self._loop(0.05)

    def subscribe(self, topic: bytes, qos: int = 0) -> None:
        _, mid = self._c.subscribe(topic.decode(), qos)
        deadline = time.monotonic() + 5
        while mid not in self._acks:
            if time.monotonic() > deadline:
                raise OSError(errno.ETIMEDOUT, "no SUBACK")
            self._loop(0.05)

    def check_msg(self) -> None:
        self._loop(0.0)
        if self._inbox and self.cb is not None:
            self.cb(*self._inbox.pop(0))

    def ping(self) -> None:
        self._loop(0.0)

    def disconnect(self) -> None:
        self._c.disconnect()


class IPoll:
    """``select`` with MicroPython's ``poll().ipoll()``, on CPython's ``select.poll``."""

    POLLIN = select.POLLIN

    class _Poll:
        def __init__(self) -> None:
            self._p = select.poll()
            self._by_fd: dict[int, Any] = {}

        def register(self, obj: Any, mask: int) -> None:
            self._by_fd[obj.fileno()] = obj
            self._p.register(obj, mask)

        def unregister(self, obj: Any) -> None:
            self._p.unregister(obj)
            self._by_fd.pop(obj.fileno(), None)

        def ipoll(self, timeout: int = -1) -> Iterator[tuple[Any, int]]:
            for fd, events in self._p.poll(timeout):
                yield self._by_fd[fd], events

    def poll(self) -> IPoll._Poll:
        return IPoll._Poll()


class Ticks:
    """MicroPython's tick functions on CPython's monotonic clock."""

    def ticks_ms(self) -> int:
        return int(time.monotonic() * 1000) & 0x3FFFFFFF

    def ticks_diff(self, a: int, b: int) -> int:
        d = (a - b) & 0x3FFFFFFF
        return d - 0x40000000 if d >= 0x20000000 else d

    def sleep_ms(self, ms: int) -> None:
        time.sleep(ms / 1000)


class Watchdog:
    feeds = 0

    def feed(self) -> None:
        self.feeds += 1


class NoWifi:
    """CPython is already on the network: nothing to join."""

    def join(self, **kwargs: Any) -> None:
        pass

    def rssi(self) -> int:
        return -60


class NoNetwork:
    """For the self-report: this host has no access-point interface."""


# --- the site listener, written by edge/sensors.py ---------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


class SiteBroker:
    def __init__(self, workdir: Path, creds: dict[str, SensorCredential], relay_password: str,
                 port: int, tls_port: int, ca_der: Path) -> None:  # fmt: skip
        self.workdir, self.creds, self.relay_password = workdir, creds, relay_password
        self.port, self.tls_port, self.ca_der = port, tls_port, ca_der


@pytest.fixture(scope="module")
def site() -> Iterator[SiteBroker]:
    """The gateway's site listener: plain and TLS ports, two enrolled sensors."""
    # Mosquitto started as root reads its files after dropping to its own user: keep them
    # outside pytest's private (0700) temporary tree.
    d = Path(tempfile.mkdtemp(prefix="mimamori-site-"))
    d.chmod(0o755)
    _openssl("req", "-x509", *EC, "-nodes", "-days", "2",
             "-subj", "/CN=site-ca", "-keyout", "ca.key", "-out", "ca.pem", cwd=d)  # fmt: skip
    _openssl("req", *EC, "-nodes", "-subj", "/CN=127.0.0.1",
             "-keyout", "server.key", "-out", "server.csr", cwd=d)  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.pem",
             cwd=d)  # fmt: skip
    for f in ("server.key", "server.pem", "ca.pem"):
        (d / f).chmod(0o644)
    ca_der = d / "ca.der"
    ca_der.write_bytes(ssl.PEM_cert_to_DER_cert((d / "ca.pem").read_text()))
    creds = {sid: new_credential(sid) for sid in (FRONT, BACK)}
    relay_password = new_credential("relay").password
    port, tls_port = free_port(), free_port()
    conf = write_site_broker(
        workdir=d / "broker", credentials=creds.values(), relay_password=relay_password,
        bind="127.0.0.1", port=port, tls_port=tls_port,
        tls=TlsFiles(cafile=d / "ca.pem", certfile=d / "server.pem", keyfile=d / "server.key"),
        owner="mosquitto" if os.geteuid() == 0 else None,
    )  # fmt: skip
    (d / "broker").chmod(0o755)
    log = open(d / "mosquitto.log", "wb")  # noqa: SIM115 - owned by the process
    proc = subprocess.Popen([mosquitto_binary(), "-c", str(conf)], stdout=log, stderr=log,
                            start_new_session=True)  # fmt: skip
    try:
        wait_port(port)
        wait_port(tls_port)
        yield SiteBroker(d, creds, relay_password, port, tls_port, ca_der)
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    with Outbox(path=tmp_path / "outbox.db", synchronous="OFF") as box:
        yield box


def make_relay(site: SiteBroker, outbox: Outbox, client_id: str) -> Relay:
    r = Relay(host="127.0.0.1", port=site.port, password=site.relay_password, gateway=GATEWAY,
              outbox=outbox, known=dict(site.creds), client_id=client_id)  # fmt: skip
    r.start()
    assert r.wait_ready(), "relay did not subscribe to the site listener"
    return r


@pytest.fixture
def relay(site: SiteBroker, outbox: Outbox, tmp_path: Path) -> Iterator[Relay]:
    # Relays keep persistent sessions: a client id of its own per test.
    r = make_relay(site, outbox, f"relay-{tmp_path.name}")
    yield r
    r.stop()


def node(site: SiteBroker, tmp_path: Path, sensor: str = FRONT, *, tls: bool = False,
         password: str | None = None) -> Supervisor:  # fmt: skip
    """The firmware's supervisor for one sensor, on real sockets and the site listener."""
    settings = Settings(
        {
            "sensor_id": sensor, "wifi_ssid": "office", "wifi_password": "x" * 12,
            "gateway_host": "127.0.0.1", "tls": tls,
            "gateway_port": site.tls_port if tls else site.port,
            "ca_path": str(site.ca_der),
            "mqtt_password": password or site.creds[sensor].password, "hmac_key": KEY.hex(),
            "canary_ports": [free_port(), free_port()],
        },
        {},
    )  # fmt: skip
    holder: list[Supervisor] = []
    session = Session(client_class=PahoUmqtt, settings=settings,
                      ssl_context=tls_context(settings, ssl),
                      on_message=lambda t, m: holder[0].on_message(t, m),
                      connect_timeout_s=5)  # fmt: skip
    sup = Supervisor(
        settings=settings, wifi=NoWifi(), session=session,
        canary=Canary(ports=settings.canary_ports, sockets=socket, select_mod=IPoll(),
                      bind="127.0.0.1"),
        reporter=Reporter(sensor_id=sensor),
        verifier=Verifier(settings=settings, state_path=str(tmp_path / f"{sensor}.json")),
        backoff=Backoff(base_ms=100, cap_ms=400, rand=lambda bits: 0),
        watchdog=Watchdog(), clock=Ticks(), mem_free=lambda: 100_000, network=NoNetwork(),
    )  # fmt: skip
    holder.append(sup)
    return sup


def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def relayed(outbox: Outbox) -> list[SensorMessage]:
    out = []
    for p in outbox.pending(limit=1000):
        msg = codec.decode_up(p.payload)
        assert isinstance(msg, SensorMessage)
        out.append(msg)
    return out


# --- tests ------------------------------------------------------------------------------


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_canary_touch_becomes_an_alert(
    site: SiteBroker, relay: Relay, outbox: Outbox, tmp_path: Path, tls: bool
) -> None:
    sup = node(site, tmp_path, tls=tls)
    sup.run(iterations=1)  # connect, self-report, first heartbeat
    wait_for(lambda: relay.counters["relayed"] >= 2)
    port = sup.canary.listening()[1]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as attacker:
        src_port = attacker.getsockname()[1]
        sup.run(iterations=1)  # the node's loop takes the connection and reports it
        # The canary closed it at once without sending anything.
        assert attacker.recv(100) == b""
    wait_for(lambda: relay.counters["relayed"] >= 3)
    sup.session.close()

    messages = relayed(outbox)
    assert [m.sensor_kind for m in messages] == ["self_report", "heartbeat", "canary"]
    report, beat, touch = messages
    assert all(m.gateway == GATEWAY and m.sensor_id == FRONT for m in messages)
    assert report.body["tls"] is tls
    assert report.body["unique_credential"] is True
    assert beat.body["fw"] == "0.1.0" and beat.body["rssi"] == -60
    assert touch.body["port"] == port
    assert touch.body["src_ip"] == "127.0.0.1"
    assert touch.body["src_port"] == src_port
    assert touch.received_at - 5 < touch.body["at"] <= touch.received_at

    alert = canary_alert(touch)
    assert alert.category == "canary_touch"
    assert alert.severity == "high"
    assert alert.actor == "127.0.0.1"
    assert alert.target == f"{FRONT}:{port}"
    assert alert.evidence["src_port"] == src_port
    assert "127.0.0.1" in alert.summary_en and "127.0.0.1" in alert.summary_ja
    assert relay.counters.get("dropped.json", 0) == 0


def test_wrong_password_or_ca_is_refused(site: SiteBroker, tmp_path: Path) -> None:
    with pytest.raises(LinkError, match="mqtt connect"):
        node(site, tmp_path, password="not-the-password-at-all").connect()
    # A CA that did not sign the listener's certificate: the TLS handshake fails.
    other = tmp_path / "other"
    other.mkdir()
    _openssl("req", "-x509", *EC, "-nodes", "-days", "2", "-subj", "/CN=x",
             "-keyout", "k.pem", "-out", "c.pem", cwd=other)  # fmt: skip
    sup = node(site, tmp_path, tls=True)
    der = other / "c.der"
    der.write_bytes(ssl.PEM_cert_to_DER_cert((other / "c.pem").read_text()))
    sup.settings.ca_path = str(der)
    sup.session._ssl = tls_context(sup.settings, ssl)
    with pytest.raises(LinkError, match="mqtt connect"):
        sup.connect()


def raw_client(site: SiteBroker, user: str, password: str) -> mqtt.Client:
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                    client_id=f"raw-{user}-{time.monotonic_ns()}")  # fmt: skip
    c.username_pw_set(user, password)
    c.connect("127.0.0.1", site.port)
    c.loop_start()
    return c


def test_acl_confines_sensors_and_relay_drops_bad_messages(
    site: SiteBroker, relay: Relay, outbox: Outbox
) -> None:
    front = raw_client(site, FRONT, site.creds[FRONT].password)
    try:
        good = json.dumps({"v": 1, "sensor": FRONT, "seq": 0, "uptime_s": 1}).encode()
        sends = [
            # Another sensor's topic: the broker's ACL refuses it, the relay never sees it.
            (f"site/sensors/{BACK}/heartbeat", good),
            # Its own config topic: sensors may not write there.
            (f"site/sensors/{FRONT}/config", good),
            # Own topics, bad content: relayed nowhere, counted per reason.
            (f"site/sensors/{FRONT}/heartbeat", b"{not json"),
            (f"site/sensors/{FRONT}/heartbeat", b"[1, 2]"),
            (f"site/sensors/{FRONT}/heartbeat", json.dumps({"sensor": BACK}).encode()),
            (f"site/sensors/{FRONT}/canary", json.dumps({"sensor": FRONT, "port": 23}).encode()),
            (f"site/sensors/{FRONT}/heartbeat", b"{" + b" " * 3000 + b"}"),
            (f"site/sensors/{FRONT}/heartbeat", good),  # the one good message, last
        ]
        for topic, payload in sends:
            front.publish(topic, payload, qos=1).wait_for_publish(5)
        wait_for(lambda: relay.counters["relayed"] >= 1)
        time.sleep(0.3)  # anything wrongly let through would arrive by now
    finally:
        front.loop_stop()
        front.disconnect()
    assert relay.counters == {
        "relayed": 1,
        "dropped.json": 2,
        "dropped.sensor_mismatch": 1,
        "dropped.schema": 1,
        "dropped.too_large": 1,
    }
    [msg] = relayed(outbox)
    assert (msg.sensor_id, msg.sensor_kind, msg.body["uptime_s"]) == (FRONT, "heartbeat", 1)


def test_anonymous_and_unknown_users_are_refused(site: SiteBroker) -> None:
    for user, password in [(None, None), ("intruder", "x" * 20), (FRONT, "wrong" * 4)]:
        c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
        if user is not None:
            c.username_pw_set(user, password)
        results: list[Any] = []
        c.on_connect = lambda _c, _u, _f, reason, _p, out=results: out.append(reason)
        c.connect("127.0.0.1", site.port)
        deadline = time.monotonic() + 5
        while not results and time.monotonic() < deadline:
            c.loop(0.05)
        with contextlib.suppress(Exception):
            c.disconnect()
        assert results and results[0].is_failure, f"{user!r} was let in"


def test_passwords_are_stored_hashed(site: SiteBroker) -> None:
    text = (site.workdir / "broker" / "passwd").read_text()
    users = [line.split(":", 1)[0] for line in text.splitlines()]
    assert sorted(users) == sorted([RELAY_USER, FRONT, BACK])
    for cred in site.creds.values():
        assert cred.password not in text
    assert (site.workdir / "broker" / "passwd").stat().st_mode & 0o077 == 0


def test_signed_config_update_reaches_the_sensor(
    site: SiteBroker, relay: Relay, tmp_path: Path
) -> None:
    sup = node(site, tmp_path, sensor=BACK)
    sup.run(iterations=1)
    assert sup.settings.heartbeat_s == 60
    update = sign_config(sensor_id=BACK, key=KEY, counter=7, settings={"heartbeat_s": 300})
    relay.push_config(BACK, update)
    wait_for(lambda: (sup.step(), sup.settings.heartbeat_s == 300)[1])
    assert sup.verifier.accepted == 1 and sup.settings.counter == 7
    # The same update again (a replay by someone who recorded it): refused.
    relay.push_config(BACK, update)
    wait_for(lambda: (sup.step(), sup.verifier.rejected == 1)[1])
    assert sup.verifier.last_reason == "replay"
    # Signed with another key: refused too.
    forged = sign_config(sensor_id=BACK, key=b"f" * 32, counter=8, settings={"heartbeat_s": 10})
    relay.push_config(BACK, forged)
    wait_for(lambda: (sup.step(), sup.verifier.rejected == 2)[1])
    assert sup.verifier.last_reason == "bad_mac"
    assert sup.settings.heartbeat_s == 300
    sup.session.close()


def test_canary_events_wait_for_a_restarting_relay(
    site: SiteBroker, outbox: Outbox, tmp_path: Path
) -> None:
    client_id = f"relay-{tmp_path.name}"
    first = make_relay(site, outbox, client_id)
    sup = node(site, tmp_path)
    sup.run(iterations=1)
    wait_for(lambda: first.counters["relayed"] >= 2)
    first.stop()  # the gateway's relay restarts (an upgrade, a crash)
    with socket.create_connection(("127.0.0.1", sup.canary.listening()[0]), timeout=5):
        sup.run(iterations=1)  # the touch is published at QoS 1 while no relay listens
    second = make_relay(site, outbox, client_id)
    try:
        wait_for(lambda: second.counters["relayed"] >= 1)
    finally:
        second.stop()
        sup.session.close()
    assert [m.sensor_kind for m in relayed(outbox)] == ["self_report", "heartbeat", "canary"]
