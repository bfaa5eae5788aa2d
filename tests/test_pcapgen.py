"""Synthetic captures through the edge's own replay: scenarios alert, the office does not.

Each scenario capture, replayed with :func:`mimamori.edge.replay.replay` (nfstream,
discovery decoder, the real detection engine with the scenarios' intel), must raise the
scenario's alert categories; an office morning must raise nothing that pages the SOC
while its DHCP and mDNS fill the inventory.
"""

from __future__ import annotations

from pathlib import Path

import dpkt
import pytest
from mimamori.edge.replay import ReplayResult, replay
from mimamori.protocol import PAGING_SEVERITIES
from mimamori.simulators import pcapgen, scenarios

pytestmark = pytest.mark.slow


def _replay(path: Path) -> ReplayResult:
    return replay([str(path)], engine_factory=lambda nets: scenarios.make_engine(nets))


@pytest.mark.parametrize("scenario", scenarios.TRAFFIC)
def test_scenario_capture_raises_its_alert(scenario: str, tmp_path: Path) -> None:
    path = tmp_path / f"{scenario}.pcap"
    stats = pcapgen.write_profile(scenario, path, devices=12, seed=2)
    assert stats.packets > 1000 and stats.last_ts - stats.first_ts > 1500
    result = _replay(path)
    raised = {a.category for a in result.alerts}
    assert set(scenarios.EXPECTED[scenario]) <= raised, raised


@pytest.fixture(scope="module")
def office_morning(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ReplayResult]:
    path = tmp_path_factory.mktemp("pcap") / "office.pcap"
    pcapgen.write_profile("office-day", path, devices=30, seed=1, hours=(8.5, 10.0))
    return path, _replay(path)


def test_office_morning_pages_nobody(office_morning: tuple[Path, ReplayResult]) -> None:
    _, result = office_morning
    paging = [a for a in result.alerts if a.severity in PAGING_SEVERITIES]
    assert paging == [], [a.summary_en for a in paging]


def test_office_morning_fills_the_inventory(office_morning: tuple[Path, ReplayResult]) -> None:
    _, result = office_morning
    site = pcapgen.site_for(30, 1)
    seen = {d.mac: d for d in result.devices}
    for dev in site.devices:
        assert dev.mac in seen, dev
        got = seen[dev.mac]
        assert got.vendor == dev.vendor and dev.ip in got.ips
        assert got.hostname == dev.hostname
        if dev.kind.services:  # announced over mDNS
            assert got.services, dev


def test_office_morning_is_metered_like_real_traffic(
    office_morning: tuple[Path, ReplayResult],
) -> None:
    path, result = office_morning
    snis = {s.sni for s in result.summaries}
    assert {"outlook.office365.com", "www.yahoo.co.jp", "teams.microsoft.com"} <= snis
    apps = {s.app.split(".")[0] for s in result.summaries}
    assert {"TLS", "DNS"} <= apps
    # Headers are real: the first TCP packets of the file form a three-way handshake,
    # and data segments are stored truncated (incl_len < orig_len).
    truncated = 0
    flags: dict[tuple[bytes, int, bytes, int], list[int]] = {}
    with open(path, "rb") as fh:
        for i, (_, buf) in enumerate(dpkt.pcap.Reader(fh)):
            eth = dpkt.ethernet.Ethernet(buf)
            ip = eth.data
            if isinstance(ip, dpkt.ip.IP) and isinstance(ip.data, dpkt.tcp.TCP):
                tcp = ip.data
                if ip.len > len(buf) - 14:
                    truncated += 1
                key = (ip.src, tcp.sport, ip.dst, tcp.dport)
                flags.setdefault(key, []).append(tcp.flags)
            if i > 20_000:
                break
    syn, ack = dpkt.tcp.TH_SYN, dpkt.tcp.TH_ACK
    handshakes = sum(
        1
        for (s, sp, d, dp), f in flags.items()
        if f[0] == syn and flags.get((d, dp, s, sp), [0])[0] == syn | ack
    )
    assert handshakes > 100 and truncated > 100
