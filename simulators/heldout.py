"""Held-out captures: attack variants and a benign IoT week that the shared set lacks.

The shared captures (``../shared/data``) are the ones the thresholds were read against;
these are not. Each variant is written with dpkt through :mod:`.pcapgen`'s packet writer
(TCP handshakes, teardowns, payloads a DPI engine recognises) into a file the caller
names, so tests write them into a temporary directory and nothing binary is committed.

Every attack variant comes with a little ordinary traffic from other LAN hosts (web
browsing, DNS), so a detector must name the right actor, not just any host. Timing is
what the tools do, not what a threshold wants: nmap's slow timing templates, beacons with
Cobalt-Strike-like sleep and jitter, Hydra/Medusa-paced password guessing, iodine and
dnscat2 query patterns.

:func:`write_iot_week` writes several days of a small office's IoT and client traffic:
cameras with keep-alives to their clouds (over a long-lived TLS connection, or UDP
heartbeats from one socket as P2P cameras do), a smart plug's MQTT session, a printer,
a hub polling for firmware, phones and a PC browsing during office hours, NTP, DNS,
mDNS and SSDP. The figures a test compares are per device-day.
"""

from __future__ import annotations

import base64
import os
import random
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dpkt
from mimamori.simulators.pcapgen import (
    End,
    Packets,
    PcapWriter,
    Tcp,
    _arp,
    _udp,
    client_hello,
    server_hello,
)

#: Monday 2026-11-23 00:00 JST: every held-out capture starts that day.
T0 = 1_795_359_600.0
LAN = "192.168.50.0/24"
ROUTER = End("00:1a:2b:00:00:01", "192.168.50.1", 53)
#: The acting hosts the variants name (LAN workstation, LAN intruder, internet attacker).
WORKSTATION = "192.168.50.30"
INTRUDER = "192.168.50.66"
INTERNET_ATTACKER = "198.51.100.77"
C2_IP = "203.0.113.45"
_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
_SITES = [
    "www.google.com", "www.yahoo.co.jp", "news.yahoo.co.jp", "www.amazon.co.jp",
    "outlook.office365.com", "teams.microsoft.com", "www.youtube.com", "i.ytimg.com",
    "www.nikkei.com", "www.rakuten.co.jp", "static.xx.fbcdn.net", "www.instagram.com",
    "fonts.gstatic.com", "ajax.googleapis.com", "cdn.jsdelivr.net", "d1.awsstatic.com",
    "img.freee.co.jp", "secure.chatwork.com", "www.line.me", "scdn.line-apps.com",
    "abs.twimg.com", "pbs.twimg.com", "www.mercari.com", "a.akamaihd.net",
    "e1.nhk.or.jp", "www3.nhk.or.jp", "slack.com", "a.slack-edge.com",
    "zoom.us", "us04web.zoom.us", "www.dropbox.com", "dl.dropboxusercontent.com",
]  # fmt: skip


def mac_of(ip: str) -> str:
    """A stable locally administered MAC for a simulated LAN address."""
    last = int(ip.rsplit(".", 1)[1])
    return f"02:50:00:00:00:{last:02x}"


def lan(host: int) -> str:
    return f"192.168.50.{host}"


def remote_ip(name: str) -> str:
    """A stable documentation-range address for an internet name."""
    h = sum(name.encode()) * 2654435761 % 2**16
    return f"{(100, 198, 203)[h % 3]}.{(51, 18, 0)[h % 3]}.{h >> 8}.{h % 250 + 2}"


@dataclass(frozen=True)
class Case:
    """A written capture and what detection must say about it."""

    name: str
    path: Path
    category: str  # expected alert category ("" for benign captures)
    actor: str  # the IP address the alert must name
    home_net: tuple[str, ...]
    note: str


@dataclass(frozen=True)
class Week:
    """A written benign capture and its size in device-days."""

    path: Path
    devices: tuple[str, ...]  # LAN addresses of the simulated devices
    days: float
    home_net: tuple[str, ...]


# --- packet helpers -----------------------------------------------------------------------


@contextmanager
def _capture(path: Path) -> Iterator[Packets]:
    with open(path, "wb") as fh:
        out = Packets(PcapWriter(fh))
        yield out
        out.close()


