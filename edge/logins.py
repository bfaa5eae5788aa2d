"""Cleartext logins (FTP, Telnet) read off the wire and checked against factory credentials.

JC-STAR ★1 asks that a device not be reachable with a well-known default password
(S1.1-02). A gateway that sees a LAN device accept such a login in clear has direct
evidence that it does not meet that requirement. This module follows the few FTP and
Telnet connections of a site (low volume: both are rare on a modern LAN) and reports only
the verdict: a login the server *accepted* with a credential of
``detect/labels/default_credentials.toml`` becomes a ``DiscoveryEvent`` with
``source="login"`` and the fact ``default_login`` ("telnet login as 'admin' with a factory
password (where)"). The password is never stored beyond the connection's state, never
logged and never published; ordinary and rejected logins leave nothing.

FTP: the client's ``USER`` and ``PASS`` lines, then the server's ``230`` (accepted) or
``530`` (rejected). Telnet: option negotiation is stripped; the line typed after the
server's ``login:`` prompt is the user, after ``Password:`` the password; then the
server's text tells: "incorrect", "failed", "denied" or "invalid" is a rejection, a shell
prompt or "Last login" an acceptance. Characters typed one packet at a time (Telnet's
usual mode) are collected up to the end of the line.
"""

from __future__ import annotations

import socket
import struct
from collections import OrderedDict
from dataclasses import dataclass, field

from mimamori.detect.labels.credentials import DefaultCredentials, load_credentials
from mimamori.protocol import DiscoveryEvent

FTP_PORT = 21
TELNET_PORT = 23
LOGIN_PORTS = frozenset((FTP_PORT, TELNET_PORT))
#: Connections followed at once (the oldest is forgotten beyond this) and the text kept
#: per connection: enough for a login dialogue, bounded against a flood.
MAX_CONNECTIONS = 256
MAX_TEXT = 512

#: Control characters (NUL included) never reach a fact: PostgreSQL text holds no NUL.
_CONTROL = dict.fromkeys([*range(0x00, 0x20), 0x7F])


def _banner(protocol: str, text: str) -> str:
    return f"{protocol}: {text}"[:120] if text else ""


_REJECTED = ("incorrect", "failed", "denied", "invalid")
_ACCEPTED = ("last login", "welcome", "busybox", "$ ", "# ", "> ")
_USER_PROMPTS = ("login:", "username:", "user name:")


def strip_telnet(data: bytes) -> bytes:
    """``data`` without Telnet commands and option negotiation (IAC sequences)."""
    if b"\xff" not in data:
        return data
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        b = data[i]
        if b != 0xFF:
            out.append(b)
            i += 1
        elif i + 1 < n and data[i + 1] == 0xFF:  # an escaped 0xFF
            out.append(0xFF)
            i += 2
        elif i + 1 < n and data[i + 1] == 0xFA:  # subnegotiation: up to IAC SE
            end = data.find(b"\xff\xf0", i + 2)
            i = n if end < 0 else end + 2
        elif i + 1 < n and 0xFB <= data[i + 1] <= 0xFE:  # WILL/WONT/DO/DONT option
            i += 3
        else:
            i += 2
    return bytes(out)


@dataclass
class _Conn:
    protocol: str
    server_mac: str
    server_ip: str
    last: float
    user: str = ""
    password: str | None = None
    want: str = ""  # telnet: the prompt answered by the next client line
    line: bytearray = field(default_factory=bytearray)
    server_text: str = ""
    done: bool = False
    greeting: str = ""  # the server's text before its first prompt (raw, bounded)
    greeted: bool = False


