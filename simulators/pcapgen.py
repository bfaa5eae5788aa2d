"""Capture synthesis: pcap files of an office day and of each attack scenario.

Packets are built with dpkt, with the headers a meter and a DPI engine expect: TCP
three-way handshakes and FIN teardowns, DNS queries and answers before connections to
named servers, TLS ClientHello with SNI (and a ServerHello back), HTTP requests with
Host and User-Agent, SMTP dialogues, RDP X.224 connection requests, SMB2 negotiation,
NTP, and for the inventory DHCP (hostname, parameter list, vendor class), ARP and
mDNS announcements (services, model). The traffic is sampled from the same profiles
as the fleet simulator (:mod:`.profiles`); scenario traffic comes from
:mod:`.scenarios`.

Compressing a day. An office day is tens of thousands of connections and gigabytes of
payload. The files keep every connection and every header, but bulk data travels in a
few large segments (as a host capture with receive offload shows them, at most
``SEGMENT`` bytes each) and every data segment is stored truncated to its headers
(``incl_len`` < ``orig_len``, as ``tcpdump -s`` writes): byte counts seen by the meter are
the profile's, packet counts are lower than on the wire, and a full day of 30 devices
fits in tens of megabytes. Handshake payloads (TLS hellos, HTTP and SMTP commands, RDP
and SMB negotiation, DNS) are stored in full, so DPI names the applications.

Profiles: ``office-day`` (the reference profile, 00:00-24:00 JST of a weekday by
default) and one per traffic scenario (half an office hour, 10:00-10:30 JST, with
the scenario's traffic from 10:02).
"""

from __future__ import annotations

import heapq
import ipaddress
import itertools
import os
import random
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import dpkt
from mimamori.protocol import FlowRecord
from mimamori.simulators import profiles, scenarios
from mimamori.simulators.profiles import Connection, SimDevice, Site

PROFILES = ("office-day", *scenarios.TRAFFIC)
#: JST midnight of Tuesday 2026-11-24: the day every capture is dated.
DAY = 1_795_446_000.0
#: Largest data segment written (bytes of TCP payload), see the module docstring.
SEGMENT = 60_000
#: Data segments per direction and connection at most; larger transfers are capped.
MAX_SEGMENTS = 16
_MSS = 1448
_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
_MDNS_MAC = "01:00:5e:00:00:fb"
_BROADCAST = "ff:ff:ff:ff:ff:ff"


@dataclass
class CaptureStats:
    packets: int = 0
    connections: int = 0
    bytes: int = 0
    first_ts: float = 0.0
    last_ts: float = 0.0


# --- writing ----------------------------------------------------------------------------


class PcapWriter:
    """A classic pcap (microsecond) writer that can store packets truncated."""

    def __init__(self, fh: BinaryIO, *, snaplen: int = 65535) -> None:
        self.fh = fh
        self.stats = CaptureStats()
        fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, snaplen, dpkt.pcap.DLT_EN10MB))

    def write(self, ts: float, frame: bytes, orig_len: int) -> None:
        sec = int(ts)
        usec = round((ts - sec) * 1e6)
        if usec >= 1_000_000:
            sec, usec = sec + 1, usec - 1_000_000
        self.fh.write(struct.pack("<IIII", sec, usec, len(frame), orig_len))
        self.fh.write(frame)
        st = self.stats
        if not st.packets:
            st.first_ts = ts
        st.packets += 1
        st.bytes += orig_len
        st.last_ts = ts


class Packets:
    """Packets of many conversations, released in time order.

    Conversations are added in order of their start; a packet may only be released
    once no conversation still to come can start before it, which the caller states
    with :meth:`flush_until`.
    """

    def __init__(self, writer: PcapWriter) -> None:
        self.writer = writer
        self._heap: list[tuple[float, int, bytes, int]] = []
        self._n = itertools.count()

    def add(self, ts: float, frame: bytes, orig_len: int | None = None) -> None:
        heapq.heappush(self._heap, (ts, next(self._n), frame, orig_len or len(frame)))

    def flush_until(self, ts: float) -> None:
        heap = self._heap
        while heap and heap[0][0] < ts:
            t, _, frame, orig = heapq.heappop(heap)
            self.writer.write(t, frame, orig)

    def close(self) -> None:
        self.flush_until(float("inf"))


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def _ip(text: str) -> bytes:
    return ipaddress.IPv4Address(text).packed


