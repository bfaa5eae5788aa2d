"""Device kinds and traffic profiles of a simulated small office.

One source of truth for both simulators: the fleet simulator (:mod:`.fleet`) samples
per-interval :class:`~mimamori.protocol.FlowSummary` rows from these profiles, and the
capture synthesiser (:mod:`.pcapgen`) samples individual connections from the same
profiles and writes their packets.

A :class:`Site` is a /24 office LAN with a router and devices of the kinds in
:data:`KINDS` (PCs, phones, multifunction printers, cameras, a NAS, smart plugs, ...),
each with a MAC address under a real vendor OUI (from the IEEE list the edge's inventory
reads) and the hostname, DHCP fingerprint and mDNS services such a device announces.

Each kind talks to a set of :class:`Endpoint` services at a rate given in connections per
hour at full activity. Activity follows an office day in Japan (:func:`activity`): work
hours 9-18 JST on weekdays with a lunch dip, a ramp in the morning and evening, and
almost nothing at night and on weekends except what is always on (cameras, NAS,
smart plugs keep their cloud connections).

Addresses. Benign services use addresses inside the ranges their operators announce
(the simulation never contacts them). Everything malicious uses the documentation
ranges of RFC 5737 (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24), so no real host is
ever labelled a criminal's.
"""

from __future__ import annotations

import ipaddress
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Literal

from mimamori.protocol import Device, FlowSummary

#: Offices are in Japan: work hours are counted in JST.
JST = timezone(timedelta(hours=9), "JST")

Presence = Literal["office", "commute", "always"]


@dataclass(frozen=True)
class Endpoint:
    """A service a device talks to.

    ``host`` is a remote address, or a LAN role resolved per site: ``@router`` (DNS, the
    default gateway), ``@nas`` or ``@printer`` (the site's first device of that kind).
    ``per_hour`` is connections per hour at full activity; ``always`` endpoints keep that
    rate whatever the hour (keep-alives, cloud sync of always-on devices).
    ``bytes_out``/``bytes_in`` are mean bytes per connection, client to server and back
    (for ``persistent`` endpoints: per hour of the session, whatever ``per_hour`` says).
    """

    name: str
    host: str
    port: int
    per_hour: float
    bytes_out: int
    bytes_in: int
    proto: int = 6
    app: str = "TLS"
    always: bool = False
    #: One long-lived connection instead of many short ones (cloud keep-alive sessions
    #: of cameras and plugs): the meter reports it once per active timeout.
    persistent: bool = False


@dataclass(frozen=True)
class Variant:
    """One make and model of a kind: OUI (6 hex digits), vendor name exactly as in the IEEE
    list, model, and hostname format (``{n}``: index within the kind, ``{mac6}``: the
    MAC's last 6 hex digits, ``{rand7}``: 7 random letters and digits as Windows picks)."""

    oui: str
    vendor: str
    model: str
    hostname: str


@dataclass(frozen=True)
class DeviceKind:
    """What a kind of device is and how it behaves on the network."""

    name: str
    variants: tuple[Variant, ...]
    os_hint: str
    dhcp_fingerprint: str
    dhcp_vendor_class: str
    services: tuple[str, ...]
    presence: Presence
    endpoints: tuple[Endpoint, ...]
    #: Share of a device's office-hours activity left at night (a PC left on, updates).
    night: float = 0.0


# --- services ---------------------------------------------------------------------------

