"""``mimamori replay``: the gateway pipeline over capture files, offline, at full speed.

The same :class:`~.pipeline.Pipeline` as the live agent runs over the files, with time
taken from the packets, and the command prints what the gateway would have published:
alerts, the device inventory, and statistics including ``bytes_uplink`` (the encoded size
of every message the gateway would have sent). ``mimamori eval`` calls :func:`replay`.

Timing mimics live operation. nfstream meters the files in a child process; this process
passes over the same files for discovery frames meanwhile, and merges both streams by the
time each record would have been received live: a discovery frame at its timestamp, a
flow when it expires (``last_seen`` plus the idle timeout for idle expiries, capped at the
end of the capture).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec
from mimamori.edge.capture import CaptureError, FlowMeter
from mimamori.edge.discovery import CaptureStats, Decoder, Event, read_capture
from mimamori.edge.inventory import Inventory, VendorLookup
from mimamori.edge.pipeline import Draft, EngineLike, Pipeline
from mimamori.edge.summaries import DEFAULT_HOME_NET, Network, Summarizer, parse_home_net
from mimamori.protocol import Alert, Device, FlowRecord, FlowSummary, encode

if TYPE_CHECKING:
    from mimamori.detect.config import DetectConfig

EngineFactory = Callable[[tuple[Network, ...]], EngineLike]
#: Hook for device labels (filled by the labeling component later): result -> label rows.
Labeler = Callable[["ReplayResult"], list[dict[str, Any]]]
#: A realistic sequence number (16 digits, as sequence.time_floor gives) so that the
#: encoded sizes counted in bytes_uplink match what a gateway would send.
_SEQ_BASE = 1_700_000_000_000_000


@dataclass
class ReplayResult:
    """What the gateway would have published for a set of captures."""

    alerts: list[Alert] = field(default_factory=list)
    devices: list[Device] = field(default_factory=list)
    summaries: list[FlowSummary] = field(default_factory=list)
    records: list[FlowRecord] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    labels: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The document ``mimamori replay --json`` prints (see docs/cli.md)."""
        alerts = []
        for alert in self.alerts:
            doc = _all_fields(alert)
            doc["summary"] = alert.summary_en
            alerts.append(doc)
        return {
            "alerts": alerts,
            "devices": [_all_fields(d) for d in self.devices],
            "stats": self.stats,
            "labels": self.labels,
        }


def _all_fields(struct: msgspec.Struct) -> dict[str, Any]:
    """Every field, defaults included (the wire form omits them; a report should not)."""
    doc: dict[str, Any] = msgspec.to_builtins(
        {name: getattr(struct, name) for name in struct.__struct_fields__}
    )
    return doc


class _Collector:
    """The replay's sink: keeps drafts' contents and counts their encoded size."""

    def __init__(self, *, keep_summaries: bool = True) -> None:
        self.keep_summaries = keep_summaries
        self.alerts: list[Alert] = []
        self.summaries: list[FlowSummary] = []
        self.devices: dict[str, Device] = {}
        self.bytes_uplink = 0
        self.messages = 0

    def __call__(self, draft: Draft) -> None:
        message = draft.build(gateway="replay", seq=_SEQ_BASE + self.messages)
        self.messages += 1
        self.bytes_uplink += len(encode(message))
        if draft.kind == "alerts":
            self.alerts.extend(draft.body["alerts"])
        elif draft.kind == "flows":
            if self.keep_summaries:
                self.summaries.extend(draft.body["flows"])
        else:  # the latest report of each device is what the cloud ends up knowing
            self.devices.update((d.mac, d) for d in draft.body["devices"])


def _default_engine(
    home_net: tuple[Network, ...], vendor_of: Callable[[str], str] | None = None
) -> EngineLike:
    from mimamori.detect.engine import Engine

    return Engine(home_net=home_net, vendor_of=vendor_of)


def _longwindow(result: ReplayResult, config: DetectConfig | None, now: float) -> list[Alert]:
    """The cloud's long-window rules over the replay's summaries, as the cloud would run
    them at the end of the capture; findings the gateway already made (same dedup key)
    are not repeated."""
    from mimamori.detect.config import load_config
    from mimamori.detect.longwindow import beacon_alerts, exfiltration_alerts

    cfg = config or load_config()
    seen = {a.dedup_key for a in result.alerts}
    out: list[Alert] = []
    for alert in [
        *beacon_alerts(result.summaries, config=cfg, now=now),
        *exfiltration_alerts(result.summaries, config=cfg, now=now),
    ]:
        if alert.dedup_key not in seen:
            seen.add(alert.dedup_key)
            out.append(alert)
    return out


