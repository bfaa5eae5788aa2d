"""The scan rule through the Engine, with hand-built records (see test_detect_rules.py)."""

from __future__ import annotations

import pytest
from detect_records import T0, cats, flow, probe, run
from mimamori.protocol import ArpEvent

# --- scan ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ports", "completed", "expected"),
    [
        (9, 0, False),  # 9 failed ports < vertical_ports 10
        (10, 0, True),
        (5, 40, False),  # 5 + 40 x 0.1 = 9 weighted
        (5, 50, True),  # 5 + 50 x 0.1 = 10
    ],
)
def test_vertical_scan_threshold(ports: int, completed: int, expected: bool) -> None:
    recs = [
        probe(dst_ip="192.168.1.20", dst_port=1000 + i, first_seen=T0 + i * 0.1)
        for i in range(ports)
    ]
    recs += [
        flow(dst_ip="192.168.1.20", dst_port=2000 + i, first_seen=T0 + i * 0.1)
        for i in range(completed)
    ]
    alerts = [a for a in run(recs) if a.rule == "scan.vertical"]
    assert bool(alerts) is expected
    if expected:
        assert alerts[0].actor == "192.168.1.10" and alerts[0].target == "192.168.1.20"
        assert alerts[0].severity == "medium"  # LAN to LAN


@pytest.mark.parametrize(
    ("src", "dst_base", "hosts", "severity"),
    [
        # A LAN host sweeping the internet that no host has answered yet (not even with a
        # refusal): a worm's first seconds, or a client behind a dead uplink.
        ("192.168.1.10", "198.51.100.", 16, "low"),
        ("192.168.1.10", "198.51.100.", 15, None),
        ("203.0.113.9", "192.168.1.", 5, "low"),  # internet background scan, unanswered
        ("203.0.113.9", "192.168.1.", 4, None),
    ],
)
def test_horizontal_scan(src: str, dst_base: str, hosts: int, severity: str | None) -> None:
    recs = [
        probe(src_ip=src, dst_ip=f"{dst_base}{i + 20}", dst_port=23, first_seen=T0 + i)
        for i in range(hosts)
    ]
    alerts = [a for a in run(recs) if a.rule == "scan.horizontal"]
    assert [a.severity for a in alerts][:1] == ([severity] if severity else [])


def test_an_outbound_sweep_is_paged_once_the_internet_answers() -> None:
    """The first refusal shows the link is up: the sweep is an infected device's."""
    recs = [probe(dst_ip=f"198.51.100.{i + 20}", dst_port=23, first_seen=T0 + i) for i in range(16)]
    silent = [a for a in run(recs) if a.rule == "scan.horizontal"]
    assert [a.severity for a in silent] == ["low"]
    assert "link may be down" in silent[0].summary_en and silent[0].evidence["replied"] == 0
    refused = probe(dst_ip="198.51.100.99", dst_port=23, first_seen=T0 + 20, pkts_dst2src=1,
                    bytes_dst2src=54, rst=1)  # fmt: skip
    alerts = [a for a in run([*recs, refused]) if a.rule == "scan.horizontal"]
    assert [a.severity for a in alerts] == ["low", "high"]
    assert alerts[1].evidence["replied"] == 1 and "link" not in alerts[1].summary_en


def test_busy_client_is_not_a_scanner() -> None:
    # 300 distinct sites in 5 minutes, all answered: weighted 30 >= 16, but no failed
    # probes (min_failed_share 0.5 needs 8).
    recs = [flow(dst_ip=f"198.51.{i // 200}.{i % 200 + 1}", first_seen=T0 + i, src_port=40000 + i)
            for i in range(300)]  # fmt: skip
    assert not [a for a in run(recs) if a.category == "scan"]
    # Eight of them failing tips it over.
    recs += [probe(dst_ip=f"198.51.9.{i + 1}", first_seen=T0 + 100 + i, src_port=30000 + i)
             for i in range(8)]  # fmt: skip
    assert [a.rule for a in run(recs) if a.category == "scan"] == ["scan.horizontal"]


def test_inbound_scan_answered_is_medium() -> None:
    recs = [probe(src_ip="203.0.113.9", dst_ip=f"192.168.1.{i + 20}", first_seen=T0 + i)
            for i in range(4)]  # fmt: skip
    recs.append(flow(src_ip="203.0.113.9", dst_ip="192.168.1.30", dst_port=3389, first_seen=T0 + 5))
    recs += [probe(src_ip="203.0.113.9", dst_ip=f"192.168.1.{i + 40}", first_seen=T0 + 6 + i)
             for i in range(2)]  # fmt: skip
    assert ("scan", "203.0.113.9", "medium") in cats(run(recs))


def test_scan_window_expires() -> None:
    # 10 failed ports, but spread over 10 x 40 s: never 10 within 300 s.
    recs = [probe(dst_ip="192.168.1.20", dst_port=100 + i, first_seen=T0 + i * 40)
            for i in range(10)]  # fmt: skip
    assert not run(recs)


def test_reversed_flows_are_not_probes() -> None:
    # A one-way tap shows a server's replies as flows from port 443 to ephemeral ports.
    recs = [
        probe(src_ip="203.0.113.5", src_port=443, dst_ip="192.168.1.10", dst_port=50000 + i,
              first_seen=T0 + i)
        for i in range(30)
    ]  # fmt: skip
    assert not run(recs)


def test_arp_and_icmp_sweeps() -> None:
    arps = [
        ArpEvent(ts=T0 + i * 0.1, op="request", src_mac="02:00:00:00:00:66",
                 src_ip="192.168.1.66", target_ip=f"192.168.1.{i + 1}")
        for i in range(32)
    ]  # fmt: skip
    assert ("scan", "192.168.1.66", "medium") in cats(run(arps))
    assert not run(arps[:31])  # 31 < arp_targets 32
    gratuitous = [
        ArpEvent(ts=T0 + i, op="request", src_mac="02:00:00:00:00:66",
                 src_ip="192.168.1.66", target_ip="192.168.1.66")
        for i in range(40)
    ]  # fmt: skip
    assert not run(gratuitous)
    pings = [flow(proto=1, src_port=0, dst_port=0, dst_ip=f"192.168.1.{i + 1}", app="ICMP",
                  first_seen=T0 + i * 0.1) for i in range(12)]  # fmt: skip
    assert ("scan", "192.168.1.10", "medium") in cats(run(pings))
    assert not run(pings[:11])


@pytest.mark.parametrize(("sport", "scan"), [(1900, False), (5353, False), (52000, True)])
def test_udp_answers_to_discovery_are_not_probes(sport: int, scan: bool) -> None:
    # A printer answering a phone's SSDP M-SEARCHes, each from a fresh socket: 12 unicast
    # answers to 12 ports of the phone, none replied to. From an ephemeral port the same
    # pattern is a UDP scan (12 failed ports > vertical_ports 10).
    recs = [flow(src_ip="192.168.1.44", src_port=sport, dst_ip="192.168.1.45",
                 dst_port=50000 + 7 * i, proto=17, app="", first_seen=T0 + 20 * i,
                 pkts_dst2src=0, bytes_dst2src=0, syn=0, synack=0, fin=0, expiry="idle")
            for i in range(12)]  # fmt: skip
    alerts = [a for a in run(recs) if a.category == "scan"]
    assert bool(alerts) is scan, [a.summary_en for a in alerts]


def test_ignored_scanner() -> None:
    recs = [probe(dst_ip="192.168.1.20", dst_port=1000 + i, first_seen=T0) for i in range(20)]
    assert not run(recs, {"scan": {"ignore_sources": ["192.168.1.0/28"]}})
