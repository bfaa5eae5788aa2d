"""Discovery traffic: ARP, DHCP, mDNS, SSDP and NBNS into ArpEvents and DiscoveryEvents.

These protocols are low-volume broadcast/multicast chatter that says who is on the LAN
(MAC, addresses, names, models). nfstream does not see ARP at all and reduces the rest to
flows, so a small listener reads them separately:

* live, :class:`DiscoveryListener` reads an ``AF_PACKET`` socket with a kernel BPF filter
  (compiled by libpcap) so only discovery frames ever reach Python;
* offline, :func:`read_capture` passes over the capture files; a few byte comparisons on
  each frame reject everything else before any parsing (the whole-file pass must stay
  cheap next to nfstream's own).

The same filters pass three kinds of TCP segment to readers of their own: FTP and Telnet
(edge/logins.py); HTTP to a web admin port of a server in private address space, requests
with a payload and responses starting ``HTTP`` (edge/http_logins.py: internet browsing
never reaches Python); and TLS ServerHellos on any port (edge/tls_hello.py).

:class:`Decoder` turns one Ethernet frame into events; it never raises on bad input
(malformed frames are counted in ``Decoder.malformed``).
"""

from __future__ import annotations

import logging
import socket
import struct
from collections.abc import Iterator, Sequence
from ipaddress import IPv6Address
from typing import TYPE_CHECKING, Any

import dpkt
from mimamori.edge.capture import CaptureError
from mimamori.edge.http_logins import HTTP_PORTS, HttpLoginReader, is_private_v4
from mimamori.edge.logins import LOGIN_PORTS, LoginReader
from mimamori.edge.tls_hello import TlsHelloReader
from mimamori.protocol import ArpEvent, DiscoveryEvent

if TYPE_CHECKING:  # at run time through __getattr__ below (discovery_live imports this)
    from mimamori.edge.discovery_live import DiscoveryListener, compile_filter

__all__ = [
    "BPF_FILTER",
    "CaptureStats",
    "Decoder",
    "DiscoveryError",
    "DiscoveryListener",
    "Event",
    "compile_filter",
    "read_capture",
]

Event = ArpEvent | DiscoveryEvent
log = logging.getLogger(__name__)

#: What the kernel lets through to the live listener (libpcap filter syntax). The TLS
#: clause comes last: a load past a short packet's end ends the whole program (drop).
_PAYLOAD = "((tcp[12] & 0xf0) >> 2)"
_LAN = "net 10.0.0.0/8 or {0} net 172.16.0.0/12 or {0} net 192.168.0.0/16"
_HTTP_PORTS = " or ".join(f"{{0}} port {p}" for p in sorted(HTTP_PORTS))
_WANTED = (
    "arp or (udp and (port 67 or port 68 or port 5353 or port 1900 or port 137))"
    " or (tcp and (port 21 or port 23))"
    f" or (tcp and ({_HTTP_PORTS.format('dst')}) and (dst {_LAN.format('dst')})"
    f" and ip[2:2] - ((ip[0] & 0x0f) << 2) - {_PAYLOAD} > 0)"
    f" or (tcp and ({_HTTP_PORTS.format('src')}) and (src {_LAN.format('src')})"
    f" and tcp[{_PAYLOAD}:4] = 0x48545450)"
    f" or (tcp and tcp[{_PAYLOAD}] = 0x16 and tcp[{_PAYLOAD} + 5] = 0x02)"
)
BPF_FILTER = f"{_WANTED} or (vlan and ({_WANTED}))"
DHCP_PORTS = (67, 68)
MDNS_PORT = 5353
SSDP_PORT = 1900
NBNS_PORT = 137
_PORTS = frozenset((*DHCP_PORTS, MDNS_PORT, SSDP_PORT, NBNS_PORT))
_PORT_BYTES = frozenset(p.to_bytes(2, "big") for p in _PORTS)
#: FTP and Telnet: their cleartext logins are read for factory credentials (edge/logins.py).
_LOGIN_PORT_BYTES = frozenset(p.to_bytes(2, "big") for p in LOGIN_PORTS)
_HTTP_PORT_BYTES = frozenset(p.to_bytes(2, "big") for p in HTTP_PORTS)
_TCP_PORT_BYTES = _LOGIN_PORT_BYTES | _HTTP_PORT_BYTES
#: Announcements repeat verbatim (SSDP NOTIFY, mDNS answers every few seconds): an
#: identical payload from the same MAC within this many seconds is not parsed again.
REPEAT_S = 60.0
_REPEAT_CACHE = 1024

