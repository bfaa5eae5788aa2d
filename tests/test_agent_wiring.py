"""The agent's wiring: intel bundle -> engine (and disk, and heartbeat), the tenant's
detection config, the sensor relay from ``[sensors]``."""

from __future__ import annotations

import functools
import json
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from conftest import agent_config, wait_until
from mimamori.edge import agent as agent_mod
from mimamori.edge import config as cfg
from mimamori.edge.errors import ConfigError
from mimamori.edge.summaries import parse_home_net
from mimamori.protocol import FlowRecord, IntelBundle, codec, topics
from mimamori.simulators.services import Mosquitto
from paho.mqtt.enums import CallbackAPIVersion

BAD_IP = "203.0.113.7"


def _config(tmp_path: Path, broker: Mosquitto, tenant: str, extra: str = "",
            capture: bool = True) -> cfg.Config:  # fmt: skip
    return agent_config(tmp_path, broker, tenant, capture=capture, extra=extra)


def _bundle(generated_at: float) -> IntelBundle:
    return IntelBundle(version="v1", generated_at=generated_at, ips=[BAD_IP],
                       domains=["evil.example"], sources=["test"])  # fmt: skip


def _flow_to(ip: str, t: float) -> FlowRecord:
    return FlowRecord(first_seen=t, last_seen=t + 1, src_ip="192.168.1.10", src_port=50000,
                      dst_ip=ip, dst_port=443, proto=6, src_mac="02:00:00:00:00:10",
                      pkts_src2dst=5, pkts_dst2src=5, bytes_src2dst=500, bytes_dst2src=900,
                      syn=1, synack=1)  # fmt: skip


_wait = functools.partial(wait_until, timeout=10.0)


def test_build_engine_uses_intel_and_the_tenants_override(
    tmp_path: Path, broker: Mosquitto
) -> None:
    override = tmp_path / "detect.toml"
    override.write_text('[intel_match]\nseverity_outbound = "critical"\n')
    config = _config(tmp_path, broker, "acme", f'[detect]\noverride = "{override}"\n')
    nets = parse_home_net(["192.168.1.0/24"])
    engine = agent_mod.build_engine(config=config, home_net=nets, intel=_bundle(1.0),
                                    vendor_of=lambda mac: "")  # fmt: skip
    t = time.time()
    assert engine.on_flow(_flow_to("198.51.100.1", t)) == []
    [alert] = [a for a in engine.on_flow(_flow_to(BAD_IP, t)) if a.category == "intel_match"]
    assert alert.severity == "critical"  # the override, not the default "high"
    # Without a bundle nothing matches.
    bare = agent_mod.build_engine(config=config, home_net=nets)
    assert [a for a in bare.on_flow(_flow_to(BAD_IP, t)) if a.category == "intel_match"] == []


def test_bad_detection_override_is_a_config_error(tmp_path: Path, broker: Mosquitto) -> None:
    override = tmp_path / "detect.toml"
    override.write_text("[scan]\nwindow_s = -1\n")
    config = _config(tmp_path, broker, "acme", f'[detect]\noverride = "{override}"\n')
    with pytest.raises(ConfigError, match=r"detect\.override"):
        cfg.detect_config(config)


