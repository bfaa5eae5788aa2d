"""Opt-in active checks for device labels: guarded, rate-limited, LAN-only.

Passive monitoring cannot see an idle open Telnet port or a factory password. A tenant
may switch on active checks; then, and only then, the gateway connects to devices on its
own LAN. Every probe passes :class:`ProbeGuard`, which refuses when the checks are off,
when the target is not a unicast address inside the site's home networks (never the
internet, never multicast/broadcast/network addresses, never the gateway itself), and
which spends a token of a :class:`RateLimiter` per connection so a check never floods a
fragile device.

Here: :func:`open_ports`, and what a check finds (:class:`DeviceReport`: services,
logins, findings, device facts). The per-device check (which service answers on each
port, its banner, a few factory logins over Telnet, FTP and HTTP Basic) is in
:mod:`mimamori.edge.active_logins`; the background worker that runs it once per interval
per device in :mod:`mimamori.edge.active_worker`. Results become label evidence
through ``Observer.active(mac, kind="open_port" | "default_credential" |
"default_rejected", ...)`` and, at the gateway, a ``DiscoveryEvent(source="active")``.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from mimamori.detect.labels.observe import Observer
from mimamori.edge.errors import EdgeError
from mimamori.protocol import DiscoveryEvent

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Fact values are bounded by the protocol (Short: 255 characters).
MAX_FACT = 255
#: Management ports worth checking (cleartext ones first): Telnet, FTP, alternate Telnet
#: (Mirai's 2323), HTTP admin pages, RTSP (cameras), UPnP control.
DEFAULT_PORTS: tuple[int, ...] = (23, 2323, 21, 80, 8080, 554, 49152)


class ProbeRefused(EdgeError):
    """An active check was refused by the guard (off, not on the LAN, or not allowed)."""


@dataclass(frozen=True)
class ActiveConfig:
    """Active-check settings; off unless the tenant switches them on.

    ``rate_per_s`` connections per second at most, ``burst`` of them back to back;
    ``timeout_s`` per connection attempt (and per read). ``credentials`` switches on the
    factory-login tries (their own switch: a login attempt is more than a connection);
    ``max_tries`` logins at most per device and protocol, and each device is checked at
    most once per ``interval_h`` hours, so that a device that locks out after a few bad
    passwords is never locked out by us.
    """

    enabled: bool = False
    ports: tuple[int, ...] = DEFAULT_PORTS
    rate_per_s: float = 2.0
    burst: int = 4
    timeout_s: float = 1.0
    credentials: bool = False
    max_tries: int = 3
    interval_h: float = 24.0

    def __post_init__(self) -> None:
        if not 0 < self.rate_per_s <= 50:
            raise ProbeRefused("active checks: rate_per_s must be in (0, 50]")
        if not 1 <= self.burst <= 50:
            raise ProbeRefused("active checks: burst must be in 1..50")
        if not 0 < self.timeout_s <= 10:
            raise ProbeRefused("active checks: timeout_s must be in (0, 10]")
        if any(not 0 < p < 65536 for p in self.ports):
            raise ProbeRefused("active checks: ports must be in 1..65535")
        if not 1 <= self.max_tries <= 10:
            raise ProbeRefused("active checks: max_tries must be in 1..10")
        if not 0 < self.interval_h <= 24 * 30:
            raise ProbeRefused("active checks: interval_h must be in (0, 720]")


class RateLimiter:
    """Token bucket: ``rate`` tokens a second, at most ``burst`` saved up.

    The clock and the sleep are injected so tests run instantly and exactly.
    """

    def __init__(
        self,
        *,
        rate: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(burst)
        self._at = clock()

    def acquire(self) -> float:
        """Take one token, sleeping until one is available; return the time slept."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        waited = 0.0
        if self._tokens < 1:
            waited = (1 - self._tokens) / self.rate
            self._sleep(waited)
            self._at += waited
            self._tokens = 1.0
        self._tokens -= 1
        return waited


class ProbeGuard:
    """Decides whether a probe may be sent, and paces the ones that may."""

    def __init__(
        self,
        *,
        config: ActiveConfig,
        home_net: Iterable[Network],
        own_ips: Iterable[str] = (),
        limiter: RateLimiter | None = None,
    ) -> None:
        self.config = config
        self.home_net = tuple(home_net)
        self.own_ips = frozenset(own_ips)
        self.limiter = limiter or RateLimiter(rate=config.rate_per_s, burst=config.burst)
        self.refused = 0

    def check(self, ip: str) -> None:
        """Raise :class:`ProbeRefused` unless ``ip`` may be probed now."""
        reason = self.reason(ip)
        if reason:
            self.refused += 1
            raise ProbeRefused(f"active check of {ip!r} refused: {reason}")

    def reason(self, ip: str) -> str:
        """Why ``ip`` may not be probed ("" when it may); counts nothing."""
        if not self.config.enabled:
            return "active checks are switched off for this site"
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return "not an IP address"
        if ip in self.own_ips:
            return "that is the gateway itself"
        if addr.is_multicast or addr.is_unspecified or addr.is_reserved:
            return "not a unicast host address"
        nets = [n for n in self.home_net if n.version == addr.version and addr in n]
        if not nets:
            return "outside the site's LAN"
        if any(n.prefixlen < n.max_prefixlen - 1 and addr in (n.network_address,
               n.broadcast_address) for n in nets):  # fmt: skip
            return "a network or broadcast address"
        return ""

    def admit(self, ip: str) -> None:
        """:meth:`check`, then wait for the rate limiter."""
        self.check(ip)
        self.limiter.acquire()