class _Lan:
    """Builders for one simulated LAN's conversations (ports, MACs, DNS ids)."""

    def __init__(self, out: Packets, rng: random.Random) -> None:
        self.out = out
        self.rng = rng
        self._ports: dict[str, int] = {}

    def end(self, ip: str, port: int | None = None) -> End:
        local = ip.startswith("192.168.50.")
        mac = mac_of(ip) if local else ROUTER.mac
        return End(mac, ip, self.eph(ip) if port is None else port)

    def eph(self, ip: str) -> int:
        port = self._ports.get(ip, 49152 + self.rng.randrange(10000)) + 1
        if port > 65000:
            port = 49153
        self._ports[ip] = port
        return port

    def tcp(self, client: End, server: End, t: float) -> Tcp:
        return Tcp(self.out, client=client, server=server, t=t, rng=self.rng)

    # one-packet exchanges

    def ip(self, t: float, src: End, dst: End, proto: int, data: dpkt.Packet) -> None:
        ip = dpkt.ip.IP(
            src=bytes(int(x) for x in src.ip.split(".")),
            dst=bytes(int(x) for x in dst.ip.split(".")),
            p=proto,
            ttl=64,
            data=data,
        )
        eth = dpkt.ethernet.Ethernet(
            src=bytes.fromhex(src.mac.replace(":", "")),
            dst=bytes.fromhex(dst.mac.replace(":", "")),
            data=ip,
        )
        self.out.add(t, bytes(eth))

    def syn(self, t: float, client: End, server: End, *, answer: str, tries: int = 1) -> None:
        """A connection attempt: ``answer`` is "none", "rst" (closed) or "synack"."""
        c = self.tcp(client, server, t)
        if answer == "none":
            for i in range(tries):
                c.t = t + (2**i - 1)
                c._send("c", dpkt.tcp.TH_SYN)
                c.seq["c"] -= 1  # a retransmission repeats the sequence number
            return
        c._send("c", dpkt.tcp.TH_SYN)
        c._wait()
        if answer == "rst":
            c._send("s", dpkt.tcp.TH_RST | dpkt.tcp.TH_ACK)
        else:  # half-open scan: SYN-ACK, then the scanner resets
            c._send("s", dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK)
            c._wait()
            c._send("c", dpkt.tcp.TH_RST)

    def ping(self, t: float, src: End, dst: End, seq: int, *, reply: bool) -> None:
        echo = dpkt.icmp.ICMP.Echo(id=0x4D4D, seq=seq, data=b"\x00" * 32)
        self.ip(t, src, dst, dpkt.ip.IP_PROTO_ICMP, dpkt.icmp.ICMP(type=8, code=0, data=echo))
        if reply:
            back = dpkt.icmp.ICMP.Echo(id=0x4D4D, seq=seq, data=b"\x00" * 32)
            self.ip(t + 0.0008, dst, src, dpkt.ip.IP_PROTO_ICMP,
                    dpkt.icmp.ICMP(type=0, code=0, data=back))  # fmt: skip

    def udp_probe(self, t: float, src: End, dst: End, payload: bytes, *, reply: bytes | None,
                  unreachable: bool) -> None:  # fmt: skip
        _udp(self.out, t, src, dst, payload)
        if reply is not None:
            _udp(self.out, t + 0.001, dst, src, reply)
        elif unreachable:
            udp = dpkt.udp.UDP(sport=src.port, dport=dst.port, data=payload)
            udp.ulen = len(udp)
            orig = dpkt.ip.IP(
                src=bytes(int(x) for x in src.ip.split(".")),
                dst=bytes(int(x) for x in dst.ip.split(".")),
                p=dpkt.ip.IP_PROTO_UDP, ttl=64, data=udp,
            )  # fmt: skip
            msg = dpkt.icmp.ICMP(type=3, code=3, data=dpkt.icmp.ICMP.Unreach(data=bytes(orig)[:28]))
            self.ip(t + 0.001, End(dst.mac, dst.ip, 0), End(src.mac, src.ip, 0),
                    dpkt.ip.IP_PROTO_ICMP, msg)  # fmt: skip

    def dns(self, t: float, client: End, name: str, *, qtype: int = dpkt.dns.DNS_A,
            answer: bytes | str = "", resolver: End = ROUTER) -> None:  # fmt: skip
        """A query to ``resolver`` and its answer (A, TXT or NULL by ``qtype``)."""
        qid = self.rng.getrandbits(16)
        q = dpkt.dns.DNS(id=qid, op=dpkt.dns.DNS_RD)
        q.qd = [dpkt.dns.DNS.Q(name=name, type=qtype)]
        _udp(self.out, t, client, resolver, bytes(q))
        a = dpkt.dns.DNS(id=qid, op=dpkt.dns.DNS_RD | dpkt.dns.DNS_RA, qr=dpkt.dns.DNS_R)
        a.qd = [dpkt.dns.DNS.Q(name=name, type=qtype)]
        data = answer.encode() if isinstance(answer, str) else answer
        if qtype == dpkt.dns.DNS_TXT:
            rr = dpkt.dns.DNS.RR(name=name, type=qtype, ttl=0, text=[data or b"ok"])
        elif qtype == dpkt.dns.DNS_NULL:
            rr = dpkt.dns.DNS.RR(name=name, type=qtype, ttl=0)
            rr.rdata = data or b"\x00"
        else:
            ip = str(answer) if answer else remote_ip(name)
            rr = dpkt.dns.DNS.RR(name=name, type=qtype, ttl=300,
                                 ip=bytes(int(x) for x in ip.split(".")))  # fmt: skip
        a.an = [rr]
        _udp(self.out, t + self.rng.uniform(0.005, 0.03), resolver, client, bytes(a))

    # whole conversations

    def https(self, t: float, ip: str, name: str, *, up: int = 900, down: int = 6000,
              server_ip: str | None = None, port: int = 443, lookup: bool = True) -> float:  # fmt: skip
        """A DNS lookup, then one TLS connection; returns when it closed."""
        if lookup:
            self.dns(t, self.end(ip), name)
            t += 0.04
        c = self.tcp(self.end(ip), self.end(server_ip or remote_ip(name), port), t).open()
        c.say("c", client_hello(name, self.rng))
        c.say("s", server_hello(self.rng))
        c.bulk("c", max(0, up - 600))
        c.bulk("s", max(0, down - 900))
        c.close()
        return c.t

    def http(self, t: float, ip: str, name: str, *, path: str = "/", method: str = "GET",
             up: int = 0, down: int = 512, server_ip: str | None = None, port: int = 80,
             user_agent: str = _UA, lookup: bool = True) -> float:  # fmt: skip
        if lookup:
            self.dns(t, self.end(ip), name)
            t += 0.04
        c = self.tcp(self.end(ip), self.end(server_ip or remote_ip(name), port), t).open()
        body = f"Content-Length: {up}\r\n" if method == "POST" else ""
        c.say("c", (f"{method} {path} HTTP/1.1\r\nHost: {name}\r\nUser-Agent: {user_agent}\r\n"
                    f"Accept: */*\r\n{body}Connection: close\r\n\r\n").encode())  # fmt: skip
        c.bulk("c", up)
        c.say("s", (f"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {down}"
                    "\r\n\r\n").encode())  # fmt: skip
        c.bulk("s", down)
        c.close()
        return c.t

    def browse(self, t: float, ip: str, minutes: float, per_minute: float = 3.0) -> None:
        """A person using the web: bursts of TLS connections to assorted sites."""
        end = t + minutes * 60
        while t < end:
            t += self.rng.expovariate(per_minute / 60)
            for _ in range(self.rng.randint(1, 4)):
                site = self.rng.choice(_SITES)
                self.https(t + self.rng.uniform(0, 2), ip, site,
                           up=self.rng.randint(700, 4000), down=self.rng.randint(2000, 200_000))  # fmt: skip


def _background(net: _Lan, t: float, minutes: float) -> None:
    """Two office PCs browsing, so that detectors must pick the right actor."""
    net.browse(t, lan(21), minutes)
    net.browse(t + 7, lan(22), minutes, per_minute=2.0)


# --- scans ----------------------------------------------------------------------------------