def replay(
    paths: Sequence[str],
    *,
    home_net: Sequence[Network | str] = DEFAULT_HOME_NET,
    interval: int = 60,
    engine_factory: EngineFactory | None = None,
    idle_timeout: int = 15,
    active_timeout: int = 60,
    keep_records: bool = False,
    keep_summaries: bool = True,
    labeler: Labeler | None = None,
    vendors: VendorLookup | None = None,
    detect_config: DetectConfig | None = None,
) -> ReplayResult:
    """Run the gateway pipeline over capture files and return what it would publish.

    ``home_net`` takes networks or CIDR strings. ``keep_records`` keeps every FlowRecord
    in the result (tests compare them with other tools); ``keep_summaries=False`` only
    counts the summaries, as a gateway (which hands them to its outbox) holds none of them
    in memory; ``labeler`` fills ``labels``. With the summaries kept, the cloud's
    long-window rules (slow beacons, exfiltration; ``detect_config``, default the
    defaults) run over them at the end, so the result holds what gateway and cloud raise.
    Raises :class:`~.capture.CaptureError` for unreadable files.
    """
    nets = tuple(n if not isinstance(n, str) else parse_home_net([n])[0] for n in home_net)
    meter = FlowMeter(source=list(paths), idle_timeout=idle_timeout, active_timeout=active_timeout)
    # Start the meter (nfstream forks it) before the engine, the inventory and their
    # tables exist: the child then shares none of their pages, and the two processes
    # together hold less memory.
    flows = iter(meter)
    first = next(flows, None)
    vendors = vendors or VendorLookup()
    engine = engine_factory(nets) if engine_factory else _default_engine(nets, vendors.lookup)
    collector = _Collector(keep_summaries=keep_summaries)
    summarizer = Summarizer(home_net=nets, interval=interval)
    inventory = Inventory(home_net=nets, vendors=vendors)
    pipeline = Pipeline(engine=engine, summarizer=summarizer, inventory=inventory, sink=collector)
    decoder = Decoder()
    capture = CaptureStats()
    events: Iterator[Event] = read_capture([str(p) for p in paths], decoder=decoder, stats=capture)
    records: list[FlowRecord] = []
    pending: Event | None = next(events, None)
    for record in itertools.chain((first,) if first is not None else (), flows):
        received = record.last_seen
        if record.expiry == "idle":
            received += idle_timeout
        # Discovery frames seen live before this flow expired go first.
        while pending is not None and pending.ts <= received:
            pipeline.feed(pending)
            pending = next(events, None)
        if capture.last_ts is not None:
            received = min(received, capture.last_ts)
        pipeline.on_flow(record, received)
        if keep_records:
            records.append(record)
    while pending is not None:
        pipeline.feed(pending)
        pending = next(events, None)
    pipeline.finish(capture.last_ts)
    stats = pipeline.stats
    result = ReplayResult(
        alerts=collector.alerts,
        devices=[collector.devices[mac] for mac in sorted(collector.devices)],
        summaries=collector.summaries,
        records=records,
        stats={
            "packets": capture.packets,
            "flows": stats.flows,
            "bytes_metered": stats.bytes_metered,
            "bytes_capture": capture.bytes,
            "bytes_uplink": collector.bytes_uplink,
            "uplink_ratio": collector.bytes_uplink / stats.bytes_metered
            if stats.bytes_metered
            else 0.0,
            "messages": collector.messages,
            "summary_rows": stats.summary_rows,
            "device_rows": stats.device_rows,
            "arp_events": stats.arp_events,
            "discovery_events": stats.discovery_events,
            "malformed_frames": decoder.malformed,
            "engine_errors": stats.engine_errors,
            "first_ts": capture.first_ts,
            "last_ts": capture.last_ts,
        },
    )
    if keep_summaries and capture.last_ts is not None:
        extra = _longwindow(result, detect_config, capture.last_ts)
        result.alerts.extend(extra)
        result.stats["longwindow_alerts"] = len(extra)
    if labeler is not None:
        result.labels = labeler(result)
    return result


# --- command ---------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mimamori replay",
        description="Run the gateway pipeline over capture files at full speed (time from "
        "the packets) and print what the gateway would publish.",
    )
    parser.add_argument("pcap", nargs="+", help="capture files (pcap or pcapng), read in order")
    parser.add_argument(
        "--home-net",
        action="append",
        metavar="CIDR",
        help="monitored network (repeatable; default: RFC 1918, link-local, ULA)",
    )
    parser.add_argument("--interval", type=int, default=60, help="summary interval, s")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    return parser


def _print_text(result: ReplayResult) -> None:
    s = result.stats
    print(
        f"{s['packets']} packets, {s['flows']} flows, {s['bytes_metered']} bytes metered, "
        f"{s['bytes_uplink']} bytes uplink ({100 * s['uplink_ratio']:.2f}%)"
    )
    print(f"\nalerts ({len(result.alerts)}):")
    for a in result.alerts:
        target = f" -> {a.target}" if a.target else ""
        print(f"  [{a.severity}] {a.category} {a.actor}{target}: {a.summary_en}")
    print(f"\ndevices ({len(result.devices)}):")
    for d in result.devices:
        extra = " ".join(x for x in (d.hostname, d.model, d.os_hint) if x)
        print(f"  {d.mac} {','.join(d.ips) or '-'} {d.vendor or '?'} {extra}".rstrip())


def main(argv: list[str]) -> int:
    """Entry point of ``mimamori replay``."""
    args = _parser().parse_args(argv)
    try:
        nets = parse_home_net(args.home_net) if args.home_net else DEFAULT_HOME_NET
    except ValueError as exc:
        print(f"mimamori replay: {exc}", file=sys.stderr)
        return 2
    if args.interval <= 0 or args.interval > 3600:
        print("mimamori replay: --interval must be in 1..3600", file=sys.stderr)
        return 2
    try:
        from mimamori.edge.evidence import label_replay

        result = replay(args.pcap, home_net=nets, interval=args.interval, labeler=label_replay)
    except CaptureError as exc:
        print(f"mimamori replay: {exc}", file=sys.stderr)
        return 1
    try:
        if args.json:
            json.dump(result.to_json(), sys.stdout, ensure_ascii=False, indent=1)
            print()
        else:
            _print_text(result)
        sys.stdout.flush()
    except BrokenPipeError:  # e.g. piped into head: not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
