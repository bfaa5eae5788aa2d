"""The README's first command, scaled down: every scenario detected, nothing lost, and the
sensor node's canary touch and silence raised as alerts."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from mimamori.cloud.sensors import SensorSeen, canary_alert, offline_alerts
from mimamori.edge.outbox import Outbox
from mimamori.protocol import SensorMessage, codec
from mimamori.simulators import scenarios
from mimamori.simulators.fleet import (
    SENSOR_HEARTBEAT_S,
    FleetConfig,
    Ledger,
    SimGateway,
)

from mimamori.demo import sensor_gateways


@pytest.mark.slow
def test_demo_detects_every_scenario_and_loses_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "mimamori", "demo", "--gateways", "8", "--devices", "8",
         "--minutes", "20", "--speed", "40", "--out", str(out), "--quiet"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = proc.stdout
    lines = text.splitlines()
    assert "MISSED" not in text
    for scenario in ("beacon", "intel_match", "emotet", "rdp_bruteforce", "ransomware"):
        line = next(ln for ln in lines if ln.strip().startswith(scenario) and "→" in ln)
        assert "detected" in line, line
    for fault in ("power_cut", "site_offline"):
        line = next(ln for ln in lines if ln.strip().startswith(fault) and "→" in ln)
        assert "no loss" in line, line
    lost_line = next(ln for ln in lines if ln.startswith("lost"))
    assert lost_line.split(":", 1)[1].strip().startswith("0 of "), lost_line

    # The sensor node behind the ransomware site: the rows of "alerts by category" are
    # the alerts table grouped, so this is what the database holds. Exactly one of each:
    # one touch, one outage (no false outage while the node was heartbeating).
    start = lines.index("alerts by category / 種類別:") + 1
    by_category = {}
    for ln in lines[start:]:
        if not ln.startswith("  "):
            break
        category, severity, n = ln.split()
        by_category[category] = (severity, int(n))
    assert by_category.get("canary_touch") == ("high", 1), by_category
    assert by_category.get("sensor_offline") == ("medium", 1), by_category
    # ... and they name what the node did (source address, port, node and gateway).
    node = next(ln for ln in lines if ln.startswith("sensor node / センサー"))
    assert "s-demo-g00004 at demo-g00004" in node and "dropped / 破棄: 0" in node, node
    for category in ("canary_touch", "sensor_offline"):
        line = next(ln for ln in lines if ln.strip().startswith(category) and "→" in ln)
        assert line.endswith("detected / 検知"), line
    assert (out / "grafana" / "provisioning" / "datasources" / "mimamori.yaml").exists()
    assert list((out / "grafana" / "dashboards").glob("*.json"))


def test_sensor_gateway_is_the_ransomware_site_else_an_unfaulted_one() -> None:
    assert sensor_gateways(scenarios.NAMES, 20) == (scenarios.NAMES.index("ransomware"),)
    assert sensor_gateways(("beacon",), 3) == (0,)
    assert sensor_gateways(("power_cut", "site_offline"), 3) == (2,)
    assert sensor_gateways(("power_cut", "site_offline"), 2) == ()


def test_sensor_node_is_relayed_through_the_outbox_and_raises_both_alerts(
    tmp_path: Path,
) -> None:
    """The demo's node, one simulated gateway, a real outbox and no broker: the relayed
    messages are protocol v1, in the firmware's order, and the cloud's rules make a
    canary_touch of the touch and a sensor_offline of the silence."""
    minutes = 20
    config = FleetConfig(gateways=5, devices=8, minutes=minutes, scenarios=scenarios.TRAFFIC,
                         sensors=(4,), prefix="t")  # fmt: skip
    start = time.time() - minutes * 60
    with Outbox(path=tmp_path / "outbox.sqlite", check=False) as outbox:
        ledger = Ledger(tmp_path / "ledger.csv")
        gateway = SimGateway(config=config, index=4, outbox=outbox, ledger=ledger,
                             started_at=start)  # fmt: skip
        for second in range(0, minutes * 60 + 1, 5):
            gateway.step(start + second)
        ledger.close()
        messages = [codec.decode_up(p.payload) for p in outbox.pending(limit=10_000)]
    relayed = [m for m in messages if isinstance(m, SensorMessage)]
    assert [e.kind for e in Ledger.read([tmp_path / "ledger.csv"])].count("sensor") == len(relayed)
    sensor = "s-t-g00004"
    assert {(m.gateway, m.sensor_id) for m in relayed} == {("t-g00004", sensor)}
    kinds = [m.sensor_kind for m in relayed]
    # Self-report then heartbeats every 60 s; one touch at 30 % of the run; nothing after
    # half of it (10 min of a 20 min run: heartbeats at 0, 60, ..., 540 s).
    assert kinds[0] == "self_report" and kinds.count("canary") == 1
    assert kinds.count("heartbeat") == 10
    assert kinds.index("canary") == 1 + 6  # after the heartbeats at 0-300 s, before 360 s
    assert [m.body["seq"] for m in relayed] == list(range(len(relayed)))
    beats = [m.received_at - start for m in relayed if m.sensor_kind == "heartbeat"]
    assert beats == pytest.approx([i * SENSOR_HEARTBEAT_S for i in range(10)])

    touch = next(m for m in relayed if m.sensor_kind == "canary")
    victim = scenarios.cast(gateway.site, "ransomware").victim.ip
    alert = canary_alert(touch)
    assert (alert.category, alert.actor, alert.target) == ("canary_touch", victim, f"{sensor}:445")
    assert touch.received_at - 1 < alert.detected_at < touch.received_at  # age_ms applied

    last = relayed[-1].received_at
    seen = [SensorSeen("t-g00004", sensor, last, None)]
    end = start + minutes * 60
    (offline,) = offline_alerts(seen, now=end)
    assert (offline.category, offline.actor, offline.target) == (
        "sensor_offline", sensor, "t-g00004",
    )  # fmt: skip
    assert offline.evidence["missed_intervals"] == int((end - last) // 60) > 3
    # While it was heartbeating, the same rule saw nothing wrong.
    assert offline_alerts([SensorSeen("t-g00004", sensor, last, None)], now=last + 60) == []
