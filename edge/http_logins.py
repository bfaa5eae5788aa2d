"""HTTP Basic and Digest logins to LAN devices' web admin, read off the wire.

The companion of edge/logins.py (FTP, Telnet) for the web admin pages of cameras, routers
and NAS (JC-STAR ★1 S1.1-02: no well-known default password; S1.1-12: credentials are not
sent in clear). Only requests to a server in private address space on one of
:data:`HTTP_PORTS` reach this reader (the kernel filter and the offline prefilter of
edge/discovery.py see to that), so internet browsing never does.

For each request the ``Authorization`` header is read when the headers are complete
(requests split over several segments are joined, up to :data:`MAX_HEADERS` bytes):

* ``Basic``: the user and password are decoded and compared with
  ``detect/labels/default_credentials.toml`` at once;
* ``Digest``: the response hash is recomputed with each factory password listed for that
  user (RFC 7616: MD5, MD5-sess, SHA-256, SHA-256-sess; ``qop`` auth or none).

Only the verdict of that comparison (which factory credential, or none) waits for the
server's answer: a status 2xx/3xx is an accepted login, 401/403 a rejected one. The
password itself is never kept past the request that carried it, never logged, never
published. An accepted factory credential becomes the ``DiscoveryEvent`` fact
``default_login`` (``source="login"``, as for FTP and Telnet); a Basic login answered at
all becomes ``cleartext_login`` ("http basic (port 80)"): the password crossed the LAN in
clear, whatever it was. Digest does not expose the password and is not a cleartext login.
Each finding is reported once per device and port (a browser repeats the header on every
request).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import socket
import struct
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from mimamori.detect.labels.credentials import Credential, DefaultCredentials, load_credentials
from mimamori.protocol import DiscoveryEvent

#: Web admin ports whose logins are read (plain HTTP only; 443 is TLS).
HTTP_PORTS = frozenset((80, 8080, 8000, 81, 88))
#: Connections followed at once (oldest forgotten first), header bytes kept per request,
#: requests awaiting an answer per connection (pipelining), findings remembered.
MAX_CONNECTIONS = 256
MAX_HEADERS = 8192
MAX_PENDING = 8
MAX_REPORTED = 4096
_METHODS = (b"GET ", b"POST ", b"PUT ", b"HEAD ", b"DELETE ", b"OPTIONS ", b"PATCH ")
_HASHES = {"md5": hashlib.md5, "sha-256": hashlib.sha256}


def is_private_v4(addr: bytes) -> bool:
    """10/8, 172.16/12 or 192.168/16 (RFC 1918): where a LAN device's server lives."""
    a = addr[0]
    return a == 10 or (a == 192 and addr[1] == 168) or (a == 172 and 16 <= addr[1] < 32)


def parse_digest(value: str) -> dict[str, str]:
    """The parameters of a ``Digest`` authorization (``key=value`` or ``key="value"``)."""
    out: dict[str, str] = {}
    i, n = 0, len(value)
    while i < n:
        while i < n and value[i] in " ,\t":
            i += 1
        eq = value.find("=", i)
        if eq < 0:
            break
        key = value[i:eq].strip().lower()
        i = eq + 1
        if i < n and value[i] == '"':
            end = i + 1
            chars: list[str] = []
            while end < n and value[end] != '"':
                if value[end] == "\\" and end + 1 < n:
                    end += 1
                chars.append(value[end])
                end += 1
            out[key] = "".join(chars)
            i = end + 1
        else:
            end = value.find(",", i)
            end = n if end < 0 else end
            out[key] = value[i:end].strip()
            i = end
    return out


