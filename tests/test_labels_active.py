"""Opt-in active checks: the guard (off by default, LAN only, rate-limited) and the
open-port check against a real listening socket."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator

import pytest
from mimamori.detect.labels import Observer, assess, load_catalogue
from mimamori.edge.active import (
    ActiveConfig,
    ProbeGuard,
    ProbeRefused,
    RateLimiter,
    open_ports,
)

LAN = (ipaddress.ip_network("192.168.1.0/24"), ipaddress.ip_network("127.0.0.0/8"))


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.t += s


def _guard(enabled: bool = True, clock: FakeClock | None = None) -> ProbeGuard:
    clock = clock or FakeClock()
    cfg = ActiveConfig(enabled=enabled, rate_per_s=2.0, burst=2)
    limiter = RateLimiter(rate=2.0, burst=2, clock=clock, sleep=clock.sleep)
    return ProbeGuard(config=cfg, home_net=LAN, own_ips={"192.168.1.1"}, limiter=limiter)


def test_active_checks_are_off_by_default() -> None:
    assert ActiveConfig().enabled is False
    guard = ProbeGuard(config=ActiveConfig(), home_net=LAN)
    with pytest.raises(ProbeRefused, match="switched off"):
        guard.check("192.168.1.20")


@pytest.mark.parametrize(
    ("ip", "why"),
    [
        ("8.8.8.8", "outside the site's LAN"),
        ("10.0.0.5", "outside the site's LAN"),
        ("224.0.0.251", "not a unicast"),
        ("192.168.1.255", "broadcast"),
        ("192.168.1.0", "broadcast"),
        ("192.168.1.1", "gateway itself"),
        ("not-an-ip", "not an IP"),
    ],
)
def test_guard_refuses_hosts_off_the_lan(ip: str, why: str) -> None:
    guard = _guard()
    with pytest.raises(ProbeRefused, match=why):
        guard.check(ip)
    assert guard.refused == 1


def test_refused_host_gets_no_connection_at_all() -> None:
    calls: list[tuple[str, int]] = []

    def connect(ip: str, port: int, timeout: float) -> bool:
        calls.append((ip, port))
        return True

    with pytest.raises(ProbeRefused):
        open_ports("8.8.8.8", guard=_guard(), connect=connect)
    with pytest.raises(ProbeRefused):
        open_ports("192.168.1.20", guard=_guard(enabled=False), connect=connect)
    assert calls == []


def test_rate_limiter_paces_probes() -> None:
    clock = FakeClock()
    guard = _guard(clock=clock)
    ports = open_ports("192.168.1.20", guard=guard, ports=[1, 2, 3, 4, 5],
                       connect=lambda ip, port, t: port == 23)  # fmt: skip
    assert ports == []
    # burst 2, then one every 0.5 s at 2/s.
    assert clock.slept == pytest.approx([0.5, 0.5, 0.5])


def test_config_validation() -> None:
    with pytest.raises(ProbeRefused):
        ActiveConfig(rate_per_s=0)
    with pytest.raises(ProbeRefused):
        ActiveConfig(ports=(0,))


@pytest.fixture
def listener() -> Iterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def test_open_port_check_finds_a_listening_port_and_fails_the_label(listener: int) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()  # bound then closed: nothing listens there
    found = open_ports("127.0.0.1", guard=_guard(), ports=[listener, closed_port])
    assert found == [listener]
    obs = Observer(catalogue=load_catalogue())
    obs.active("02:00:00:00:00:09", kind="open_port", detail=f"{listener}/tcp", ts=1.0)
    label = assess(obs.devices["02:00:00:00:00:09"], catalogue=load_catalogue(), now=1.0)
    assert label.outcome == "does_not_meet"
    assert [c.id for c in label.criteria if c.status == "fail"] == ["S1.1-13"]
