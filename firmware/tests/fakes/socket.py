"""Fake ``socket`` for tests: listening sockets whose incoming connections tests inject.

Listeners subclass ``io.IOBase`` and answer the stream ``ioctl`` poll request, so the real
``select.poll`` of MicroPython polls them as it polls lwIP sockets on a board.
"""

import io

AF_INET = 2
SOCK_STREAM = 1
SOL_SOCKET = 1
SO_REUSEADDR = 4
_MP_STREAM_POLL = 3
_POLLIN = 1

listeners: dict = {}   # port -> listener
busy_ports: list = []  # ports whose bind fails (already in use)
closed_conns: list = []


class _Conn:
    def __init__(self, addr: tuple) -> None:
        self.addr = addr
        self.sent = 0

    def close(self) -> None:
        closed_conns.append(self.addr)

    def send(self, data) -> int:
        self.sent += len(data)
        return len(data)


class socket(io.IOBase):
    def __init__(self, af: int = AF_INET, kind: int = SOCK_STREAM) -> None:
        self.port = None
        self.queue: list = []
        self.closed = False

    def setsockopt(self, level: int, opt: int, value: int) -> None:
        pass

    def bind(self, addr: tuple) -> None:
        if addr[1] in busy_ports or addr[1] in listeners:
            raise OSError(98)  # EADDRINUSE
        self.port = addr[1]

    def listen(self, backlog: int) -> None:
        listeners[self.port] = self

    def setblocking(self, flag: bool) -> None:
        pass

    def accept(self):
        if not self.queue:
            raise OSError(11)  # EAGAIN
        addr = self.queue.pop(0)
        return _Conn(addr), addr

    def close(self) -> None:
        self.closed = True
        if listeners.get(self.port) is self:
            del listeners[self.port]

    def ioctl(self, req: int, arg: int) -> int:
        if req == _MP_STREAM_POLL:
            return _POLLIN & arg if self.queue else 0
        return 0


def touch(port: int, src_ip: str, src_port: int) -> bool:
    """A host on the LAN connects to ``port`` of the node; False if nothing listens."""
    s = listeners.get(port)
    if s is None:
        return False
    s.queue.append((src_ip, src_port))
    return True


def reset() -> None:
    listeners.clear()
    del busy_ports[:]
    del closed_conns[:]