def digest_matches(params: dict[str, str], method: str, password: str) -> bool:
    """Does ``password`` produce the Digest ``response`` in ``params`` (RFC 7616)?"""
    algorithm = params.get("algorithm", "MD5").lower()
    sess = algorithm.endswith("-sess")
    h = _HASHES.get(algorithm.removesuffix("-sess"))
    qop = params.get("qop", "")
    if h is None or qop not in ("", "auth"):
        return False  # auth-int hashes the body; unknown algorithms cannot be checked

    def hx(text: str) -> str:
        return h(text.encode("utf-8", "surrogateescape")).hexdigest()

    user, realm, nonce = params.get("username", ""), params.get("realm", ""), params["nonce"]
    ha1 = hx(f"{user}:{realm}:{password}")
    if sess:
        ha1 = hx(f"{ha1}:{nonce}:{params.get('cnonce', '')}")
    ha2 = hx(f"{method}:{params.get('uri', '')}")
    if qop:
        nc, cnonce = params.get("nc", ""), params.get("cnonce", "")
        expected = hx(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    else:
        expected = hx(f"{ha1}:{nonce}:{ha2}")
    return expected == params.get("response", "").lower()


@dataclass
class _Request:
    """An authorised request awaiting the server's status: the verdict, not the password."""

    scheme: str  # "basic" or "digest"
    user: str
    factory: Credential | None


@dataclass
class _Conn:
    server_mac: str
    server_ip: str
    port: int
    buf: bytearray = field(default_factory=bytearray)
    next_seq: int | None = None
    pending: deque[_Request | None] = field(default_factory=lambda: deque(maxlen=MAX_PENDING))


@dataclass
class HttpLoginReader:
    """Follows HTTP connections to LAN servers; :meth:`feed` returns login findings."""

    credentials: DefaultCredentials = field(default_factory=load_credentials)
    requests: int = 0  # requests whose headers were read
    logins: int = 0  # authorised requests answered 2xx/3xx or 401/403
    default_logins: int = 0
    basic_logins: int = 0
    _conns: OrderedDict[tuple[bytes, int, bytes, int], _Conn] = field(default_factory=OrderedDict)
    _reported: OrderedDict[tuple[str, str, int, str], None] = field(default_factory=OrderedDict)

    def feed(self, ts: float, frame: bytes, off: int) -> list[DiscoveryEvent]:
        """One Ethernet frame with IPv4 at ``off`` and TCP to or from an HTTP port."""
        ihl = (frame[off] & 0x0F) * 4
        total = struct.unpack_from("!H", frame, off + 2)[0]
        tcp = off + ihl
        sport, dport, seq = struct.unpack_from("!HHI", frame, tcp)
        payload = frame[tcp + (frame[tcp + 12] >> 4) * 4 : off + total]
        src, dst = frame[off + 12 : off + 16], frame[off + 16 : off + 20]
        if dport in HTTP_PORTS and is_private_v4(dst):
            if not payload:
                return []
            key = (src, sport, dst, dport)
            conn = self._conns.get(key)
            if conn is None:
                conn = _Conn(frame[0:6].hex(":"), socket.inet_ntoa(dst), dport)
                self._conns[key] = conn
                if len(self._conns) > MAX_CONNECTIONS:
                    self._conns.popitem(last=False)
            else:
                self._conns.move_to_end(key)
            self._request(conn, seq, payload)
            return []
        if sport in HTTP_PORTS and is_private_v4(src) and payload.startswith(b"HTTP/"):
            conn = self._conns.get((dst, dport, src, sport))
            if conn is not None and conn.pending:
                return self._answer(conn, payload, ts)
        return []

    # --- client side -----------------------------------------------------------------

    def _request(self, conn: _Conn, seq: int, payload: bytes) -> None:
        if conn.next_seq is not None and (conn.next_seq - seq - len(payload)) % (1 << 32) < (
            1 << 31
        ):
            return  # a retransmission of bytes already read
        conn.next_seq = (seq + len(payload)) % (1 << 32)
        if payload.startswith(_METHODS):
            conn.buf.clear()  # a new request (a body or an unfinished one is dropped)
        elif not conn.buf:
            return  # a body, or the middle of a request we did not see begin
        conn.buf += payload[: MAX_HEADERS - len(conn.buf)]
        end = conn.buf.find(b"\r\n\r\n")
        if end < 0:
            if len(conn.buf) >= MAX_HEADERS:
                conn.buf.clear()
            return
        head = bytes(conn.buf[:end])
        conn.buf.clear()
        self.requests += 1
        conn.pending.append(self._authorization(head))

    def _authorization(self, head: bytes) -> _Request | None:
        lines = head.split(b"\r\n")
        method = lines[0].split(b" ", 1)[0].decode("latin-1")
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or name.strip().lower() != b"authorization":
                continue
            scheme, _, rest = value.strip().partition(b" ")
            scheme_name = scheme.lower()
            if scheme_name == b"basic":
                try:
                    decoded = base64.b64decode(rest.strip(), validate=True)
                except (binascii.Error, ValueError):
                    return None
                login, colon, password = decoded.decode("utf-8", "replace").partition(":")
                if not colon:
                    return None
                return _Request("basic", login[:64], self.credentials.match(login, password))
            if scheme_name == b"digest":
                params = parse_digest(rest.decode("utf-8", "replace"))
                if "nonce" not in params or "response" not in params:
                    return None
                user = params.get("username", "")
                return _Request("digest", user[:64], self._digest_factory(params, method))
            return None
        return None

    def _digest_factory(self, params: dict[str, str], method: str) -> Credential | None:
        user = params.get("username", "").lower()
        for cred in self.credentials.credentials:
            usable = cred.user.lower() == user and not cred.any_password
            if usable and digest_matches(params, method, cred.password):
                return cred
        return None

    # --- server side -----------------------------------------------------------------

    def _answer(self, conn: _Conn, payload: bytes, ts: float) -> list[DiscoveryEvent]:
        request = conn.pending.popleft()
        status = payload[9:12]
        if request is None or not status.isdigit():
            return []
        code = int(status)
        accepted = 200 <= code < 400
        if not accepted and code not in (401, 403):
            return []  # 404, 500...: says nothing about the credential
        self.logins += 1
        facts: dict[str, str] = {}
        if request.scheme == "basic":
            self.basic_logins += 1
            if self._first(conn, "cleartext", ""):
                facts["cleartext_login"] = f"http basic (port {conn.port})"
        cred = request.factory
        if accepted and cred is not None:
            self.default_logins += 1
            if self._first(conn, "default", request.user):
                scheme = "http basic" if request.scheme == "basic" else "http digest"
                facts["default_login"] = (
                    f"{scheme} login as {request.user!r} on port {conn.port} "
                    f"with a factory password ({cred.seen_on})"
                )[:255]
        if not facts:
            return []
        return [
            DiscoveryEvent(
                ts=ts, source="login", mac=conn.server_mac, ip=conn.server_ip, facts=facts
            )
        ]

    def _first(self, conn: _Conn, what: str, user: str) -> bool:
        key = (conn.server_mac, what, conn.port, user.lower())
        if key in self._reported:
            return False
        self._reported[key] = None
        if len(self._reported) > MAX_REPORTED:
            self._reported.popitem(last=False)
        return True