_UDP_PORTS = [7, 9, 17, 19, 49, 53, 67, 68, 69, 80, 88, 111, 120, 123, 135, 136, 137, 138,
              139, 158, 161, 162, 177, 427, 443, 445, 497, 500, 514, 515, 518, 520, 593,
              623, 626, 631, 996, 997, 998, 999, 1022, 1023, 1025, 1026, 1027, 1028, 1029,
              1030, 1433, 1434, 1645, 1646, 1701, 1718, 1719, 1812, 1813, 1900, 2000, 2048,
              2049, 2222, 2223, 3283, 3456, 3703, 4444, 4500, 5000, 5060, 5353, 5632, 9200,
              10000, 17185, 20031, 30718, 31337, 32768, 32769, 32771, 32815, 33281, 49152,
              49153, 49154, 49156, 49181, 49182, 49186, 49188, 49190, 49191, 49192, 49193,
              49194, 49200, 49201, 65024]  # nmap's top UDP ports, as -sU --top-ports 100  # fmt: skip


def udp_scan(path: Path, rng: random.Random) -> Case:
    """nmap -sU --top-ports 100 against the NAS: closed ports answer ICMP unreachable,
    which Linux rate-limits to one a second, so nmap paces itself to match."""
    t = T0 + 10 * 3600
    with _capture(path) as out:
        net = _Lan(out, rng)
        _background(net, t - 60, 30)
        scanner, target = net.end(INTRUDER, 53001), lan(10)
        t += 60
        open_ports = {
            53: b"\x00" * 40,
            123: b"\x24" + b"\x00" * 47,
            161: b"\x30\x26" + b"\x00" * 36,
        }
        for port in _UDP_PORTS:
            reply = open_ports.get(port)
            net.udp_probe(t, scanner, net.end(target, port), b"", reply=reply,
                          unreachable=reply is None)  # fmt: skip
            t += rng.uniform(0.9, 1.3)
    return Case(
        "scan/udp_top100",
        path,
        "scan",
        INTRUDER,
        (LAN,),
        "nmap -sU top 100 ports of one LAN host, about one probe a second",
    )


def slow_vertical_scan(path: Path, rng: random.Random) -> Case:
    """nmap -T1-like pacing (one SYN every 15 s) over 120 ports of one server."""
    t = T0 + 9 * 3600
    with _capture(path) as out:
        net = _Lan(out, rng)
        _background(net, t, 40)
        target = lan(10)
        open_ports = {22, 80, 443, 445, 139, 3389}
        for port in rng.sample(range(1, 10000), 120) + sorted(open_ports):
            answer = "synack" if port in open_ports else "rst"
            net.syn(t, net.end(INTRUDER), net.end(target, port), answer=answer)
            t += rng.uniform(12, 18)
    return Case(
        "scan/slow_vertical",
        path,
        "scan",
        INTRUDER,
        (LAN,),
        "one SYN every 12-18 s to 126 ports of one host (polite timing)",
    )


def stealth_scan(flags: str) -> Callable[[Path, random.Random], Case]:
    def write(path: Path, rng: random.Random) -> Case:
        """nmap -sF / -sX / -sN: no SYN at all. Closed ports reset; open ones stay
        silent, and so does a filtered one."""
        bits = {"fin": dpkt.tcp.TH_FIN, "xmas": dpkt.tcp.TH_FIN | dpkt.tcp.TH_PUSH
                | dpkt.tcp.TH_URG, "null": 0}[flags]  # fmt: skip
        t = T0 + 16 * 3600
        with _capture(path) as out:
            net = _Lan(out, rng)
            _background(net, t - 60, 10)
            target = lan(10)
            for port in sorted(rng.sample(range(1, 1024), 200)):
                c = net.tcp(net.end(INTRUDER, 41000 + flags.__len__()), net.end(target, port), t)
                c._send("c", bits)
                if port not in (22, 80, 139, 443, 445):
                    c._wait()
                    c._send("s", dpkt.tcp.TH_RST | dpkt.tcp.TH_ACK)
                t += rng.uniform(0.005, 0.05)
        return Case(
            f"scan/{flags}_scan",
            path,
            "scan",
            INTRUDER,
            (LAN,),
            f"nmap -s{flags[0].upper()} of 200 ports on one host (no SYNs)",
        )

    return write


def inbound_sweep(service: str, port: int) -> Callable[[Path, random.Random], Case]:
    def write(path: Path, rng: random.Random) -> Case:
        """An internet host sweeping one service across the site's routed /24: most
        addresses are unused (no answer); a few hosts refuse."""
        t = T0 + 3 * 3600
        with _capture(path) as out:
            net = _Lan(out, rng)
            _background(net, t, 20)
            live = {10, 21, 22, 30}
            for host in rng.sample(range(2, 255), 253):
                answer = "rst" if host in live else "none"
                net.syn(t, net.end(INTERNET_ATTACKER, rng.randrange(1024, 65535)),
                        net.end(lan(host), port), answer=answer, tries=2)  # fmt: skip
                t += rng.uniform(0.2, 1.5)
        return Case(
            f"scan/inbound_{service}",
            path,
            "scan",
            INTERNET_ATTACKER,
            (LAN,),
            f"internet host sweeping {service}/{port} over the LAN's /24",
        )

    return write


def icmp_sweep(path: Path, rng: random.Random) -> Case:
    """nmap -sn from a LAN host without ARP (routed, or --send-ip): echo to a /24."""
    t = T0 + 11 * 3600
    with _capture(path) as out:
        net = _Lan(out, rng)
        _background(net, t - 60, 10)
        alive = {1, 10, 21, 22, 30, 40, 41, 42}
        for i, host in enumerate(range(1, 255)):
            if lan(host) == INTRUDER:
                continue
            net.ping(t, net.end(INTRUDER, 0), net.end(lan(host), 0), i, reply=host in alive)
            t += rng.uniform(0.01, 0.05)
    return Case(
        "scan/icmp_sweep_24",
        path,
        "scan",
        INTRUDER,
        (LAN,),
        "ICMP echo to 253 addresses of the /24 in ~8 s, 8 alive",
    )