_DNS = Endpoint("", "@router", 53, 40.0, 80, 160, proto=17, app="DNS")
_M365 = (
    Endpoint("outlook.office365.com", "52.98.151.66", 443, 40, 6_000, 40_000, app="TLS.Microsoft365"),
    Endpoint("login.microsoftonline.com", "20.190.151.7", 443, 12, 4_000, 9_000, app="TLS.Microsoft365"),
    Endpoint("teams.microsoft.com", "52.113.194.132", 443, 20, 15_000, 60_000, app="TLS.Teams"),
    Endpoint("ecs.office.com", "52.113.194.131", 443, 6, 2_000, 5_000, app="TLS.Microsoft365"),
    Endpoint("graph.microsoft.com", "20.190.151.70", 443, 10, 3_000, 12_000, app="TLS.Microsoft365"),
)  # fmt: skip
_WEB = (
    Endpoint("www.google.com", "142.250.196.100", 443, 30, 3_000, 60_000, app="TLS.Google"),
    Endpoint("www.yahoo.co.jp", "183.79.219.252", 443, 15, 4_000, 180_000, app="TLS.Yahoo"),
    Endpoint("www.chatwork.com", "52.69.186.44", 443, 18, 5_000, 30_000),
    Endpoint("s3.ap-northeast-1.amazonaws.com", "52.219.16.35", 443, 8, 20_000, 150_000, app="TLS.AmazonAWS"),
    Endpoint("www.e-tax.nta.go.jp", "61.211.236.20", 443, 1, 6_000, 90_000),
    Endpoint("www.freee.co.jp", "13.113.95.241", 443, 6, 5_000, 70_000),
    Endpoint("fonts.gstatic.com", "142.250.207.3", 443, 12, 1_500, 40_000, app="TLS.Google"),
    Endpoint("ocsp.digicert.com", "117.18.237.29", 80, 4, 500, 1_500, app="HTTP.OCSP"),
)  # fmt: skip
_WINDOWS = (
    Endpoint("ctldl.windowsupdate.com", "23.215.176.34", 80, 2, 500, 20_000, app="HTTP.WindowsUpdate", always=True),
    Endpoint("settings-win.data.microsoft.com", "20.42.65.90", 443, 4, 3_000, 4_000, app="TLS.Microsoft", always=True),
    Endpoint("time.windows.com", "168.61.215.74", 123, 1, 76, 76, proto=17, app="NTP", always=True),
)  # fmt: skip
_PHONE = (
    Endpoint("courier.push.apple.com", "17.57.144.54", 5223, 3, 1_200, 1_500, app="TLS.ApplePush", always=True),
    Endpoint("gateway.icloud.com", "17.248.185.12", 443, 10, 4_000, 20_000, app="TLS.AppleiCloud"),
    Endpoint("mtalk.google.com", "142.250.157.188", 5228, 2, 1_000, 1_200, app="TLS.GoogleServices", always=True),
    Endpoint("obs.line-scdn.net", "147.92.182.11", 443, 14, 2_000, 120_000, app="TLS.Line"),
    Endpoint("gw.line.naver.jp", "147.92.128.154", 443, 10, 3_000, 8_000, app="TLS.Line"),
    Endpoint("i.instagram.com", "157.240.199.63", 443, 6, 3_000, 250_000, app="TLS.Instagram"),
    Endpoint("www.youtube.com", "142.250.196.110", 443, 2, 5_000, 900_000, app="TLS.YouTube"),
)  # fmt: skip

_NTP_NICT = Endpoint(
    "ntp.nict.jp", "133.243.238.164", 123, 1, 76, 76, proto=17, app="NTP", always=True
)

