"""Flow metering with nfstream: an interface or capture files in, FlowRecords out.

nfstream's C core (libpcap + nDPI) does all per-packet work in a child process; this
module only converts each expired flow into a :class:`~mimamori.protocol.FlowRecord`,
so Python never touches individual packets on the hot path.

Timeouts. A flow reaches the detectors and the summaries only when nfstream expires it.
nfstream's defaults (idle 120 s, active 1800 s) would hold a long TLS session back for up
to half an hour and a finished connection for two minutes, so an alert could trail its
traffic by that much. ``idle_timeout`` (default 15 s) bounds the delay after a
connection goes quiet (nfstream does not end flows on FIN/RST; it waits for idle), and
``active_timeout`` (default 60 s, the summary interval) cuts long flows into pieces so
every summary interval sees the traffic of the interval before. Shorter timeouts mean
more flow records (and more Python work) per connection; 15/60 keeps a busy office LAN
well within a Raspberry Pi's budget (see docs/performance.md).

Flow cache. nfstream keeps its flows in an ``OrderedDict`` (``nfstream.meter.NFCache``)
and expires idle ones by scanning from the least recently used end, stopping at the first
flow that is not idle. Its docstring says updates move a flow to the recent end, but only
``__setitem__`` does, and an update goes through ``__getitem__``: a long-lived flow created
early stays at the front and holds every idle flow behind it until it ends or reaches the
active timeout (nfstream issue #120 reports the symptom). :func:`lru_flow_cache` makes the
cache a true LRU before the meter process is forked, which bounds the delay from a flow's
last packet to its record by ``idle_timeout`` (docs/performance.md, "Alert latency").

Errors: every failure of this module and of :mod:`.discovery` is a :class:`CaptureError`.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from mimamori.edge.errors import EdgeError
from mimamori.protocol import ArpEvent, DiscoveryEvent, FlowRecord

if TYPE_CHECKING:
    from mimamori.edge.discovery import DiscoveryListener

log = logging.getLogger(__name__)
Item = FlowRecord | ArpEvent | DiscoveryEvent

#: nfstream's expiration_id values -> FlowRecord.expiry.
_EXPIRY = {0: "idle", 1: "active", -1: "end"}


def lru_flow_cache() -> None:
    """Make nfstream's flow cache move a flow to the recent end on every update.

    Idempotent. nfstream's meter runs in a child forked from this process (Linux), so the
    patched method is what the meter uses; under a ``spawn`` start method (macOS) the child
    imports nfstream afresh and keeps the original behaviour.
    """
    from nfstream import meter

    cache = meter.NFCache
    if getattr(cache, "_mimamori_lru", False):
        return

    def _getitem(self: Any, key: Any) -> Any:
        value = OrderedDict.__getitem__(self, key)
        self.move_to_end(key)
        return value

    cache.__getitem__ = _getitem
    cache._mimamori_lru = True


class _BoundedQueues:
    """nfstream's multiprocessing context with a smaller bound on its flow queue.

    nfstream hands expired flows from the meter to this process through a queue of up to
    32,767 pickled flows (about 1.5 kB each with statistical features): whenever this
    process falls behind, the meter's memory grows by tens of MB before it is held back.
    A few thousand are enough to ride out a pause; beyond that the meter waits.
    """

    def __init__(self, context: Any, limit: int) -> None:
        self._context = context
        self._limit = limit

    def Queue(self, maxsize: int = 0) -> Any:
        bound = self._limit if maxsize <= 0 else min(maxsize, self._limit)
        return self._context.Queue(maxsize=bound)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


class CaptureError(EdgeError):
    """Capture could not start or broke (no such interface, unreadable file, no rights).

    ::

        EdgeError                (mimamori.edge.errors)
        └── CaptureError
            └── DiscoveryError   (mimamori.edge.discovery) listener or capture-file reader
    """


def flow_record(flow: Any) -> FlowRecord:
    """Convert one nfstream ``NFlow`` into a :class:`FlowRecord`.

    nDPI's ``requested_server_name`` is the DNS query name for DNS flows and the TLS SNI
    or HTTP Host otherwise; it is put in the matching field. TCP flag counts are present
    only when the meter runs with statistical analysis (0 otherwise).
    """
    app: str = flow.application_name or ""
    server_name: str = flow.requested_server_name or ""
    is_dns = app.startswith("DNS") or app.startswith("MDNS") or app.startswith("LLMNR")
    syn = getattr(flow, "src2dst_syn_packets", 0)
    synack = getattr(flow, "dst2src_syn_packets", 0)
    rst = getattr(flow, "bidirectional_rst_packets", 0)
    fin = getattr(flow, "bidirectional_fin_packets", 0)
    return FlowRecord(
        first_seen=flow.bidirectional_first_seen_ms / 1000.0,
        last_seen=flow.bidirectional_last_seen_ms / 1000.0,
        src_ip=flow.src_ip,
        src_port=flow.src_port,
        dst_ip=flow.dst_ip,
        dst_port=flow.dst_port,
        proto=flow.protocol,
        src_mac=flow.src_mac or "",
        dst_mac=flow.dst_mac or "",
        pkts_src2dst=flow.src2dst_packets,
        pkts_dst2src=flow.dst2src_packets,
        bytes_src2dst=flow.src2dst_bytes,
        bytes_dst2src=flow.dst2src_bytes,
        app=app,
        category=flow.application_category_name or "",
        sni="" if is_dns else server_name,
        dns_query=server_name if is_dns else "",
        client_fingerprint=flow.client_fingerprint or "",
        server_fingerprint=flow.server_fingerprint or "",
        user_agent=flow.user_agent or "",
        content_type=flow.content_type or "",
        syn=syn,
        synack=synack,
        rst=rst,
        fin=fin,
        expiry=_EXPIRY.get(flow.expiration_id, "idle"),
    )


class FlowMeter:
    """nfstream over one interface or a list of capture files, as an iterator of records.

    ``source`` is an interface name (live) or capture file paths (offline: read as one
    capture, in order, at full speed, with time taken from the packets). ``statistical``
    turns on nfstream's statistical features, the only way to get TCP flag counts;
    ``n_meters`` is the number of metering processes (1 keeps offline output in a
    deterministic order; 0 lets nfstream choose, which live spreads over CPUs).
    ``accounting_mode`` is nfstream's: 1 (the default here) counts bytes at the IP layer,
    IP headers included, as docs/protocol.md defines the summaries' byte counters; 0 counts
    whole link-layer frames (nfstream's default).
    ``queue_limit`` bounds the flows waiting between the meter and this process.
    Iterating starts the meter; breaking out of the loop stops it.
    """

    def __init__(
        self,
        *,
        source: str | Sequence[str | os.PathLike[str]],
        idle_timeout: int = 15,
        active_timeout: int = 60,
        statistical: bool = True,
        bpf_filter: str | None = None,
        promiscuous: bool = True,
        snapshot_length: int = 1536,
        n_dissections: int = 20,
        decode_tunnels: bool = True,
        n_meters: int = 1,
        accounting_mode: int = 1,
        queue_limit: int = 4096,
    ) -> None:
        if isinstance(source, str):
            self.source: str | list[str] = source
        else:
            paths = [str(Path(p)) for p in source]
            if not paths:
                raise CaptureError("no capture files given")
            for path in paths:
                if not os.path.isfile(path):
                    raise CaptureError(f"capture file not found: {path}")
            self.source = paths[0] if len(paths) == 1 else paths
        self.settings: dict[str, Any] = {
            "idle_timeout": idle_timeout,
            "active_timeout": active_timeout,
            "statistical_analysis": statistical,
            "bpf_filter": bpf_filter,
            "promiscuous_mode": promiscuous,
            "snapshot_length": snapshot_length,
            "n_dissections": n_dissections,
            "decode_tunnels": decode_tunnels,
            "n_meters": n_meters,
            "accounting_mode": accounting_mode,
        }
        self.queue_limit = queue_limit
        self.bad_flows = 0

    def streamer(self) -> Any:
        """The configured ``NFStreamer`` (for benchmarks that need nfstream bare)."""
        try:
            from nfstream import NFStreamer
        except ImportError as exc:  # the gateway extra is missing
            raise CaptureError("nfstream is not installed: pip install 'mimamori[edge]'") from exc
        lru_flow_cache()
        source = list(self.source) if isinstance(self.source, list) else self.source
        try:
            streamer = NFStreamer(source=source, **self.settings)
        except ValueError as exc:  # nfstream's way of saying "bad source or setting"
            raise CaptureError(f"cannot meter {self.source!r}: {exc}") from exc
        context = getattr(streamer, "_mp_context", None)
        if context is not None and hasattr(context, "Queue"):
            streamer._mp_context = _BoundedQueues(context, self.queue_limit)
        return streamer

    def __iter__(self) -> Iterator[FlowRecord]:
        streamer = self.streamer()
        try:
            for flow in streamer:
                try:
                    record = flow_record(flow)
                except (AttributeError, TypeError, ValueError):
                    # A flow nfstream could not fill in: skip it, count it, keep metering.
                    self.bad_flows += 1
                    log.warning("skipped a flow nfstream left incomplete", exc_info=True)
                    continue
                yield record
        except (OSError, ValueError) as exc:
            raise CaptureError(f"flow metering of {self.source!r} failed: {exc}") from exc


class Consumer(Protocol):
    """What :meth:`LiveCapture.run` drives (a :class:`~mimamori.edge.pipeline.Pipeline`)."""

    def feed(self, item: Item, now: float | None = None) -> None: ...
    def tick(self, now: float) -> None: ...


class LiveCapture:
    """nfstream and the discovery listener on one interface, merged into one queue.

    Two daemon threads put flow records (from nfstream's meter processes) and discovery
    events (from :class:`~mimamori.edge.discovery.DiscoveryListener`) into a bounded
    queue; :meth:`run` takes them out in arrival order and hands them to the pipeline with
    the wall-clock time, and ticks it at least every ``tick_s``. When the consumer falls
    behind, the queue fills and new items are dropped and counted (``dropped``) rather than
    letting memory grow: the default 16,384 items are about 16 s of a busy office LAN's
    flows and cost at most some 16 MB.
    """

    def __init__(
        self,
        *,
        meter: FlowMeter,
        listener: DiscoveryListener | None,
        queue_size: int = 16384,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.meter = meter
        self.listener = listener
        self.clock = clock
        self.queue: queue.Queue[Item] = queue.Queue(maxsize=queue_size)
        self.dropped = 0
        self.flows = 0
        self.events = 0
        self.error: BaseException | None = None
        self._meter_thread: threading.Thread | None = None
        self._running = threading.Event()
        self._children_before: set[multiprocessing.process.BaseProcess] = set()

    def _put(self, item: Item) -> None:
        try:
            self.queue.put_nowait(item)
        except queue.Full:
            self.dropped += 1

    def _put_event(self, item: ArpEvent | DiscoveryEvent) -> None:
        self.events += 1
        self._put(item)

    def _meter_loop(self) -> None:
        try:
            for record in self.meter:
                self.flows += 1
                self._put(record)
                if not self._running.is_set():
                    return
        except CaptureError as exc:
            self.error = exc
            log.error("flow meter stopped: %s", exc)
        except Exception as exc:  # nfstream's own failures surface as anything
            self.error = CaptureError(f"flow meter failed: {exc}")
            log.exception("flow meter failed")

    def start(self) -> None:
        """Start metering and listening (raises :class:`CaptureError` if it cannot)."""
        self._running.set()
        self._children_before = set(multiprocessing.active_children())
        if self.listener is not None:
            self.listener.emit = self._put_event
            self.listener.start()
        self._meter_thread = threading.Thread(target=self._meter_loop, name="meter", daemon=True)
        self._meter_thread.start()

    def stop(self, *, timeout: float = 5.0) -> None:
        """Stop listening and end nfstream's meter processes.

        nfstream offers no way to stop a live meter, and its iterator blocks until a flow
        arrives, so the meter processes it started (children of this process that did not
        exist before :meth:`start`) are terminated, then killed after ``timeout``.
        """
        self._running.clear()
        if self.listener is not None:
            self.listener.stop()
        meters = [p for p in multiprocessing.active_children() if p not in self._children_before]
        for proc in meters:
            proc.terminate()
        for proc in meters:
            proc.join(timeout=timeout)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=timeout)

    @property
    def alive(self) -> bool:
        """Is the flow meter still running?"""
        return self._meter_thread is not None and self._meter_thread.is_alive()

    def run(self, consumer: Consumer, *, stop: threading.Event, tick_s: float = 1.0) -> None:
        """Feed ``consumer`` until ``stop`` is set (call :meth:`start` first)."""
        next_tick = self.clock() + tick_s
        while not stop.is_set():
            timeout = max(0.0, next_tick - self.clock())
            try:
                item = self.queue.get(timeout=timeout)
            except queue.Empty:
                item = None
            now = self.clock()
            if item is not None:
                consumer.feed(item, now)
            if now >= next_tick:
                consumer.tick(now)
                next_tick = now + tick_s
