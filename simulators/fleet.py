"""A fleet of simulated gateways speaking protocol v1 through the edge's own delivery code.

Every simulated gateway has a real :class:`~mimamori.edge.outbox.Outbox` (SQLite, one
file per gateway) and a real :class:`~mimamori.edge.publisher.Publisher`; only the
traffic is synthetic. Per gateway and per simulated interval it appends a
:class:`~mimamori.protocol.FlowBatch` sampled from :mod:`.profiles`, a heartbeat every
``heartbeat_s``, device observations (the whole inventory at start, then hourly
refreshes and devices that come and go) and the alerts its scenarios raise: scenario
traffic (:mod:`.scenarios`) goes through the real detection engine and the edge's real
summariser. Gateways listed in ``sensors`` also relay a sensor node's messages
(:class:`SimSensor`) through the edge's real sensor relay. The publisher numbers
nothing itself; the outbox does, exactly as on a gateway, and every numbered message is
written to a ledger so that benchmarks can compare what gateways sent with what the
cloud committed.

Processes. Gateways are spread over ``workers`` processes. In each, one thread appends
messages (:class:`_Generator`) while the main thread runs :func:`mimamori.edge.
publisher.drive` over all the process's publishers: the publisher's supported way of
running many gateways on one selector loop. A gateway with the ``power_cut`` scenario
gets a process of its own, which the parent kills (SIGKILL) and restarts on the same
outbox; a ``site_offline`` gateway reaches the broker through a :class:`Link` relay
that is cut for a while.

Time. Traffic time runs ``speed`` times faster than the wall clock and ends at about
the wall time the run ends, so nothing is stamped in the future: simulated time starts
``minutes * 60 * (1 - 1/speed)`` seconds in the past. Delivery (broker, ingester,
database) is real and runs in wall time.
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing as mp
import os
import random
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from mimamori.edge.outbox import Outbox
from mimamori.edge.publisher import Backoff, Publisher, drive
from mimamori.edge.sensors import Relay
from mimamori.edge.summaries import DEFAULT_HOME_NET, Summarizer
from mimamori.protocol import (
    Alert,
    AlertBatch,
    DeviceBatch,
    FlowBatch,
    FlowSummary,
    Heartbeat,
    codec,
)
from mimamori.simulators import profiles, scenarios
from mimamori.simulators.profiles import Site

log = logging.getLogger(__name__)

#: Wall seconds between two passes of the generator over its gateways.
GENERATOR_STEP_S = 0.2
#: Devices are re-reported at least this often (the edge inventory's refresh_s).
DEVICE_REFRESH_S = 3600.0
#: A real gateway flushes an interval when its capture loop next ticks (every second)
#: after the interval's end: each simulated gateway has a fixed phase up to this long.
FLUSH_DELAY_S = 1.5
AGENT_VERSION = "sim-0.1.0"
#: Wall seconds a worker waits for its gateways to connect before the run starts anyway.
CONNECT_TIMEOUT_S = 120.0
#: JST midnight of Tuesday 2026-11-24: the weekday ``local_hour`` pins traffic to.
REFERENCE_WEEKDAY = 1_795_446_000.0
#: Rows per FlowBatch (the protocol's limit).
MAX_ROWS = 5000


class FleetError(RuntimeError):
    """A fleet run could not complete (a worker process died)."""


# --- configuration ----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class FleetConfig:
    """What to simulate. ``scenarios`` are assigned to gateways 0, 1, 2, ... in order."""

    gateways: int
    devices: int = 30
    minutes: float = 10.0
    speed: float = 1.0
    interval_s: int = 60
    heartbeat_s: float = 30.0
    scenarios: tuple[str, ...] = ()
    host: str = "127.0.0.1"
    port: int = 1883
    prefix: str = "sim"
    workers: int = 0  # 0: one per CPU, at most one per 250 gateways
    seed: int = 1
    workdir: str = ""
    #: Pin the traffic profile to this JST hour (benchmarks: a steady office-hours load).
    local_hour: float | None = None
    #: Wall seconds to wait after the last message for the outboxes to drain.
    drain_s: float = 120.0
    power_cut_after: float = 0.3  # fraction of the run
    power_cut_downtime_s: float = 20.0
    offline_after: float = 0.3
    offline_for: float = 0.3  # fraction of the run
    window: int = 64
    ack_timeout: float = 30.0
    #: Gateways (indexes) with a sensor node on their LAN: see :class:`SimSensor`.
    sensors: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.gateways < 1 or self.devices < 1:
            raise ValueError("need at least one gateway and one device")
        if self.minutes <= 0 or self.speed <= 0:
            raise ValueError("--minutes and --speed must be positive")
        if len(self.scenarios) > self.gateways:
            raise ValueError(
                f"{len(self.scenarios)} scenarios need at least as many gateways "
                f"(each scenario runs at its own gateway), got {self.gateways}"
            )
        unknown = [s for s in self.scenarios if s not in scenarios.NAMES]
        if unknown:
            raise ValueError(
                f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(scenarios.NAMES)}"
            )
        outside = [i for i in self.sensors if not 0 <= i < self.gateways]
        if outside:
            raise ValueError(
                f"sensors: gateway index(es) {outside} outside 0-{self.gateways - 1}; "
                "give indexes of simulated gateways"
            )

    def tenant(self, index: int) -> str:
        """Customers have one or two sites: two consecutive gateways share a tenant."""
        return f"{self.prefix}-c{index // 2:05d}"

    def gateway(self, index: int) -> str:
        return f"{self.prefix}-g{index:05d}"

    def scenario_of(self, index: int) -> str | None:
        return self.scenarios[index] if index < len(self.scenarios) else None


@dataclass(frozen=True)
class SimClock:
    """Simulated time from the wall clock: ``sim = sim_start + (wall - wall_start) * speed``."""

    wall_start: float
    sim_start: float
    speed: float

    @classmethod
    def for_run(cls, *, minutes: float, speed: float, wall_start: float) -> SimClock:
        span = minutes * 60.0
        return cls(wall_start, wall_start + span / speed - span, speed)

    def now(self, wall: float | None = None) -> float:
        wall = time.time() if wall is None else wall
        return self.sim_start + (wall - self.wall_start) * self.speed

    def wall_at(self, sim: float) -> float:
        return self.wall_start + (sim - self.sim_start) / self.speed


def site_for(config: FleetConfig, index: int) -> Site:
    return profiles.build_site(
        tenant=config.tenant(index),
        gateway=config.gateway(index),
        devices=config.devices,
        seed=config.seed * 100_003 + index,
    )


# --- the ledger -------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One message a simulated gateway's outbox numbered."""

    gateway: str
    seq: int
    kind: str
    rows: int
    sent_at: float
    wall_at: float
    #: When the message was due by the simulated gateway's schedule (simulated time).
    due: float