KINDS: dict[str, DeviceKind] = {
    "pc": DeviceKind(
        name="pc",
        variants=(
            Variant("D0431E", "Dell Inc.", "OptiPlex 7010", "DESKTOP-{rand7}"),
            Variant("9C7BEF", "Hewlett Packard", "EliteBook 840 G10", "PC-{n:02d}"),
            Variant(
                "E86A64",
                "LCFC(Hefei) Electronics Technology co., ltd",
                "ThinkPad L14",
                "LAPTOP-{rand7}",
            ),
            Variant("A8B2DA", "FUJITSU LIMITED", "LIFEBOOK U9313", "SOUMU-PC{n:02d}"),
            Variant("6CE4DA", "NEC Platforms, Ltd.", "VersaPro VKT16", "KEIRI-PC{n:02d}"),
        ),
        os_hint="Windows 11",
        dhcp_fingerprint="1,3,6,15,31,33,43,44,46,47,119,121,249,252",
        dhcp_vendor_class="MSFT 5.0",
        services=(),
        presence="office",
        night=0.02,
        endpoints=(
            _DNS,
            *_M365,
            *_WEB,
            *_WINDOWS,
            Endpoint("", "@nas", 445, 2, 400_000, 3_000_000, app="SMBv23"),
            Endpoint("", "@printer", 9100, 1.5, 250_000, 400, app=""),
        ),
    ),
    "phone": DeviceKind(
        name="phone",
        variants=(
            Variant("F0EE7A", "Apple, Inc.", "iPhone 15", "iPhone"),
            Variant("58AD12", "Apple, Inc.", "iPhone 13", "iPhone"),
            Variant("641B2F", "Samsung Electronics Co.,Ltd", "Galaxy S24", "Galaxy-S24"),
            Variant("8C5219", "SHARP Corporation", "AQUOS sense8", "AQUOS-sense8"),
            Variant("AC800A", "Sony Corporation", "Xperia 10 V", "Xperia-10-V"),
        ),
        os_hint="",
        dhcp_fingerprint="1,121,3,6,15,108,114,119,252",
        dhcp_vendor_class="",
        services=(),
        presence="commute",
        endpoints=(_DNS, *_PHONE),
    ),
    "printer": DeviceKind(
        name="printer",
        variants=(
            Variant("3C2AF4", "Brother Industries, LTD.", "MFC-L3780CDW", "BRN{mac6}"),
            Variant("A4D73C", "Seiko Epson Corporation", "EW-M873T", "EPSON{mac6}"),
            Variant("84BA3B", "CANON INC.", "TR703a", "Canon{mac6}"),
            Variant("583879", "RICOH COMPANY, LTD.", "IM C3000", "RNP{mac6}"),
            Variant("2429FE", "KYOCERA Corporation", "ECOSYS M5526cdw", "KM{mac6}"),
        ),
        os_hint="",
        dhcp_fingerprint="1,3,6,15,44,46,47",
        dhcp_vendor_class="",
        services=("_ipp._tcp", "_pdl-datastream._tcp", "_scanner._tcp"),
        presence="always",
        endpoints=(
            _DNS,
            Endpoint("mfc-fw.brother.co.jp", "210.168.41.100", 443, 0.2, 1_500, 6_000, always=True),
        ),
    ),
    "camera": DeviceKind(
        name="camera",
        variants=(
            Variant(
                "0C75D2",
                "Hangzhou Hikvision Digital Technology Co.,Ltd.",
                "DS-2CD2043G2-I",
                "DS-2CD2043G2-I",
            ),
            Variant("B8208E", "Panasonic Connect Co., Ltd.", "WV-S1136", "WV-S1136-{n}"),
        ),
        os_hint="Linux",
        dhcp_fingerprint="1,3,6,12,15,28,42",
        dhcp_vendor_class="udhcp 1.20.2",
        services=("_http._tcp",),
        presence="always",
        # Cloud video: one long upload stream, cut by the meter's active timeout.
        endpoints=(
            _DNS,
            Endpoint(
                "dev.hik-connect.com",
                "52.68.97.188",
                8883,
                1,
                9_000_000,
                400_000,
                always=True,
                persistent=True,
            ),
            _NTP_NICT,
        ),
    ),
    "nas": DeviceKind(
        name="nas",
        variants=(
            Variant("001132", "Synology Incorporated", "DS224+", "NAS-{n:02d}"),
            Variant("245EBE", "QNAP Systems, Inc.", "TS-233", "NAS{mac6}"),
            Variant("D42C46", "BUFFALO.INC", "LS720D", "LS720D{mac6}"),
        ),
        os_hint="Linux",
        dhcp_fingerprint="1,3,6,12,15,28,33,40,41,42,119,121",
        dhcp_vendor_class="",
        services=("_smb._tcp", "_afpovertcp._tcp", "_http._tcp"),
        presence="always",
        endpoints=(
            _DNS,
            Endpoint("global.quickconnect.to", "13.112.82.137", 443, 4, 1_500, 3_000, always=True),
            Endpoint("c2.synology.com", "54.250.168.203", 443, 6, 2_000_000, 20_000, always=True),
            _NTP_NICT,
        ),
    ),
    "smart_plug": DeviceKind(
        name="smart_plug",
        variants=(
            Variant("D48AFC", "Espressif Inc.", "SwitchBot Plug Mini", "ESP_{mac6}"),
            Variant("68DDB7", "TP-LINK TECHNOLOGIES CO.,LTD.", "Tapo P110M", "P110M"),
        ),
        os_hint="",
        dhcp_fingerprint="1,3,28,6,15",
        dhcp_vendor_class="",
        services=(),
        presence="always",
        endpoints=(
            _DNS,
            Endpoint(
                "a1.tuyaus.com",
                "18.179.120.96",
                8883,
                1,
                36_000,
                30_000,
                always=True,
                persistent=True,
            ),
        ),
    ),
    "display": DeviceKind(
        name="display",
        variants=(
            Variant("60706C", "Google, Inc.", "Chromecast with Google TV", "Chromecast"),
            Variant("145051", "SHARP Corporation", "AQUOS 4T-C50FN1", "AQUOS-TV"),
        ),
        os_hint="Android TV",
        dhcp_fingerprint="1,3,6,15,26,28,51,58,59,43",
        dhcp_vendor_class="android-dhcp-12",
        services=("_googlecast._tcp",),
        presence="always",
        endpoints=(
            _DNS,
            Endpoint(
                "clients3.google.com",
                "142.250.207.14",
                443,
                6,
                1_000,
                2_000,
                app="TLS.Google",
                always=True,
            ),
            Endpoint(
                "www.youtube.com", "142.250.196.110", 443, 3, 8_000, 3_000_000, app="TLS.YouTube"
            ),
        ),
    ),
    "access_point": DeviceKind(
        name="access_point",
        variants=(
            Variant("AC44F2", "YAMAHA CORPORATION", "WLX222", "WLX222-{n}"),
            Variant("3476C5", "I-O DATA DEVICE,INC.", "WN-DAX3000GR", "WN-DAX3000GR"),
        ),
        os_hint="",
        dhcp_fingerprint="1,3,6,12,15,42",
        dhcp_vendor_class="",
        services=(),
        presence="always",
        endpoints=(_NTP_NICT,),
    ),
}