def arp_sweep(path: Path, rng: random.Random) -> Case:
    """A slow ARP sweep (netdiscover-like: one who-has every 1-1.5 s) of the /24."""
    t = T0 + 11 * 3600
    with _capture(path) as out:
        net = _Lan(out, rng)
        _background(net, t - 60, 10)
        for host in range(1, 255):
            if lan(host) == INTRUDER:
                continue
            reply = mac_of(lan(host)) if host in (1, 10, 21, 22) else None
            _arp(out, t, mac_of(INTRUDER), INTRUDER, lan(host), reply_mac=reply)
            t += rng.uniform(1.0, 1.5)
    return Case(
        "scan/arp_sweep_slow",
        path,
        "scan",
        INTRUDER,
        (LAN,),
        "ARP who-has for each address of the /24, one every 1-1.5 s",
    )


def lan_smb_sweep_slow(path: Path, rng: random.Random) -> Case:
    """A worm probing SMB across the LAN, one address every 8-12 s (most unused)."""
    t = T0 + 14 * 3600
    with _capture(path) as out:
        net = _Lan(out, rng)
        _background(net, t, 30)
        for host in rng.sample(range(2, 255), 150):
            if lan(host) == INTRUDER:
                continue
            answer = "rst" if host in (21, 22) else ("synack" if host == 10 else "none")
            net.syn(t, net.end(INTRUDER), net.end(lan(host), 445), answer=answer, tries=2)
            t += rng.uniform(8, 12)
    return Case(
        "scan/lan_smb_sweep_slow",
        path,
        "scan",
        INTRUDER,
        (LAN,),
        "SMB probes to 150 LAN addresses, one every 8-12 s",
    )


# --- beacons ---------------------------------------------------------------------------------


def beacon(name: str, *, period: float, jitter: str, hours: float, http: bool = False,
           sizes: tuple[int, int] = (0, 0), note: str = "") -> Callable[[Path, random.Random], Case]:  # fmt: skip
    """A C2 implant on the workstation: ``jitter`` "sym30" is +-30 % around the period,
    "cs30" is Cobalt Strike's (sleep minus up to 30 %), "sym10" +-10 %. ``sizes`` (lo, hi)
    draws each check-in's upload (task output) uniformly; (0, 0) keeps them near constant."""

    def write(path: Path, rng: random.Random) -> Case:
        t0 = T0 + 8 * 3600
        t = t0
        domain = "cdn-static-assets.net" if not http else "update-check.info"
        with _capture(path) as out:
            net = _Lan(out, rng)
            for hour in range(int(hours) + 1):
                net.browse(t0 + hour * 3600, WORKSTATION, 6, per_minute=1.5)
                _background(net, t0 + hour * 3600 + 600, 5)
            while t < t0 + hours * 3600:
                up = rng.randint(*sizes) if sizes[1] else rng.randint(380, 420)
                down = rng.randint(200, 30_000) if sizes[1] else rng.randint(150, 170)
                lookup = rng.random() < 0.3  # the resolver caches the name
                if http:
                    net.http(t, WORKSTATION, domain, path=f"/api/{rng.getrandbits(24):06x}",
                             method="POST" if sizes[1] else "GET", up=up, down=down,
                             server_ip=C2_IP, lookup=lookup)  # fmt: skip
                else:
                    net.https(t, WORKSTATION, domain, up=up + 600, down=down + 900,
                              server_ip=C2_IP, lookup=lookup)  # fmt: skip
                if jitter == "cs30":
                    t += period * (1 - rng.uniform(0, 0.3))
                elif jitter == "sym30":
                    t += period * rng.uniform(0.7, 1.3)
                else:
                    t += period * rng.uniform(0.9, 1.1)
        return Case(f"beacon/{name}", path, "beacon", WORKSTATION, (LAN,), note)

    return write


# --- lateral movement ------------------------------------------------------------------------


def lateral(kind: str, hosts: int = 8) -> Callable[[Path, random.Random], Case]:
    def write(path: Path, rng: random.Random) -> Case:
        """The workstation reaching many LAN hosts over one administration protocol,
        one every 20-90 s (an operator or a worm going through a host list)."""
        t = T0 + 13 * 3600
        with _capture(path) as out:
            net = _Lan(out, rng)
            _background(net, t - 120, 30)
            targets = [lan(h) for h in (10, 11, 12, 21, 22, 40, 41, 42)][:hosts]
            for target in targets:
                if kind == "psexec":  # SMB to ADMIN$, then DCOM/service control over RPC
                    net_tcp_smb(net, WORKSTATION, target, t)
                    c = net.tcp(net.end(WORKSTATION), net.end(target, 135), t + 3).open()
                    c.bulk("c", 1200)
                    c.bulk("s", 900)
                    c.close(0.5)
                elif kind == "winrm":
                    c = net.tcp(net.end(WORKSTATION), net.end(target, 5985), t).open()
                    c.say("c", (f"POST /wsman HTTP/1.1\r\nHost: {target}:5985\r\n"
                                "Content-Type: application/soap+xml;charset=UTF-8\r\n"
                                "User-Agent: Microsoft WinRM Client\r\n"
                                "Authorization: Negotiate TlRMTVNTUAABAAAAl4II4gAAAAAAAAAA\r\n"
                                "Content-Length: 0\r\n\r\n").encode())  # fmt: skip
                    c.say("s", b"HTTP/1.1 401 \r\nWWW-Authenticate: Negotiate TlRMTVNTUAACAAAA\r\n"
                               b"Server: Microsoft-HTTPAPI/2.0\r\nContent-Length: 0\r\n\r\n")  # fmt: skip
                    c.bulk("c", 6000)
                    c.bulk("s", 9000)
                    c.close(2.0)
                elif kind == "rpc":
                    c = net.tcp(net.end(WORKSTATION), net.end(target, 135), t).open()
                    bind = (b"\x05\x00\x0b\x03\x10\x00\x00\x00\x48\x00\x00\x00\x01\x00\x00\x00"
                            b"\xb8\x10\xb8\x10\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x01\x00"
                            b"\x08\x83\xaf\xe1\x1f\x5d\xc9\x11\x91\xa4\x08\x00\x2b\x14\xa0\xfa"
                            b"\x03\x00\x00\x00\x04\x5d\x88\x8a\xeb\x1c\xc9\x11\x9f\xe8\x08\x00"
                            b"\x2b\x10\x48\x60\x02\x00\x00\x00")  # fmt: skip
                    c.say("c", bind)
                    c.say("s", b"\x05\x00\x0c\x03\x10\x00\x00\x00\x3c\x00\x00\x00\x01\x00\x00\x00"
                               + b"\x00" * 44)  # fmt: skip
                    c.bulk("c", 1200)
                    c.bulk("s", 1500)
                    c.close(1.0)
                else:  # smb: negotiate, session setup, tree connect to ADMIN$
                    net_tcp_smb(net, WORKSTATION, target, t)
                t += rng.uniform(20, 90)
        label = kind if hosts == 8 else f"{kind}_{hosts}hosts"
        note = f"{kind} sessions to {hosts} LAN hosts, one every 20-90 s"
        return Case(f"lateral/{label}", path, "lateral_movement", WORKSTATION, (LAN,), note)

    return write