def _eth(src_mac: str, dst_mac: str, ip: dpkt.ip.IP) -> bytes:
    return bytes(dpkt.ethernet.Ethernet(src=_mac(src_mac), dst=_mac(dst_mac), data=ip))


# --- TCP and UDP conversations ----------------------------------------------------------


@dataclass
class End:
    mac: str
    ip: str
    port: int


class Tcp:
    """One TCP connection: handshake, payload exchanges, bulk data, teardown."""

    def __init__(
        self, out: Packets, *, client: End, server: End, t: float, rng: random.Random
    ) -> None:
        self.out = out
        self.c, self.s = client, server
        self.t = t
        self.rng = rng
        self.seq = {"c": rng.getrandbits(32), "s": rng.getrandbits(32)}
        self.rtt = rng.uniform(0.004, 0.04)

    def _send(
        self, who: str, flags: int, payload: bytes = b"", wire_len: int | None = None
    ) -> None:
        src, dst = (self.c, self.s) if who == "c" else (self.s, self.c)
        peer = "s" if who == "c" else "c"
        tcp = dpkt.tcp.TCP(
            sport=src.port, dport=dst.port, seq=self.seq[who] & 0xFFFFFFFF,
            ack=self.seq[peer] & 0xFFFFFFFF if flags & dpkt.tcp.TH_ACK else 0,
            flags=flags, win=64240, data=payload,
        )  # fmt: skip
        ip = dpkt.ip.IP(src=_ip(src.ip), dst=_ip(dst.ip), p=dpkt.ip.IP_PROTO_TCP, ttl=64, data=tcp)
        frame = _eth(src.mac, dst.mac, ip)
        orig = len(frame)
        if wire_len is not None and wire_len > len(payload):
            orig = len(frame) - len(payload) + wire_len
            frame = frame[: len(frame) - len(payload)]  # stored truncated: headers only
            self.seq[who] += wire_len
        else:
            self.seq[who] += len(payload)
        if flags & (dpkt.tcp.TH_SYN | dpkt.tcp.TH_FIN):
            self.seq[who] += 1
        self.out.add(self.t, frame, orig)

    def _wait(self, scale: float = 1.0) -> None:
        self.t += self.rtt * scale * self.rng.uniform(0.5, 1.5)

    def open(self) -> Tcp:
        A, S = dpkt.tcp.TH_ACK, dpkt.tcp.TH_SYN
        self._send("c", S)
        self._wait()
        self._send("s", S | A)
        self._wait()
        self._send("c", A)
        return self

    def say(self, who: str, payload: bytes) -> None:
        self._wait(0.2)
        self._send(who, dpkt.tcp.TH_ACK | dpkt.tcp.TH_PUSH, payload)

    def bulk(self, who: str, nbytes: int) -> None:
        """``nbytes`` of data in at most MAX_SEGMENTS large truncated segments."""
        if nbytes <= 0:
            return
        seg = max(_MSS, min(SEGMENT, -(-nbytes // MAX_SEGMENTS)))
        while nbytes > 0:
            size = min(seg, nbytes)
            self._wait(0.3)
            self._send(who, dpkt.tcp.TH_ACK, b"\x17" * 8, wire_len=size)
            nbytes -= size
        self._wait()
        self._send("s" if who == "c" else "c", dpkt.tcp.TH_ACK)

    def close(self, duration: float | None = None) -> None:
        if duration is not None:
            self.t = max(self.t, self.t + duration)
        A, F = dpkt.tcp.TH_ACK, dpkt.tcp.TH_FIN
        self._send("c", F | A)
        self._wait()
        self._send("s", F | A)
        self._wait()
        self._send("c", A)


def _udp(
    out: Packets, t: float, src: End, dst: End, payload: bytes, dst_mac: str | None = None
) -> None:
    udp = dpkt.udp.UDP(sport=src.port, dport=dst.port, data=payload)
    udp.ulen = len(udp)
    ip = dpkt.ip.IP(src=_ip(src.ip), dst=_ip(dst.ip), p=dpkt.ip.IP_PROTO_UDP, ttl=64, data=udp)
    out.add(t, _eth(src.mac, dst_mac or dst.mac, ip))


# --- application payloads ---------------------------------------------------------------


def _ext(kind: int, body: bytes) -> bytes:
    return struct.pack("!HH", kind, len(body)) + body


def client_hello(sni: str, rng: random.Random) -> bytes:
    """A TLS 1.3 ClientHello as browsers send it (SNI, groups, ALPN, key share)."""
    name = sni.encode()
    exts = b"".join(
        (
            _ext(0, struct.pack("!HBH", len(name) + 3, 0, len(name)) + name),
            _ext(10, struct.pack("!H", 6) + b"\x00\x1d\x00\x17\x00\x18"),
            _ext(11, b"\x01\x00"),
            _ext(13, struct.pack("!H", 8) + b"\x04\x03\x08\x04\x04\x01\x05\x03"),
            _ext(16, struct.pack("!H", 12) + b"\x02h2\x08http/1.1"),
            _ext(43, b"\x04\x03\x04\x03\x03"),
            _ext(51, struct.pack("!HHH", 38, 0x1D, 32) + rng.randbytes(32)),
        )
    )
    ciphers = b"\x13\x01\x13\x02\x13\x03\xc0\x2b\xc0\x2f\xc0\x2c\xc0\x30\xcc\xa9\xcc\xa8"
    body = (
        b"\x03\x03" + rng.randbytes(32) + b"\x20" + rng.randbytes(32)
        + struct.pack("!H", len(ciphers)) + ciphers + b"\x01\x00"
        + struct.pack("!H", len(exts)) + exts
    )  # fmt: skip
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack("!H", len(hs)) + hs


def server_hello(rng: random.Random) -> bytes:
    exts = _ext(43, b"\x03\x04") + _ext(51, struct.pack("!HH", 0x1D, 32) + rng.randbytes(32))
    body = (
        b"\x03\x03" + rng.randbytes(32) + b"\x20" + rng.randbytes(32) + b"\x13\x01\x00"
        + struct.pack("!H", len(exts)) + exts
    )  # fmt: skip
    hs = b"\x02" + len(body).to_bytes(3, "big") + body
    ccs = b"\x14\x03\x03\x00\x01\x01"
    app = b"\x17\x03\x03" + struct.pack("!H", 600) + rng.randbytes(600)
    return b"\x16\x03\x03" + struct.pack("!H", len(hs)) + hs + ccs + app


def dns_query(name: str, qid: int) -> bytes:
    q = dpkt.dns.DNS(id=qid, op=dpkt.dns.DNS_RD)
    q.qd = [dpkt.dns.DNS.Q(name=name, type=dpkt.dns.DNS_A)]
    return bytes(q)


def dns_answer(name: str, ip: str, qid: int) -> bytes:
    a = dpkt.dns.DNS(id=qid, op=dpkt.dns.DNS_RD | dpkt.dns.DNS_RA, qr=dpkt.dns.DNS_R)
    a.qd = [dpkt.dns.DNS.Q(name=name, type=dpkt.dns.DNS_A)]
    a.an = [dpkt.dns.DNS.RR(name=name, type=dpkt.dns.DNS_A, ttl=300, ip=_ip(ip))]
    return bytes(a)


# --- discovery (inventory) --------------------------------------------------------------


def _dhcp(out: Packets, t: float, dev: SimDevice, site: Site, rng: random.Random) -> None:
    """DHCP REQUEST (as after a reboot: INIT-REBOOT) and the router's ACK."""
    opts = [
        (dpkt.dhcp.DHCP_OPT_MSGTYPE, bytes([dpkt.dhcp.DHCPREQUEST])),
        (dpkt.dhcp.DHCP_OPT_REQ_IP, _ip(dev.ip)),
        (dpkt.dhcp.DHCP_OPT_HOSTNAME, dev.hostname.encode()),
        (dpkt.dhcp.DHCP_OPT_PARAM_REQ, bytes(int(x) for x in dev.kind.dhcp_fingerprint.split(","))),
    ]
    if dev.kind.dhcp_vendor_class:
        opts.append((dpkt.dhcp.DHCP_OPT_VENDOR_ID, dev.kind.dhcp_vendor_class.encode()))
    xid = rng.getrandbits(32)
    # The broadcast flag asks the server to broadcast its answer (most embedded and
    # mobile clients set it; the ACK then reaches the client before it has an address).
    req = dpkt.dhcp.DHCP(chaddr=_mac(dev.mac), xid=xid, flags=0x8000, opts=opts)
    _udp(out, t, End(dev.mac, "0.0.0.0", 68), End(_BROADCAST, "255.255.255.255", 67), bytes(req))
    ack = dpkt.dhcp.DHCP(
        op=dpkt.dhcp.DHCP_OP_REPLY, chaddr=_mac(dev.mac), xid=xid, yiaddr=int(ipaddress.IPv4Address(dev.ip)),
        opts=[(dpkt.dhcp.DHCP_OPT_MSGTYPE, bytes([dpkt.dhcp.DHCPACK])),
              (dpkt.dhcp.DHCP_OPT_SERVER_ID, _ip(site.router_ip)),
              (dpkt.dhcp.DHCP_OPT_LEASE_SEC, struct.pack("!I", 86400)),
              (dpkt.dhcp.DHCP_OPT_ROUTER, _ip(site.router_ip)),
              (dpkt.dhcp.DHCP_OPT_DNS_SVRS, _ip(site.router_ip))],
    )  # fmt: skip
    _udp(
        out,
        t + 0.003,
        End(site.router_mac, site.router_ip, 67),
        End(_BROADCAST, "255.255.255.255", 68),
        bytes(ack),
    )


def _arp(
    out: Packets, t: float, src_mac: str, src_ip: str, target_ip: str, reply_mac: str | None = None
) -> None:
    req = dpkt.arp.ARP(
        op=dpkt.arp.ARP_OP_REQUEST,
        sha=_mac(src_mac),
        spa=_ip(src_ip),
        tha=b"\x00" * 6,
        tpa=_ip(target_ip),
    )
    out.add(
        t,
        bytes(
            dpkt.ethernet.Ethernet(
                src=_mac(src_mac), dst=_mac(_BROADCAST), type=dpkt.ethernet.ETH_TYPE_ARP, data=req
            )
        ),
    )
    if reply_mac:
        rep = dpkt.arp.ARP(
            op=dpkt.arp.ARP_OP_REPLY,
            sha=_mac(reply_mac),
            spa=_ip(target_ip),
            tha=_mac(src_mac),
            tpa=_ip(src_ip),
        )
        out.add(
            t + 0.0005,
            bytes(
                dpkt.ethernet.Ethernet(
                    src=_mac(reply_mac),
                    dst=_mac(src_mac),
                    type=dpkt.ethernet.ETH_TYPE_ARP,
                    data=rep,
                )
            ),
        )


def _mdns(out: Packets, t: float, dev: SimDevice) -> None:
    """An mDNS announcement of the device's services, with its model in TXT."""
    host = f"{dev.hostname}.local"
    msg = dpkt.dns.DNS(id=0, qr=dpkt.dns.DNS_R, op=dpkt.dns.DNS_AA)
    msg.qd = []
    rrs = []
    for svc in dev.kind.services:
        stype = f"{svc}.local"
        inst = f"{dev.hostname}.{stype}"
        rrs.append(
            dpkt.dns.DNS.RR(name=stype, type=dpkt.dns.DNS_PTR, cls=1, ttl=4500, ptrname=inst)
        )
        rrs.append(dpkt.dns.DNS.RR(name=inst, type=dpkt.dns.DNS_SRV, cls=0x8001, ttl=120,
                                   srvname=host, port=631, priority=0, weight=0))  # fmt: skip
        rrs.append(dpkt.dns.DNS.RR(name=inst, type=dpkt.dns.DNS_TXT, cls=0x8001, ttl=4500,
                                   text=[f"md={dev.model}".encode(), f"ty={dev.vendor} {dev.model}".encode()]))  # fmt: skip
    rrs.append(dpkt.dns.DNS.RR(name=host, type=dpkt.dns.DNS_A, cls=0x8001, ttl=120, ip=_ip(dev.ip)))
    msg.an = rrs
    _udp(out, t, End(dev.mac, dev.ip, 5353), End(_MDNS_MAC, "224.0.0.251", 5353), bytes(msg))


def join(out: Packets, t: float, dev: SimDevice, site: Site, rng: random.Random) -> None:
    """A device arriving on the LAN: DHCP, ARP for the router, mDNS if it announces."""
    _dhcp(out, t, dev, site, rng)
    _arp(out, t + 0.05, dev.mac, dev.ip, site.router_ip, reply_mac=site.router_mac)
    if dev.kind.services:
        _mdns(out, t + 0.5, dev)


# --- connections ------------------------------------------------------------------------


class Synth:
    """Turns sampled connections and scenario flow records into packets."""

    def __init__(self, out: Packets, site: Site, rng: random.Random) -> None:
        self.out = out
        self.site = site
        self.rng = rng
        self.ports: dict[str, int] = {}
        self.macs = {d.ip: d.mac for d in site.devices}
        self.macs[site.router_ip] = site.router_mac
        self.qid = rng.getrandbits(16)
        self.resolved: dict[tuple[str, str], float] = {}
        self.sessions: dict[tuple[str, str, int], Tcp] = {}
        self.connections = 0

    def _eph(self, ip: str) -> int:
        port = self.ports.get(ip, 49152 + self.rng.randrange(8000)) + 1
        if port > 65000:
            port = 49153
        self.ports[ip] = port
        return port

    def _mac_of(self, ip: str) -> str:
        # Remote addresses are reached through the router.
        return self.macs.get(ip, self.site.router_mac)

    def _resolve(self, t: float, dev: SimDevice, name: str, ip: str) -> float:
        """A DNS lookup through the router unless the answer is still cached (5 min)."""
        key = (dev.ip, name)
        if t - self.resolved.get(key, -1e9) < 300:
            return t
        self.resolved[key] = t
        self.qid = (self.qid + 1) & 0xFFFF
        client = End(dev.mac, dev.ip, self._eph(dev.ip))
        router = End(self.site.router_mac, self.site.router_ip, 53)
        _udp(self.out, t, client, router, dns_query(name, self.qid))
        _udp(self.out, t + 0.012, router, client, dns_answer(name, ip, self.qid))
        return t + 0.015

    def session(self, c: Connection) -> None:
        """A minute of a long-lived session: opened on first use, then a keep-alive and
        the minute's data (the meter cuts it into pieces at its active timeout)."""
        key = (c.device.mac, c.remote_ip, c.endpoint.port)
        tcp = self.sessions.get(key)
        if tcp is None:
            self.connections += 1
            t = self._resolve(c.start, c.device, c.endpoint.name, c.remote_ip)
            client = End(c.device.mac, c.device.ip, self._eph(c.device.ip))
            server = End(self._mac_of(c.remote_ip), c.remote_ip, c.endpoint.port)
            tcp = self.sessions[key] = Tcp(self.out, client=client, server=server, t=t,
                                           rng=self.rng).open()  # fmt: skip
            tcp.say("c", client_hello(c.endpoint.name, self.rng))
            tcp.say("s", server_hello(self.rng))
        # Keep-alives every 4-12 s: such sessions never sit idle long enough for the
        # meter's idle timeout (15 s) to end them, so it reports them once per active
        # timeout, as it does for a camera uploading to its cloud.
        t, end = max(tcp.t, c.start), c.start + 60
        while t < end:
            tcp.t = t
            tcp.say("c", b"\x17\x03\x03\x00\x20" + self.rng.randbytes(32))
            tcp.say("s", b"\x17\x03\x03\x00\x20" + self.rng.randbytes(32))
            t += self.rng.uniform(4, 12)
        tcp.t = c.start + self.rng.uniform(0, 30)
        tcp.bulk("c", c.bytes_out)
        tcp.bulk("s", c.bytes_in)
        tcp.t = max(tcp.t, t - 12)

    def close_sessions(self, t: float, mac: str | None = None) -> None:
        """Close the long-lived sessions (of one device, or all) at ``t``."""
        for key in [k for k in self.sessions if mac is None or k[0] == mac]:
            tcp = self.sessions.pop(key)
            tcp.t = max(tcp.t, t)
            tcp.close()

    def connection(self, c: Connection) -> None:
        ep = c.endpoint
        dev = c.device
        t = c.start
        if ep.persistent:
            self.session(c)
            return
        self.connections += 1
        if ep.name and ep.proto == 6:
            t = self._resolve(t, dev, ep.name, c.remote_ip)
        client = End(dev.mac, dev.ip, self._eph(dev.ip))
        server = End(self._mac_of(c.remote_ip), c.remote_ip, ep.port)
        if ep.proto == 17:
            if ep.port == 53:  # a lookup of some name not in the profile
                self.qid = (self.qid + 1) & 0xFFFF
                name = f"{self.rng.choice(('www', 'api', 'cdn', 'static'))}.{self.rng.choice(('microsoft.com', 'google.com', 'yahoo.co.jp', 'apple.com'))}"
                _udp(self.out, t, client, server, dns_query(name, self.qid))
                _udp(
                    self.out,
                    t + 0.01,
                    server,
                    client,
                    dns_answer(name, "142.250.196.100", self.qid),
                )
            else:  # NTP: a 48-byte request and response
                req = b"\x23" + b"\x00" * 39 + struct.pack("!II", int(t) + 2208988800, 0)
                _udp(self.out, t, client, server, req)
                _udp(self.out, t + 0.02, server, client, b"\x24\x02" + b"\x00" * 46)
            return
        self.tcp(t, client, server, ep.app, ep.name, c.bytes_out, c.bytes_in, None)

    def tcp(
        self, t: float, client: End, server: End, app: str, name: str, b_out: int, b_in: int,
        duration: float | None,
    ) -> None:  # fmt: skip
        rng = self.rng
        s = Tcp(self.out, client=client, server=server, t=t, rng=rng).open()
        port = server.port
        if app.startswith("HTTP") or port == 80:
            req = (f"GET /{rng.getrandbits(32):08x} HTTP/1.1\r\nHost: {name}\r\nUser-Agent: {_UA}\r\n"
                   "Accept: */*\r\nConnection: close\r\n\r\n").encode()  # fmt: skip
            s.say("c", req)
            s.say(
                "s",
                f"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {b_in}\r\n\r\n".encode(),
            )
            b_out -= len(req)
        elif app == "SMTP" or port in (25, 587):
            s.say("s", b"220 mx.example ESMTP ready\r\n")
            s.say("c", b"EHLO DESKTOP\r\n")
            s.say("s", b"250-mx.example\r\n250-SIZE 52428800\r\n250 8BITMIME\r\n")
            s.say("c", b"MAIL FROM:<info@example.co.jp>\r\n")
            s.say("s", b"250 2.1.0 Ok\r\n")
            s.say("c", b"RCPT TO:<user@example.net>\r\n")
            s.say("s", b"250 2.1.5 Ok\r\n")
            s.say("c", b"DATA\r\n")
            s.say("s", b"354 End data with <CR><LF>.<CR><LF>\r\n")
            s.bulk("c", b_out)
            s.say("c", b"\r\n.\r\n")
            s.say("s", b"250 2.0.0 Ok: queued\r\n")
            s.say("c", b"QUIT\r\n")
            s.say("s", b"221 2.0.0 Bye\r\n")
            s.close(duration)
            return
        elif app == "RDP" or port == 3389:
            cookie = b"Cookie: mstshash=administrator\r\n"
            x224 = (
                bytes([len(cookie) + 14, 0xE0, 0, 0, 0, 0, 0])
                + cookie
                + b"\x01\x00\x08\x00\x0b\x00\x00\x00"
            )
            s.say("c", b"\x03\x00" + struct.pack("!H", len(x224) + 4) + x224)
            s.say(
                "s", b"\x03\x00\x00\x13\x0e\xd0\x00\x00\x12\x34\x00\x02\x1f\x08\x00\x02\x00\x00\x00"
            )
            s.say("c", client_hello(server.ip, rng))
            s.say("s", server_hello(rng))
            for _ in range(3):  # CredSSP/NLA: the password guess, and the refusal
                s.say("c", b"\x17\x03\x03\x01\x00" + rng.randbytes(256))
                s.say("s", b"\x17\x03\x03\x00\x80" + rng.randbytes(128))
            s.close(duration)
            return
        elif app.startswith("SMB") or port == 445:
            neg = (
                b"\xfeSMB"
                + struct.pack("<HHIHHII", 64, 0, 0, 0, 31, 0, 0)
                + b"\x00" * 40
                + b"\x24\x00\x02\x00\x01\x00\x00\x00"
                + b"\x00" * 28
                + b"\x02\x02\x10\x02"
            )
            s.say("c", struct.pack("!I", len(neg)) + neg)
            rsp = (
                b"\xfeSMB"
                + struct.pack("<HHIHHII", 64, 0, 0, 0, 31, 1, 0)
                + b"\x00" * 40
                + b"\x41\x00\x01\x00\x10\x02"
                + b"\x00" * 58
            )
            s.say("s", struct.pack("!I", len(rsp)) + rsp)
        elif port == 9100:
            s.say("c", b'\x1b%-12345X@PJL JOB NAME="document"\r\n@PJL ENTER LANGUAGE=PCL\r\n')
        else:
            hello = client_hello(name or server.ip, rng)
            s.say("c", hello)
            s.say("s", server_hello(rng))
            b_out -= len(hello)
            b_in -= 800
        s.bulk("c", b_out)
        s.bulk("s", b_in)
        s.close(duration)

    def record(self, r: FlowRecord) -> None:
        """Packets for a scenario's flow record (DNS records become a lookup)."""
        self.connections += 1
        if r.proto == 17:
            self.qid = (self.qid + 1) & 0xFFFF
            client = End(r.src_mac, r.src_ip, r.src_port)
            server = End(r.dst_mac, r.dst_ip, r.dst_port)
            _udp(self.out, r.first_seen, client, server, dns_query(r.dns_query, self.qid))
            _udp(self.out, r.first_seen + 0.01, server, client,
                 dns_answer(r.dns_query, scenarios.BAD_IP, self.qid))  # fmt: skip
            return
        t = r.first_seen
        if r.sni:  # a named server is looked up first
            dev = next((d for d in self.site.devices if d.ip == r.src_ip), None)
            if dev is not None:
                t = self._resolve(t - 0.02, dev, r.sni, r.dst_ip) + 0.005
        client = End(r.src_mac, r.src_ip, r.src_port)
        server = End(r.dst_mac, r.dst_ip, r.dst_port)
        self.tcp(t, client, server, r.app, r.sni, r.bytes_src2dst, r.bytes_dst2src,
                 r.last_seen - r.first_seen)  # fmt: skip


# --- profiles ---------------------------------------------------------------------------


def site_for(devices: int, seed: int) -> Site:
    return profiles.build_site(tenant="lab", gateway="lab-gw", devices=devices, seed=seed)


def generate(
    profile: str,
    fh: BinaryIO,
    *,
    devices: int = 30,
    seed: int = 1,
    hours: tuple[float, float] | None = None,
) -> CaptureStats:
    """Write the capture of ``profile`` to ``fh``; return what was written."""
    if profile not in PROFILES:
        raise ValueError(f"unknown capture profile {profile!r}; known: {', '.join(PROFILES)}")
    if hours is None:
        hours = (0.0, 24.0) if profile == "office-day" else (10.0, 10.5)
    start, end = DAY + hours[0] * 3600, DAY + hours[1] * 3600
    rng = random.Random(seed)
    site = site_for(devices, seed)
    writer = PcapWriter(fh)
    out = Packets(writer)
    synth = Synth(out, site, rng)
    joined: set[str] = set()
    scenario = None if profile == "office-day" else profile
    # Scenario traffic begins two minutes into the window, on a benign background.
    extra: Iterator[FlowRecord] = iter(
        scenarios.records(scenario, site, start + 120, end, rng) if scenario else ()
    )
    pending = next(extra, None)
    t = start
    while t < end:
        for dev in site.devices:
            if dev.mac not in joined and profiles.present(dev, t):
                joined.add(dev.mac)
                join(out, t + rng.uniform(0, 50), dev, site, rng)
            elif dev.mac in joined and not profiles.present(dev, t):
                joined.discard(dev.mac)  # gone home; DHCP again tomorrow
                synth.close_sessions(t, dev.mac)
        if int(t - DAY) % 3600 == 0:  # hourly ARP refresh of the router entry
            for dev in site.devices:
                if dev.mac in joined:
                    _arp(out, t + rng.uniform(0, 50), dev.mac, dev.ip, site.router_ip,
                         reply_mac=site.router_mac)  # fmt: skip
        conns = sorted(profiles.connections(site, t, 60, rng), key=lambda c: c.start)
        for c in conns:
            while pending is not None and pending.first_seen <= c.start:
                synth.record(pending)
                pending = next(extra, None)
            synth.connection(c)
        while pending is not None and pending.first_seen < t + 60:
            synth.record(pending)
            pending = next(extra, None)
        t += 60
        if t >= end:
            synth.close_sessions(end - 1)
        out.flush_until(t)
    out.close()
    writer.stats.connections = synth.connections
    return writer.stats


def write_profile(
    profile: str,
    path: str | os.PathLike[str],
    *,
    devices: int = 30,
    seed: int = 1,
    hours: tuple[float, float] | None = None,
) -> CaptureStats:
    """Write the capture of ``profile`` to the file ``path``."""
    with open(Path(path), "wb") as fh:
        return generate(profile, fh, devices=devices, seed=seed, hours=hours)
