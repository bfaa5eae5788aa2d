"""``mimamori edge``: the agent as a process, against a real broker and a protocol acker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mimamori.edge import cli
from mimamori.edge import config as cfg
from mimamori.protocol import Command, FlowBatch, Heartbeat
from mimamori.simulators.services import Mosquitto
from test_delivery_acker import Acker, wait_until
from test_publisher import tls_broker  # noqa: F401 - a fixture shared with the publisher tests

GW = "gw1"


def write_config(
    tmp_path: Path, broker: Mosquitto, tenant: str, *, capture: str = "", interval: float = 0.1
) -> Path:
    path = tmp_path / "edge.toml"
    capture_section = (
        f'interface = "{capture}"\nhome_net = ["127.0.0.0/8"]\n'
        "idle_timeout_s = 1\nactive_timeout_s = 2\nsummary_interval_s = 1\n"
        if capture
        else ""
    )
    path.write_text(
        f"""
[gateway]
id = "{GW}"
tenant = "{tenant}"

[capture]
{capture_section}

[mqtt]
host = "{broker.host}"
port = {broker.port}
insecure_plaintext = true
client_id = "{tenant}-{GW}"
ack_timeout_s = 2
backoff_initial_s = 0.1
backoff_max_s = 0.5

[outbox]
path = "{tmp_path / "state" / "outbox.db"}"

[heartbeat]
interval_s = {interval}
"""
    )
    return path


def start_agent(config: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "mimamori", "edge", "run", "--config", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def stop_agent(proc: subprocess.Popen[str], timeout: float = 20) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def outbox_stats(config: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    capsys.readouterr()
    assert cli.main(["outbox-stats", "--config", str(config), "--json"]) == 0
    doc: dict[str, object] = json.loads(capsys.readouterr().out)
    return doc


@pytest.fixture
def acker(broker: Mosquitto, topic_prefix: str) -> Iterator[Acker]:
    a = Acker(broker, topic_prefix)
    yield a
    a.close()


def test_check_config(
    tmp_path: Path, broker: Mosquitto, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path, broker, "acme")
    assert cli.main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "valid" in out and cfg.config_hash(cfg.load(path)) in out
    path.write_text(path.read_text().replace(f"port = {broker.port}", 'port = "abc"'))
    assert cli.main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "mqtt.port: expected an integer 1-65535, got 'abc'" in err


def test_run_refuses_a_bad_config_with_a_clear_message(tmp_path: Path, broker: Mosquitto) -> None:
    path = write_config(tmp_path, broker, "acme")
    path.write_text(path.read_text().replace("insecure_plaintext = true\n", ""))
    proc = subprocess.run(
        [sys.executable, "-m", "mimamori", "edge", "run", "--config", str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "configuration error: mqtt.credential_file: missing" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_agent_delivers_heartbeats_and_stops_cleanly_on_sigterm(
    tmp_path: Path, broker: Mosquitto, topic_prefix: str, acker: Acker,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    config = write_config(tmp_path, broker, topic_prefix)
    proc = start_agent(config)
    try:
        wait_until(lambda: len(acker.seqs(GW, "heartbeat")) >= 5, 30, "five heartbeats")
    finally:
        code, out = stop_agent(proc)
    assert code == 0, out
    assert "Traceback" not in out
    beats = acker.messages(GW, "heartbeat")
    first = beats[0]
    assert isinstance(first, Heartbeat)
    assert first.config_hash == cfg.config_hash(cfg.load(config))
    assert first.agent_version and first.mem_used_pct > 0 and first.interval_s == 0.1
    assert all(isinstance(b, Heartbeat) for b in beats)
    uptimes = [b.uptime_s for b in beats if isinstance(b, Heartbeat)]
    assert uptimes == sorted(uptimes)
    # The clean stop drained the outbox and told the cloud (the will, sent on purpose).
    wait_until(lambda: "offline" in [r.state for r in acker.snapshot()], 10, "offline status")
    stats = outbox_stats(config, capsys)
    assert stats["depth"] == 0
    # A restart continues the numbering above everything used before.
    before = max(r.seq for r in acker.snapshot())
    proc = start_agent(config)
    try:
        wait_until(
            lambda: max(acker.seqs(GW, "heartbeat")) > before, 30, "a heartbeat after restart"
        )
    finally:
        code, out = stop_agent(proc)
    assert code == 0, out


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="capturing on lo needs CAP_NET_RAW")
def test_agent_with_capture_publishes_flow_summaries(
    tmp_path: Path, broker: Mosquitto, topic_prefix: str, acker: Acker
) -> None:
    """The whole gateway on the loopback interface: its own MQTT traffic is the LAN."""
    config = write_config(tmp_path, broker, topic_prefix, capture="lo", interval=0.5)
    proc = start_agent(config)
    try:
        wait_until(lambda: len(acker.seqs(GW, "flows")) >= 1, 60, "a flow batch")
        now = time.time()
        command = Command(id="c1", command="resend_inventory", issued_at=now, expires_at=now + 60)
        acker.command(GW, command)
        wait_until(
            lambda: any(
                isinstance(b, Heartbeat) and b.packets_seen > 0
                for b in acker.messages(GW, "heartbeat")
            ),
            30, "a heartbeat counting captured packets",
        )  # fmt: skip
        assert proc.poll() is None, "agent died"
    finally:
        code, out = stop_agent(proc)
    assert code == 0, out
    assert "Traceback" not in out
    batches = acker.messages(GW, "flows")
    assert batches and all(len(b.flows) > 0 for b in batches if isinstance(b, FlowBatch))


def test_agent_over_tls_with_its_own_credential(
    tmp_path: Path,
    tls_broker: tuple[Mosquitto, Path, int],  # noqa: F811 - the fixture imported above
    topic_prefix: str,
) -> None:
    """The production path: config → CA-checked TLS context and password file → broker."""
    broker, certs, tls_port = tls_broker
    password = tmp_path / "mqtt-password"
    password.write_text("right-pass\n")
    password.chmod(0o600)
    config = write_config(tmp_path, broker, topic_prefix)
    text = config.read_text().replace("insecure_plaintext = true", (
        f'ca_file = "{certs / "ca.pem"}"\nusername = "gw1"\npassword_file = "{password}"'
    )).replace(f"port = {broker.port}", f"port = {tls_port}")  # fmt: skip
    config.write_text(text)
    acker = Acker(broker, topic_prefix)  # on the broker's plain loopback listener
    proc = start_agent(config)
    try:
        wait_until(lambda: len(acker.seqs(GW, "heartbeat")) >= 3, 30, "heartbeats over TLS")
    finally:
        code, out = stop_agent(proc)
        acker.close()
    assert code == 0, out


def test_capture_failure_ends_the_agent_with_status_1(
    tmp_path: Path, broker: Mosquitto, topic_prefix: str
) -> None:
    config = write_config(tmp_path, broker, topic_prefix, capture="nosuch0")
    proc = subprocess.run(
        [sys.executable, "-m", "mimamori", "edge", "run", "--config", str(config)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "nosuch0" in proc.stderr and "Traceback" not in proc.stderr
