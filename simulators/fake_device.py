"""A fake LAN device for the active checks: Telnet, FTP and HTTP Basic logins on loopback.

Each server runs in its own threads, listens on ``host`` (any 127.x address works on
Linux, so a test can give its device an address that is not the gateway's own), counts
every login attempt it receives (``attempts``: (user, password) pairs, for the tests to
check the cap) and accepts only the pairs in ``accept``. The dialogues are the ones small
devices speak: BusyBox-style Telnet (option negotiation, ``login:``, ``Password:``,
``Login incorrect``), a vsFTPd-style FTP greeting and replies, and an HTTP page behind
Basic authentication.
"""

from __future__ import annotations

import base64
import http.server
import socketserver
import threading
from collections.abc import Iterable
from typing import Any

IAC, DO, WILL = 255, 253, 251
ECHO, SGA = 1, 3


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Base:
    """A threaded TCP server with an attempt log; use as a context manager."""

    banner = ""

    def __init__(self, *, host: str = "127.0.0.1", accept: Iterable[tuple[str, str]] = ()) -> None:
        self.host = host
        self.accept = set(accept)
        self.attempts: list[tuple[str, str]] = []
        self.connections = 0
        self._lock = threading.Lock()
        self._server: socketserver.TCPServer | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    def _record(self, user: str, password: str) -> bool:
        with self._lock:
            self.attempts.append((user, password))
        return (user, password) in self.accept

    def _handler(self) -> type[socketserver.BaseRequestHandler]:
        raise NotImplementedError

    def __enter__(self) -> Any:
        self._server = _Server((self.host, 0), self._handler())
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()


def _read_line(rfile: Any, limit: int = 256) -> str | None:
    """One line typed by the client, Telnet commands dropped (None at EOF)."""
    out = bytearray()
    while len(out) < limit:
        b = rfile.read(1)
        if not b:
            return None if not out else out.decode("latin-1")
        if b[0] == IAC:
            cmd = rfile.read(1)
            if cmd and cmd[0] in (251, 252, 253, 254):
                rfile.read(1)
            continue
        if b in (b"\n", b"\x00"):
            return out.decode("latin-1").rstrip("\r")
        out += b
    return out.decode("latin-1")


class TelnetServer(_Base):
    """BusyBox-style ``telnetd``: one login per connection (``ask_user=False``: a
    password prompt only, recorded with user "")."""

    banner = "IPCAM-XM530 (BusyBox telnetd)"

    def __init__(self, *, ask_user: bool = True, **kw: Any) -> None:
        super().__init__(**kw)
        self.ask_user = ask_user

    def _handler(self) -> type[socketserver.BaseRequestHandler]:
        outer = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                with outer._lock:
                    outer.connections += 1
                w = self.wfile
                w.write(bytes((IAC, DO, ECHO, IAC, WILL, ECHO, IAC, WILL, SGA)))
                w.write(f"\r\n{outer.banner}\r\n".encode())
                user = ""
                if outer.ask_user:
                    w.write(b"(none) login: ")
                    line = _read_line(self.rfile)
                    if line is None:
                        return
                    user = line
                w.write(b"Password: ")
                password = _read_line(self.rfile)
                if password is None:
                    return
                if outer._record(user, password):
                    w.write(b"\r\n\r\nBusyBox v1.20.2 built-in shell (ash)\r\n# ")
                    _read_line(self.rfile)  # "exit"
                else:
                    w.write(b"\r\nLogin incorrect\r\n")

        return Handler


class FtpServer(_Base):
    """vsFTPd-style FTP control connection (USER, PASS, QUIT)."""

    banner = "(vsFTPd 3.0.3)"

    def _handler(self) -> type[socketserver.BaseRequestHandler]:
        outer = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                with outer._lock:
                    outer.connections += 1
                w = self.wfile
                w.write(f"220 {outer.banner}\r\n".encode())
                user = ""
                while (line := _read_line(self.rfile)) is not None:
                    verb, _, arg = line.partition(" ")
                    verb = verb.upper()
                    if verb == "USER":
                        user = arg
                        w.write(b"331 Please specify the password.\r\n")
                    elif verb == "PASS":
                        ok = outer._record(user, arg)
                        w.write(b"230 Login successful.\r\n" if ok else b"530 Login incorrect.\r\n")
                    elif verb == "QUIT":
                        w.write(b"221 Goodbye.\r\n")
                        return
                    else:
                        w.write(b"530 Please login with USER and PASS.\r\n")

        return Handler


class HttpBasicServer(_Base):
    """A web admin page behind HTTP Basic (``protect=False``: an open page)."""

    banner = "thttpd/2.25b 29dec2003"

    def __init__(self, *, protect: bool = True, **kw: Any) -> None:
        super().__init__(**kw)
        self.protect = protect
        self.requests = 0

    def _handler(self) -> type[socketserver.BaseRequestHandler]:
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            server_version = outer.banner
            sys_version = ""

            def do_GET(self) -> None:
                with outer._lock:
                    outer.requests += 1
                auth = self.headers.get("Authorization", "")
                ok = not outer.protect
                if auth.startswith("Basic "):
                    user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
                    ok = outer._record(user, password) or ok
                if not ok:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="IP Camera"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = b"<html>camera</html>"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def __enter__(self) -> Any:
        self._server = http.server.ThreadingHTTPServer((self.host, 0), self._handler())
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self
