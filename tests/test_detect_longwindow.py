"""Long-window rules the cloud runs: beacons over summaries, exfiltration, liveness."""

from __future__ import annotations

import random

import pytest
from mimamori.detect import load_config
from mimamori.detect.longwindow import (
    beacon_alerts,
    exfiltration_alerts,
    liveness,
    offline_alerts,
)
from mimamori.protocol import FlowSummary

CFG = load_config()
T0 = 1_700_000_000.0
HOUR = 3600.0


def row(ts: float, **kw: object) -> FlowSummary:
    base: dict[str, object] = dict(
        ts=ts, local_ip="192.168.1.10", remote_ip="203.0.113.5", remote_port=443, proto=6,
        dir="out", sni="", bytes_out=800, bytes_in=3000, conns=1, first_seen=ts + 5,
        mac="02:00:00:00:00:10",
    )  # fmt: skip
    base.update(kw)
    return FlowSummary(**base)


@pytest.mark.parametrize(
    ("name", "offsets", "expected"),
    [
        # every 15 min for 6 h: 24 buckets, regular -> beacon
        ("regular", [900 * i for i in range(24)], True),
        # same with +-2 min jitter
        ("jittered", [900 * i + random.Random(i).uniform(-120, 120) for i in range(24)], True),
        # 11 buckets < min_buckets 12
        ("short", [900 * i for i in range(11)], False),
        # office hours browsing: random times
        ("random", sorted(random.Random(1).uniform(0, 8 * HOUR) for _ in range(40)), False),
    ],
)
def test_long_window_beacon(name: str, offsets: list[float], expected: bool) -> None:
    alerts = beacon_alerts([row(T0 + o) for o in offsets], config=CFG, now=T0 + 9 * HOUR)
    assert bool(alerts) is expected, name
    if expected:
        assert alerts[0].actor == "192.168.1.10" and alerts[0].category == "beacon"
        assert alerts[0].evidence["median_interval_s"] == pytest.approx(900, rel=0.2)


def test_long_window_beacon_skips_prevalent_and_inbound() -> None:
    rows = [row(T0 + 900 * i, local_ip=f"192.168.1.{h}") for i in range(24) for h in (10, 11, 12)]
    assert not beacon_alerts(rows, config=CFG, now=T0 + 9 * HOUR)
    inbound = [row(T0 + 900 * i, dir="in") for i in range(24)]
    assert not beacon_alerts(inbound, config=CFG, now=T0 + 9 * HOUR)


def test_long_window_beacon_is_for_slow_tcp_call_backs_only() -> None:
    """Every 6 h (a firmware check), every minute (the gateway's own rule's range) and UDP
    (a heartbeat socket looks like new call-backs in summaries) are not this rule's."""
    week = T0 + 7 * 24 * HOUR
    six_hourly = [row(T0 + 6 * HOUR * i) for i in range(28)]
    assert not beacon_alerts(six_hourly, config=CFG, now=week)
    each_minute = [row(T0 + 60 * i) for i in range(200)]
    assert not beacon_alerts(each_minute, config=CFG, now=T0 + 4 * HOUR)
    udp = [row(T0 + 900 * i, proto=17, remote_port=32100) for i in range(24)]
    assert not beacon_alerts(udp, config=CFG, now=T0 + 9 * HOUR)
    assert beacon_alerts([row(T0 + 900 * i) for i in range(24)], config=CFG, now=T0 + 9 * HOUR)


def _history(days: int, per_hour: int) -> list[FlowSummary]:
    now = T0 + days * 24 * HOUR
    return [row(now - (h + 1.5) * HOUR, bytes_out=per_hour) for h in range(days * 24)]


@pytest.mark.parametrize(
    ("history_mb", "current_mb", "days", "expected"),
    [
        (5, 900, 7, True),  # 180x the usual hour, far above 200 MB
        (5, 150, 7, False),  # under the 200 MB floor
        (50, 400, 7, False),  # only 8x the usual (min_ratio 10)
        (5, 900, 0.5, False),  # 12 h of history < min_baseline_buckets 24
    ],
)
def test_exfiltration(history_mb: int, current_mb: int, days: float, expected: bool) -> None:
    now = T0 + days * 24 * HOUR
    rows = [
        row(now - (h + 1.5) * HOUR, bytes_out=history_mb * 1_000_000) for h in range(int(days * 24))
    ]
    rows.append(row(now - 0.5 * HOUR, bytes_out=current_mb * 1_000_000, sni="drop.example"))
    alerts = exfiltration_alerts(rows, config=CFG, now=now)
    assert bool(alerts) is expected
    if expected:
        assert alerts[0].target == "drop.example" and alerts[0].severity == "high"
        assert alerts[0].mac == "02:00:00:00:00:10"


def test_liveness_and_offline_alerts() -> None:
    now = T0 + 1000
    # 4 missed heartbeats of 30 s: silent > 120 s is offline.
    decisions = liveness({"gw-a": now - 60, "gw-b": now - 121}, kind="gateway", now=now,
                         config=CFG)  # fmt: skip
    assert [(d.subject, d.offline) for d in decisions] == [("gw-a", False), ("gw-b", True)]
    alerts = offline_alerts(decisions, now=now, config=CFG)
    assert [(a.category, a.actor, a.severity) for a in alerts] == [
        ("gateway_offline", "gw-b", "high")
    ]
    sensors = liveness({"s1": now - 601}, kind="sensor", now=now, config=CFG)
    again = offline_alerts(sensors, now=now + 60, config=CFG)
    first = offline_alerts(sensors, now=now, config=CFG)
    assert first[0].category == "sensor_offline" and first[0].dedup_key == again[0].dedup_key