def net_tcp_smb(net: _Lan, client_ip: str, server_ip: str, t: float) -> None:
    neg = (b"\xfeSMB" + struct.pack("<HHIHHII", 64, 0, 0, 0, 31, 0, 0) + b"\x00" * 40
           + b"\x24\x00\x02\x00\x01\x00\x00\x00" + b"\x00" * 28 + b"\x02\x02\x10\x02")  # fmt: skip
    rsp = (b"\xfeSMB" + struct.pack("<HHIHHII", 64, 0, 0, 0, 31, 1, 0) + b"\x00" * 40
           + b"\x41\x00\x01\x00\x10\x02" + b"\x00" * 58)  # fmt: skip
    c = net.tcp(net.end(client_ip), net.end(server_ip, 445), t).open()
    c.say("c", struct.pack("!I", len(neg)) + neg)
    c.say("s", struct.pack("!I", len(rsp)) + rsp)
    c.bulk("c", 3000)
    c.bulk("s", 4000)
    c.close(1.5)


# --- DNS tunnels -----------------------------------------------------------------------------


def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode().rstrip("=").lower()


def dns_tunnel(kind: str) -> Callable[[Path, random.Random], Case]:
    def write(path: Path, rng: random.Random) -> Case:
        t = T0 + 15 * 3600
        zone = {"dnscat_txt": "cdn-metrics.org", "iodine_null": "t.example-tunnel.net",
                "slow_base32": "sync-svc.co.jp", "dns_beacon": "ns1.cloud-telemetry.net"}[kind]  # fmt: skip
        with _capture(path) as out:
            net = _Lan(out, rng)
            _background(net, t - 60, 25)
            if kind == "dnscat_txt":
                # dnscat2: hex-encoded packets as labels, TXT answers, a query about every
                # second through the system resolver (a fresh source port each).
                for _ in range(900):
                    data = rng.randbytes(rng.randint(12, 90)).hex()
                    labels = [data[i : i + 62] for i in range(0, len(data), 62)]
                    name = ".".join([*labels, zone])
                    net.dns(t, net.end(WORKSTATION), name, qtype=dpkt.dns.DNS_TXT,
                            answer=rng.randbytes(rng.randint(8, 60)).hex().encode())  # fmt: skip
                    t += rng.uniform(0.5, 1.5)
            elif kind == "iodine_null":
                # iodine: base32 down-/upstream data in labels, NULL answers, one socket.
                sock = net.end(WORKSTATION, 40123)
                for _ in range(600):
                    label = "pa" + _b32(rng.randbytes(rng.randint(20, 36)))
                    name = f"{label[:63]}.{zone}"
                    net.dns(t, sock, name, qtype=dpkt.dns.DNS_NULL,
                            answer=rng.randbytes(rng.randint(40, 200)))  # fmt: skip
                    t += rng.uniform(0.2, 0.8)
            elif kind == "dns_beacon":
                # C2 over DNS (Cobalt Strike's DNS beacon): a check-in every 60 s +-20 %,
                # an A query for a fresh hex id; when a task is waiting, a burst of TXT
                # queries fetches it in hex chunks. Through the system resolver.
                end = t + 3 * 3600
                while t < end:
                    net.dns(t, net.end(WORKSTATION), f"{rng.getrandbits(40):010x}.{zone}",
                            answer="0.0.0.0")  # fmt: skip
                    if rng.random() < 0.05:
                        for k in range(rng.randint(5, 30)):
                            name = f"api.{rng.getrandbits(28):07x}.{k:x}.{zone}"
                            net.dns(t + 0.5 + k * 0.3, net.end(WORKSTATION), name,
                                    qtype=dpkt.dns.DNS_TXT,
                                    answer=rng.randbytes(100).hex().encode())  # fmt: skip
                    t += 60 * rng.uniform(0.8, 1.2)
            else:
                # low and slow exfiltration: one base32 label of 32 characters every 4-6 s
                for seq in range(300):
                    name = f"{_b32(rng.randbytes(20))}.{seq:x}.{zone}"
                    net.dns(t, net.end(WORKSTATION), name, qtype=dpkt.dns.DNS_TXT,
                            answer=b"0")  # fmt: skip
                    t += rng.uniform(4, 6)
        return Case(
            f"dns_tunnel/{kind}",
            path,
            "dns_tunnel",
            WORKSTATION,
            (LAN,),
            f"{kind.replace('_', ' ')} under {zone}",
        )

    return write


# --- password guessing ------------------------------------------------------------------------


def _ssh_attempt(net: _Lan, client: End, server: End, t: float, rng: random.Random) -> None:
    c = net.tcp(client, server, t).open()
    c.say("s", b"SSH-2.0-OpenSSH_8.9p1 Ubuntu-3ubuntu0.6\r\n")
    c.say("c", b"SSH-2.0-libssh_0.9.6\r\n")
    c.say("c", b"\x00\x00\x05\xdc\x04\x14" + rng.randbytes(1494))  # KEXINIT
    c.say("s", b"\x00\x00\x04\x3c\x06\x14" + rng.randbytes(1078))
    c.say("c", b"\x00\x00\x00\x2c\x06\x1e" + rng.randbytes(44))  # ECDH init
    c.say("s", b"\x00\x00\x01\x14\x08\x1f" + rng.randbytes(600))
    c.say("c", b"\x00\x00\x00\x0c\x0a\x15" + rng.randbytes(10))  # NEWKEYS
    for _ in range(rng.randint(1, 3)):  # password tries on this connection
        c.t += rng.uniform(0.1, 0.4)
        c.say("c", rng.randbytes(rng.randint(80, 120)))
        c.t += rng.uniform(1.5, 2.5)  # the server's failure delay
        c.say("s", rng.randbytes(52))
    c.close()


