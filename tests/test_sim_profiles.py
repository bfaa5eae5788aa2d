"""Simulator profiles and scenarios: realistic devices, office hours, real detections.

Pure tests (no services): the device kinds use real vendor OUIs, sites are deterministic,
the activity curve follows a Japanese office day, the sampled summaries are valid
protocol rows, each traffic scenario makes the real detection engine raise its category,
and a reference site's day of messages fits the uplink budget.
"""

from __future__ import annotations

import random
from datetime import datetime
from pathlib import Path

import pytest
from mimamori.edge.inventory import VendorLookup, is_randomized_mac, is_unicast_mac
from mimamori.edge.summaries import DEFAULT_HOME_NET
from mimamori.protocol import FlowBatch, decode_up, encode
from mimamori.simulators import fleet, profiles, scenarios
from mimamori.simulators.profiles import JST

WEEKDAY = datetime(2026, 11, 24, tzinfo=JST).timestamp()  # a Tuesday, 00:00 JST
SATURDAY = datetime(2026, 11, 28, tzinfo=JST).timestamp()


def test_every_variant_uses_a_real_oui_of_its_vendor() -> None:
    vendors = VendorLookup()
    assert len(vendors) > 10_000, "the IEEE list from mac-vendor-lookup is missing"
    for kind in profiles.KINDS.values():
        for v in kind.variants:
            assert vendors.lookup(v.oui.lower() + "123456") == v.vendor, (kind.name, v)


def test_site_is_deterministic_with_unique_unicast_macs() -> None:
    a = profiles.build_site(tenant="t", gateway="g", devices=30, seed=7)
    b = profiles.build_site(tenant="t", gateway="g", devices=30, seed=7)
    assert a == b
    macs = [d.mac for d in a.devices]
    assert len(set(macs)) == 30
    assert all(is_unicast_mac(m) and not is_randomized_mac(m) for m in macs)
    assert all(d.ip in {str(h) for h in a.network.hosts()} for d in a.devices)
    kinds = {d.kind.name for d in a.devices}
    assert {"pc", "phone", "printer", "camera", "nas", "smart_plug"} <= kinds
    assert sum(d.kind.name == "pc" for d in a.devices) == 13
    assert a.roles["@nas"] == a.of_kind("nas")[0].ip


@pytest.mark.parametrize(
    ("hour", "presence", "expected"),
    [
        (10.0, "office", 1.0),
        (12.5, "office", 0.6),
        (8.5, "office", 0.5),
        (3.0, "office", 0.0),
        (22.0, "commute", 0.0),
        (3.0, "always", 1.0),
    ],
)
def test_activity_follows_the_office_day(hour: float, presence: str, expected: float) -> None:
    assert profiles.activity(WEEKDAY + hour * 3600, presence) == pytest.approx(expected)  # type: ignore[arg-type]


def test_weekends_are_quiet_except_always_on_devices() -> None:
    assert profiles.activity(SATURDAY + 10 * 3600, "office") == 0.0
    assert profiles.activity(SATURDAY + 10 * 3600, "always") == 1.0


def test_summaries_are_valid_rows_and_busier_at_work_than_at_night() -> None:
    site = profiles.build_site(tenant="t", gateway="g", devices=30, seed=1)
    rng = random.Random(1)
    work = [profiles.summaries(site, WEEKDAY + 10 * 3600 + 60 * i, 60, rng) for i in range(10)]
    night = [profiles.summaries(site, WEEKDAY + 3 * 3600 + 60 * i, 60, rng) for i in range(10)]
    n_work, n_night = sum(map(len, work)), sum(map(len, night))
    assert n_work > 3 * n_night > 0
    for rows in work:
        msg = FlowBatch(gateway="g", seq=1, sent_at=WEEKDAY, flows=rows)
        assert decode_up(encode(msg)) == msg
    macs = {d.mac for d in site.devices}
    for row in (r for rows in work for r in rows):
        assert row.mac in macs and row.conns >= 1 and row.bytes_out > 0
        assert row.dir == ("lan" if row.remote_ip in site.roles.values() else "out")
        assert row.pkts_out >= row.conns


