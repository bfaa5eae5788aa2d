"""The canary: listeners on commonly probed ports that nobody legitimate ever connects to.

Nothing on the LAN has a reason to open a connection to a sensor node, so every attempt is
a strong sign of a scan, a worm or an intruder moving sideways. Each listener accepts the
connection, notes the source address and port and the local port, and closes it at once
without sending a byte (no banner, nothing to fingerprint or exploit).

Events go into a fixed-size ring that the supervisor drains into canary messages. The ring
is preallocated; when a burst of connections (a fast scan) overruns it, the oldest events
are overwritten and counted in ``dropped``, so memory stays bounded however hard the node
is scanned. One accepted connection still allocates its socket object: that is the
network stack's, and it is closed at once.
"""

import select
import socket

try:
    from typing import Any
except ImportError:  # MicroPython: annotations are never evaluated
    pass

#: Events kept between two drains. A scan of all five ports from three hosts fits.
RING = 16
#: Connections taken from one listener per poll; the rest wait for the next tick.
BURST = 8
#: Backlog of each listener: small, the node answers nothing anyway.
BACKLOG = 2


class Canary:
    """Listening sockets plus the event ring. ``open()``, then ``poll()`` from the loop."""

    def __init__(self, *, ports: tuple, sockets: Any = socket, select_mod: Any = select,
                 bind: str = "0.0.0.0") -> None:
        # ``sockets``/``select_mod`` are the ``socket`` and ``select`` modules, injected so
        # tests can run the canary on a fake network; ``bind`` the address listened on.
        self.ports = ports
        self.bind = bind
        self._socket = sockets
        self._select = select_mod
        self._poller = select_mod.poll()
        self._listeners: list = []
        self._listening_ports: list = []  # port of self._listeners[i]
        self.failed_ports: list = []
        # The ring: parallel preallocated lists written in place; slot i of each holds one
        # event. Readers take slots from oldest() while pending(), then pop().
        self.ev_port = [0] * RING
        self.ev_src_ip = [""] * RING
        self.ev_src_port = [0] * RING
        self.ev_ticks = [0] * RING
        self._head = 0  # next slot to write
        self._size = 0
        self.total = 0
        self.dropped = 0

    def open(self) -> None:
        """Start listening on every port that can be bound; note those that cannot."""
        self.close()
        for port in self.ports:
            try:
                s = self._socket.socket(self._socket.AF_INET, self._socket.SOCK_STREAM)
                s.setsockopt(self._socket.SOL_SOCKET, self._socket.SO_REUSEADDR, 1)
                s.bind((self.bind, port))
                s.listen(BACKLOG)
                s.setblocking(False)
            except OSError:
                self.failed_ports.append(port)
                continue
            self._poller.register(s, self._select.POLLIN)
            self._listeners.append(s)
            self._listening_ports.append(port)

    def close(self) -> None:
        """Stop listening (before a config change or a reset)."""
        for s in self._listeners:
            try:
                self._poller.unregister(s)
                s.close()
            except OSError:
                pass
        self._listeners = []
        self._listening_ports = []
        self.failed_ports = []

    def poll(self, now_ms: int) -> int:
        """Accept and record every pending connection; return how many were recorded."""
        seen = 0
        for s, _events in self._poller.ipoll(0):
            port = self._port_of(s)
            # A scan queues several connections per port: take them all (bounded, so a
            # flood cannot starve the loop and the watchdog), until accept says none.
            burst = 0
            while burst < BURST:
                burst += 1
                try:
                    conn, addr = s.accept()
                except OSError:
                    break  # nothing more pending (EAGAIN), or the peer gave up
                try:
                    conn.close()
                except OSError:
                    pass
                self.record(port, addr[0], addr[1], now_ms)
                seen += 1
        return seen

    def _port_of(self, listener: Any) -> int:
        # A linear search by identity: five listeners, and unlike a dict keyed by id() it
        # never allocates (id() of a heap address can be a big int on a 32-bit port).
        i = 0
        for s in self._listeners:
            if s is listener:
                return self._listening_ports[i]
            i += 1
        return 0

    def listening(self) -> list:
        """Ports actually listened on."""
        return self._listening_ports

    def record(self, port: int, src_ip: str, src_port: int, now_ms: int) -> None:
        """Store one event in the ring, overwriting the oldest when it is full."""
        i = self._head
        self.ev_port[i] = port
        self.ev_src_ip[i] = src_ip
        self.ev_src_port[i] = src_port
        self.ev_ticks[i] = now_ms
        self._head = (i + 1) % RING
        if self._size == RING:
            self.dropped += 1
        else:
            self._size += 1
        self.total += 1

    def pending(self) -> int:
        return self._size

    def oldest(self) -> int:
        """Slot index of the oldest pending event (valid while ``pending()``)."""
        return (self._head - self._size) % RING

    def event(self, slot: int) -> tuple:
        """(port, src_ip, src_port, ticks_ms) of a slot. Allocates a tuple: tests only."""
        return (self.ev_port[slot], self.ev_src_ip[slot], self.ev_src_port[slot],
                self.ev_ticks[slot])

    def pop(self) -> None:
        """Forget the oldest pending event (after it was sent)."""
        if self._size:
            self.ev_src_ip[self.oldest()] = ""
            self._size -= 1
