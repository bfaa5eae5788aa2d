"""Live discovery: an ``AF_PACKET`` socket with the kernel BPF filter of edge/discovery.py.

:class:`DiscoveryListener` reads the frames the filter (:data:`~.discovery.BPF_FILTER`,
compiled by libpcap through :func:`compile_filter`) lets through and hands the
:class:`~.discovery.Decoder`'s events on; everything else stays in the kernel.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import socket
import struct
import threading
from collections.abc import Callable

from mimamori.edge.discovery import (
    _LINKTYPE_ETHERNET,
    BPF_FILTER,
    Decoder,
    DiscoveryError,
    Event,
)

_ETH_P_ALL = 0x0003
_SO_ATTACH_FILTER = 26
_SOL_PACKET = 263
_PACKET_ADD_MEMBERSHIP = 1
_PACKET_MR_PROMISC = 1


class _BpfInsn(ctypes.Structure):
    _fields_ = (
        ("code", ctypes.c_ushort),
        ("jt", ctypes.c_ubyte),
        ("jf", ctypes.c_ubyte),
        ("k", ctypes.c_uint32),
    )


class _BpfProgram(ctypes.Structure):
    _fields_ = (("bf_len", ctypes.c_uint), ("bf_insns", ctypes.POINTER(_BpfInsn)))


def compile_filter(expression: str, *, snaplen: int = 2048) -> tuple[bytes, int] | None:
    """Compile a libpcap filter for Ethernet into classic BPF instructions.

    Returns the packed ``struct sock_filter`` array and its length, or None when libpcap is not installed (the listener
    then filters in user space with the same byte checks as the offline reader).
    """
    name = ctypes.util.find_library("pcap")
    if name is None:
        return None
    lib = ctypes.CDLL(name)
    prog = _BpfProgram()
    compile_nopcap = lib.pcap_compile_nopcap
    compile_nopcap.argtypes = (
        ctypes.c_int,
        ctypes.c_int,
        ctypes.POINTER(_BpfProgram),
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_uint32,
    )
    if compile_nopcap(snaplen, _LINKTYPE_ETHERNET, ctypes.byref(prog), expression.encode(), 1, 0):
        raise DiscoveryError(f"libpcap cannot compile filter {expression!r}")
    try:
        size = prog.bf_len * ctypes.sizeof(_BpfInsn)
        return bytes(ctypes.string_at(prog.bf_insns, size)), int(prog.bf_len)
    finally:
        lib.pcap_freecode(ctypes.byref(prog))


def filter_passes(compiled: tuple[bytes, int], frame: bytes) -> bool:
    """Would the kernel pass ``frame`` through ``compiled``? (libpcap's own interpreter).

    For tests and diagnostics: the offline prefilter must agree with the kernel filter.
    """
    name = ctypes.util.find_library("pcap")
    if name is None:
        raise DiscoveryError("libpcap is not installed")
    run = ctypes.CDLL(name).bpf_filter
    run.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint, ctypes.c_uint)
    run.restype = ctypes.c_uint
    return bool(run(compiled[0], frame, len(frame), len(frame)))


class DiscoveryListener:
    """Reads discovery frames from an interface in a thread and hands events to ``emit``.

    Needs CAP_NET_RAW only: the socket is an ``AF_PACKET`` socket, promiscuous mode is a
    packet-socket membership (no interface flag change, so no CAP_NET_ADMIN), and the
    kernel filter keeps everything but discovery frames out of Python.
    """

    def __init__(
        self,
        *,
        interface: str,
        emit: Callable[[Event], None],
        promiscuous: bool = True,
        decoder: Decoder | None = None,
        poll_s: float = 0.5,
    ) -> None:
        self.interface = interface
        self.emit = emit
        self.promiscuous = promiscuous
        self.decoder = decoder or Decoder()
        self.poll_s = poll_s
        self.kernel_filter = False
        self.errors = 0
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def open(self) -> None:
        """Open the socket (raises :class:`DiscoveryError` without rights or interface)."""
        try:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(_ETH_P_ALL))
        except (OSError, AttributeError) as exc:
            raise DiscoveryError(f"cannot open a packet socket: {exc}") from exc
        try:
            compiled = compile_filter(BPF_FILTER)
            if compiled is not None:
                insns, count = compiled
                buf = ctypes.create_string_buffer(insns)
                fprog = struct.pack("HL", count, ctypes.addressof(buf))
                sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)
                self.kernel_filter = True
            sock.bind((self.interface, 0))
            if self.promiscuous:
                index = socket.if_nametoindex(self.interface)
                mreq = struct.pack("IHH8s", index, _PACKET_MR_PROMISC, 0, b"")
                sock.setsockopt(_SOL_PACKET, _PACKET_ADD_MEMBERSHIP, mreq)
            sock.settimeout(self.poll_s)
        except OSError as exc:
            sock.close()
            raise DiscoveryError(f"cannot listen on {self.interface!r}: {exc}") from exc
        self._sock = sock

    def start(self) -> None:
        """Open the socket if needed and read in a daemon thread until :meth:`stop`."""
        if self._sock is None:
            self.open()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="discovery", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop reading and close the socket."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _run(self) -> None:
        import time

        sock = self._sock
        assert sock is not None
        while not self._stop.is_set():
            try:
                frame = sock.recv(65535)
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                self.errors += 1
                continue
            for event in self.decoder.decode(time.time(), frame):
                try:
                    self.emit(event)
                except Exception:  # a consumer's bug must not kill the listener
                    self.errors += 1