# mDNS TXT keys that name a model: md= (Apple/HomeKit, Chromecast), model= (device-info),
# ty= and product= (IPP printers), usb_MDL= (printers), am= (AirPlay).
_MODEL_KEYS = (b"md", b"model", b"ty", b"product", b"usb_MDL", b"am")
_MAX_FACT = 255


class DiscoveryError(CaptureError):
    """The discovery listener could not start, or a capture file could not be read."""


def _mac(raw: bytes) -> str:
    return raw.hex(":")


#: NUL and other control characters: some DHCP clients end option strings with NUL, and a
#: hostile device can put anything in them; PostgreSQL text cannot hold NUL, so a fact
#: carrying one would make the whole device batch unstorable in the cloud.
_CONTROL = dict.fromkeys([*range(0x00, 0x20), 0x7F])


def _clip(value: str) -> str:
    return value.translate(_CONTROL).strip()[:_MAX_FACT]


class Decoder:
    """Turns Ethernet frames into discovery events; counts what it could not parse."""

    def __init__(self, *, repeat_s: float = REPEAT_S) -> None:
        self.frames = 0
        self.matched = 0
        self.malformed = 0
        self.repeats = 0
        self.repeat_s = repeat_s
        self._seen: dict[tuple[bytes, bytes], float] = {}
        self.logins = LoginReader()
        self.http_logins = HttpLoginReader()
        self.tls = TlsHelloReader()

    def _repeated(self, ts: float, frame: bytes, payload: bytes) -> bool:
        key = (frame[6:12], payload)
        last = self._seen.get(key)
        if last is not None and 0 <= ts - last < self.repeat_s:
            self.repeats += 1
            return True
        if len(self._seen) >= _REPEAT_CACHE:
            self._seen.clear()
        self._seen[key] = ts
        return False

    def decode(self, ts: float, frame: bytes) -> list[Event]:
        """Events carried by one Ethernet frame (usually none)."""
        self.frames += 1
        if len(frame) < 42:
            return []
        ethertype = frame[12:14]
        off = 14
        if ethertype == b"\x81\x00":  # one 802.1Q tag
            ethertype = frame[16:18]
            off = 18
        try:
            if ethertype == b"\x08\x06":
                self.matched += 1
                return self._arp(ts, frame, off)
            if ethertype == b"\x08\x00":
                if frame[off + 6] & 0x1F or frame[off + 7]:
                    return []  # a non-first fragment
                if frame[off + 9] == 6:
                    tcp = off + (frame[off] & 0x0F) * 4
                    ports = struct.unpack_from("!HH", frame, tcp)
                    if ports[0] in LOGIN_PORTS or ports[1] in LOGIN_PORTS:
                        return [*self.logins.feed(ts, frame, off)]
                    data = tcp + (frame[tcp + 12] >> 4) * 4
                    if frame[data : data + 1] == b"\x16" and frame[data + 5 : data + 6] == b"\x02":
                        before = self.tls.malformed
                        hellos = self.tls.feed(ts, frame, off)
                        self.malformed += self.tls.malformed - before  # cut short or garbage
                        return [*hellos]
                    if (ports[1] in HTTP_PORTS and is_private_v4(frame[off + 16 : off + 20])) or (
                        ports[0] in HTTP_PORTS and is_private_v4(frame[off + 12 : off + 16])
                    ):
                        return [*self.http_logins.feed(ts, frame, off)]
                    return []
                if frame[off + 9] != 17:
                    return []  # not UDP
                udp = off + (frame[off] & 0x0F) * 4
            elif ethertype == b"\x86\xdd":
                if frame[off + 6] != 17:
                    return []  # not UDP (extension headers are rare on discovery traffic)
                udp = off + 40
            else:
                return []
            sport, dport = struct.unpack_from("!HH", frame, udp)
            if sport not in _PORTS and dport not in _PORTS:
                return []
            self.matched += 1
            payload = frame[udp + 8 :]
            is_dhcp = sport in DHCP_PORTS and dport in DHCP_PORTS
            # Repeats are dropped before any string is made (DHCP always counts).
            if not is_dhcp and self._repeated(ts, frame, payload):
                return []
            if ethertype == b"\x08\x00":
                src_ip = socket.inet_ntoa(frame[off + 12 : off + 16])
            else:
                src_ip = str(IPv6Address(frame[off + 8 : off + 24]))
            src_mac = _mac(frame[6:12])
            if is_dhcp:
                return self._dhcp(ts, src_mac, src_ip, payload)
            if MDNS_PORT in (sport, dport):
                return self._mdns(ts, src_mac, src_ip, payload)
            if dport == SSDP_PORT or sport == SSDP_PORT:
                return self._ssdp(ts, src_mac, src_ip, payload)
            if NBNS_PORT in (sport, dport):
                return self._nbns(ts, src_mac, src_ip, payload)
        except (dpkt.UnpackError, struct.error, IndexError, ValueError, UnicodeError):
            self.malformed += 1
        except Exception:  # dpkt raises assorted errors on hostile input: count, go on
            self.malformed += 1
            log.debug("discovery frame failed to parse", exc_info=True)
        return []

    # --- protocols ---------------------------------------------------------------------

    def _arp(self, ts: float, frame: bytes, off: int) -> list[Event]:
        htype, ptype, hlen, plen, op = struct.unpack_from("!HHBBH", frame, off)
        if htype != 1 or ptype != 0x0800 or hlen != 6 or plen != 4 or op not in (1, 2):
            return []
        body = off + 8
        return [
            ArpEvent(
                ts=ts,
                op="request" if op == 1 else "reply",
                src_mac=_mac(frame[body : body + 6]),
                src_ip=socket.inet_ntoa(frame[body + 6 : body + 10]),
                target_mac=_mac(frame[body + 10 : body + 16]),
                target_ip=socket.inet_ntoa(frame[body + 16 : body + 20]),
            )
        ]

    def _dhcp(self, ts: float, src_mac: str, src_ip: str, payload: bytes) -> list[Event]:
        msg = dpkt.dhcp.DHCP(payload)
        opts = dict(msg.opts)
        client_mac = _mac(bytes(msg.chaddr[:6]))
        facts: dict[str, str] = {}
        kind = opts.get(dpkt.dhcp.DHCP_OPT_MSGTYPE, b"\x00")[0]
        facts["dhcp_message"] = str(kind)
        if msg.op == dpkt.dhcp.DHCP_OP_REQUEST:
            if (name := opts.get(dpkt.dhcp.DHCP_OPT_HOSTNAME)) is not None:
                facts["hostname"] = _clip(name.decode("utf-8", "replace").rstrip("\x00"))
            if (params := opts.get(dpkt.dhcp.DHCP_OPT_PARAM_REQ)) is not None:
                facts["dhcp_fingerprint"] = ",".join(str(b) for b in params)
            if (vendor := opts.get(dpkt.dhcp.DHCP_OPT_VENDOR_ID)) is not None:
                facts["dhcp_vendor_class"] = _clip(vendor.decode("utf-8", "replace"))
            if (req := opts.get(dpkt.dhcp.DHCP_OPT_REQ_IP)) is not None and len(req) == 4:
                facts["requested_ip"] = socket.inet_ntoa(req)
            ip = socket.inet_ntoa(struct.pack("!I", msg.ciaddr)) if msg.ciaddr else ""
            return [DiscoveryEvent(ts=ts, source="dhcp", mac=client_mac, ip=ip, facts=facts)]
        # A server's reply: the client gets yiaddr (in an ACK); the sender is a DHCP server.
        events: list[Event] = []
        if kind == dpkt.dhcp.DHCPACK and msg.yiaddr:
            events.append(
                DiscoveryEvent(
                    ts=ts,
                    source="dhcp",
                    mac=client_mac,
                    ip=socket.inet_ntoa(struct.pack("!I", msg.yiaddr)),
                    facts={"dhcp_message": str(kind)},
                )
            )
        if kind in (dpkt.dhcp.DHCPOFFER, dpkt.dhcp.DHCPACK):
            events.append(
                DiscoveryEvent(
                    ts=ts, source="dhcp", mac=src_mac, ip=src_ip, facts={"service": "dhcp-server"}
                )
            )
        return events

    def _mdns(self, ts: float, src_mac: str, src_ip: str, payload: bytes) -> list[Event]:
        msg = dpkt.dns.DNS(payload)
        # Answers, and the authority records of probes, describe the sender itself.
        records = [*msg.an, *msg.ns, *msg.ar]
        if not records:
            return []
        facts: dict[str, str] = {}
        services: list[str] = []
        addresses: list[str] = []
        for rr in records:
            name: str = rr.name
            if rr.type in (dpkt.dns.DNS_A, dpkt.dns.DNS_AAAA) and name.endswith(".local"):
                facts.setdefault("hostname", _clip(name[: -len(".local")]))
                if rr.type == dpkt.dns.DNS_A and len(rr.ip) == 4:
                    addresses.append(socket.inet_ntoa(rr.ip))
                elif rr.type == dpkt.dns.DNS_AAAA and len(rr.ip6) == 16:
                    addresses.append(str(IPv6Address(rr.ip6)))
            elif rr.type == dpkt.dns.DNS_SRV and rr.srvname.endswith(".local"):
                facts.setdefault("hostname", _clip(rr.srvname[: -len(".local")]))
            elif rr.type == dpkt.dns.DNS_PTR and name.startswith("_") and "._" in name:
                if name != "_services._dns-sd._udp.local" and not name.endswith(".arpa"):
                    services.append(name.removesuffix(".local"))
            elif rr.type == dpkt.dns.DNS_TXT:
                for item in rr.text:
                    raw = item if isinstance(item, bytes) else item.encode()
                    key, sep, value = raw.partition(b"=")
                    if sep and key in _MODEL_KEYS and value and "model" not in facts:
                        facts["model"] = _clip(value.decode("utf-8", "replace"))
        if services:
            facts["service"] = _clip(",".join(sorted(set(services))))
        if addresses:
            facts["addresses"] = _clip(",".join(dict.fromkeys(addresses)))
        if not facts:
            return []
        return [DiscoveryEvent(ts=ts, source="mdns", mac=src_mac, ip=src_ip, facts=facts)]

    def _ssdp(self, ts: float, src_mac: str, src_ip: str, payload: bytes) -> list[Event]:
        text = payload[:2048].decode("utf-8", "replace")
        start, _, rest = text.partition("\r\n")
        headers: dict[str, str] = {}
        for line in rest.split("\r\n"):
            key, sep, value = line.partition(":")
            if sep:
                headers[key.strip().lower()] = value.strip()
        facts: dict[str, str] = {}
        if start.startswith("M-SEARCH"):
            # A control point looking for devices: only its user agent says something.
            if agent := headers.get("user-agent"):
                facts["user_agent"] = _clip(agent)
        elif start.startswith("NOTIFY") or start.startswith("HTTP/1."):
            if server := headers.get("server"):
                facts["server"] = _clip(server)
                # "OS/version UPnP/1.0 product/version": the first token names the OS.
                facts["os_hint"] = _clip(server.split()[0])
            if location := headers.get("location"):
                facts["location"] = _clip(location)
            kind = headers.get("nt") or headers.get("st") or ""
            if ":device:" in kind or ":service:" in kind:
                facts["service"] = _clip(kind)
        if not facts:
            return []
        return [DiscoveryEvent(ts=ts, source="ssdp", mac=src_mac, ip=src_ip, facts=facts)]

    def _nbns(self, ts: float, src_mac: str, src_ip: str, payload: bytes) -> list[Event]:
        msg = dpkt.netbios.NS(payload)
        opcode = (msg.op >> 11) & 0x0F
        is_response = bool(msg.op & 0x8000)
        # Registrations (5), refreshes (8, 9) and positive query answers name the sender.
        if is_response and opcode == 0:
            records = msg.an
        elif not is_response and opcode in (5, 8, 9):
            records = msg.ar or msg.qd
        else:
            return []
        for rr in records:
            encoded = rr.name.split(".", 1)[0]
            if len(encoded) != 32:
                continue
            name = dpkt.netbios.decode_name(encoded)
            suffix = ord(name[15]) if len(name) == 16 else -1
            rdata = getattr(rr, "rdata", b"")
            is_group = len(rdata) >= 2 and rdata[0] & 0x80
            # <00> workstation and <20> file server names are the host's own name.
            if suffix in (0x00, 0x20) and not is_group:
                hostname = _clip(name[:15].rstrip())
                if hostname and not hostname.startswith("\x01"):
                    facts = {"hostname": hostname}
                    return [
                        DiscoveryEvent(ts=ts, source="nbns", mac=src_mac, ip=src_ip, facts=facts)
                    ]
        return []


