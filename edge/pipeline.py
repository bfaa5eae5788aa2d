"""The gateway's traffic pipeline: records in, protocol message drafts out.

:class:`Pipeline` takes flow records, ARP events and discovery events in time order
(live: as they arrive, with the wall clock; replay: at full speed, with packet time),
feeds each to the detection engine, the :class:`~.summaries.Summarizer` and the
:class:`~.inventory.Inventory`, and hands what the gateway publishes to an injected sink
as :class:`Draft` objects:

* ``alerts``: as soon as the engine returns alerts (one draft per call that raised any);
* ``devices``: new or changed devices, at most ``device_delay_s`` after the change;
* ``flows``: every summary interval, split at 5,000 rows.

A :class:`Draft` is a message without its header. The pipeline does not number messages:
the sink (the live agent's outbox) stamps each draft with the gateway id, the next
sequence number and ``sent_at`` by calling :meth:`Draft.build`. ``Draft.created_at`` is
the pipeline's clock when the draft was made (packet time in replay), which is what
``sent_at`` ("when the message was first created") should be in live use.

The engine is anything with the :class:`EngineLike` methods (``mimamori.detect.engine.
Engine``). An exception inside the engine is counted in ``stats.engine_errors`` and logged;
it never stops the pipeline.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from mimamori.edge.inventory import Inventory
from mimamori.edge.summaries import Summarizer, batches
from mimamori.protocol import (
    Alert,
    AlertBatch,
    ArpEvent,
    DeviceBatch,
    DiscoveryEvent,
    FlowBatch,
    FlowRecord,
)

log = logging.getLogger(__name__)

Kind = Literal["flows", "devices", "alerts"]
#: Largest list per message kind (the protocol's limits).
_MAX_ITEMS = {"flows": 5000, "devices": 1000, "alerts": 1000}


class EngineLike(Protocol):
    """What the pipeline needs of a detection engine."""

    def on_flow(self, record: FlowRecord) -> list[Alert]: ...
    def on_arp(self, event: ArpEvent) -> list[Alert]: ...
    def on_discovery(self, event: DiscoveryEvent) -> list[Alert]: ...
    def tick(self, now: float) -> list[Alert]: ...
    def finish(self, now: float) -> list[Alert]: ...


@dataclass(frozen=True, slots=True)
class Draft:
    """A message to publish, minus the header the outbox stamps on it.

    ``body`` holds the message's own fields: ``{"flows": [...], "interval_s": 60}`` for
    ``flows``, ``{"devices": [...]}`` for ``devices``, ``{"alerts": [...]}`` for
    ``alerts`` (lists of protocol structs).
    """

    kind: Kind
    body: dict[str, Any]
    created_at: float

    def build(
        self, *, gateway: str, seq: int, sent_at: float | None = None
    ) -> FlowBatch | DeviceBatch | AlertBatch:
        """The complete protocol message (``sent_at`` defaults to ``created_at``)."""
        stamp = self.created_at if sent_at is None else sent_at
        if self.kind == "flows":
            return FlowBatch(gateway=gateway, seq=seq, sent_at=stamp, **self.body)
        if self.kind == "devices":
            return DeviceBatch(gateway=gateway, seq=seq, sent_at=stamp, **self.body)
        return AlertBatch(gateway=gateway, seq=seq, sent_at=stamp, **self.body)

    @property
    def items(self) -> int:
        """Number of rows, devices or alerts in the draft."""
        return len(self.body[self.kind])


Sink = Callable[[Draft], None]


@dataclass
class PipelineStats:
    """Counters for the heartbeat, the replay report and the benchmark."""

    flows: int = 0
    packets: int = 0
    bytes_metered: int = 0
    arp_events: int = 0
    discovery_events: int = 0
    alerts: int = 0
    summary_rows: int = 0
    device_rows: int = 0
    drafts: dict[str, int] = field(default_factory=lambda: {"flows": 0, "devices": 0, "alerts": 0})
    engine_errors: int = 0
    sink_errors: int = 0


class Pipeline:
    """Feeds records to detection, summaries and inventory; emits drafts to ``sink``."""

    def __init__(
        self,
        *,
        engine: EngineLike,
        summarizer: Summarizer,
        inventory: Inventory,
        sink: Sink,
        device_delay_s: float = 5.0,
        tick_s: float = 1.0,
    ) -> None:
        self.engine = engine
        self.summarizer = summarizer
        self.inventory = inventory
        self.sink = sink
        self.device_delay_s = device_delay_s
        self.tick_s = tick_s
        self.stats = PipelineStats()
        self.now = 0.0
        self._last_tick: float | None = None
        self._devices_pending_since: float | None = None

    # --- input -------------------------------------------------------------------------

    def feed(self, item: FlowRecord | ArpEvent | DiscoveryEvent, now: float | None = None) -> None:
        """Dispatch one record or event (``now``: when it was received; default its time)."""
        if isinstance(item, FlowRecord):
            self.on_flow(item, now)
        elif isinstance(item, ArpEvent):
            self.on_arp(item, now)
        else:
            self.on_discovery(item, now)

    def on_flow(self, record: FlowRecord, now: float | None = None) -> None:
        """An expired flow; ``now`` is when it was received (default its ``last_seen``)."""
        self._advance(record.last_seen if now is None else now)
        stats = self.stats
        stats.flows += 1
        stats.packets += record.pkts_src2dst + record.pkts_dst2src
        stats.bytes_metered += record.bytes_src2dst + record.bytes_dst2src
        self._alerts(self.engine.on_flow, record)
        self.summarizer.add(record, self.now)
        self.inventory.on_flow(record)
        self._devices_changed()

    def on_arp(self, event: ArpEvent, now: float | None = None) -> None:
        """An ARP request or reply."""
        self._advance(event.ts if now is None else now)
        self.stats.arp_events += 1
        self.stats.packets += 1
        self._alerts(self.engine.on_arp, event)
        self.inventory.on_arp(event)
        self._devices_changed()

    def on_discovery(self, event: DiscoveryEvent, now: float | None = None) -> None:
        """A DHCP, mDNS, SSDP or NBNS observation."""
        self._advance(event.ts if now is None else now)
        self.stats.discovery_events += 1
        self._alerts(self.engine.on_discovery, event)
        self.inventory.on_discovery(event)
        self._devices_changed()

    def tick(self, now: float) -> None:
        """Let time pass with no traffic (live: call about once a second)."""
        self._advance(now)

    def finish(self, now: float | None = None) -> None:
        """End of capture or shutdown: flush the engine, summaries and devices."""
        if now is not None:
            self._advance(now)
        self._alerts(self.engine.finish, self.now)
        self._flush_summaries()
        self._devices_pending_since = None
        self._emit_devices(self.inventory.take_changes(self.now, final=True))

    def resend_inventory(self) -> None:
        """Emit every known device (the cloud's ``resend_inventory`` command)."""
        self._emit_devices(self.inventory.snapshot())

    # --- time --------------------------------------------------------------------------

    def _advance(self, t: float) -> None:
        # Records arrive slightly out of order (a flow is received when it expires): the
        # clock only moves forward.
        if t <= self.now:
            return
        self.now = t
        if self.summarizer.due(t):
            self._flush_summaries()
        if self._last_tick is None or t - self._last_tick >= self.tick_s:
            self._last_tick = t
            self._alerts(self.engine.tick, t)
        pending = self._devices_pending_since
        if pending is not None and t - pending >= self.device_delay_s:
            self._flush_devices()

    def _devices_changed(self) -> None:
        if self._devices_pending_since is None:
            self._devices_pending_since = self.now

    # --- output ------------------------------------------------------------------------

    def _alerts(self, call: Callable[[Any], list[Alert]], arg: Any) -> None:
        try:
            alerts = call(arg)
        except Exception:  # a rule's bug must not stop metering; counted and logged
            self.stats.engine_errors += 1
            log.exception("detection engine failed")
            return
        if alerts:
            self.stats.alerts += len(alerts)
            for i in range(0, len(alerts), _MAX_ITEMS["alerts"]):
                self._emit(Draft("alerts", {"alerts": alerts[i : i + 1000]}, self.now))

    def _flush_summaries(self) -> None:
        start, rows = self.summarizer.flush()
        if not rows:
            return
        self.stats.summary_rows += len(rows)
        for chunk in batches(rows):
            body = {"interval_s": self.summarizer.interval, "flows": chunk}
            self._emit(Draft("flows", body, max(self.now, start)))

    def _flush_devices(self) -> None:
        self._devices_pending_since = None
        self._emit_devices(self.inventory.take_changes(self.now))

    def _emit_devices(self, devices: list[Any]) -> None:
        if not devices:
            return
        self.stats.device_rows += len(devices)
        for i in range(0, len(devices), _MAX_ITEMS["devices"]):
            self._emit(Draft("devices", {"devices": devices[i : i + 1000]}, self.now))

    def _emit(self, draft: Draft) -> None:
        self.stats.drafts[draft.kind] += 1
        try:
            self.sink(draft)
        except Exception:  # the sink is the outbox: a full disk must not stop detection
            self.stats.sink_errors += 1
            log.exception("sink refused a %s draft", draft.kind)