@dataclass
class LoginReader:
    """Follows FTP and Telnet connections; :meth:`feed` returns factory-credential logins."""

    credentials: DefaultCredentials = field(default_factory=load_credentials)
    logins: int = 0  # logins seen with a verdict (accepted or rejected)
    default_logins: int = 0
    banners: int = 0  # server greetings reported
    _conns: OrderedDict[tuple[str, int, str, int], _Conn] = field(default_factory=OrderedDict)

    def feed(self, ts: float, frame: bytes, off: int) -> list[DiscoveryEvent]:
        """One Ethernet frame carrying IPv4 at ``off`` and TCP to or from port 21 or 23."""
        ihl = (frame[off] & 0x0F) * 4
        total = struct.unpack_from("!H", frame, off + 2)[0]
        tcp = off + ihl
        sport, dport = struct.unpack_from("!HH", frame, tcp)
        payload = frame[tcp + (frame[tcp + 12] >> 4) * 4 : off + total]
        src, dst = (
            socket.inet_ntoa(frame[off + 12 : off + 16]),
            socket.inet_ntoa(frame[off + 16 : off + 20]),
        )
        to_server = dport in LOGIN_PORTS
        key = (src, sport, dst, dport) if to_server else (dst, dport, src, sport)
        conn = self._conns.get(key)
        if conn is None:
            port = dport if to_server else sport
            mac = frame[0:6] if to_server else frame[6:12]
            conn = _Conn(
                protocol="ftp" if port == FTP_PORT else "telnet",
                server_mac=":".join(f"{b:02x}" for b in mac),
                server_ip=dst if to_server else src,
                last=ts,
            )
            self._conns[key] = conn
            if len(self._conns) > MAX_CONNECTIONS:
                self._conns.popitem(last=False)
        else:
            self._conns.move_to_end(key)
        conn.last = ts
        if conn.done or not payload:
            return []
        events: list[DiscoveryEvent] = []
        if not to_server and not conn.greeted:
            banner = self._greeting(conn, payload)
            if banner:
                self.banners += 1
                events.append(
                    DiscoveryEvent(
                        ts=ts, source="login", mac=conn.server_mac, ip=conn.server_ip,
                        facts={"server": banner},
                    )
                )  # fmt: skip
        if conn.protocol == "ftp":
            verdict = self._ftp(conn, payload, to_server)
        else:
            verdict = self._telnet(conn, strip_telnet(payload), to_server)
        return events if verdict is None else events + self._verdict(conn, verdict, ts)

    @staticmethod
    def _greeting(conn: _Conn, payload: bytes) -> str:
        """The server's greeting, once: software and versions for the label's banners.

        FTP: the ``220`` line ("220 ProFTPD 1.3.3a Server"). Telnet: the text shown before
        the first login prompt, and the prompt's host part ("IPCAM-XM530 login:"). ""
        until it is complete, and for a bare prompt.
        """
        data = payload if conn.protocol == "ftp" else strip_telnet(payload)
        conn.greeting = (conn.greeting + data.decode("latin-1"))[:MAX_TEXT]
        lines = [ln.translate(_CONTROL).strip() for ln in conn.greeting.splitlines()]
        if conn.protocol == "ftp":
            for line in lines:
                if line.startswith("220"):
                    conn.greeted = True
                    return _banner("ftp", line[3:].lstrip(" -"))
            conn.greeted = len(conn.greeting) >= MAX_TEXT or any(ln[:3].isdigit() for ln in lines)
            return ""
        low = conn.greeting.lower()
        if not any(p in low for p in (*_USER_PROMPTS, "password:")):
            conn.greeted = len(conn.greeting) >= MAX_TEXT
            return ""
        conn.greeted = True
        shown = []
        for line in lines:
            cut = next((line.lower().find(p) for p in _USER_PROMPTS if p in line.lower()), -1)
            if cut >= 0 or "password:" in line.lower():
                shown.append(line[:cut].strip() if cut > 0 else "")
                break
            shown.append(line)
        return _banner("telnet", " / ".join(x for x in shown if x))

    # --- protocols -------------------------------------------------------------------

    def _ftp(self, conn: _Conn, payload: bytes, to_server: bool) -> bool | None:
        text = payload.decode("latin-1")
        for line in text.splitlines():
            if to_server:
                verb, _, arg = line.partition(" ")
                if verb.upper() == "USER":
                    conn.user, conn.password = arg.strip()[:64], None
                elif verb.upper() == "PASS":
                    conn.password = arg.strip()[:64]
            elif conn.password is not None:
                if line.startswith("230"):
                    return True
                if line.startswith("530"):
                    return False
        return None

    def _telnet(self, conn: _Conn, data: bytes, to_server: bool) -> bool | None:
        if to_server:
            for b in data:
                if b in (0x0D, 0x0A, 0x00):
                    if conn.line or b != 0x00:
                        self._typed(conn, conn.line.decode("latin-1").strip())
                        conn.line.clear()
                elif b in (0x08, 0x7F):  # backspace, delete
                    del conn.line[-1:]
                elif len(conn.line) < 64:
                    conn.line.append(b)
            return None
        conn.server_text = (conn.server_text + data.decode("latin-1").lower())[-MAX_TEXT:]
        tail = conn.server_text
        if conn.password is not None and not conn.want:
            if any(w in tail for w in _REJECTED):
                return False
            if any(w in tail for w in _ACCEPTED):
                return True
        if any(p in tail for p in _USER_PROMPTS):
            conn.want, conn.server_text = "user", ""
        elif "password:" in tail:
            conn.want, conn.server_text = "password", ""
        return None

    @staticmethod
    def _typed(conn: _Conn, line: str) -> None:
        if conn.want == "user":
            conn.user, conn.password = line, None
        elif conn.want == "password":
            conn.password = line
            conn.server_text = ""
        conn.want = ""

    def _verdict(self, conn: _Conn, accepted: bool, ts: float) -> list[DiscoveryEvent]:
        self.logins += 1
        user, password = conn.user, conn.password or ""
        conn.password = None  # not kept past the verdict
        if not accepted:
            return []
        conn.done = True
        cred = self.credentials.match(user, password)
        if cred is None:
            return []
        self.default_logins += 1
        detail = f"{conn.protocol} login as {user!r} with a factory password ({cred.seen_on})"
        return [
            DiscoveryEvent(
                ts=ts,
                source="login",
                mac=conn.server_mac,
                ip=conn.server_ip,
                facts={"default_login": detail[:255]},
            )
        ]