# --- capture files ---------------------------------------------------------------------

_PCAP_MAGIC = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
    b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}
_PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"


def _lan(buf: bytes, at: int) -> bool:
    """The IPv4 address at ``buf[at]`` is in private space (as is_private_v4, no slice)."""
    a = buf[at]
    return a == 10 or (a == 192 and buf[at + 1] == 168) or (a == 172 and 16 <= buf[at + 1] < 32)


_LINKTYPE_ETHERNET = 1
_CHUNK = 1 << 20


class CaptureStats:
    """What a pass over capture files saw: every frame and its bytes."""

    def __init__(self) -> None:
        self.packets = 0
        self.bytes = 0
        self.first_ts: float | None = None
        self.last_ts: float | None = None


def read_capture(
    paths: Sequence[str], *, decoder: Decoder | None = None, stats: CaptureStats | None = None
) -> Iterator[Event]:
    """Discovery events in capture files (pcap or pcapng), in file order.

    Frames of other link types than Ethernet are counted but not decoded. ``stats``
    receives the number of frames and bytes in the files (the replay's packet count).
    """
    decoder = decoder or Decoder()
    stats = stats or CaptureStats()
    for path in paths:
        try:
            with open(path, "rb") as fh:
                head = fh.read(24)
                if head[:4] in _PCAP_MAGIC:
                    yield from _read_pcap(fh, head, decoder, stats)
                elif head[:4] == _PCAPNG_MAGIC:
                    fh.seek(0)
                    yield from _read_pcapng(fh, decoder, stats)
                else:
                    raise DiscoveryError(f"{path}: not a pcap or pcapng file")
        except OSError as exc:
            raise DiscoveryError(f"cannot read {path}: {exc}") from exc


