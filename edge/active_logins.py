"""The per-device active check: what answers on each port, and a few factory logins.

For one LAN device that :class:`~mimamori.edge.active.ProbeGuard` lets us probe,
:func:`check_device`

1. connects once to each configured port and identifies the service: a ``220`` greeting
   is FTP, Telnet option negotiation or a ``login:`` prompt is Telnet, ``SSH-`` is SSH, and
   a silent port (or a known web port) is asked ``GET /``: an ``HTTP/`` answer is a web
   page, whose ``Server`` header is kept as a banner and whose ``401`` with
   ``WWW-Authenticate: Basic`` marks a password-protected page;
2. when the credential tries are switched on, logs in to each Telnet, FTP and HTTP Basic
   service with at most ``max_tries`` factory credentials of
   ``detect/labels/default_credentials.toml`` (those whose ``seen_on`` names the device's
   vendor first, then those for the protocol, then the rest), one connection per try, and
   stops at the first accepted one. Telnet: the user after the ``login:`` prompt, the
   password after ``Password:``, then the reply says: "incorrect", "failed", "denied",
   "invalid" or a new ``login:`` prompt is a refusal, a shell prompt, "Last login",
   "Welcome" or "BusyBox" an acceptance (we then send ``exit`` and nothing else). FTP:
   ``USER``/``PASS``, ``230`` accepted, ``530`` refused, then ``QUIT``. HTTP: ``GET /``
   with ``Authorization: Basic``; 2xx/3xx accepted, 401/403 refused.

Every connection is admitted by the guard first (LAN only, rate-limited). The password
is never logged, kept or reported: an accepted login is reported as the protocol, port,
user and where that password is a factory default.

Results (:class:`~mimamori.edge.active.DeviceReport`): ``open_port`` for each open port
that is not a web page (a web admin page on the LAN is how most devices are set up; the
traffic shows whether it is used in clear, and its login is checked here),
``default_credential`` for an accepted factory login, ``default_rejected`` for a service
that refused every one tried, and ``banner`` for the software a service announces.
"""

from __future__ import annotations

import base64
import logging
import re
import socket
import time
from collections.abc import Callable, Iterable
from typing import Literal

from mimamori.detect.labels.credentials import Credential, DefaultCredentials, load_credentials
from mimamori.edge.active import DeviceReport, LoginResult, ProbeGuard, ProbeRefused, Service

log = logging.getLogger(__name__)

Dial = Callable[[str, int, float], socket.socket]
Verdict = Literal["accepted", "rejected", "unknown"]

#: Ports where a web page is expected: asked ``GET /`` at once instead of waiting for a
#: banner that an HTTP server never sends.
WEB_PORTS = frozenset((80, 81, 8000, 8008, 8080, 8081, 8888))
#: Protocols whose factory logins are tried.
LOGIN_PROTOCOLS = ("telnet", "ftp", "http")
#: Bytes read from one service at most (a login dialogue, a response head).
MAX_READ = 4096
#: Vendor words that say nothing about the maker (OUI names are "X Technology Co.,Ltd").
_VENDOR_NOISE = frozenset((
    "technology", "technologies", "electronics", "electronic", "corporation", "company",
    "limited", "inc", "ltd", "co", "corp", "international", "systems", "system", "network",
    "networks", "digital", "communication", "communications", "industrial", "group",
    "holdings", "shenzhen", "hangzhou", "guangzhou", "beijing", "shanghai",
))  # fmt: skip

_REJECTED = ("incorrect", "failed", "denied", "invalid", "bad password")
_ACCEPTED = ("last login", "welcome", "busybox")
_SHELL_PROMPTS = ("$", "#", ">", "%")
_USER_PROMPT = re.compile(r"(login|username|user name)\s*:\s*$")
_PASSWORD_PROMPT = re.compile(r"password\s*:\s*$")
_IAC, _DONT, _DO, _WONT, _WILL, _SB, _SE = 255, 254, 253, 252, 251, 250, 240


