"""TLS ServerHellos read off the wire: the version and cipher suite a session negotiated.

nfstream gives the ClientHello's JA4 (what a client *offers*); what a session really uses
is in the server's answer. One TCP segment per TLS connection carries it: the one whose
payload starts with a handshake record (type 0x16) holding a ServerHello (handshake type
0x02 at payload offset 5). Only those reach this reader (edge/discovery.py's kernel filter
live, a byte check offline), so the cost is one small parse per TLS connection.

The ServerHello is parsed here with a few bounds-checked reads rather than with
``dpkt.ssl``: servers of TLS 1.0-1.2 often put ServerHello, Certificate and
ServerHelloDone in one record that spans several segments, and dpkt wants the whole record;
the ServerHello itself is at the start and complete. The negotiated version is the
``supported_versions`` extension's (TLS 1.3) or else the legacy version field.

Attribution (IPv4, private address space standing for the LAN): a sender in private space
*serves* that session (the frame's source MAC is the device); a receiver in private space
*negotiated* it as a client (the destination MAC is the device, the server anywhere).
Each device keeps its weakest session per role (``detect/labels/tls.py`` ranks them); an
event ``DiscoveryEvent(source="tls")`` with the fact ``tls_served`` or ``tls_negotiated``
("0301:0005:443") is emitted only when that changes. Malformed hellos are counted.
"""

from __future__ import annotations

import socket
import struct
from collections import OrderedDict
from dataclasses import dataclass, field

from mimamori.detect.labels.tls import CLIENT_EXTRA, SERVED_EXTRA, rank, summary
from mimamori.edge.http_logins import is_private_v4
from mimamori.protocol import DiscoveryEvent

#: Devices x roles whose weakest session is remembered (oldest forgotten first).
MAX_KEPT = 4096
_SUPPORTED_VERSIONS = 43


def parse_server_hello(payload: bytes) -> tuple[int, int] | None:
    """(negotiated version, cipher suite) of a TCP payload starting with a ServerHello.

    None when it is not one or is cut short. Never raises.
    """
    n = len(payload)
    if n < 5 + 4 + 2 + 32 + 1 or payload[0] != 0x16 or payload[5] != 0x02:
        return None
    body = 9
    hs_len = int.from_bytes(payload[6:9], "big")
    end = min(n, body + hs_len)
    version = (payload[body] << 8) | payload[body + 1]
    p = body + 2 + 32  # legacy version, random
    p += 1 + payload[p]  # session id
    if p + 3 > end:
        return None
    cipher = (payload[p] << 8) | payload[p + 1]
    p += 3  # cipher suite, compression method
    if p + 2 <= end:
        ext_end = min(end, p + 2 + ((payload[p] << 8) | payload[p + 1]))
        p += 2
        while p + 4 <= ext_end:
            kind = (payload[p] << 8) | payload[p + 1]
            size = (payload[p + 2] << 8) | payload[p + 3]
            p += 4
            if kind == _SUPPORTED_VERSIONS and size == 2 and p + 2 <= ext_end:
                version = (payload[p] << 8) | payload[p + 1]
            p += size
    if version >> 8 != 0x03:
        return None  # not SSL 3.0 or TLS
    return version, cipher


@dataclass
class TlsHelloReader:
    """Reads ServerHellos; :meth:`feed` returns an event when a device's weakest changes."""

    hellos: int = 0
    malformed: int = 0
    _kept: OrderedDict[tuple[str, str], str] = field(default_factory=OrderedDict)

    def feed(self, ts: float, frame: bytes, off: int) -> list[DiscoveryEvent]:
        """One Ethernet frame with IPv4 at ``off`` and a TCP payload starting 16 .. 02."""
        total = struct.unpack_from("!H", frame, off + 2)[0]
        tcp = off + (frame[off] & 0x0F) * 4
        sport = struct.unpack_from("!H", frame, tcp)[0]
        payload = frame[tcp + (frame[tcp + 12] >> 4) * 4 : off + total]
        parsed = parse_server_hello(payload)
        if parsed is None:
            self.malformed += 1
            return []
        self.hellos += 1
        text = summary(*parsed, sport)
        src, dst = frame[off + 12 : off + 16], frame[off + 16 : off + 20]
        events: list[DiscoveryEvent] = []
        if is_private_v4(src):
            events += self._keep(ts, frame[6:12].hex(":"), src, SERVED_EXTRA, text)
        if is_private_v4(dst):
            events += self._keep(ts, frame[0:6].hex(":"), dst, CLIENT_EXTRA, text)
        return events

    def _keep(self, ts: float, mac: str, ip: bytes, fact: str, text: str) -> list[DiscoveryEvent]:
        key = (mac, fact)
        kept = self._kept.get(key)
        if kept is not None:
            self._kept.move_to_end(key)
            if rank(text) >= rank(kept):
                return []
        self._kept[key] = text
        if len(self._kept) > MAX_KEPT:
            self._kept.popitem(last=False)
        ev = DiscoveryEvent(
            ts=ts, source="tls", mac=mac, ip=socket.inet_ntoa(ip), facts={fact: text}
        )
        return [ev]