#: The device mix of a 30-device office, repeated for larger sites (and cut for smaller).
OFFICE_MIX: tuple[str, ...] = (
    "pc", "phone", "pc", "pc", "printer", "phone", "pc", "camera", "nas", "pc", "phone",
    "smart_plug", "pc", "pc", "phone", "display", "pc", "phone", "access_point", "pc",
    "printer", "camera", "phone", "pc", "smart_plug", "phone", "pc", "phone", "pc", "pc",
)  # fmt: skip


# --- sites ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SimDevice:
    """One simulated device on a site's LAN."""

    index: int
    kind: DeviceKind
    mac: str
    ip: str
    vendor: str
    hostname: str
    model: str

    def device(self, *, first_seen: float, last_seen: float) -> Device:
        """The inventory row a gateway would report for this device."""
        return Device(
            mac=self.mac,
            ips=[self.ip],
            vendor=self.vendor,
            hostname=self.hostname,
            dhcp_fingerprint=self.kind.dhcp_fingerprint,
            dhcp_vendor_class=self.kind.dhcp_vendor_class,
            model=self.model,
            os_hint=self.kind.os_hint,
            services=list(self.kind.services),
            first_seen=first_seen,
            last_seen=last_seen,
        )


@dataclass(frozen=True)
class Site:
    """An office LAN behind one gateway."""

    tenant: str
    gateway: str
    network: ipaddress.IPv4Network
    router_ip: str
    router_mac: str
    devices: tuple[SimDevice, ...]
    seed: int
    roles: dict[str, str] = field(default_factory=dict)

    def resolve(self, host: str) -> str | None:
        """An endpoint's address on this site (None: the site has no such role)."""
        if not host.startswith("@"):
            return host
        return self.roles.get(host)

    def of_kind(self, kind: str) -> list[SimDevice]:
        return [d for d in self.devices if d.kind.name == kind]