def test_agent_takes_the_retained_bundle_keeps_it_and_reports_its_age(
    tmp_path: Path, broker: Mosquitto, topic_prefix: str
) -> None:
    generated = time.time() - 120
    pub = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    pub.publish(topics.intel(topic_prefix), codec.encode(_bundle(generated)), qos=1,
                retain=True).wait_for_publish(5)  # fmt: skip
    pub.loop_stop()
    pub.disconnect()

    config = _config(tmp_path, broker, topic_prefix)
    agent = agent_mod.Agent(config=config)
    assert agent.capture is not None and agent._intel_age() is None
    stop = threading.Event()
    thread = threading.Thread(target=agent.publisher.run, args=(stop,), daemon=True)
    thread.start()
    try:
        _wait(agent.intel_path.exists)  # saved as soon as it arrives
        # The capture thread applies it between two records; stand in for it here.
        agent.capture.door.tick(time.time())
        [_alert] = [a for a in agent.capture.engine.on_flow(_flow_to(BAD_IP, time.time()))
                   if a.category == "intel_match"]  # fmt: skip
        beat = agent.probe.heartbeat(1)
        assert beat.intel_age_s is not None and 119 <= beat.intel_age_s < 200
    finally:
        stop.set()
        thread.join(10)
        agent.outbox.close()

    # A restart has the bundle before the broker answers (no publisher running here).
    again = agent_mod.Agent(config=config)
    assert again.capture is not None
    assert again.intel is not None and again.intel.version == "v1"
    assert [a for a in again.capture.engine.on_flow(_flow_to(BAD_IP, time.time()))
            if a.category == "intel_match"]  # fmt: skip
    assert again.probe.heartbeat(2).intel_age_s is not None
    again.outbox.close()


def test_a_damaged_saved_bundle_is_ignored(tmp_path: Path, broker: Mosquitto) -> None:
    config = _config(tmp_path, broker, "acme")
    path = agent_mod.intel_path(config)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"{not a bundle")
    agent = agent_mod.Agent(config=config)
    assert agent.intel is None and agent._intel_age() is None
    agent.outbox.close()


def test_relay_starts_and_stops_with_the_agent(
    tmp_path: Path, broker: Mosquitto, topic_prefix: str
) -> None:
    creds = tmp_path / "sensors"
    creds.mkdir()
    (creds / "relay.password").write_text("r" * 24)
    (creds / "relay.password").chmod(0o600)
    (creds / "s1.password").write_text("p" * 24)
    (creds / "s1.password").chmod(0o600)
    sensors = (f'[sensors]\nhost = "{broker.host}"\nport = {broker.port}\n'
               f'credentials_dir = "{creds}"\n')  # fmt: skip
    config = _config(tmp_path, broker, topic_prefix, sensors, capture=False)
    assert agent_mod.Agent(config=_config(tmp_path / "b", broker, topic_prefix,
                                          capture=False)).relay is None  # fmt: skip
    agent = agent_mod.Agent(config=config)
    assert agent.relay is not None and set(agent.relay.known) == {"s1"}
    stop = threading.Event()
    runner = threading.Thread(target=agent.run, args=(stop,), daemon=True)
    runner.start()
    try:
        assert agent.relay.wait_ready(10)
        sensor = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
        sensor.connect(broker.host, broker.port)
        sensor.loop_start()
        body = json.dumps({"v": 1, "sensor": "s1", "seq": 0, "uptime_s": 3}).encode()
        sensor.publish("site/sensors/s1/heartbeat", body, qos=1).wait_for_publish(5)
        sensor.loop_stop()
        sensor.disconnect()
        _wait(lambda: agent.relay.counters["relayed"] == 1)
        # A sensor enrolled while running is picked up at the next heartbeat.
        (creds / "s2.password").write_text("q" * 24)
        agent._housekeeping()
        assert set(agent.relay.known) == {"s1", "s2"}
    finally:
        stop.set()
        runner.join(30)
    assert not runner.is_alive()
    assert not agent.relay._client.is_connected()


def test_sensors_section_errors_name_the_setting(tmp_path: Path, broker: Mosquitto) -> None:
    with pytest.raises(ConfigError, match=r"sensors\.credentials_dir: missing"):
        _config(tmp_path, broker, "acme", '[sensors]\nhost = "192.168.1.2"\n', capture=False)
    config = _config(tmp_path, broker, "acme",
                     f'[sensors]\nhost = "192.168.1.2"\ncredentials_dir = "{tmp_path}"\n',
                     capture=False)  # fmt: skip
    with pytest.raises(ConfigError, match=r"relay\.password does not exist"):
        cfg.sensor_credentials(config)
