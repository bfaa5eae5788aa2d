"""The agent's active checks: switched on in the config, the worker finds the factory
login of a fake device on loopback and the published inventory carries it to the cloud;
the tenant's set_config command switches the checks within the local allow_remote rule,
and ``mimamori cloud active`` sends it (and audits it)."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import pytest
from conftest import Database, agent_config, wait_until
from mimamori.cloud import cli as cloud_cli
from mimamori.cloud.migrate import migrate
from mimamori.edge import agent as agent_mod
from mimamori.edge import config as cfg
from mimamori.edge.errors import ConfigError
from mimamori.protocol import ArpEvent, Command, DeviceBatch, codec, topics
from mimamori.simulators.fake_device import TelnetServer
from mimamori.simulators.services import Mosquitto
from paho.mqtt.enums import CallbackAPIVersion

MAC = "02:00:00:00:00:42"
#: The fake device's address: on the LAN (127.0.0.0/8 here) but not one of the box's own.
DEVICE_IP = "127.0.0.2"


def _config(tmp_path: Path, broker: Mosquitto, tenant: str, active: str) -> cfg.Config:
    return agent_config(tmp_path, broker, tenant, home_net="127.0.0.0/8",
                        extra=f"[active]\n{active}")  # fmt: skip


_wait = functools.partial(wait_until, timeout=20.0)


@contextmanager
def _running(agent: agent_mod.Agent) -> Iterator[None]:
    """The publisher, the active worker and a stand-in for the capture thread (which
    runs the door's jobs between records; live capture on lo needs privileges)."""
    assert agent.capture is not None
    door = agent.capture.door
    stop = threading.Event()

    def capture_standin() -> None:
        while not stop.wait(0.1):
            door.tick(time.time())

    threads = [
        threading.Thread(target=agent.publisher.run, args=(stop,), daemon=True),
        threading.Thread(target=capture_standin, daemon=True),
    ]
    for t in threads:
        t.start()
    agent._start_active()
    try:
        yield
    finally:
        agent._stop_active()
        stop.set()
        for t in threads:
            t.join(15)
        agent.outbox.close()


class _Subscriber:
    def __init__(self, broker: Mosquitto, topic: str) -> None:
        self.messages: list[bytes] = []
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
        self.client.on_message = lambda c, u, m: self.messages.append(m.payload)
        self.client.connect(broker.host, broker.port)
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _command(args: dict[str, object], n: int = 1) -> bytes:
    now = time.time()
    return codec.encode(Command(id=f"c{n}-{now}", command="set_config", args=args,
                                issued_at=now, expires_at=now + 300))  # fmt: skip


def test_agent_finds_a_factory_login_and_publishes_it(
    tmp_path: Path, broker: Mosquitto, topic_prefix: str
) -> None:
    with TelnetServer(host=DEVICE_IP, accept=[("root", "xc3511")]) as telnet:
        active = (f"enabled = true\ncredentials = true\nports = [{telnet.port}]\n"
                  "timeout_s = 0.5\nrate_per_s = 20\nburst = 5\n")  # fmt: skip
        config = _config(tmp_path, broker, topic_prefix, active)
        agent = agent_mod.Agent(config=config)
        assert agent.active is not None and agent.active.config.enabled
        assert DEVICE_IP not in agent.active.guard.own_ips
        sub = _Subscriber(broker, topics.up(topic_prefix, "gw1", "devices"))
        # The device is known to the inventory before the worker's first round.
        assert agent.capture is not None
        pipeline = agent.capture.pipeline
        agent.capture.door.submit(lambda: pipeline.on_arp(ArpEvent(
            ts=time.time(), op="request", src_mac=MAC, src_ip=DEVICE_IP, target_ip="127.0.0.1",
        )))  # fmt: skip
        try:
            with _running(agent):

                def published() -> list[dict[str, str]]:
                    out = []
                    for payload in list(sub.messages):
                        batch = codec.decode_up(payload)
                        assert isinstance(batch, DeviceBatch)
                        out += [d.extras for d in batch.devices if d.mac == MAC]
                    return out

                _wait(lambda: any("active_default_login" in e for e in published()))
                assert telnet.attempts[-1] == ("root", "xc3511")
                assert agent.active.stats["checked"] == 1
        finally:
            sub.close()
    [extras] = [e for e in published() if "active_default_login" in e]
    assert "'root'" in extras["active_default_login"]
    assert "telnet" in extras["active_default_login"]
    assert "xc3511" not in "".join(p.decode("latin-1") for p in sub.messages)
    state = (tmp_path / "state" / agent_mod.ACTIVE_STATE_FILE).read_text()
    assert MAC in state  # a restart will not try this device's logins again today


@pytest.mark.parametrize("allow_remote", [True, False])
def test_set_config_switches_the_checks_within_the_local_rule(
    tmp_path: Path, broker: Mosquitto, topic_prefix: str, allow_remote: bool
) -> None:
    active = f"enabled = false\nallow_remote = {str(allow_remote).lower()}\n"
    config = _config(tmp_path, broker, topic_prefix, active)
    agent = agent_mod.Agent(config=config)
    assert agent.active is not None and not agent.active.config.enabled
    sub = _Subscriber(broker, "unused/#")
    command_topic = topics.command(topic_prefix, "gw1")
    try:
        with _running(agent):
            _wait(lambda: agent.publisher.connected)
            sub.publish(command_topic, _command({"active": {"enabled": True,
                                                            "credentials": True}}))  # fmt: skip
            # A malformed switch is ignored (logged), never applied. Commands are handled
            # one after the other: once the second is counted, the first has been applied.
            sub.publish(command_topic, _command({"active": {"enabled": "yes"}}, 2))
            _wait(lambda: agent.publisher.stats.commands == 2)
            assert agent.active.config.enabled is allow_remote
            assert agent.active.config.credentials is allow_remote
    finally:
        sub.close()
    # The tenant's word survives a restart.
    again = agent_mod.Agent(config=config)
    assert again.active is not None and again.active.config.enabled is allow_remote
    again.outbox.close()


def test_switching_off_remotely_is_always_honoured(
    tmp_path: Path, broker: Mosquitto, topic_prefix: str
) -> None:
    config = _config(tmp_path, broker, topic_prefix, "enabled = true\nallow_remote = false\n")
    agent = agent_mod.Agent(config=config)
    assert agent.active is not None and agent.active.config.enabled
    sub = _Subscriber(broker, "unused/#")
    try:
        with _running(agent):
            _wait(lambda: agent.publisher.connected)
            sub.publish(
                topics.command(topic_prefix, "gw1"), _command({"active": {"enabled": False}})
            )
            sub.publish(topics.command(topic_prefix, "gw1"), _command({}, 2))  # ignored
            _wait(lambda: agent.publisher.stats.commands == 2)
            assert agent.active.config.enabled is False
    finally:
        sub.close()
    again = agent_mod.Agent(config=config)
    assert again.active is not None and again.active.config.enabled is False
    again.outbox.close()


def test_cloud_cli_switches_a_running_gateway_and_audits_it(
    tmp_path: Path, broker: Mosquitto, topic_prefix: str, plain_db: Database,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    migrate(plain_db.dsn)
    monkeypatch.setenv("MIMAMORI_MQTT_HOST", broker.host)
    monkeypatch.setenv("MIMAMORI_MQTT_PORT", str(broker.port))
    monkeypatch.setenv("MIMAMORI_DSN", plain_db.dsn)
    agent = agent_mod.Agent(config=_config(tmp_path, broker, topic_prefix, "enabled = false\n"))
    assert agent.active is not None
    common = ["active", "--tenant", topic_prefix, "--gateway", "gw1", "--by", "soc-ana"]
    with _running(agent):
        _wait(lambda: agent.publisher.connected)
        assert cloud_cli.main([*common, "--on", "--credentials"]) == 0
        _wait(lambda: agent.active is not None and agent.active.config.credentials)
        assert agent.active.config.enabled
        out = capsys.readouterr().out
        assert "active checks on with factory-login tries" in out and "オン" in out
        assert cloud_cli.main([*common, "--off"]) == 0
        _wait(lambda: agent.active is not None and not agent.active.config.enabled)
        assert agent.active.config.credentials is False
    # --credentials only goes with --on; a bad id is refused before anything is sent.
    assert cloud_cli.main([*common, "--off", "--credentials"]) == 2
    assert cloud_cli.main(["active", "--tenant", "Bad Id", "--gateway", "gw1", "--on"]) == 2
    with psycopg.connect(plain_db.dsn) as conn:
        rows = conn.execute(
            "SELECT actor, action, target, tenant, result, detail FROM audit_log ORDER BY id"
        ).fetchall()
    assert [(r[0], r[1], r[2], r[3], r[4]) for r in rows] == [
        ("soc-ana", "gateway.active_checks", "gw1", topic_prefix, "ok"),
    ] * 2
    assert [(r[5]["enabled"], r[5]["credentials"]) for r in rows] == [(True, True), (False, False)]


_BASE = '[gateway]\nid = "gw1"\ntenant = "acme"\n[mqtt]\nhost = "h"\n[active]\n'


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ('enabled = "yes"', "active.enabled: expected true or false, got 'yes'. Set active"),
        ("max_tries = 20", "active.max_tries: expected an integer 1-10, got 20. Set active"),
        ("rate_per_s = 0", "active.rate_per_s: expected a number of connections per second"),
        ("interval_h = -1", "active.interval_h: expected a number of hours"),
        ("timeout_s = 60", "active.timeout_s: expected a number of seconds"),
        ('ports = ["telnet"]', "active.ports: expected a list of TCP ports 1-65535, got"),
        ("ports = [0, 23]", "active.ports: expected a list of TCP ports 1-65535, got [0, 23]"),
        ("ports = []", "active.ports: expected a list of TCP ports 1-65535, got []"),
        ("ports = [23, 23]", "active.ports: [23, 23] lists a port twice"),
        ("credential = true", "active.credential: unknown setting"),
    ],
)
def test_active_config_errors_name_the_field_and_the_fix(setting: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        cfg.parse(_BASE + setting + "\n")
    assert str(info.value).startswith(message)


def test_active_config_defaults_are_off() -> None:
    config = cfg.parse(_BASE)
    active = cfg.active_config(config)
    assert (active.enabled, active.credentials, config.active.allow_remote) == (False, False, True)
    assert (active.max_tries, active.interval_h, active.rate_per_s) == (3, 24.0, 2.0)