def _ftp_attempt(net: _Lan, client: End, server: End, t: float, rng: random.Random) -> None:
    c = net.tcp(client, server, t).open()
    c.say("s", b"220 (vsFTPd 3.0.5)\r\n")
    for _ in range(3):
        c.say("c", b"USER admin\r\n")
        c.say("s", b"331 Please specify the password.\r\n")
        c.say("c", f"PASS {rng.choice(['123456', 'admin', 'password', 'qwerty'])}\r\n".encode())
        c.t += rng.uniform(2.5, 3.5)
        c.say("s", b"530 Login incorrect.\r\n")
    c.say("c", b"QUIT\r\n")
    c.say("s", b"221 Goodbye.\r\n")
    c.close()


def _telnet_attempt(net: _Lan, client: End, server: End, t: float, rng: random.Random) -> None:
    c = net.tcp(client, server, t).open()
    c.say("s", b"\xff\xfd\x18\xff\xfd\x20\xff\xfd\x23\xff\xfd\x27")
    c.say("c", b"\xff\xfb\x18\xff\xfb\x20\xff\xfb\x23\xff\xfb\x27")
    c.say("s", b"\xff\xfb\x03\xff\xfd\x01\xff\xfd\x1f\xff\xfb\x05\xff\xfd\x21")
    c.say("c", b"\xff\xfd\x03\xff\xfc\x01\xff\xfb\x1f\xff\xfa\x1f\x00\x50\x00\x18\xff\xf0")
    c.say("s", b"\r\nrouter login: ")
    c.say("c", rng.choice([b"root\r\n", b"admin\r\n", b"support\r\n"]))
    c.say("s", b"Password: ")
    c.say("c", rng.choice([b"xc3511\r\n", b"vizxv\r\n", b"admin\r\n", b"888888\r\n"]))
    c.t += rng.uniform(2, 3)
    c.say("s", b"\r\nLogin incorrect\r\n")
    c.close()


def _rdp_attempt(net: _Lan, client: End, server: End, t: float, rng: random.Random) -> None:
    c = net.tcp(client, server, t).open()
    cookie = b"Cookie: mstshash=administrator\r\n"
    x224 = (
        bytes([len(cookie) + 14, 0xE0, 0, 0, 0, 0, 0])
        + cookie
        + b"\x01\x00\x08\x00\x0b\x00\x00\x00"
    )
    c.say("c", b"\x03\x00" + struct.pack("!H", len(x224) + 4) + x224)
    c.say("s", b"\x03\x00\x00\x13\x0e\xd0\x00\x00\x12\x34\x00\x02\x1f\x08\x00\x02\x00\x00\x00")
    c.say("c", client_hello(server.ip, rng))
    c.say("s", server_hello(rng))
    for _ in range(3):
        c.say("c", b"\x17\x03\x03\x01\x00" + rng.randbytes(256))
        c.say("s", b"\x17\x03\x03\x00\x80" + rng.randbytes(128))
    c.close()


_ATTEMPTS = {"ssh": (22, _ssh_attempt), "ftp": (21, _ftp_attempt),
             "telnet": (23, _telnet_attempt), "rdp": (3389, _rdp_attempt)}  # fmt: skip


def bruteforce(service: str, *, inbound: bool, pace: tuple[float, float],
               attempts: int) -> Callable[[Path, random.Random], Case]:  # fmt: skip
    def write(path: Path, rng: random.Random) -> Case:
        """Hydra/Medusa-style guessing: one connection after another at ``pace`` s."""
        port, attempt = _ATTEMPTS[service]
        t = T0 + 2 * 3600 if inbound else T0 + 12 * 3600
        attacker = INTERNET_ATTACKER if inbound else INTRUDER
        with _capture(path) as out:
            net = _Lan(out, rng)
            _background(net, t - 60, 20)
            server = net.end(lan(10), port)
            # the administrator's own two logins (one typo): no brute force
            for i in range(2):
                attempt(net, net.end(lan(21)), server, t + 30 + 45 * i, rng)
            for _ in range(attempts):
                attempt(net, net.end(attacker), server, t, rng)
                t += rng.uniform(*pace)
        where = "internet" if inbound else "LAN"
        return Case(f"bruteforce/{service}_{where.lower()}", path, "bruteforce", attacker,
                    (LAN,), f"{attempts} {service} login attempts from the {where}, "
                    f"one every {pace[0]:.0f}-{pace[1]:.0f} s")  # fmt: skip

    return write


#: Every attack variant: name -> writer. Names say category/variant.
VARIANTS: dict[str, Callable[[Path, random.Random], Case]] = {
    "scan/udp_top100": udp_scan,
    "scan/slow_vertical": slow_vertical_scan,
    "scan/fin_scan": stealth_scan("fin"),
    "scan/xmas_scan": stealth_scan("xmas"),
    "scan/null_scan": stealth_scan("null"),
    "scan/inbound_smb": inbound_sweep("smb", 445),
    "scan/inbound_rdp": inbound_sweep("rdp", 3389),
    "scan/inbound_telnet": inbound_sweep("telnet", 23),
    "scan/icmp_sweep_24": icmp_sweep,
    "scan/arp_sweep_slow": arp_sweep,
    "scan/lan_smb_sweep_slow": lan_smb_sweep_slow,
    "beacon/https_60s_j30": beacon(
        "https_60s_j30", period=60, jitter="sym30", hours=3, note="HTTPS check-in every 60 s +-30 %"
    ),
    "beacon/https_300s_j30": beacon(
        "https_300s_j30",
        period=300,
        jitter="sym30",
        hours=10,
        note="HTTPS check-in every 300 s +-30 %",
    ),
    "beacon/https_60s_cs30": beacon(
        "https_60s_cs30",
        period=60,
        jitter="cs30",
        hours=3,
        note="Cobalt-Strike-like sleep 60 s, jitter 30 %",
    ),
    "beacon/http_120s": beacon(
        "http_120s",
        period=120,
        jitter="sym10",
        hours=4,
        http=True,
        note="plain HTTP GET every 120 s +-10 %",
    ),
    "beacon/http_sizes": beacon(
        "http_sizes",
        period=45,
        jitter="sym30",
        hours=3,
        http=True,
        sizes=(200, 6000),
        note="HTTP POST every 45 s +-30 %, uploads 200-6,000 B, answers 0.2-30 KB",
    ),
    "beacon/https_sizes": beacon(
        "https_sizes",
        period=90,
        jitter="sym30",
        hours=4,
        sizes=(200, 6000),
        note="HTTPS every 90 s +-30 %, varying sizes",
    ),
    "lateral/winrm": lateral("winrm"),
    "lateral/rpc": lateral("rpc"),
    "lateral/smb": lateral("smb"),
    "lateral/winrm_3hosts": lateral("winrm", hosts=3),
    "lateral/psexec_3hosts": lateral("psexec", hosts=3),
    "dns_tunnel/dnscat_txt": dns_tunnel("dnscat_txt"),
    "dns_tunnel/iodine_null": dns_tunnel("iodine_null"),
    "dns_tunnel/slow_base32": dns_tunnel("slow_base32"),
    "dns_tunnel/dns_beacon": dns_tunnel("dns_beacon"),
    "bruteforce/ssh_lan": bruteforce("ssh", inbound=False, pace=(4, 9), attempts=40),
    "bruteforce/ssh_internet": bruteforce("ssh", inbound=True, pace=(5, 15), attempts=40),
    "bruteforce/rdp_internet": bruteforce("rdp", inbound=True, pace=(3, 8), attempts=30),
    "bruteforce/ftp_lan": bruteforce("ftp", inbound=False, pace=(10, 14), attempts=25),
    "bruteforce/telnet_internet": bruteforce("telnet", inbound=True, pace=(2, 6), attempts=40),
}