class Ledger:
    """Append-only CSV of numbered messages (one per worker; survives SIGKILL: each line
    is written with one ``write`` call to an unbuffered file)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh = open(path, "ab", buffering=0)  # noqa: SIM115 - closed in close()
        self._lock = threading.Lock()

    def add(self, e: Entry) -> None:
        line = (
            f"{e.gateway},{e.seq},{e.kind},{e.rows},{e.sent_at:.6f},{e.wall_at:.6f},{e.due:.6f}\n"
        )
        with self._lock:
            self._fh.write(line.encode())

    def close(self) -> None:
        self._fh.close()

    @staticmethod
    def read(paths: Sequence[Path]) -> Iterator[Entry]:
        """Entries of every ledger file (a torn last line, from a kill, is skipped)."""
        for path in paths:
            with open(path, encoding="ascii", errors="replace") as fh:
                for line in fh:
                    parts = line.rstrip("\n").split(",")
                    if len(parts) != 7:
                        continue
                    try:
                        yield Entry(
                            parts[0], int(parts[1]), parts[2], int(parts[3]),
                            float(parts[4]), float(parts[5]), float(parts[6]),
                        )  # fmt: skip
                    except ValueError:
                        continue


# --- one gateway ------------------------------------------------------------------------


class SimGateway:
    """The traffic side of one simulated gateway: appends what is due to its outbox."""

    def __init__(
        self,
        *,
        config: FleetConfig,
        index: int,
        outbox: Outbox,
        ledger: Ledger,
        started_at: float,
        measure: bool = False,
    ) -> None:
        self.config = config
        self.index = index
        self.site = site_for(config, index)
        self.gateway = self.site.gateway
        self.outbox = outbox
        self.ledger = ledger
        self.measure = measure
        self.bytes_by_kind: dict[str, int] = {}
        self.scenario = config.scenario_of(index)
        self.rng = random.Random(self.site.seed)
        now = started_at
        self.booted_at = now
        iv = config.interval_s
        # The first interval is partial, as on a gateway that just started.
        self.interval_start = now - now % iv
        self.next_heartbeat = now + self.rng.uniform(0, config.heartbeat_s)
        # When in the second after an interval's end this gateway's capture loop ticks.
        self.flush_phase = self.rng.uniform(0.0, FLUSH_DELAY_S)
        # The inventory goes out once the capture has seen the LAN; spreading it over the
        # first minute keeps a fleet that starts together from sending 1,000 at once.
        self.next_devices = now + self.rng.uniform(0, 60.0)
        self.reported: dict[str, float] = {}
        self.packets_seen = 0
        self.engine: Any = None
        self.summarizer: Summarizer | None = None
        if self.scenario in scenarios.TRAFFIC:
            self.engine = scenarios.make_engine(DEFAULT_HOME_NET)
            self.summarizer = Summarizer(interval=iv)
        self.alerts_raised: dict[str, int] = {}
        self.messages = 0
        self.sensor: SimSensor | None = None
        if index in config.sensors:
            self.sensor = SimSensor(gateway=self, started_at=started_at)

    def _traffic_time(self, t: float) -> float:
        """The time the traffic profile sees: ``t``, or with ``local_hour`` set, the same
        minute and second at that JST hour of a reference weekday (a steady load)."""
        hour = self.config.local_hour
        if hour is None:
            return t
        return REFERENCE_WEEKDAY + hour * 3600 + t % 3600

    def _append(
        self,
        kind: str,
        rows: int,
        build: Callable[[int], Any],
        sent_at: float,
        due: float | None = None,
    ) -> int | None:
        if self.measure:
            inner = build

            def build(seq: int) -> Any:
                message = inner(seq)
                size = len(codec.encode(message))
                self.bytes_by_kind[kind] = self.bytes_by_kind.get(kind, 0) + size
                return message

        seq = self.outbox.append(build)
        if seq is None:
            return None  # dropped by the disk budget (counted by the outbox)
        self.messages += 1
        self.ledger.add(
            Entry(
                self.gateway, seq, kind, rows, sent_at, time.time(), sent_at if due is None else due
            )
        )
        return seq

    def step(self, now: float) -> None:
        """Append everything due by simulated time ``now``."""
        cfg = self.config
        if now >= self.next_devices:
            self._devices(now)
        while now >= self.interval_start + cfg.interval_s + self.flush_phase:
            end = self.interval_start + cfg.interval_s
            due = end + self.flush_phase
            self._flows(self.interval_start, end, self._stamp(now, due), due)
            self.interval_start += cfg.interval_s
        while now >= self.next_heartbeat:
            self._heartbeat(self._stamp(now, self.next_heartbeat), self.next_heartbeat)
            self.next_heartbeat += cfg.heartbeat_s
        if self.sensor is not None:
            self.sensor.step(now)

    def _stamp(self, now: float, due: float) -> float:
        """``sent_at`` of a message due at ``due`` and made at ``now``: the moment it is
        made (as a gateway stamps it), except when the generator catches up on simulated
        time faster than real time, where the schedule says when it belongs."""
        return now if self.config.speed == 1.0 or now - due < 1.0 else due

    def _flows(self, start: float, end: float, sent_at: float, due: float) -> None:
        traffic = self._traffic_time(start)
        rows = profiles.summaries(self.site, traffic, self.config.interval_s, self.rng)
        if traffic != start:
            rows = [_retime(r, start - traffic) for r in rows]
        alerts: list[Alert] = []
        if self.engine is not None and self.summarizer is not None and self.scenario:
            # Scenario traffic takes the gateway's own path: detection, then summaries.
            for rec in scenarios.records(self.scenario, self.site, start, end, self.rng):
                alerts += self.engine.on_flow(rec)
                self.summarizer.add(rec, start)
            alerts += self.engine.tick(end)
            rows += self.summarizer.flush()[1]
        self.packets_seen += sum(r.pkts_in + r.pkts_out for r in rows)
        if alerts:
            self._alerts(alerts, sent_at)
        for i in range(0, len(rows), MAX_ROWS):
            chunk = rows[i : i + MAX_ROWS]
            self._append(
                "flows", len(chunk),
                lambda seq, c=chunk: FlowBatch(  # type: ignore[misc]
                    gateway=self.gateway, seq=seq, sent_at=sent_at,
                    interval_s=self.config.interval_s, flows=c,
                ),
                sent_at, due,
            )  # fmt: skip

    def _alerts(self, alerts: list[Alert], at: float) -> None:
        for a in alerts:
            self.alerts_raised[a.category] = self.alerts_raised.get(a.category, 0) + 1
        self._append(
            "alerts", len(alerts),
            lambda seq: AlertBatch(gateway=self.gateway, seq=seq, sent_at=at, alerts=alerts),
            at,
        )  # fmt: skip

    def _devices(self, now: float) -> None:
        devices = []
        for dev in self.site.devices:
            here = profiles.present(dev, self._traffic_time(now))
            last = self.reported.get(dev.mac)
            if here and (last is None or now - last >= DEVICE_REFRESH_S):
                devices.append(dev.device(first_seen=self.booted_at, last_seen=now))
                self.reported[dev.mac] = now
        # Phones come and go: look again every ten minutes.
        self.next_devices = now + 600.0
        if devices:
            self._append(
                "devices", len(devices),
                lambda seq: DeviceBatch(gateway=self.gateway, seq=seq, sent_at=now, devices=devices),
                now,
            )  # fmt: skip

    def _heartbeat(self, at: float, due: float) -> None:
        rng = self.rng
        ob = self.outbox
        self._append(
            "heartbeat", 1,
            lambda seq: Heartbeat(
                gateway=self.gateway, seq=seq, sent_at=at, interval_s=self.config.heartbeat_s,
                uptime_s=max(0.0, at - self.booted_at), load1=round(rng.uniform(0.05, 0.6), 2),
                mem_used_pct=round(rng.uniform(28, 36), 1), disk_used_pct=12.5,
                temp_c=round(rng.uniform(44, 52), 1), packets_seen=self.packets_seen,
                outbox_depth=ob.depth(), outbox_bytes=ob.size_bytes(),
                agent_version=AGENT_VERSION, config_hash="sim",
            ),
            at, due,
        )  # fmt: skip


def _retime(row: FlowSummary, shift: float) -> FlowSummary:
    """Move a row sampled at a pinned traffic time back to the interval it belongs to."""
    return msgspec.structs.replace(
        row,
        ts=row.ts + shift,
        first_seen=None if row.first_seen is None else row.first_seen + shift,
        last_seen=None if row.last_seen is None else row.last_seen + shift,
    )


# --- a sensor node on the site's LAN -------------------------------------------------------

#: The firmware's default heartbeat interval (firmware/mimamori_sensor/settings.py).
SENSOR_HEARTBEAT_S = 60
#: When the canary is touched and when the node falls silent, as fractions of the run.
#: Silent for the second half of the run, the node misses far more than the three
#: heartbeats after which the cloud's sensors job raises ``sensor_offline``.
SENSOR_TOUCH_AT = 0.3
SENSOR_SILENT_AT = 0.5
#: The port the canary reports touched: SMB, what ransomware spreading over the LAN
#: tries first (the ``ransomware`` scenario opens SMB sessions on every host).
SENSOR_TOUCHED_PORT = 445
SENSOR_FW = "0.1.0"


class SimSensor:
    """A sensor node (firmware/) on a simulated gateway's LAN, and that gateway's relay.

    The node's messages are the firmware's JSON (docs/firmware.md: ``v``, ``sensor``,
    ``seq`` and the kind's fields) and go through the edge's real
    :class:`~mimamori.edge.sensors.Relay`, which validates them and appends them to the
    gateway's outbox as protocol v1 ``SensorMessage``; the ledger counts them like every
    other message. Only the site listener (MQTT between node and relay) is left out:
    :meth:`Relay.handle` is what the relay's subscription calls for each message.

    The relay's clock is the simulated gateway's (simulated time). The node boots with the
    gateway: a self-report, then a heartbeat every :data:`SENSOR_HEARTBEAT_S`. At
    :data:`SENSOR_TOUCH_AT` of the run a PC of the site (the one the ``ransomware``
    scenario infects) connects to the canary's SMB port; from :data:`SENSOR_SILENT_AT`
    the node sends nothing more (unplugged, as an intruder who found it would do).
    """

    def __init__(self, *, gateway: SimGateway, started_at: float) -> None:
        self.gateway = gateway
        # Unique in the tenant (two gateways of a customer share its sensors' namespace).
        self.sensor_id = f"s-{gateway.gateway}"
        span = gateway.config.minutes * 60.0
        self.rng = random.Random(gateway.site.seed + 17)
        self.node_boot = started_at - self.rng.uniform(600.0, 86_400.0)
        self.touch_at = started_at + SENSOR_TOUCH_AT * span
        self.silent_at = started_at + SENSOR_SILENT_AT * span
        self.next_report: float | None = started_at
        self.next_heartbeat = started_at
        self.touched = False
        self.source = scenarios.cast(gateway.site, "ransomware").victim.ip
        self.source_port = self.rng.randint(49152, 65535)
        self.seq = 0
        self.last_sent: float | None = None
        self.kinds: dict[str, int] = {}
        self._now = started_at
        self.relay = Relay(
            host="127.0.0.1", port=0, password="never-connected", gateway=gateway.gateway,
            outbox=self, known={self.sensor_id: "simulated"}, clock=lambda: self._now,
            client_id=f"relay-{gateway.gateway}",
        )  # fmt: skip

    def append(self, message: Callable[[int], Any]) -> int | None:
        """The relay's sink: the gateway's outbox, through the fleet's ledger."""
        return self.gateway._append("sensor", 1, message, self._now)

    def step(self, now: float) -> None:
        """Send what the node has due by simulated time ``now``, in time order."""
        while True:
            due = self._next_due()
            if due is None or due > now:
                return
            self._now = due
            if self.next_report is not None and due == self.next_report:
                self._send("self_report", self._self_report())
                self.next_report = None
            elif not self.touched and due == self.touch_at:
                self._send("canary", {
                    "port": SENSOR_TOUCHED_PORT, "src_ip": self.source,
                    "src_port": self.source_port, "age_ms": self.rng.randint(40, 400),
                    "dropped": 0,
                })  # fmt: skip
                self.touched = True
            else:
                self._send("heartbeat", {
                    "uptime_s": int(due - self.node_boot),
                    "free_mem": self.rng.randrange(78_000, 84_000, 16),
                    "rssi": self.rng.randint(-67, -52), "fw": SENSOR_FW,
                    "canary_total": int(self.touched), "canary_dropped": 0, "reconnects": 0,
                })  # fmt: skip
                self.next_heartbeat += SENSOR_HEARTBEAT_S

    def _next_due(self) -> float | None:
        candidates = [self.next_heartbeat]
        if self.next_report is not None:
            candidates.append(self.next_report)
        if not self.touched:
            candidates.append(self.touch_at)
        due = min(candidates)
        return due if due < self.silent_at else None

    def _self_report(self) -> dict[str, Any]:
        return {
            "fw": SENSOR_FW, "mpy": "1.24.1", "platform": "esp32", "tls": True,
            "unique_credential": True, "network_repl": False, "wifi_ap": False,
            "canary_enabled": True, "canary_ports": [23, 80, 445, 502, 3389],
            "canary_failed_ports": [], "config_counter": 0, "heartbeat_s": SENSOR_HEARTBEAT_S,
        }  # fmt: skip

    def _send(self, kind: str, fields: dict[str, Any]) -> None:
        body = {"v": 1, "sensor": self.sensor_id, "seq": self.seq, **fields}
        self.seq += 1
        payload = json.dumps(body, separators=(",", ":")).encode()
        if self.relay.handle(f"site/sensors/{self.sensor_id}/{kind}", payload) is not None:
            self.kinds[kind] = self.kinds.get(kind, 0) + 1
            self.last_sent = self._now

    def report(self) -> dict[str, Any]:
        """What the node sent, for the run's report (and the demo's expectations)."""
        return {
            "sensor_id": self.sensor_id,
            "relayed": self.kinds,
            "relay_counters": dict(self.relay.counters),
            "canary": (
                {"src_ip": self.source, "src_port": self.source_port, "port": SENSOR_TOUCHED_PORT}
                if self.kinds.get("canary")
                else None
            ),
            "last_sent": self.last_sent,
            "silent_from": self.silent_at,
        }


# --- the site's internet link -----------------------------------------------------------


class Link:
    """A TCP relay standing for a site's internet link to the broker.

    :meth:`cut` drops every connection through it and refuses new ones (accepted, then
    closed at once, as a router with a dead uplink resets them); :meth:`restore` lets
    connections through again.
    """

    def __init__(self, *, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._up = True
        self._closed = False
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.cuts = 0

    @property
    def port(self) -> int:
        port: int = self._listener.getsockname()[1]
        return port

    def start(self) -> Link:
        threading.Thread(target=self._accept, name="link-accept", daemon=True).start()
        return self

    def cut(self) -> None:
        self._up = False
        self.cuts += 1
        with self._lock:
            conns, self._conns = self._conns, set()
        for s in conns:
            _close(s)

    def restore(self) -> None:
        self._up = True

    @property
    def up(self) -> bool:
        return self._up

    def close(self) -> None:
        self._closed = True
        self.cut()
        _close(self._listener)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self._up:
                _close(client)
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._conns.update((client, server))
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._conns.discard(src)
                self._conns.discard(dst)
            _close(src)
            _close(dst)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


# --- worker processes -------------------------------------------------------------------

#: Per-worker progress counters in shared memory.
_COUNTERS = ("messages", "acked", "depth", "connected")


@dataclass(frozen=True)
class WorkerSpec:
    """What one worker process runs (picklable: it crosses into a spawned process)."""

    config: FleetConfig
    number: int
    indexes: tuple[int, ...]
    workdir: str


def _worker_main(spec: WorkerSpec, counters: Any) -> None:
    """Entry point of a worker process: its gateways until the run ends and drains."""
    workdir = Path(spec.workdir)
    logging.basicConfig(
        filename=str(workdir / f"worker-{spec.number}.log"),
        level=logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    signal.signal(signal.SIGTERM, lambda *_: os._exit(143))
    cfg = spec.config
    ledger = Ledger(workdir / f"ledger-{spec.number}.csv")
    (workdir / "outboxes").mkdir(exist_ok=True)
    outboxes: list[Outbox] = []
    gens: list[SimGateway] = []  # filled by the generator once the run starts
    pubs: list[Publisher] = []
    links: dict[int, Link] = {}
    for index in spec.indexes:
        gw = cfg.gateway(index)
        outbox = Outbox(path=workdir / "outboxes" / f"{gw}.sqlite", synchronous="OFF", check=False)
        port = cfg.port
        if cfg.scenario_of(index) == "site_offline":
            links[index] = Link(upstream=(cfg.host, cfg.port)).start()
            port = links[index].port
        outboxes.append(outbox)
        pubs.append(
            Publisher(
                outbox=outbox, tenant=cfg.tenant(index), gateway=gw, host=cfg.host, port=port,
                ssl_context=None, insecure_plaintext=True, client_id=gw, window=cfg.window,
                ack_timeout=cfg.ack_timeout,
                # A fleet that lost the broker must not reconnect in one wave, nor wait
                # a full minute once the link is back.
                backoff=Backoff(initial=1.0, maximum=15.0, rng=random.Random(index)),
            )
        )  # fmt: skip
    stop = threading.Event()
    gen = threading.Thread(
        target=_generate,
        args=(spec, outboxes, ledger, gens, pubs, links, counters, stop),
        name="generator",
    )
    gen.start()
    try:
        drive(pubs, stop, drain=0.0)
    finally:
        stop.set()
        gen.join()
        report = {
            "gateways": {
                g.gateway: {
                    "messages": g.messages,
                    "alerts": g.alerts_raised,
                    "scenario": g.scenario,
                    "publisher": asdict(p.stats),
                    "outbox_depth": g.outbox.depth(),
                    "outbox_dropped": g.outbox.dropped(),
                    "link_cuts": links[g.index].cuts if g.index in links else 0,
                    "sensor": g.sensor.report() if g.sensor is not None else None,
                }
                for g, p in zip(gens, pubs, strict=True)
            }
        }
        (workdir / f"worker-{spec.number}.json").write_text(json.dumps(report))
        for ob in outboxes:
            ob.close()
        for link in links.values():
            link.close()
        ledger.close()


def _generate(
    spec: WorkerSpec,
    outboxes: list[Outbox],
    ledger: Ledger,
    gens: list[SimGateway],
    pubs: list[Publisher],
    links: dict[int, Link],
    counters: Any,
    stop: threading.Event,
) -> None:
    """The worker's traffic thread: connect, wait for the start, append what is due,
    then wait for the outboxes to drain."""
    cfg = spec.config
    base = spec.number * len(_COUNTERS)
    # A real fleet is connected before the measurement starts: wait for every
    # publisher (bounded), report it, and wait for the parent's start signal.
    deadline = time.monotonic() + CONNECT_TIMEOUT_S
    while not stop.is_set() and time.monotonic() < deadline:
        counters[base + 3] = sum(1 for p in pubs if p.connected)
        if all(p.connected for p in pubs):
            break
        time.sleep(0.1)
    counters[base + 3] = sum(1 for p in pubs if p.connected)
    while not stop.is_set() and counters[len(counters) - 1] == 0:
        time.sleep(0.05)
    clock = SimClock.for_run(
        minutes=cfg.minutes, speed=cfg.speed, wall_start=counters[len(counters) - 1]
    )
    started = clock.now()
    gens.extend(
        SimGateway(config=cfg, index=i, outbox=ob, ledger=ledger, started_at=started)
        for i, ob in zip(spec.indexes, outboxes, strict=True)
    )
    span = cfg.minutes * 60.0
    end = clock.sim_start + span
    cut_at = clock.sim_start + cfg.offline_after * span
    restore_at = cut_at + cfg.offline_for * span
    # A restarted worker (power cut) continues its predecessor's totals.
    offsets = (counters[base], counters[base + 1])
    try:
        while not stop.is_set():
            now = min(clock.now(), end)
            for g in gens:
                g.step(now)
            for link in links.values():
                if link.up and cut_at <= now < restore_at:
                    log.info("site link cut at simulated %.0f", now)
                    link.cut()
                elif not link.up and now >= restore_at:
                    log.info("site link restored at simulated %.0f", now)
                    link.restore()
            _publish_counters(counters, base, offsets, gens, pubs)
            if now >= end:
                break
            time.sleep(GENERATOR_STEP_S)
        deadline = time.monotonic() + cfg.drain_s
        while not stop.is_set() and time.monotonic() < deadline:
            for link in links.values():
                link.restore()
            _publish_counters(counters, base, offsets, gens, pubs)
            if all(g.outbox.depth() == 0 for g in gens):
                break
            time.sleep(GENERATOR_STEP_S)
        _publish_counters(counters, base, offsets, gens, pubs)
    except Exception:
        log.exception("generator failed")
    finally:
        stop.set()


def _publish_counters(
    counters: Any,
    base: int,
    offsets: tuple[float, float],
    gens: list[SimGateway],
    pubs: list[Publisher],
) -> None:
    counters[base] = offsets[0] + sum(g.messages for g in gens)
    counters[base + 1] = offsets[1] + sum(p.stats.acked_messages for p in pubs)
    counters[base + 2] = sum(g.outbox.depth() for g in gens)
    counters[base + 3] = sum(1 for p in pubs if p.connected)


# --- the parent -------------------------------------------------------------------------


@dataclass
class Progress:
    """Totals over all workers, for progress bars."""

    sim_elapsed_s: float
    sim_total_s: float
    messages: int
    acked: int
    depth: int
    connected: int
    draining: bool


@dataclass
class FleetResult:
    """What a run left behind: ledgers, per-gateway reports, timings."""

    config: FleetConfig
    workdir: Path
    clock: SimClock
    wall_s: float
    ledgers: list[Path]
    connect_s: float = 0.0
    gateways: dict[str, Any] = field(default_factory=dict)
    power_cuts: int = 0

    def entries(self) -> Iterator[Entry]:
        return Ledger.read(self.ledgers)

    @property
    def messages(self) -> int:
        """Messages the outboxes numbered (from the ledgers: a restarted gateway's
        report covers only its last life)."""
        return sum(1 for _ in self.entries())

    @property
    def undelivered(self) -> int:
        return sum(g["outbox_depth"] for g in self.gateways.values())

    def alerts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for g in self.gateways.values():
            for cat, n in g["alerts"].items():
                out[cat] = out.get(cat, 0) + n
        return out


def plan_workers(config: FleetConfig) -> list[tuple[int, ...]]:
    """Gateway indexes per worker: power-cut gateways alone, the rest spread evenly."""
    alone = [i for i in range(config.gateways) if config.scenario_of(i) == "power_cut"]
    rest = [i for i in range(config.gateways) if config.scenario_of(i) != "power_cut"]
    n = config.workers or max(1, min(os.cpu_count() or 1, -(-len(rest) // 250)))
    n = max(1, min(n, len(rest))) if rest else 0
    groups = [tuple(rest[k::n]) for k in range(n)]
    return groups + [(i,) for i in alone]


def run_fleet(
    config: FleetConfig, *, progress: Callable[[Progress], None] | None = None
) -> FleetResult:
    """Run the fleet to the end of its simulated time and until its outboxes drained."""
    workdir = Path(config.workdir) if config.workdir else Path.cwd() / "fleet-run"
    workdir.mkdir(parents=True, exist_ok=True)
    ctx = mp.get_context("spawn")
    groups = plan_workers(config)
    # Per-worker counters, then one slot: the wall-clock start, 0 until every worker's
    # gateways are connected.
    counters = ctx.Array("d", len(groups) * len(_COUNTERS) + 1, lock=False)
    specs = [
        WorkerSpec(config=config, number=k, indexes=g, workdir=str(workdir))
        for k, g in enumerate(groups)
    ]
    procs: dict[int, Any] = {}
    for spec in specs:
        procs[spec.number] = ctx.Process(
            target=_worker_main, args=(spec, counters), name=f"fleet-{spec.number}"
        )
        procs[spec.number].start()
    connect_started = time.time()
    deadline = time.monotonic() + CONNECT_TIMEOUT_S + 30
    width = len(_COUNTERS)
    while time.monotonic() < deadline:
        online = sum(counters[k * width + 3] for k in range(len(specs)))
        if online >= config.gateways or not any(p.is_alive() for p in procs.values()):
            break
        time.sleep(0.2)
    wall_start = time.time()
    counters[len(counters) - 1] = wall_start
    log.info("fleet connected in %.1f s; simulation starts", wall_start - connect_started)
    clock = SimClock.for_run(minutes=config.minutes, speed=config.speed, wall_start=wall_start)
    span = config.minutes * 60.0
    cut_wall = clock.wall_at(clock.sim_start + config.power_cut_after * span)
    cuts = [
        s for s in specs if config.scenario_of(s.indexes[0]) == "power_cut" and len(s.indexes) == 1
    ]
    cut_done = False
    restart_at: float | None = None
    power_cuts = 0
    try:
        while True:
            wall = time.time()
            if cuts and not cut_done and wall >= cut_wall:
                for spec in cuts:
                    proc = procs[spec.number]
                    if proc.is_alive():
                        os.kill(proc.pid, signal.SIGKILL)
                        proc.join()
                        power_cuts += 1
                cut_done = True
                restart_at = (
                    wall
                    + config.power_cut_downtime_s / config.speed * 0
                    + config.power_cut_downtime_s
                )
            if restart_at is not None and wall >= restart_at:
                for spec in cuts:
                    procs[spec.number] = ctx.Process(
                        target=_worker_main, args=(spec, counters), name=f"fleet-{spec.number}"
                    )
                    procs[spec.number].start()
                restart_at = None
            if progress is not None:
                progress(_progress(counters, len(specs), clock, span))
            alive = any(p.is_alive() for p in procs.values())
            if not alive and restart_at is None:
                break
            time.sleep(0.5)
    finally:
        for p in procs.values():
            if p.is_alive():
                p.terminate()
            p.join(10)
    failed = [p.name for p in procs.values() if p.exitcode not in (0, None)]
    if failed:
        raise FleetError(
            f"worker process(es) {', '.join(failed)} failed; see {workdir}/worker-*.log"
        )
    result = FleetResult(
        config=config, workdir=workdir, clock=clock, wall_s=time.time() - wall_start,
        connect_s=wall_start - connect_started,
        ledgers=sorted(workdir.glob("ledger-*.csv")), power_cuts=power_cuts,
    )  # fmt: skip
    for path in sorted(workdir.glob("worker-*.json")):
        result.gateways.update(json.loads(path.read_text())["gateways"])
    if progress is not None:
        progress(_progress(counters, len(specs), clock, span))
    return result


def _progress(counters: Any, workers: int, clock: SimClock, span: float) -> Progress:
    width = len(_COUNTERS)
    tot = [sum(counters[k * width + i] for k in range(workers)) for i in range(width)]
    elapsed = min(span, clock.now() - clock.sim_start)
    return Progress(
        sim_elapsed_s=elapsed, sim_total_s=span, messages=int(tot[0]), acked=int(tot[1]),
        depth=int(tot[2]), connected=int(tot[3]), draining=elapsed >= span,
    )  # fmt: skip


# --- the reference day ------------------------------------------------------------------


def site_day_uplink(
    *, devices: int = 30, seed: int = 1, day: float | None = None, workdir: Path
) -> dict[str, int]:
    """Bytes of encoded messages one site sends in a working day (JST), by kind.

    Runs one simulated gateway through a whole weekday without a broker, through a
    real outbox (acknowledged as it goes), and counts the encoded size of everything it
    numbers. ``day``: UNIX time of the JST midnight to use (default: a recent Wednesday).
    """
    if day is None:
        now = time.time()
        day = now - (now + 9 * 3600) % 86400 - 7 * 86400
        while profiles.activity(day + 10 * 3600, "office") == 0.0:  # not a weekend
            day -= 86400
    config = FleetConfig(gateways=1, devices=devices, seed=seed, prefix="ref")
    path = workdir / "reference-day.sqlite"
    with Outbox(path=path, synchronous="OFF", check=False) as outbox:
        ledger = Ledger(workdir / "reference-day.csv")
        gw = SimGateway(
            config=config, index=0, outbox=outbox, ledger=ledger, started_at=day, measure=True
        )
        t = day
        while t < day + 86400:
            t += 1.0
            last = outbox.last_seq
            gw.step(t)
            if outbox.last_seq != last:  # the cloud acknowledges at once
                outbox.ack([(last + 1, outbox.last_seq)])
        by_kind = dict(gw.bytes_by_kind)
        ledger.close()
    path.unlink(missing_ok=True)
    (workdir / "reference-day.csv").unlink(missing_ok=True)
    by_kind["total"] = sum(by_kind.values())
    return by_kind


# --- helpers for the commands -----------------------------------------------------------


def register_fleet(dsn: str, config: FleetConfig) -> int:
    """Register the fleet's tenants and gateways in the cloud's registry; return how many
    were new. (The ingester quarantines messages of unknown gateways.)"""
    import psycopg
    from mimamori.cloud import registry

    added = 0
    with psycopg.connect(dsn, autocommit=False) as conn:
        for i in range(config.gateways):
            site = f"{config.prefix} site {i}"
            added += registry.add_gateway(
                conn, tenant=config.tenant(i), gateway=config.gateway(i), site=site
            )
        conn.commit()
    return added


class ProgressBar:
    """A live tqdm bar on stderr over a fleet's :class:`Progress` (a no-op when disabled)."""

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self._bar: Any = None

    def __enter__(self) -> ProgressBar:
        if self.enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=100, unit="%", file=sys.stderr, dynamic_ncols=True)
        return self

    def update(self, p: Progress) -> None:
        if self._bar is None:
            return
        done = 100.0 * p.sim_elapsed_s / p.sim_total_s if p.sim_total_s else 100.0
        self._bar.n = round(done, 1)
        self._bar.set_description("draining" if p.draining else "simulating")
        self._bar.set_postfix(
            msgs=p.messages, acked=p.acked, outbox=p.depth, online=p.connected, refresh=False
        )
        self._bar.refresh()

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()
