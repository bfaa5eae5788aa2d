"""The firmware's logic under real MicroPython (the WebAssembly port from npm).

firmware/tests/run_mpy.mjs loads MicroPython, puts the firmware package and fake hardware
(network, machine, socket, umqtt.simple: firmware/tests/fakes) into its filesystem and runs
the scripts in firmware/tests/mpy. Each script prints ``@@FACT`` lines that these tests
check with CPython (json, hmac): heartbeat content, canary events, authenticated config
updates, the backoff schedule, and that the loop allocates nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from mimamori.cloud.sensors import sign_config

REPO = Path(__file__).resolve().parent.parent
FIRMWARE = REPO / "firmware"
RUNNER = FIRMWARE / "tests" / "run_mpy.mjs"
SCRIPTS = FIRMWARE / "tests" / "mpy"
KEY = bytes.fromhex("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff")
SENSOR = "s-front-desk"

Facts = dict[str, list[Any]]


def _updates() -> list[tuple[str, str]]:
    def signed(counter: int, settings: dict[str, Any], *, key: bytes = KEY,
               sensor: str = SENSOR) -> str:  # fmt: skip
        return sign_config(sensor_id=sensor, key=key, counter=counter, settings=settings).decode()

    good = signed(5, {"heartbeat_s": 30})
    tampered = json.loads(good)
    tampered["body"] = tampered["body"].replace("30", "10")
    return [
        ("good", good),
        ("replayed", good),
        ("older_counter", signed(4, {"heartbeat_s": 90})),
        ("bad_mac", json.dumps(tampered)),
        ("wrong_key", signed(9, {"heartbeat_s": 120}, key=b"k" * 32)),
        ("other_sensor", signed(9, {"heartbeat_s": 120}, sensor="s-other")),
        ("invalid_setting", signed(9, {"heartbeat_s": 5})),
        ("unknown_setting", signed(9, {"gateway_host": "10.0.0.66"})),
        ("not_json", "{nope"),
        ("good_later", signed(12, {"heartbeat_s": 120})),
    ]


VECTORS = [(b"k" * 16, b""), (KEY, b"hello"), (b"x" * 64, b"a" * 200), (b"y" * 100, b"abc")]


@pytest.fixture(scope="module")
def mpy(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[bool, str, Facts]]:
    """Run every script once; per script: (ok, error, facts by name)."""
    if shutil.which("node") is None:
        pytest.skip("node is not installed: run scripts/bootstrap.sh (apt nodejs npm)")
    if not (FIRMWARE / "node_modules" / "@micropython").exists():
        pytest.skip("MicroPython (WebAssembly) is not installed: (cd firmware && npm install)")
    tmp = tmp_path_factory.mktemp("mpy")
    data = {
        "updates": _updates(),
        "vectors": [[k.hex(), m.hex()] for k, m in VECTORS],
    }
    scripts = []
    for script in sorted(SCRIPTS.glob("*.py")):
        target = tmp / script.name
        target.write_text(f"DATA = {json.dumps(data)}\n" + script.read_text())
        scripts.append(str(target))
    proc = subprocess.run(
        ["node", str(RUNNER), *scripts], capture_output=True, text=True, timeout=120,
        cwd=FIRMWARE,
    )  # fmt: skip
    results: dict[str, tuple[bool, str, Facts]] = {}
    facts: Facts = defaultdict(list)
    for line in proc.stdout.splitlines():
        if line.startswith("@@FACT "):
            fact = json.loads(line[7:])
            facts[fact["name"]].append(fact["value"])
        elif line.startswith("@@RESULT "):
            result = json.loads(line[9:])
            results[result["script"]] = (result["ok"], result["error"], dict(facts))
            facts = defaultdict(list)
    assert results, f"runner printed no results: {proc.stdout[-2000:]} {proc.stderr[-2000:]}"
    return results


def facts_of(mpy: dict[str, tuple[bool, str, Facts]], script: str) -> dict[str, Any]:
    ok, error, facts = mpy[script]
    assert ok, f"{script} failed under MicroPython:\n{error}"
    return {name: values[0] if len(values) == 1 else values for name, values in facts.items()}


def test_runs_under_micropython(mpy: dict[str, tuple[bool, str, Facts]]) -> None:
    assert set(mpy) == {p.name for p in SCRIPTS.glob("*.py")}
    self_report = facts_of(mpy, "heartbeat.py")["self_report"]
    # The WebAssembly port reports itself; a CPython fallback would not get here.
    assert self_report["platform"] == "webassembly"
    assert self_report["mpy"].startswith("1.")


def test_heartbeat_content(mpy: dict[str, tuple[bool, str, Facts]]) -> None:
    f = facts_of(mpy, "heartbeat.py")
    assert f["topics"] == [f"site/sensors/{SENSOR}/self_report", f"site/sensors/{SENSOR}/heartbeat"]
    assert f["subscriptions"] == [f"site/sensors/{SENSOR}/config"]
    # client id, gateway, port 1883 (TLS off in this config), user = sensor id, password
    assert f["connect"] == [SENSOR, "192.168.1.2", 1883, SENSOR,
                            "Zq7u1oXv3r9Lw2Kp8Nc4Bd6Hy0Tm5Ej"]  # fmt: skip
    assert f["heartbeat_0"] == {
        "v": 1, "sensor": SENSOR, "seq": 1, "uptime_s": 0, "free_mem": 123456, "rssi": -58,
        "fw": "0.1.0", "canary_total": 0, "canary_dropped": 0, "reconnects": 0,
    }  # fmt: skip
    assert f["heartbeats_at_59s"] == 1
    assert f["heartbeats_at_61s"] == 2
    assert f["heartbeat_1"]["uptime_s"] == 60
    assert f["heartbeat_1"]["seq"] == 2
    # Fed on every loop tick (200 ms) and between Wi-Fi polls: far more than the timeout needs.
    assert f["watchdog_feeds"] >= 61_000 // 200


def test_self_report(mpy: dict[str, tuple[bool, str, Facts]]) -> None:
    r = facts_of(mpy, "heartbeat.py")["self_report"]
    assert r["sensor"] == SENSOR and r["seq"] == 0 and r["v"] == 1
    assert r["tls"] is False  # this test config has TLS off, and the report says so
    assert r["unique_credential"] is True
    assert r["network_repl"] is False
    assert r["wifi_ap"] is False
    assert r["canary_ports"] == [23, 80, 445, 502, 3389]
    assert r["fw"] == "0.1.0"


def test_canary_events(mpy: dict[str, tuple[bool, str, Facts]]) -> None:
    f = facts_of(mpy, "canary.py")
    assert f["listening"] == [23, 80, 445, 3389]
    assert f["failed_ports"] == [502]  # bound by something else: reported, not fatal
    assert f["touch_unlistened"] is False
    assert f["canary_0"] == {
        "v": 1, "sensor": SENSOR, "seq": 2, "port": 445, "src_ip": "192.168.1.66",
        "src_port": 40001, "age_ms": 0, "dropped": 0,
    }  # fmt: skip
    # The connection was closed at once, without sending anything.
    assert f["closed_conns"] == [["192.168.1.66", 40001]]
    # 20 touches between two polls: the 16-slot ring keeps the newest 16, counts 4 lost.
    assert f["pending_after_scan"] == 16
    assert f["dropped_after_scan"] == 4
    assert f["canary_count"] == 17
    assert f["canary_last"]["src_ip"] == "192.168.1.119"
    assert f["canary_last"]["dropped"] == 4
    assert f["pending_after_send"] == 0
    assert f["heartbeat_last"]["canary_total"] == 21
    assert f["heartbeat_last"]["canary_dropped"] == 4
    # A touch during an outage is kept and sent after reconnecting, with its age.
    assert f["reconnects"] == 3
    outage = f["canary_after_outage"]
    assert (outage["port"], outage["src_ip"], outage["src_port"]) == (23, "192.168.1.77", 41000)
    assert outage["age_ms"] > 1000
    assert f["qos_by_kind"] == {"canary": 1, "heartbeat": 0, "self_report": 0}


def test_hmac_matches_cpython(mpy: dict[str, tuple[bool, str, Facts]]) -> None:
    vectors = facts_of(mpy, "config.py")["vector"]
    expected = [hmac.new(k, m, hashlib.sha256).hexdigest() for k, m in VECTORS]
    assert vectors == expected


def test_config_updates(mpy: dict[str, tuple[bool, str, Facts]]) -> None:
    f = facts_of(mpy, "config.py")
    outcomes = {name: (reason, hb, counter) for name, reason, hb, counter in f["outcomes"]}
    assert outcomes == {
        "good": ("accepted", 30, 5),
        "replayed": ("replay", 30, 5),
        "older_counter": ("replay", 30, 5),
        "bad_mac": ("bad_mac", 30, 5),
        "wrong_key": ("bad_mac", 30, 5),
        "other_sensor": ("wrong_sensor", 30, 5),
        "invalid_setting": ("invalid_setting", 30, 5),
        "unknown_setting": ("invalid_setting", 30, 5),
        "not_json": ("malformed", 30, 5),
        "good_later": ("accepted", 120, 12),
    }
    assert (f["accepted"], f["rejected"]) == (2, 8)
    assert f["state"] == {"counter": 12, "settings": {"heartbeat_s": 120, "canary_enabled": 1}}
    assert f["after_foreign"] == 10  # a message on another node's topic is not handled
    assert f["self_report_last"]["config_counter"] == 12
    assert f["self_report_last"]["heartbeat_s"] == 120
    # After a restart the persisted counter still refuses the first update.
    assert f["replay_after_restart"] == ["replay", 120]


def test_backoff_schedule(mpy: dict[str, tuple[bool, str, Facts]]) -> None:
    f = facts_of(mpy, "backoff.py")
    # Lowest possible jitter: half of min(cap, 1 s * 2**n); highest: just under all of it.
    ceilings = [min(300_000, 1000 * 2**n) for n in range(12)]
    assert f["low"] == [c - c // 2 for c in ceilings]
    assert all(c - 3 <= h <= c for h, c in zip(f["high"], ceilings, strict=True))
    assert f["after_reset"] == 500
    assert f["connects"] == 1 and f["reconnects"] == 4
    # Wi-Fi association (two 100 ms polls), four backoffs, then one loop tick.
    assert f["slept_ms"] == 200 + (500 + 1000 + 2000 + 4000) + 200
    assert f["backoff_failures_after_success"] == 0
    assert len(f["logs"]) == 4 and "retry in 4000 ms" in f["logs"][-1]
    assert f["feeds"] >= 7500 // 200  # the waits fed the watchdog in 200 ms slices
    assert "wifi: no connection to office" in f["wifi_logs"][0]
    assert f["wifi_feeds"] >= 20_000 // 100  # Wi-Fi join polls every 100 ms and feeds


def test_loop_does_not_allocate(mpy: dict[str, tuple[bool, str, Facts]]) -> None:
    f = facts_of(mpy, "alloc.py")
    assert f["control_detected"] is True  # the method does see an allocation
    assert f["heap_locked_ok"] is True
    assert f["iterations"] == 200
    # warm-up and measured runs: a heartbeat every step, a canary event every 4th step
    assert f["messages"] == (20 + 5) + (200 + 50)
    # gc.mem_alloc() around 200 iterations: a constant few bytes (the call frame), not
    # growing with the number of messages.
    assert f["alloc_delta"] < 128


def test_main_and_posture(mpy: dict[str, tuple[bool, str, Facts]]) -> None:
    f = facts_of(mpy, "main_and_posture.py")
    # main.py imports everything it needs under MicroPython and, without a configuration,
    # says why and returns instead of reset-looping.
    assert f["main_returned"] is True
    assert f["clean"] == [True, False, False]
    # WebREPL listening and the board's access point up: the self-report says so.
    assert f["exposed"] == [True, True]
    # A default password, a short one, and the node's own id are not a good credential.
    assert f["weak_passwords_ok"] == [False, False, False]
    assert f["config_errors"] == [
        "sensor_id must be lowercase [a-z0-9_-]",
        "config.json: hmac_key is not hex",
        "config.json: hmac_key shorter than 16 bytes",
        "config.json: missing mqtt_password",
        "setting out of range: heartbeat_s",
        "watchdog_s must be 2-8 (the Pico W cannot wait longer)",
        "canary_ports: at most 8 ports in 1-65535",
        "canary_ports: at most 8 ports in 1-65535",
    ]


def test_docs_name_every_field_the_firmware_sends(mpy: dict[str, tuple[bool, str, Facts]]) -> None:
    """docs/firmware.md's message table must not drift from what the node really sends."""
    doc = (REPO / "docs" / "firmware.md").read_text()
    sent = {
        "heartbeat": facts_of(mpy, "heartbeat.py")["heartbeat_0"],
        "canary": facts_of(mpy, "canary.py")["canary_0"],
        "self_report": facts_of(mpy, "heartbeat.py")["self_report"],
    }
    for kind, message in sent.items():
        row = next(line for line in doc.splitlines() if line.startswith(f"| `{kind}` |"))
        documented = set(re.findall(r"`(\w+)`", row)) - {kind}
        assert documented == set(message) - {"v", "sensor", "seq"}, kind