Connect = Callable[[str, int, float], bool]


def tcp_connect(ip: str, port: int, timeout: float) -> bool:
    """True when a TCP connection to ``ip:port`` is accepted (then closed at once)."""
    try:
        with socket.create_connection((ip, port), timeout=timeout):
            return True
    except OSError:
        return False


def open_ports(
    ip: str,
    *,
    guard: ProbeGuard,
    ports: Iterable[int] | None = None,
    connect: Connect = tcp_connect,
) -> list[int]:
    """The management ports of ``ip`` that accept TCP connections.

    Every connection is admitted by ``guard`` (raises :class:`ProbeRefused` before any
    packet is sent when the host may not be probed).
    """
    guard.check(ip)  # refuse the whole host before pacing anything
    found = []
    for port in ports if ports is not None else guard.config.ports:
        guard.admit(ip)
        if connect(ip, port, guard.config.timeout_s):
            found.append(port)
    return found


# --- results ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Service:
    """What answered on one open port."""

    port: int
    protocol: str  # telnet, ftp, http, ssh or unknown
    banner: str = ""
    # A login we can try: Telnet showed a login or password prompt, FTP greeted with 220,
    # the web page answered 401 with WWW-Authenticate: Basic.
    asks_login: bool = False


@dataclass(frozen=True)
class LoginResult:
    """The factory logins tried on one service (never the password)."""

    protocol: str
    port: int
    tries: int
    refused: int
    user: str = ""  # of the accepted factory login, else ""
    seen_on: str = ""

    @property
    def accepted(self) -> bool:
        return bool(self.user)

    def detail(self) -> str:
        if self.accepted:
            return (
                f"{self.protocol} port {self.port}: login as {self.user!r} accepted with a "
                f"factory password ({self.seen_on}), active check"
            )
        return (
            f"{self.protocol} port {self.port}: {self.refused} factory logins refused, active check"
        )


@dataclass
class DeviceReport:
    """The result of checking one device."""

    mac: str
    ip: str
    services: list[Service] = field(default_factory=list)
    logins: list[LoginResult] = field(default_factory=list)
    connections: int = 0
    errors: int = 0

    def findings(self) -> list[tuple[str, str]]:
        """(evidence kind, detail) pairs, in the Observer's vocabulary."""
        out: list[tuple[str, str]] = []
        for svc in self.services:
            if svc.protocol != "http":
                out.append(("open_port", f"{svc.port}/tcp {svc.protocol}"))
        for login in self.logins:
            if login.accepted:
                out.append(("default_credential", login.detail()))
            elif login.refused and login.refused == login.tries:
                out.append(("default_rejected", login.detail()))
        return out

    def banners(self) -> list[tuple[str, str]]:
        """(source, text) of the software the services announce."""
        return [(f"active_{s.protocol}", s.banner) for s in self.services if s.banner]

    def observe(self, observer: Observer, *, ts: float) -> None:
        """Record the findings as label evidence of ``mac``."""
        for kind, detail in self.findings():
            observer.active(self.mac, kind=kind, detail=detail, ts=ts)
        for source, text in self.banners():
            observer.banner(self.mac, source=source, text=text, ts=ts)

    def facts(self) -> dict[str, str]:
        """Device facts for the inventory (extras ``active_<fact>``): ``default_login`` and
        ``default_rejected`` (one finding per line), ``open_ports`` (comma-separated
        ``port/tcp protocol``) and ``server`` (the banners, ``protocol: text; ...``)."""
        found = self.findings()
        facts = {
            "default_login": _join((d for k, d in found if k == "default_credential"), "\n"),
            "default_rejected": _join((d for k, d in found if k == "default_rejected"), "\n"),
            "open_ports": _join((d for k, d in found if k == "open_port"), ","),
            "server": _join((f"{s.protocol}: {s.banner}" for s in self.services if s.banner), "; "),
        }
        return {k: v for k, v in facts.items() if v}

    def event(self, ts: float) -> DiscoveryEvent | None:
        """The report as a discovery event for the pipeline (None when nothing was found)."""
        facts = self.facts()
        if not facts:
            return None
        return DiscoveryEvent(ts=ts, source="active", mac=self.mac, ip=self.ip, facts=facts)


def _join(items: Iterable[str], sep: str) -> str:
    """Whole items joined by ``sep`` up to :data:`MAX_FACT` characters (none cut)."""
    out = ""
    for item in items:
        item = item[:MAX_FACT]
        joined = f"{out}{sep}{item}" if out else item
        if len(joined) > MAX_FACT:
            break
        out = joined
    return out