def write_variant(name: str, directory: str | os.PathLike[str], *, seed: int = 7) -> Case:
    """Write the variant ``name`` into ``directory``; return its case."""
    path = Path(directory) / (name.replace("/", "__") + ".pcap")
    return VARIANTS[name](path, random.Random(f"{name}:{seed}"))


# --- a benign week ----------------------------------------------------------------------------


def _week_devices() -> dict[str, str]:
    return {
        "cam_tls": lan(40),  # camera: long-lived TLS to its cloud, keep-alive 30-60 s
        "cam_p2p": lan(41),  # P2P camera: UDP heartbeats from one socket every 30-60 s
        "plug": lan(42),  # smart plug: TLS on port 50443 to its cloud, keep-alive every 60 s
        "plug_poll": lan(46),  # smart plug: a new HTTPS poll of its cloud every 5 min
        "hub": lan(43),  # lock hub: firmware check every 6 h, status POST on events
        "printer": lan(44),  # printer: mDNS/SSDP, print jobs, daily firmware check
        "phone": lan(45),  # phone: push channel, app traffic to many CDNs by day
        "pc": lan(30),  # office PC: browsing, Windows Update, telemetry
    }


def _mdns_announce(net: _Lan, t: float, ip: str, name: str) -> None:
    msg = dpkt.dns.DNS(id=0, qr=dpkt.dns.DNS_R, op=dpkt.dns.DNS_AA)
    msg.an = [dpkt.dns.DNS.RR(name=f"{name}.local", type=dpkt.dns.DNS_A, cls=0x8001, ttl=120,
                              ip=bytes(int(x) for x in ip.split(".")))]  # fmt: skip
    _udp(net.out, t, End(mac_of(ip), ip, 5353), End("01:00:5e:00:00:fb", "224.0.0.251", 5353),
         bytes(msg))  # fmt: skip


def _ssdp_notify(net: _Lan, t: float, ip: str) -> None:
    msg = (f"NOTIFY * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nCACHE-CONTROL: max-age=1800\r\n"
           f"LOCATION: http://{ip}:49152/description.xml\r\nNT: upnp:rootdevice\r\n"
           "NTS: ssdp:alive\r\nSERVER: Linux/4.9 UPnP/1.0 Camera/1.0\r\n\r\n").encode()  # fmt: skip
    _udp(net.out, t, End(mac_of(ip), ip, 1900), End("01:00:5e:7f:ff:fa", "239.255.255.250", 1900),
         msg)  # fmt: skip


def _ssdp_search(net: _Lan, t: float, ip: str, responders: tuple[str, ...]) -> None:
    client = net.end(ip)
    search = (b"M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\n"
              b"MX: 1\r\nST: ssdp:all\r\n\r\n")  # fmt: skip
    _udp(net.out, t, client, End("01:00:5e:7f:ff:fa", "239.255.255.250", 1900), search)
    for k, other in enumerate(responders):
        reply = (f"HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=1800\r\nST: upnp:rootdevice\r\n"
                 f"LOCATION: http://{other}:49152/description.xml\r\n\r\n").encode()  # fmt: skip
        _udp(net.out, t + 0.1 + 0.2 * k, End(mac_of(other), other, 1900), client, reply)


def _ntp(net: _Lan, t: float, ip: str, server: str) -> None:
    client, srv = net.end(ip), net.end(remote_ip(server), 123)
    net.dns(t, net.end(ip), server)
    req = b"\x23" + b"\x00" * 39 + struct.pack("!II", int(t) + 2208988800, 0)
    _udp(net.out, t + 0.05, client, srv, req)
    _udp(net.out, t + 0.08, srv, client, b"\x24\x02" + b"\x00" * 46)


def _keepalive_session(net: _Lan, t: float, end: float, ip: str, name: str, port: int,
                       gap: tuple[float, float], rng: random.Random) -> None:  # fmt: skip
    """A long-lived TLS connection with an application keep-alive every ``gap`` s,
    reconnecting every 2-8 hours (NAT timeouts, cloud load balancers)."""
    while t < end:
        net.dns(t, net.end(ip), name)
        c = net.tcp(net.end(ip), net.end(remote_ip(name), port), t + 0.05).open()
        c.say("c", client_hello(name, rng))
        c.say("s", server_hello(rng))
        until = min(end, t + rng.uniform(2, 8) * 3600)
        while c.t < until:
            c.t += rng.uniform(*gap)
            c.say("c", b"\x17\x03\x03\x00\x40" + rng.randbytes(64))
            c.say("s", b"\x17\x03\x03\x00\x30" + rng.randbytes(48))
            if rng.random() < 0.01:  # an event: a snapshot or a state change
                c.bulk("c", rng.randint(20_000, 400_000))
        c.close()
        t = c.t + rng.uniform(1, 30)