@pytest.mark.parametrize("scenario", scenarios.TRAFFIC)
def test_scenario_traffic_raises_its_category_in_the_real_engine(scenario: str) -> None:
    site = profiles.build_site(tenant="t", gateway="g", devices=30, seed=3)
    engine = scenarios.make_engine(DEFAULT_HOME_NET)
    rng = random.Random(5)
    raised: set[str] = set()
    start = WEEKDAY + 10 * 3600
    for minute in range(40):  # the beacon needs 20 call-backs
        t = start + 60 * minute
        for rec in scenarios.records(scenario, site, t, t + 60, rng):
            raised |= {a.category for a in engine.on_flow(rec)}
        raised |= {a.category for a in engine.tick(t + 60)}
    assert set(scenarios.EXPECTED[scenario]) <= raised


def test_benign_office_traffic_raises_nothing_medium_or_above() -> None:
    """The background every fleet gateway sends, as flow records, through the engine."""
    from mimamori.protocol import FlowRecord

    site = profiles.build_site(tenant="t", gateway="g", devices=30, seed=1)
    engine = scenarios.make_engine(DEFAULT_HOME_NET)
    rng = random.Random(2)
    paging = []
    eph = 50000
    sessions: dict[tuple[str, str], int] = {}
    for minute in range(8 * 60, 11 * 60):  # 08:00-11:00: arrival and the busy morning
        t = WEEKDAY + 60 * minute
        for c in sorted(profiles.connections(site, t, 60, rng), key=lambda c: c.start):
            eph = eph + 1 if eph < 65000 else 50000
            tcp = c.endpoint.proto == 6
            port, duration, expiry = eph, 0.5, "idle"
            if c.endpoint.persistent:  # one session, cut by the meter's active timeout
                key = (c.device.mac, c.endpoint.name)
                tcp = key not in sessions
                port = sessions.setdefault(key, eph)
                duration, expiry = 59.0, "active"
            rec = FlowRecord(
                first_seen=c.start, last_seen=c.start + duration, src_ip=c.device.ip,
                src_port=port, dst_ip=c.remote_ip, dst_port=c.endpoint.port, expiry=expiry,
                proto=c.endpoint.proto, src_mac=c.device.mac,
                pkts_src2dst=profiles.packets(c.bytes_out, 1, c.endpoint.proto),
                pkts_dst2src=profiles.packets(c.bytes_in, 1, c.endpoint.proto),
                bytes_src2dst=c.bytes_out, bytes_dst2src=c.bytes_in, app=c.endpoint.app,
                sni=c.endpoint.name, syn=int(tcp), synack=int(tcp), fin=2 * int(tcp),
            )  # fmt: skip
            paging += [
                a for a in engine.on_flow(rec) if a.severity in ("medium", "high", "critical")
            ]
        paging += [a for a in engine.tick(t + 60) if a.severity in ("medium", "high", "critical")]
    assert paging == []


def test_fallback_alert_is_marked_as_simulated() -> None:
    site = profiles.build_site(tenant="t", gateway="g", devices=30, seed=3)
    alert = scenarios.fallback_alert("ransomware", site, WEEKDAY)
    assert alert.category == "lateral_movement" and alert.rule == "sim.ransomware"


def test_sim_clock_never_runs_ahead_of_the_wall_clock() -> None:
    clock = fleet.SimClock.for_run(minutes=60, speed=30, wall_start=1_000_000.0)
    end_wall = 1_000_000.0 + 3600 / 30
    assert clock.now(end_wall) == pytest.approx(end_wall)
    assert clock.now(1_000_000.0) == pytest.approx(1_000_000.0 + 120 - 3600)
    for wall in (1_000_000.0, 1_000_060.0, end_wall):
        assert clock.now(wall) <= wall + 1e-6


def test_reference_site_day_fits_the_uplink_budget(tmp_path: Path) -> None:
    day = fleet.site_day_uplink(devices=30, seed=1, day=WEEKDAY, workdir=tmp_path)
    assert day["total"] == sum(v for k, v in day.items() if k != "total")
    # Heartbeats every 30 s and flow batches every 60 s all day, devices at least hourly.
    assert day["heartbeat"] > 2880 * 100 and day["flows"] > 1440 * 100 and day["devices"] > 0
    assert day["total"] <= 10 * 10**6