def _read_pcap(fh: Any, head: bytes, decoder: Decoder, stats: CaptureStats) -> Iterator[Event]:
    endian, tick = _PCAP_MAGIC[head[:4]]
    if len(head) < 24:
        return
    linktype = struct.unpack(endian + "I", head[20:24])[0] & 0x0FFFFFFF
    ethernet = linktype == _LINKTYPE_ETHERNET
    record = struct.Struct(endian + "IIII")
    unpack_from = record.unpack_from
    buf = b""
    packets = 0
    nbytes = 0
    ts = 0.0
    last_sec = last_frac = 0
    first: float | None = None
    # The loop is the whole cost of the offline pass: read big chunks and look at each
    # frame's headers with slicing only; decode() runs for the rare discovery frame.
    while True:
        chunk = fh.read(_CHUNK)
        if not chunk:
            break
        buf = buf + chunk if buf else chunk
        off = 0
        end = len(buf)
        while off + 16 <= end:
            sec, frac, caplen, origlen = unpack_from(buf, off)
            stop = off + 16 + caplen
            if stop > end:
                break
            packets += 1
            nbytes += origlen
            if ethernet and caplen >= 42:
                ip = off + 30  # frame start (off + 16) plus the Ethernet header
                et = buf[ip - 2 : ip]
                if et == b"\x81\x00":  # 802.1Q: the real ethertype follows the tag
                    ip += 4
                    et = buf[ip - 2 : ip]
                if et == b"\x08\x00":
                    # IPv4: UDP to or from a discovery port (source port, then destination),
                    # or TCP as the kernel filter has it (see _WANTED).
                    udp = ip + (buf[ip] & 0x0F) * 4
                    proto = buf[ip + 9]
                    if proto == 17:
                        wanted = (
                            buf[udp : udp + 2] in _PORT_BYTES
                            or buf[udp + 2 : udp + 4] in _PORT_BYTES
                        )
                    elif proto == 6:
                        # Most TCP segments: two set lookups and the ServerHello bytes.
                        data = udp + (buf[udp + 12] >> 4) * 4
                        wanted = data + 5 < stop and buf[data] == 0x16 and buf[data + 5] == 2
                        sport, dport = buf[udp : udp + 2], buf[udp + 2 : udp + 4]
                        if not wanted and (sport in _TCP_PORT_BYTES or dport in _TCP_PORT_BYTES):
                            wanted = (
                                sport in _LOGIN_PORT_BYTES
                                or dport in _LOGIN_PORT_BYTES
                                or (
                                    dport in _HTTP_PORT_BYTES
                                    and _lan(buf, ip + 16)
                                    and data < ip + ((buf[ip + 2] << 8) | buf[ip + 3])
                                )
                                or (
                                    sport in _HTTP_PORT_BYTES
                                    and _lan(buf, ip + 12)
                                    and buf[data : data + 4] == b"HTTP"
                                    and data + 4 <= stop
                                )
                            )
                    else:
                        wanted = False
                elif et == b"\x86\xdd":
                    udp = ip + 40
                    wanted = buf[ip + 6] == 17 and (
                        buf[udp : udp + 2] in _PORT_BYTES or buf[udp + 2 : udp + 4] in _PORT_BYTES
                    )
                else:
                    wanted = et == b"\x08\x06"
                if wanted:
                    ts = sec + frac * tick
                    yield from decoder.decode(ts, buf[off + 16 : stop])
            if first is None:
                first = sec + frac * tick
            last_sec, last_frac = sec, frac
            off = stop
        buf = buf[off:]
    stats.packets += packets
    stats.bytes += nbytes
    if packets and first is not None:
        ts = last_sec + last_frac * tick
        stats.last_ts = ts if stats.last_ts is None else max(stats.last_ts, ts)
        stats.first_ts = first if stats.first_ts is None else min(stats.first_ts, first)


def _read_pcapng(fh: Any, decoder: Decoder, stats: CaptureStats) -> Iterator[Event]:
    try:
        reader = dpkt.pcapng.Reader(fh)
        ethernet = reader.datalink() == _LINKTYPE_ETHERNET
        for ts, frame in reader:
            stats.packets += 1
            stats.bytes += len(frame)
            stats.last_ts = float(ts) if stats.last_ts is None else max(stats.last_ts, float(ts))
            if stats.first_ts is None or ts < stats.first_ts:
                stats.first_ts = float(ts)
            if ethernet:
                yield from decoder.decode(float(ts), bytes(frame))
    except (ValueError, dpkt.UnpackError, struct.error) as exc:
        raise DiscoveryError(f"bad pcapng file: {exc}") from exc


# --- live ------------------------------------------------------------------------------


def __getattr__(name: str) -> Any:
    """The live listener lives in edge/discovery_live.py (kept importable from here)."""
    if name in ("DiscoveryListener", "compile_filter"):
        from mimamori.edge import discovery_live

        return getattr(discovery_live, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