def dial(ip: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection to ``ip:port`` (``OSError`` when refused or silent)."""
    return socket.create_connection((ip, port), timeout=timeout)


# --- reading from a service ------------------------------------------------------------


class _Line:
    """A connection read with an overall deadline; Telnet negotiation refused and stripped."""

    def __init__(self, sock: socket.socket, *, timeout: float, telnet: bool = False) -> None:
        self.sock = sock
        self.timeout = timeout
        self.telnet = telnet
        self.text = ""
        self.raw = b""
        self.closed = False
        self._pending = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read(self, done: Callable[[str], bool], *, wait: float | None = None) -> str:
        """Read until ``done(text)`` (lower-cased text so far), EOF or the deadline."""
        deadline = time.monotonic() + (wait if wait is not None else 3 * self.timeout)
        while not done(self.text.lower()) and not self.closed and len(self.raw) < MAX_READ:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.sock.settimeout(min(left, self.timeout))
            try:
                data = self.sock.recv(1024)
            except TimeoutError:
                break
            if not data:
                self.closed = True
                break
            self.raw += data
            self.text += self._strip(data).decode("latin-1")
        return self.text

    def reset(self) -> None:
        self.text = ""

    def _strip(self, data: bytes) -> bytes:
        """Telnet: answer every option request with a refusal and drop the commands."""
        if not self.telnet:
            return data
        data, self._pending = self._pending + data, b""
        out, replies = bytearray(), bytearray()
        i, n = 0, len(data)
        while i < n:
            b = data[i]
            if b != _IAC:
                out.append(b)
                i += 1
            elif i + 1 >= n:
                self._pending = data[i:]
                break
            elif data[i + 1] == _IAC:
                out.append(_IAC)
                i += 2
            elif data[i + 1] in (_DO, _DONT, _WILL, _WONT):
                if i + 2 >= n:
                    self._pending = data[i:]
                    break
                cmd, opt = data[i + 1], data[i + 2]
                if cmd == _DO:
                    replies += bytes((_IAC, _WONT, opt))
                elif cmd == _WILL:
                    replies += bytes((_IAC, _DONT, opt))
                i += 3
            elif data[i + 1] == _SB:
                end = data.find(bytes((_IAC, _SE)), i + 2)
                if end < 0:
                    self._pending = data[i:]
                    break
                i = end + 2
            else:
                i += 2
        if replies:
            self.sock.sendall(bytes(replies))
        return bytes(out)


def _printable(text: str, limit: int = 120) -> str:
    return " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())[:limit]


def _user_prompt(text: str) -> bool:
    return bool(_USER_PROMPT.search(text.rstrip()))


def _password_prompt(text: str) -> bool:
    return bool(_PASSWORD_PROMPT.search(text.rstrip()))


def _telnet_verdict(text: str) -> Verdict | None:
    if any(w in text for w in _REJECTED) or _user_prompt(text):
        return "rejected"
    if any(w in text for w in _ACCEPTED) or text.rstrip().endswith(_SHELL_PROMPTS):
        return "accepted"
    return None


def _http_request(ip: str, port: int, auth: tuple[str, str] | None = None) -> bytes:
    lines = [
        "GET / HTTP/1.0",
        f"Host: {ip}:{port}",
        "User-Agent: mimamori-active-check",
        "Connection: close",
    ]
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
        lines.append(f"Authorization: Basic {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _http_head(text: str) -> tuple[int, dict[str, str]]:
    """Status code (0 if not HTTP) and lower-cased headers of a response head."""
    head = text.split("\r\n\r\n", 1)[0].split("\n")
    m = re.match(r"HTTP/\d(?:\.\d)?\s+(\d{3})", head[0].strip(), re.IGNORECASE)
    if not m:
        return 0, {}
    headers: dict[str, str] = {}
    for line in head[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return int(m.group(1)), headers


def _greeted(text: str) -> bool:
    """A greeting that names the service: FTP's or SSH's first line, a login prompt."""
    return _prompt(text) or (text.startswith(("220", "ssh-")) and "\n" in text)


def _prompt(text: str) -> bool:
    return _user_prompt(text) or _password_prompt(text)


def _ftp_code(text: str) -> int:
    """The code of the last complete FTP reply in ``text`` (0 when none yet)."""
    code = 0
    for line in text.split("\n"):
        m = re.match(r"(\d{3}) ", line)
        if m:
            code = int(m.group(1))
    return code


def _ftp_reply_done(text: str) -> bool:
    return _ftp_code(text) > 0


# --- identifying services --------------------------------------------------------------


class _Checker:
    """One device's check: every connection through the guard, counted."""

    def __init__(self, *, ip: str, guard: ProbeGuard, dial: Dial, report: DeviceReport) -> None:
        self.ip = ip
        self.guard = guard
        self.dial = dial
        self.report = report
        self.timeout = guard.config.timeout_s
        self.user_sent = True  # False after a Telnet login that asked only for a password

    def connect(self, port: int) -> socket.socket | None:
        self.guard.admit(self.ip)  # raises ProbeRefused: nothing is sent
        self.report.connections += 1
        try:
            return self.dial(self.ip, port, self.timeout)
        except OSError:
            return None

    def identify(self, port: int) -> Service | None:
        sock = self.connect(port)
        if sock is None:
            return None
        with sock:
            try:
                conn = _Line(sock, timeout=self.timeout, telnet=True)
                if port not in WEB_PORTS:
                    text = conn.read(_greeted, wait=min(self.timeout, 1.0))
                    if conn.raw.startswith(b"220"):
                        banner = _printable(text.split("\n")[0][4:])
                        return Service(port, "ftp", banner, asks_login=True)
                    if conn.raw.startswith(b"SSH-"):
                        return Service(port, "ssh", _printable(text.split("\n")[0]))
                    if conn.raw.startswith(bytes((_IAC,))) or _prompt(text.lower()):
                        conn.read(_prompt)
                        prompted = _prompt(conn.text.lower())
                        return Service(port, "telnet", _telnet_banner(conn.text), prompted)
                    if conn.raw:
                        return Service(port, "unknown", _printable(text.split("\n")[0]))
                    if conn.closed:
                        return Service(port, "unknown")
                sock.sendall(_http_request(self.ip, port))
                conn.telnet = False
                text = conn.read(lambda t: "\r\n\r\n" in t)
            except OSError:
                return Service(port, "unknown")
        status, headers = _http_head(text)
        if not status:
            return Service(port, "unknown")
        # One header may offer several schemes ("Digest ..., Basic realm=...").
        offered = headers.get("www-authenticate", "").lower()
        basic = status == 401 and re.search(r"(?:^|[\s,])basic\b", offered) is not None
        return Service(port, "http", _printable(headers.get("server", "")), basic)

    # --- logins --------------------------------------------------------------------

    def login(self, protocol: str, port: int, user: str, password: str) -> Verdict:
        sock = self.connect(port)
        if sock is None:
            return "unknown"
        with sock:
            try:
                if protocol == "telnet":
                    return self._telnet(sock, user, password)
                if protocol == "ftp":
                    return self._ftp(sock, user, password)
                return self._http(sock, port, user, password)
            except OSError:
                return "unknown"

    def _telnet(self, sock: socket.socket, user: str, password: str) -> Verdict:
        conn = _Line(sock, timeout=self.timeout, telnet=True)
        text = conn.read(_prompt)
        if _user_prompt(text.lower()):
            conn.reset()
            conn.send(user.encode("latin-1") + b"\r\n")
            text = conn.read(lambda t: _password_prompt(t) or _telnet_verdict(t) is not None)
            if not _password_prompt(text.lower()):
                verdict = _telnet_verdict(text.lower())
                return verdict or "unknown"
        elif _password_prompt(text.lower()):
            self.user_sent = False
        else:
            return "unknown"
        conn.reset()
        conn.send(password.encode("latin-1") + b"\r\n")
        text = conn.read(lambda t: _telnet_verdict(t) is not None)
        verdict = _telnet_verdict(text.lower()) or "unknown"
        if verdict == "accepted":
            conn.send(b"exit\r\n")
        return verdict

    def _ftp(self, sock: socket.socket, user: str, password: str) -> Verdict:
        conn = _Line(sock, timeout=self.timeout)
        if _ftp_code(conn.read(_ftp_reply_done)) != 220:
            return "unknown"
        conn.reset()
        conn.send(f"USER {user}\r\n".encode("latin-1"))
        code = _ftp_code(conn.read(_ftp_reply_done))
        if code in (331, 332):
            conn.reset()
            conn.send(f"PASS {password}\r\n".encode("latin-1"))
            code = _ftp_code(conn.read(_ftp_reply_done))
        conn.send(b"QUIT\r\n")
        if code == 230:
            return "accepted"
        if code == 530:
            return "rejected"
        return "unknown"

    def _http(self, sock: socket.socket, port: int, user: str, password: str) -> Verdict:
        sock.sendall(_http_request(self.ip, port, (user, password)))
        status, _ = _http_head(_Line(sock, timeout=self.timeout).read(lambda t: "\r\n\r\n" in t))
        if 200 <= status < 400:
            return "accepted"
        if status in (401, 403):
            return "rejected"
        return "unknown"


def _telnet_banner(text: str) -> str:
    """The text a Telnet server shows before its login prompt (its name, often)."""
    lines = [ln for ln in text.replace("\r", "\n").split("\n") if ln.strip()]
    if lines and _prompt(lines[-1].lower()):
        lines = lines[:-1]
    return _printable(" ".join(lines))


def ordered_credentials(
    credentials: DefaultCredentials, *, vendor: str, protocol: str
) -> list[Credential]:
    """Factory credentials in the order to try them on ``protocol`` of a ``vendor`` device:
    those whose ``seen_on`` names the vendor, then those for the protocol, then the rest
    (file order within each). ``any_password`` entries are only for recognising logins."""
    words = {w for w in re.findall(r"[a-z0-9][a-z0-9-]{2,}", vendor.lower())} - _VENDOR_NOISE

    def rank(cred: Credential) -> tuple[int, int]:
        seen = cred.seen_on.lower()
        by_vendor = any(re.search(rf"\b{re.escape(w)}\b", seen) for w in words)
        return (0 if by_vendor else 1, 0 if protocol in seen else 1)

    usable = [c for c in credentials.credentials if not c.any_password]
    return sorted(usable, key=rank)


def check_device(
    *,
    mac: str,
    ip: str,
    guard: ProbeGuard,
    vendor: str = "",
    ports: Iterable[int] | None = None,
    credentials: DefaultCredentials | None = None,
    dial: Dial = dial,
) -> DeviceReport:
    """Check one device: identify what answers on its ports, then (when
    ``guard.config.credentials``) try a few factory logins on each login service.

    Raises :class:`~mimamori.edge.active.ProbeRefused` before sending anything when the
    host may not be probed; a refusal in the middle (the tenant switched the checks off)
    ends the check with what was found so far.
    """
    guard.check(ip)
    report = DeviceReport(mac=mac, ip=ip)
    checker = _Checker(ip=ip, guard=guard, dial=dial, report=report)
    config = guard.config
    try:
        for port in ports if ports is not None else config.ports:
            service = checker.identify(port)
            if service is not None:
                report.services.append(service)
        if not config.credentials:
            return report
        creds = credentials or load_credentials()
        # The cap is per device and protocol, not per port: Telnet on 23 and 2323 (or a
        # web page on 80 and 8080) usually checks the same accounts, which may lock.
        budget = dict.fromkeys(LOGIN_PROTOCOLS, config.max_tries)
        for svc in report.services:
            if svc.protocol not in LOGIN_PROTOCOLS or not svc.asks_login:
                continue
            if budget[svc.protocol] <= 0:
                continue
            result = _try_logins(checker, svc, creds, vendor, budget[svc.protocol])
            budget[svc.protocol] = 0 if result.accepted else budget[svc.protocol] - result.tries
            report.logins.append(result)
    except ProbeRefused as exc:
        log.info("active check of %s stopped: %s", ip, exc)
        report.errors += 1
    return report


def _try_logins(
    checker: _Checker, svc: Service, creds: DefaultCredentials, vendor: str, limit: int
) -> LoginResult:
    tries = refused = 0
    for cred in ordered_credentials(creds, vendor=vendor, protocol=svc.protocol)[:limit]:
        if not checker.guard.config.credentials:
            break  # switched off meanwhile
        tries += 1
        checker.user_sent = True
        verdict = checker.login(svc.protocol, svc.port, cred.user, cred.password)
        if verdict == "accepted":
            # A Telnet that asks only for a password has no user to report.
            user = cred.user if checker.user_sent else "(password only)"
            return LoginResult(svc.protocol, svc.port, tries, refused, user, cred.seen_on)
        if verdict == "rejected":
            refused += 1
    return LoginResult(svc.protocol, svc.port, tries, refused)