def write_iot_week(path: str | os.PathLike[str], *, days: float = 7, seed: int = 11) -> Week:
    """Write ``days`` of a small office's devices (see the module docstring)."""
    rng = random.Random(f"iot-week:{seed}")
    dev = _week_devices()
    start, end = T0, T0 + days * 86400
    with _capture(Path(path)) as out:
        net = _Lan(out, rng)
        # cameras, plug: always on
        _keepalive_session(net, start + 5, end, dev["cam_tls"], "rest-prod.blinkcam.example",
                           443, (30, 60), rng)  # fmt: skip
        _keepalive_session(net, start + 9, end, dev["plug"], "devs.tplinkcloud.com", 50443,
                           (55, 65), rng)  # fmt: skip
        p2p = net.end(dev["cam_p2p"], 32108)
        relays = [End(ROUTER.mac, remote_ip(f"relay{i}.p2p.example"), 32100) for i in range(2)]
        t = start + 3
        while t < end:
            for relay in relays:
                _udp(out, t, p2p, relay, b"\xf1\x00\x00\x00" + rng.randbytes(16))
                _udp(out, t + 0.06, relay, p2p, b"\xf1\x01\x00\x00" + rng.randbytes(16))
            t += rng.uniform(30, 60)
            if rng.random() < 0.002:  # the app opens a live view: a burst of video
                c = net.tcp(
                    net.end(dev["cam_p2p"]), net.end(remote_ip("relay0.p2p.example"), 443), t
                ).open()
                c.bulk("c", rng.randint(2_000_000, 9_000_000))
                c.close(rng.uniform(30, 300))
        for ip, server in ((dev["cam_tls"], "time.google.com"), (dev["cam_p2p"], "pool.ntp.org"),
                           (dev["plug"], "time.nist.gov"), (dev["hub"], "pool.ntp.org")):  # fmt: skip
            t = start + rng.uniform(0, 600)
            while t < end:
                _ntp(net, t, ip, server)
                t += rng.uniform(3500, 3700)
        # the other plug polls its vendor's cloud API (allowlisted: vendor_cloud_domains)
        t = start + 40
        while t < end:
            net.https(t, dev["plug_poll"], "use1-api.tplinkcloud.com", up=1300, down=1100,
                      lookup=rng.random() < 0.2)  # fmt: skip
            t += 300 + rng.uniform(-3, 3)
        # hub: firmware check every 6 h (new HTTPS connection), status on lock events
        t = start + 120
        while t < end:
            net.https(t, dev["hub"], "fw.lockhub.example", up=1100, down=2400)
            t += 6 * 3600 + rng.uniform(-60, 60)
        for day in range(int(days + 0.999)):
            base = start + day * 86400
            weekday = day % 7 < 5
            # lock events: people arriving and leaving
            for _ in range(rng.randint(4, 20) if weekday else rng.randint(0, 3)):
                net.https(base + rng.uniform(7.5, 20) * 3600, dev["hub"], "api.lockhub.example",
                          up=rng.randint(600, 1500), down=rng.randint(400, 900))  # fmt: skip
            # printer: announcements every 30 min, daily firmware check, jobs in office hours
            for k in range(48):
                _mdns_announce(
                    net, base + k * 1800 + rng.uniform(0, 5), dev["printer"], "OfficeJet"
                )
                _ssdp_notify(net, base + k * 1800 + rng.uniform(5, 10), dev["printer"])
                _ssdp_notify(net, base + k * 1800 + rng.uniform(10, 20), dev["cam_tls"])
            net.https(base + rng.uniform(2, 4) * 3600, dev["printer"], "h10141.www1.hp.example",
                      up=1500, down=9000)  # fmt: skip
            if weekday:
                for _ in range(rng.randint(3, 12)):
                    tj = base + rng.uniform(9.2, 17.8) * 3600
                    c = net.tcp(net.end(dev["pc"]), net.end(dev["printer"], 9100), tj).open()
                    c.say("c", b'\x1b%-12345X@PJL JOB NAME="doc"\r\n@PJL ENTER LANGUAGE=PCL\r\n')
                    c.bulk("c", rng.randint(50_000, 3_000_000))
                    c.close()
                    for k in range(3):  # the driver polls the printer's status over SNMP
                        net.udp_probe(tj + 5 + k * 10, net.end(dev["pc"]),
                                      net.end(dev["printer"], 161), b"\x30\x29" + b"\x00" * 39,
                                      reply=b"\x30\x35" + b"\x00" * 51, unreachable=False)  # fmt: skip
            # phone: at work on weekdays 9-18, app traffic by day, push channel meanwhile
            if weekday:
                _keepalive_session(net, base + 9 * 3600, base + 18 * 3600, dev["phone"],
                                   "mtalk.google.example", 5228, (240, 600), rng)  # fmt: skip
                net.browse(base + 9 * 3600, dev["phone"], 9 * 60, per_minute=0.15)
                # its apps look for screens and speakers: SSDP M-SEARCH from a fresh socket
                # every 10-40 s while in use; the printer and a camera answer by unicast
                for _ in range(rng.randint(20, 60)):
                    ts = base + rng.uniform(9, 18) * 3600
                    for _ in range(rng.randint(3, 8)):
                        _ssdp_search(net, ts, dev["phone"], (dev["printer"], dev["cam_tls"]))
                        ts += rng.uniform(10, 40)
                # PC: Windows Update and telemetry, the user's browsing
                net.browse(base + 9 * 3600, dev["pc"], 8.5 * 60, per_minute=0.3)
                net.https(base + 9.05 * 3600, dev["pc"], "fe2.update.microsoft.com",
                          up=3000, down=40_000)  # fmt: skip
                t = base + 9 * 3600 + rng.uniform(0, 900)
                while t < base + 18 * 3600:
                    net.https(t, dev["pc"], "v10.events.data.microsoft.com",
                              up=rng.randint(2000, 20_000), down=600)  # fmt: skip
                    t += rng.uniform(600, 2400)
                net.http(base + 9.01 * 3600, dev["pc"], "www.msftconnecttest.com",
                         path="/connecttest.txt", down=22)  # fmt: skip
    return Week(Path(path), tuple(dev.values()), days, (LAN,))
