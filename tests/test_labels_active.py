"""Opt-in active checks: the guard (off by default, LAN only, rate-limited), the open-port
check, and the per-device check (banners, factory logins over Telnet, FTP and HTTP Basic)
against real servers on loopback (simulators/fake_device.py), and the worker's schedule."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mimamori.detect.labels import Label, Observer, assess, load_catalogue
from mimamori.detect.labels.credentials import load_credentials
from mimamori.edge import active_logins
from mimamori.edge.active import (
    ActiveConfig,
    DeviceReport,
    ProbeGuard,
    ProbeRefused,
    RateLimiter,
    open_ports,
)
from mimamori.edge.active_logins import check_device, ordered_credentials
from mimamori.edge.active_worker import ActiveWorker
from mimamori.edge.inventory import Inventory, VendorLookup
from mimamori.protocol import Device, DiscoveryEvent
from mimamori.simulators.fake_device import FtpServer, HttpBasicServer, TelnetServer

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


# --- the per-device check against real servers on loopback -----------------------------

MAC = "02:00:00:00:00:42"
XIONGMAI = "Hangzhou Xiongmai Technology Co.,Ltd."


def _check_guard(
    *, credentials: bool = True, max_tries: int = 3, clock: FakeClock | None = None,
    enabled: bool = True,
) -> ProbeGuard:  # fmt: skip
    clock = clock or FakeClock()
    cfg = ActiveConfig(enabled=enabled, credentials=credentials, max_tries=max_tries,
                       timeout_s=0.5, rate_per_s=2.0, burst=2)  # fmt: skip
    limiter = RateLimiter(rate=2.0, burst=2, clock=clock, sleep=clock.sleep)
    return ProbeGuard(config=cfg, home_net=LAN, own_ips={"192.168.1.1"}, limiter=limiter)


def _label(report: DeviceReport) -> Label:
    obs = Observer(catalogue=load_catalogue())
    report.observe(obs, ts=1.0)
    return assess(obs.devices[MAC], catalogue=load_catalogue(), now=1.0)


def _status(label: Label, cid: str) -> str:
    return next(c.status for c in label.criteria if c.id == cid)


def test_telnet_factory_login_fails_the_label_without_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    # Accepts only the second Xiongmai password: the check must reach it within 3 tries
    # (the vendor's credentials first) and stop there.
    with TelnetServer(accept=[("root", "xmhdipc")]) as telnet:
        report = check_device(mac=MAC, ip="127.0.0.1", guard=_check_guard(),
                              vendor=XIONGMAI, ports=[telnet.port])  # fmt: skip
    assert telnet.attempts == [("root", "xc3511"), ("root", "xmhdipc")]
    [svc] = report.services
    assert (svc.protocol, svc.banner) == ("telnet", "IPCAM-XM530 (BusyBox telnetd)")
    [login] = report.logins
    assert (login.accepted, login.user, login.tries) == (True, "root", 2)
    label = _label(report)
    assert label.outcome == "does_not_meet"
    assert _status(label, "S1.1-02") == "fail"
    [ev] = [e for c in label.criteria if c.id == "S1.1-02" for e in c.evidence]
    assert ev.kind == "default_credential" and "'root'" in ev.detail and "telnet" in ev.detail
    event = report.event(2.0)
    assert event is not None and event.source == "active" and event.mac == MAC
    assert "root" in event.facts["default_login"]
    assert event.facts["open_ports"] == f"{telnet.port}/tcp telnet"
    # The password is nowhere: not in the facts, the label, the report, the log.
    text = json.dumps([label.to_dict(), event.facts, repr(report)]) + caplog.text
    assert "xmhdipc" not in text and "xc3511" not in text


def test_ftp_refusing_every_factory_login_is_default_rejected_and_the_cap_holds() -> None:
    with FtpServer(accept=[("owner", "long-unique-password")]) as ftp:
        report = check_device(mac=MAC, ip="127.0.0.1", guard=_check_guard(max_tries=3),
                              ports=[ftp.port])  # fmt: skip
    assert len(ftp.attempts) == 3  # max_tries, never more
    assert ftp.connections == 1 + 3  # the identification, then one per try
    [svc] = report.services
    assert (svc.protocol, svc.banner) == ("ftp", "(vsFTPd 3.0.3)")
    [login] = report.logins
    assert (login.accepted, login.tries, login.refused) == (False, 3, 3)
    assert ("default_rejected", f"ftp port {ftp.port}: 3 factory logins refused, active check") \
        in report.findings()  # fmt: skip
    label = _label(report)
    assert _status(label, "S1.1-02") == "pass"
    assert _status(label, "S1.1-13") == "fail"  # the FTP port itself is open


def test_ftp_factory_login_is_found() -> None:
    with FtpServer(accept=[("admin", "admin")]) as ftp:
        report = check_device(mac=MAC, ip="127.0.0.1", guard=_check_guard(), ports=[ftp.port])
    assert ftp.attempts == [("admin", "admin")]
    assert [k for k, _ in report.findings()] == ["open_port", "default_credential"]
    assert _status(_label(report), "S1.1-02") == "fail"


@pytest.mark.parametrize(("max_tries", "found"), [(3, True), (2, False)])
def test_http_basic_factory_login_within_the_cap(max_tries: int, found: bool) -> None:
    # admin/password is the third generic credential: found with 3 tries, not with 2.
    with HttpBasicServer(accept=[("admin", "password")]) as web:
        report = check_device(mac=MAC, ip="127.0.0.1", guard=_check_guard(max_tries=max_tries),
                              ports=[web.port])  # fmt: skip
    assert len(web.attempts) == max_tries
    [svc] = report.services
    assert (svc.protocol, svc.asks_login, svc.banner) == ("http", True, "thttpd/2.25b 29dec2003")
    label = _label(report)
    assert _status(label, "S1.1-02") == ("fail" if found else "pass")
    # A web page is not an "open port" finding (S1.1-13 stays unknown on this evidence).
    assert "open_port" not in [k for k, _ in report.findings()]
    if found:
        assert "admin" in report.facts()["default_login"]
        assert "password'" not in json.dumps(label.to_dict())


def test_open_web_page_gets_no_login_tries_but_its_banner_is_kept() -> None:
    with HttpBasicServer(protect=False) as web:
        report = check_device(mac=MAC, ip="127.0.0.1", guard=_check_guard(), ports=[web.port])
    assert web.attempts == [] and web.requests == 1
    assert report.logins == []
    assert report.facts() == {"server": "http: thttpd/2.25b 29dec2003"}
    obs = Observer(catalogue=load_catalogue())
    report.observe(obs, ts=1.0)
    assert [e.detail for e in obs.devices[MAC].of("banner")] == [
        "active_http: thttpd/2.25b 29dec2003"
    ]


def test_credentials_switch_off_means_no_login_tries(listener: int) -> None:
    with TelnetServer(accept=[("root", "xc3511")]) as telnet:
        report = check_device(mac=MAC, ip="127.0.0.1", guard=_check_guard(credentials=False),
                              vendor=XIONGMAI, ports=[telnet.port, listener])  # fmt: skip
    assert telnet.attempts == [] and telnet.connections == 1
    assert report.logins == []
    assert [p.port for p in report.services] == [telnet.port, listener]
    assert "default_login" not in report.facts()


def test_refused_targets_get_no_packet_through_the_dial_seam() -> None:
    dialled: list[tuple[str, int]] = []

    def dial(ip: str, port: int, timeout: float) -> socket.socket:
        dialled.append((ip, port))
        raise AssertionError("must not connect")

    for ip, guard in (
        ("8.8.8.8", _check_guard()),
        ("192.168.1.1", _check_guard()),  # the gateway itself
        ("192.168.1.20", _check_guard(enabled=False)),
    ):
        with pytest.raises(ProbeRefused):
            check_device(mac=MAC, ip=ip, guard=guard, ports=[23, 21, 80], dial=dial)
    assert dialled == []


def test_every_connection_is_paced_by_the_rate_limiter() -> None:
    clock = FakeClock()
    with FtpServer() as ftp:
        report = check_device(mac=MAC, ip="127.0.0.1", guard=_check_guard(clock=clock),
                              ports=[ftp.port])  # fmt: skip
    assert report.connections == ftp.connections == 4
    # burst 2, then one connection every 0.5 s at 2/s.
    assert clock.slept == pytest.approx([0.5, 0.5])


def test_switching_off_in_the_middle_stops_the_tries() -> None:
    with FtpServer() as ftp:
        guard = _check_guard(max_tries=3)
        real_dial = active_logins.dial

        dialled: list[int] = []

        def dial(ip: str, port: int, timeout: float) -> socket.socket:
            sock = real_dial(ip, port, timeout)
            dialled.append(port)
            if len(dialled) == 2:  # identified, first try under way: the tenant says off
                guard.config = dataclasses.replace(guard.config, enabled=False)
            return sock

        report = check_device(mac=MAC, ip="127.0.0.1", guard=guard, ports=[ftp.port], dial=dial)
    assert len(ftp.attempts) == 1 and len(dialled) == 2
    assert report.errors == 1 and report.logins == []


@pytest.mark.parametrize(
    ("vendor", "protocol", "first"),
    [
        ("", "http", ("admin", "admin")),
        (XIONGMAI, "telnet", ("root", "xc3511")),
        ("Ubiquiti Inc", "ssh", ("ubnt", "ubnt")),
        ("Unknown Maker Co.,Ltd", "telnet", ("root", "12345")),  # the first "(Telnet)" one
    ],
)
def test_credential_order(vendor: str, protocol: str, first: tuple[str, str]) -> None:
    order = ordered_credentials(load_credentials(), vendor=vendor, protocol=protocol)
    assert (order[0].user, order[0].password) == first
    assert all(not c.any_password for c in order)


def _published_device() -> Device:
    """A factory Telnet login found by the check, as the inventory publishes the device."""
    with TelnetServer(accept=[("root", "xc3511")]) as telnet:
        report = check_device(mac=MAC, ip="127.0.0.1", guard=_check_guard(), vendor=XIONGMAI,
                              ports=[telnet.port])  # fmt: skip
    event = report.event(5.0)
    assert event is not None
    inventory = Inventory(home_net=LAN, vendors=VendorLookup())
    inventory.on_discovery(event)
    [device] = inventory.take_changes(6.0)
    return device


def test_the_event_keeps_its_facts_in_the_inventory() -> None:
    """DiscoveryEvent(source="active") -> inventory extras active_<fact> (what the cloud
    label reads; the password nowhere)."""
    device = _published_device()
    assert device.ips == ["127.0.0.1"]
    assert "'root'" in device.extras["active_default_login"]
    assert device.extras["active_server"] == "telnet: IPCAM-XM530 (BusyBox telnetd)"
    assert "xc3511" not in json.dumps(device.extras)
    # The banner already reaches the label as the cloud reads the device.
    obs = Observer(catalogue=load_catalogue())
    obs.device(device)
    assert [e.detail for e in obs.devices[MAC].of("banner")] == [
        "active_server: telnet: IPCAM-XM530 (BusyBox telnetd)"
    ]


def test_the_cloud_label_fails_from_the_published_active_findings() -> None:
    device = _published_device()
    obs = Observer(catalogue=load_catalogue())
    obs.device(device)  # what mimamori.cloud.labels does with a stored device
    label = assess(obs.devices[MAC], catalogue=load_catalogue(), now=6.0)
    assert _status(label, "S1.1-02") == "fail"
    assert _status(label, "S1.1-13") == "fail"  # the open Telnet port


# --- the worker: once per interval per device, state kept across restarts ----------------


def _worker(tmp_path: Path, devices: list[Device], out: list[DiscoveryEvent],
            now: list[float]) -> ActiveWorker:  # fmt: skip
    clock = FakeClock()
    return ActiveWorker(
        config=ActiveConfig(enabled=True, credentials=True, timeout_s=0.5, interval_h=24),
        home_net=LAN, own_ips={"127.0.0.1"}, devices=lambda: devices, deliver=out.append,
        state_path=tmp_path / "active-state.json", clock=lambda: now[0],
        limiter=RateLimiter(rate=2.0, burst=2, clock=clock, sleep=clock.sleep),
    )  # fmt: skip


def test_worker_checks_each_device_once_per_interval(tmp_path: Path) -> None:
    with FtpServer(host="127.0.0.2", accept=[("admin", "admin")]) as ftp:
        devices = [
            Device(mac=MAC, ips=["127.0.0.2"], first_seen=0, last_seen=0),
            Device(mac="02:00:00:00:00:43", ips=["8.8.8.8"], first_seen=0, last_seen=0),
            Device(mac="02:00:00:00:00:44", ips=["127.0.0.1"], first_seen=0, last_seen=0),
            Device(mac="ff:ff:ff:ff:ff:ff", ips=["127.0.0.2"], first_seen=0, last_seen=0),
        ]
        out: list[DiscoveryEvent] = []
        now = [1000.0]
        worker = _worker(tmp_path, devices, out, now)
        worker.guard.config = dataclasses.replace(worker.config, ports=(ftp.port,))
        assert worker.run_once() == 1  # the internet host, the gateway, broadcast: skipped
        [event] = out
        assert event.mac == MAC and event.ip == "127.0.0.2" and "admin" in event.facts[
            "default_login"]  # fmt: skip
        assert worker.run_once() == 0 and ftp.connections == 2
        # A restart within the interval remembers it (a device's lockout is never hit).
        again = _worker(tmp_path, devices, out, now)
        again.guard.config = dataclasses.replace(again.config, ports=(ftp.port,))
        assert again.run_once() == 0
        now[0] += 24 * 3600
        assert again.run_once() == 1 and len(out) == 2
        # Switched off: nothing runs.
        again.switch(enabled=False)
        now[0] += 24 * 3600
        assert again.run_once() == 0 and ftp.connections == 4


def test_the_cap_is_per_device_and_protocol_not_per_port() -> None:
    # Telnet on two ports (23 and 2323, say) usually checks the same accounts.
    with TelnetServer() as first, TelnetServer() as second:
        report = check_device(mac=MAC, ip="127.0.0.1", guard=_check_guard(max_tries=3),
                              ports=[first.port, second.port])  # fmt: skip
    assert len(first.attempts) + len(second.attempts) == 3
    assert len(first.attempts) == 3 and second.attempts == []
    assert [(x.port, x.tries) for x in report.logins] == [(first.port, 3)]


def test_telnet_that_asks_only_for_a_password() -> None:
    with TelnetServer(ask_user=False, accept=[("", "xc3511")]) as telnet:
        report = check_device(mac=MAC, ip="127.0.0.1", guard=_check_guard(), vendor=XIONGMAI,
                              ports=[telnet.port])  # fmt: skip
    assert telnet.attempts == [("", "xc3511")]
    [svc] = report.services
    assert (svc.protocol, svc.banner) == ("telnet", "IPCAM-XM530 (BusyBox telnetd)")
    [login] = report.logins
    assert login.user == "(password only)"
    assert "xc3511" not in report.facts()["default_login"]


def test_a_check_refused_before_any_connection_does_not_use_up_the_interval(
    tmp_path: Path,
) -> None:
    device = Device(mac=MAC, ips=["127.0.0.2"], first_seen=0, last_seen=0)
    out: list[DiscoveryEvent] = []
    worker = _worker(tmp_path, [device], out, [1000.0])
    worker.switch(enabled=False)  # as if the tenant switched off between list and check
    worker._check(device, "127.0.0.2")
    assert worker.checked_at == {} and out == []
    assert json.loads((tmp_path / "active-state.json").read_text()) == {"checked_at": {}}


class _Hostile:
    """A port that floods binary garbage, or drips a byte every 0.1 s without end."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._talk, args=(conn,), daemon=True).start()

    def _talk(self, conn: socket.socket) -> None:
        with conn:
            try:
                if self.mode == "flood":
                    conn.sendall(bytes(range(256)) * 4096)  # 1 MiB, IAC bytes included
                else:
                    while not self.stop.wait(0.1):
                        conn.sendall(b"\xff\xfa")  # a Telnet subnegotiation that never ends
            except OSError:
                pass

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


@pytest.mark.parametrize("mode", ["flood", "drip"])
def test_a_hostile_service_costs_bounded_time_and_breaks_nothing(mode: str) -> None:
    hostile = _Hostile(mode)
    try:
        started = time.monotonic()
        report = check_device(mac=MAC, ip="127.0.0.1", guard=_check_guard(), ports=[hostile.port])
        elapsed = time.monotonic() - started
    finally:
        hostile.close()
    [svc] = report.services
    assert svc.protocol in ("telnet", "unknown") and len(svc.banner) <= 120
    assert report.logins == []  # no prompt seen: no login tried
    # timeout_s 0.5: the banner wait and the prompt wait each end at their deadline.
    assert elapsed < 5