def _mac(oui: str, rng: random.Random) -> str:
    tail = rng.getrandbits(24)
    raw = f"{oui}{tail:06x}".lower()
    return ":".join(raw[i : i + 2] for i in range(0, 12, 2))


def build_site(*, tenant: str, gateway: str, devices: int, seed: int) -> Site:
    """A deterministic office of ``devices`` devices (same seed, same site)."""
    rng = random.Random(seed)
    # 192.168.0.0/16 holds 256 /24s; larger fleets reuse subnets, as real offices do.
    subnet = ipaddress.IPv4Network(f"192.168.{seed % 250 + 1}.0/24")
    hosts = list(subnet.hosts())
    router_ip = str(hosts[0])
    router_mac = _mac("00A0DE", rng)  # a YAMAHA RTX router, the SMB classic in Japan
    made: list[SimDevice] = []
    counters: dict[str, int] = {}
    for i in range(devices):
        kind = KINDS[OFFICE_MIX[i % len(OFFICE_MIX)]]
        n = counters[kind.name] = counters.get(kind.name, 0) + 1
        variant = kind.variants[rng.randrange(len(kind.variants))]
        mac = _mac(variant.oui, rng)
        rand7 = "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789") for _ in range(7))
        # DHCP pool from .20; more than ~230 devices wrap into the next addresses' reuse.
        ip = str(hosts[(19 + i) % (len(hosts) - 1) + 1])
        made.append(
            SimDevice(
                index=i, kind=kind, mac=mac, ip=ip, vendor=variant.vendor,
                hostname=variant.hostname.format(
                    n=n, mac6=mac.replace(":", "")[6:].upper(), rand7=rand7
                ),
                model=variant.model,
            )
        )  # fmt: skip
    roles = {"@router": router_ip}
    for role in ("nas", "printer"):
        first = next((d for d in made if d.kind.name == role), None)
        if first is not None:
            roles[f"@{role}"] = first.ip
    return Site(
        tenant=tenant, gateway=gateway, network=subnet, router_ip=router_ip,
        router_mac=router_mac, devices=tuple(made), seed=seed, roles=roles,
    )  # fmt: skip


# --- time of day ------------------------------------------------------------------------


def activity(ts: float, presence: Presence = "office") -> float:
    """Share of full activity at UNIX time ``ts`` for devices of a ``presence`` class.

    ``office`` (PCs): 1.0 in work hours (9-12, 13-18 JST, weekdays), 0.6 at lunch, ramps
    of an hour either side, 0 at night and on weekends (the ``night`` share of a kind
    is added by the caller). ``commute`` (phones) is the same but phones leave the
    site, so they are absent outside 8-20. ``always`` devices are always at 1.0.
    """
    if presence == "always":
        return 1.0
    local = datetime.fromtimestamp(ts, JST)
    if local.weekday() >= 5:
        return 0.0
    h = local.hour + local.minute / 60.0
    if 9 <= h < 12 or 13 <= h < 18:
        return 1.0
    if 12 <= h < 13:
        return 0.6
    if 8 <= h < 9:
        return h - 8
    if 18 <= h < 20:
        return (20 - h) / 2 * 0.5
    return 0.0


def present(device: SimDevice, ts: float) -> bool:
    """Is the device on the LAN at ``ts`` (phones go home; everything else stays)?"""
    if device.kind.presence != "commute":
        return True
    return activity(ts, "commute") > 0.0


def rate(device: SimDevice, endpoint: Endpoint, ts: float) -> float:
    """Connections per hour from ``device`` to ``endpoint`` at ``ts``."""
    if endpoint.always:
        return endpoint.per_hour
    level = activity(ts, device.kind.presence)
    if device.kind.presence == "office":
        level = max(level, device.kind.night)
    return endpoint.per_hour * level


def poisson(lam: float, rng: random.Random) -> int:
    """A Poisson draw (Knuth's method for small means, normal approximation above 30)."""
    if lam <= 0:
        return 0
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit = math.exp(-lam)
    k, p = 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


#: Mean payload bytes per packet, and packets every connection costs anyway (TCP
#: handshake and teardown; 0 for UDP exchanges).
_MSS_BYTES = 1200
_TCP_OVERHEAD_PKTS = 4


def packets(nbytes: int, conns: int, proto: int) -> int:
    """Packets that carry ``nbytes`` over ``conns`` connections."""
    base = _TCP_OVERHEAD_PKTS * conns if proto == 6 else 0
    return base + max(conns, math.ceil(nbytes / _MSS_BYTES))


@dataclass(frozen=True)
class Connection:
    """One sampled connection (what pcapgen turns into packets)."""

    device: SimDevice
    endpoint: Endpoint
    remote_ip: str
    start: float
    bytes_out: int
    bytes_in: int


def _jitter(mean: int, rng: random.Random) -> int:
    # Log-normal around the mean: a few big transfers, many small ones.
    return max(40, int(mean * rng.lognormvariate(-0.5, 1.0)))


def connections(
    site: Site, start: float, seconds: float, rng: random.Random
) -> Iterator[Connection]:
    """Connections every device of ``site`` opens during ``[start, start + seconds)``.

    The rate is evaluated once per call, so callers step through the day in short
    windows (a minute) to follow the activity curve.
    """
    for dev in site.devices:
        if not present(dev, start):
            continue
        for ep in dev.kind.endpoints:
            remote = site.resolve(ep.host)
            if remote is None or remote == dev.ip:
                continue
            if ep.persistent:
                # The session's share of the window, reported as one connection piece.
                share = rate(dev, ep, start) / max(ep.per_hour, 1e-9) * seconds / 3600.0
                yield Connection(
                    device=dev, endpoint=ep, remote_ip=remote, start=start,
                    bytes_out=int(ep.bytes_out * share), bytes_in=int(ep.bytes_in * share),
                )  # fmt: skip
                continue
            n = poisson(rate(dev, ep, start) * seconds / 3600.0, rng)
            for _ in range(n):
                yield Connection(
                    device=dev, endpoint=ep, remote_ip=remote,
                    start=start + rng.random() * seconds,
                    bytes_out=_jitter(ep.bytes_out, rng), bytes_in=_jitter(ep.bytes_in, rng),
                )  # fmt: skip


def summaries(site: Site, start: float, interval: int, rng: random.Random) -> list[FlowSummary]:
    """The FlowSummary rows of one interval, as the edge's summariser would fold them:
    one row per (device, endpoint) with the interval's connections added up."""
    rows: dict[tuple[str, str, int, int, str, str], list[Connection]] = {}
    for conn in connections(site, start, interval, rng):
        ep = conn.endpoint
        key = (conn.device.mac, conn.remote_ip, ep.port, ep.proto, ep.app, ep.name)
        rows.setdefault(key, []).append(conn)
    lan = set(site.roles.values())
    out: list[FlowSummary] = []
    for (mac, remote, port, proto, app, sni), conns in rows.items():
        dev = conns[0].device
        b_out = sum(c.bytes_out for c in conns)
        b_in = sum(c.bytes_in for c in conns)
        first = min(c.start for c in conns)
        out.append(
            FlowSummary(
                ts=start, mac=mac, local_ip=dev.ip, remote_ip=remote, remote_port=port,
                proto=proto, dir="lan" if remote in lan else "out", app=app, sni=sni,
                pkts_out=packets(b_out, len(conns), proto), pkts_in=packets(b_in, len(conns), proto),
                bytes_out=b_out, bytes_in=b_in, conns=len(conns),
                first_seen=first, last_seen=min(start + interval, first + rng.uniform(0.05, 20)),
            )
        )  # fmt: skip
    return out
