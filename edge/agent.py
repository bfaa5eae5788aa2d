"""The gateway agent: capture pipeline + outbox + publisher + heartbeats, in one process.

Threads::

    capture (LiveCapture.run)  records → Pipeline → drafts ─┐
    heartbeat (Heartbeater)    every interval → Heartbeat ──┼──→ Outbox (SQLite)
    publisher (Publisher.run)  Outbox → MQTT; acks → Outbox ┘        ↑ thread-safe
    main                       waits for SIGTERM / SIGINT or a dead capture

The pipeline is not thread-safe, so anything the cloud asks of it (``resend_inventory``,
a new intel bundle) is queued and run by the capture thread between two records
(:class:`_PipelineDoor`), at most ``tick_s`` (1 s) later.

Threat intelligence: the cloud publishes a retained bundle on the tenant's intel topic; the
publisher hands it to :meth:`Agent._on_intel`, which swaps it into the engine and keeps a
copy next to the outbox (``intel-bundle.bin``), so that after a restart detection has
indicators before the broker answers. Heartbeats report the bundle's age.

Active checks (``[active]``, docs/labels.md): with capture on, an ``active`` thread
(:class:`mimamori.edge.active_worker.ActiveWorker`) checks each known LAN device at most
once per interval when the checks are switched on. It reads the inventory and hands its
results (``DiscoveryEvent(source="active")``) to the pipeline through the door, so capture
never waits for a device. The tenant's ``set_config`` command
(``{"active": {"enabled": bool, "credentials": bool}}``) switches them at run time, within
the local ``allow_remote`` rule; its last word is kept beside the outbox.

Sensors: with a ``[sensors]`` section the agent also runs the sensor relay
(:class:`mimamori.edge.sensors.Relay`), which appends what the site's sensors send to the
outbox; the enrolled sensors are re-read from the credentials directory every heartbeat.

Shutdown (SIGTERM from systemd, or SIGINT): stop capture, flush the pipeline's open
summary interval and pending devices into the outbox, stop heartbeats, let the publisher
drain for a few seconds, disconnect with the will (the cloud sees ``offline`` at once),
close the outbox. Whatever was not delivered stays in the outbox for the next start.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mimamori.edge import config as cfg
from mimamori.edge.errors import ConfigError, OutboxCorrupt, OutboxError
from mimamori.edge.heartbeat import HealthProbe, Heartbeater
from mimamori.edge.outbox import MIB, Outbox
from mimamori.edge.publisher import Backoff, Publisher
from mimamori.protocol import (
    ArpEvent,
    Command,
    DiscoveryEvent,
    FlowRecord,
    IntelBundle,
    ProtocolError,
    codec,
)

log = logging.getLogger(__name__)

#: Seconds between checks that the capture threads are still alive.
WATCH_S = 1.0

Item = FlowRecord | ArpEvent | DiscoveryEvent

#: The last intel bundle, kept beside the outbox (same persistent storage).
INTEL_FILE = "intel-bundle.bin"
#: Active checks: when each device was last checked, and the tenant's last switch.
ACTIVE_STATE_FILE = "active-state.json"
ACTIVE_SWITCH_FILE = "active-switch.json"
#: Seconds the active worker waits for the capture thread to hand it the inventory.
ACTIVE_SNAPSHOT_S = 10.0


class _PipelineDoor:
    """The capture thread's consumer: runs queued jobs, then feeds the pipeline."""

    def __init__(self, pipeline: Any) -> None:
        self.pipeline = pipeline
        self.jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()

    def submit(self, job: Callable[[], None]) -> None:
        """Run ``job`` in the capture thread, before its next record or tick."""
        self.jobs.put(job)

    def _run_jobs(self) -> None:
        while True:
            try:
                job = self.jobs.get_nowait()
            except queue.Empty:
                return
            try:
                job()
            except Exception:
                log.exception("agent: a queued pipeline job failed")

    def feed(self, item: Item, now: float | None = None) -> None:
        self._run_jobs()
        self.pipeline.feed(item, now)

    def tick(self, now: float) -> None:
        self._run_jobs()
        self.pipeline.tick(now)


@dataclass
class _Capture:
    """The capture side, present when ``capture.interface`` is set."""

    live: Any  # mimamori.edge.capture.LiveCapture
    pipeline: Any  # mimamori.edge.pipeline.Pipeline
    door: _PipelineDoor
    engine: Any


def open_outbox(config: cfg.Config) -> Outbox:
    """Open the outbox; a corrupt one is moved aside (and logged) and a new one started.

    Numbering stays safe across the swap: the new outbox starts at the time floor, above
    every number the old one could have used (protocol.sequence).
    """
    path = Path(config.outbox.path)
    budget = config.outbox.budget_mb * MIB
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutboxError(f"cannot create the outbox directory {path.parent}: {exc}") from exc
    try:
        return Outbox(path=path, budget_bytes=budget)
    except OutboxCorrupt as exc:
        aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
        log.error("agent: %s; moved to %s and starting a new outbox", exc, aside)
        for suffix in ("", "-wal", "-shm"):
            src = Path(f"{path}{suffix}")
            if src.exists():
                src.rename(Path(f"{aside}{suffix}"))
        return Outbox(path=path, budget_bytes=budget)


def intel_path(config: cfg.Config) -> Path:
    """Where the agent keeps the last intel bundle it received."""
    return Path(config.outbox.path).parent / INTEL_FILE


def load_intel(path: Path) -> IntelBundle | None:
    """The saved bundle, or None (none yet, or unreadable: logged, the broker re-sends)."""
    try:
        message = codec.decode_down(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ProtocolError) as exc:
        log.warning("agent: ignoring the saved intel bundle %s: %s", path, exc)
        return None
    return message if isinstance(message, IntelBundle) else None


def save_intel(path: Path, bundle: IntelBundle) -> None:
    """Write the bundle atomically (a crash mid-write leaves the previous one)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_bytes(codec.encode(bundle))
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("agent: cannot save the intel bundle to %s: %s", path, exc)


def build_engine(
    *,
    config: cfg.Config,
    home_net: Sequence[Any],
    intel: IntelBundle | None = None,
    known_macs: Iterable[str] = (),
    vendor_of: Callable[[str], str] | None = None,
) -> Any:
    """The detection engine for this gateway: the tenant's thresholds (``[detect]``),
    the intel bundle if one is known, the devices already known, the OUI lookup."""
    from mimamori.detect.engine import Engine
    from mimamori.detect.intel import Intel

    return Engine(
        home_net=home_net,
        config=cfg.detect_config(config),
        intel=Intel.from_bundle(intel) if intel is not None else None,
        known_macs=known_macs,
        vendor_of=vendor_of,
    )


def build_relay(config: cfg.Config, outbox: Outbox) -> Any:
    """The sensor relay for ``[sensors]`` (None without the section)."""
    if config.sensors is None:
        return None
    from mimamori.edge.sensors import Relay

    password, known = cfg.sensor_credentials(config)
    return Relay(
        host=config.sensors.host,
        port=config.sensors.port,
        password=password,
        gateway=config.gateway.id,
        outbox=outbox,
        known=dict.fromkeys(known, True),
        ssl_context=cfg.sensors_ssl_context(config),
        client_id=f"mimamori-relay-{config.gateway.id}",
    )


def _own_ips() -> set[str]:
    """Every address of this box (the active checks never probe the gateway itself)."""
    import psutil

    ips = set()
    for addrs in psutil.net_if_addrs().values():
        for addr in addrs:
            if addr.family in (socket.AF_INET, socket.AF_INET6):
                ips.add(addr.address.split("%", 1)[0])
    return ips


def _end_meter_processes() -> None:
    """Terminate nfstream's meter processes (our children) so the interpreter can exit.

    LiveCapture.stop leaves them running, and multiprocessing joins non-daemon children
    at exit, which would hang the agent after SIGTERM.
    """
    for child in multiprocessing.active_children():
        child.terminate()
    for child in multiprocessing.active_children():
        child.join(timeout=5)
        if child.is_alive():
            child.kill()


class Agent:
    """Everything the gateway runs, wired from one validated configuration."""

    def __init__(self, *, config: cfg.Config, outbox: Outbox | None = None) -> None:
        self.config = config
        self.config_hash = cfg.config_hash(config)
        self.outbox = outbox or open_outbox(config)
        self.intel_path = intel_path(config)
        self.intel = load_intel(self.intel_path) if config.capture.interface else None
        self._intel_generated_at = self.intel.generated_at if self.intel else None
        self.relay = build_relay(config, self.outbox)
        self.capture = self._build_capture() if config.capture.interface else None
        self.active = self._build_active() if self.capture is not None else None
        self._active_stop = threading.Event()
        self._active_thread: threading.Thread | None = None
        creds = cfg.credentials(config)
        m = config.mqtt
        self.publisher = Publisher(
            outbox=self.outbox,
            tenant=config.gateway.tenant,
            gateway=config.gateway.id,
            host=m.host,
            port=m.port,
            ssl_context=cfg.ssl_context(config),
            insecure_plaintext=m.insecure_plaintext,
            username=creds.username if creds else None,
            password=creds.password if creds else None,
            client_id=m.client_id or None,
            keepalive=m.keepalive_s,
            session_expiry=m.session_expiry_s,
            connect_timeout=m.connect_timeout_s,
            window=m.window,
            ack_timeout=m.ack_timeout_s,
            backoff=Backoff(initial=m.backoff_initial_s, maximum=m.backoff_max_s),
            commands={
                "resend_inventory": self._resend_inventory,
                "refresh_intel": self._refresh_intel,
                "set_config": self._set_config,
            },
            on_intel=self._on_intel if self.capture else None,
        )
        self.probe = HealthProbe(
            gateway=config.gateway.id,
            outbox=self.outbox,
            interval=config.heartbeat.interval_s,
            config_hash=self.config_hash,
            packets=self._packets if self.capture else None,
            intel_age=self._intel_age,
        )
        self.heartbeater = Heartbeater(probe=self.probe, on_beat=self._housekeeping)

    def _housekeeping(self) -> None:
        """After each heartbeat: drop what the cloud would no longer recognise (31 days);
        re-read the enrolled sensors (a sensor enrolled or retired needs no restart)."""
        self.outbox.expire()
        if self.relay is not None:
            try:
                _, known = cfg.sensor_credentials(self.config)
            except ConfigError as exc:
                log.warning("agent: keeping the enrolled sensors: %s", exc)
                return
            self.relay.known = dict.fromkeys(known, True)

    # --- capture wiring ------------------------------------------------------------------

    def _build_capture(self) -> _Capture:
        # Imported here so that a heartbeat-only agent does not need nfstream loaded.
        from mimamori.edge.capture import FlowMeter, LiveCapture
        from mimamori.edge.discovery import DiscoveryListener
        from mimamori.edge.inventory import Inventory, VendorLookup
        from mimamori.edge.pipeline import Draft, Pipeline
        from mimamori.edge.summaries import DEFAULT_HOME_NET, Summarizer, parse_home_net

        c = self.config.capture
        nets = parse_home_net(c.home_net) if c.home_net else DEFAULT_HOME_NET
        gateway = self.config.gateway.id
        outbox = self.outbox

        def sink(draft: Draft) -> None:
            outbox.append(lambda seq: draft.build(gateway=gateway, seq=seq))

        vendors = VendorLookup()
        inventory = Inventory(home_net=nets, vendors=vendors)
        engine = build_engine(
            config=self.config, home_net=nets, intel=self.intel,
            known_macs=[d.mac for d in inventory.snapshot()], vendor_of=vendors.lookup,
        )  # fmt: skip
        pipeline = Pipeline(
            engine=engine,
            summarizer=Summarizer(home_net=nets, interval=c.summary_interval_s),
            inventory=inventory,
            sink=sink,
        )
        meter = FlowMeter(
            source=c.interface, idle_timeout=c.idle_timeout_s, active_timeout=c.active_timeout_s
        )
        listener = DiscoveryListener(interface=c.interface, emit=lambda event: None)
        live = LiveCapture(meter=meter, listener=listener)
        return _Capture(live=live, pipeline=pipeline, door=_PipelineDoor(pipeline), engine=engine)

    # --- active checks -------------------------------------------------------------------

    def _build_active(self) -> Any:
        from mimamori.edge.active_worker import ActiveWorker, RemoteSwitch, merge_switch

        assert self.capture is not None
        state = Path(self.config.outbox.path).parent
        self._active_remote = RemoteSwitch(state / ACTIVE_SWITCH_FILE)
        settings = merge_switch(
            cfg.active_config(self.config), self._active_remote.values,
            allow_remote=self.config.active.allow_remote,
        )  # fmt: skip
        return ActiveWorker(
            config=settings, home_net=self.capture.pipeline.inventory.home_net,
            own_ips=_own_ips, devices=self._active_devices, deliver=self._active_deliver,
            state_path=state / ACTIVE_STATE_FILE,
        )  # fmt: skip

    def _active_devices(self) -> list[Any]:
        """The inventory's devices, read in the capture thread ([] if it does not answer)."""
        capture = self.capture
        assert capture is not None
        box: queue.SimpleQueue[list[Any]] = queue.SimpleQueue()
        capture.door.submit(lambda: box.put(capture.pipeline.inventory.snapshot()))
        try:
            return box.get(timeout=ACTIVE_SNAPSHOT_S)
        except queue.Empty:
            log.warning("agent: active checks skipped a round: capture did not answer")
            return []

    def _active_deliver(self, event: DiscoveryEvent) -> None:
        capture = self.capture
        assert capture is not None
        capture.door.submit(lambda: capture.pipeline.on_discovery(event, time.time()))

    def _start_active(self) -> None:
        if self.active is None:
            return
        self._active_thread = threading.Thread(
            target=self.active.run, args=(self._active_stop,), name="active", daemon=True
        )
        self._active_thread.start()

    def _stop_active(self) -> None:
        if self.active is None or self._active_thread is None:
            return
        self._active_stop.set()
        self.active.halt()
        self._active_thread.join(timeout=10)

    def _packets(self) -> tuple[int, int]:
        assert self.capture is not None
        return self.capture.pipeline.stats.packets, self.capture.live.dropped

    def _intel_age(self) -> float | None:
        at = self._intel_generated_at
        return None if at is None else max(0.0, time.time() - at)

    # --- command hooks (run in the publisher's thread) -----------------------------------

    def _resend_inventory(self, command: Command) -> None:
        if self.capture is None:
            log.info("agent: resend_inventory ignored: capture is off")
            return
        self.capture.door.submit(self.capture.pipeline.resend_inventory)

    def _set_config(self, command: Command) -> None:
        """The tenant's switch: ``{"active": {"enabled": bool, "credentials": bool}}``."""
        from mimamori.edge.active_worker import merge_switch, parse_switch

        if self.active is None:
            log.info("agent: set_config %s ignored: capture is off", command.id)
            return
        try:
            switch = parse_switch(command.args)
        except ValueError as exc:
            log.warning("agent: set_config %s ignored: %s", command.id, exc)
            return
        if not self.config.active.allow_remote and any(switch.values()):
            log.warning(
                "agent: set_config %s: active checks may not be switched on remotely here "
                "(active.allow_remote = false); switching off is honoured", command.id,
            )  # fmt: skip
        self._active_remote.update(switch)
        settings = merge_switch(
            cfg.active_config(self.config), self._active_remote.values,
            allow_remote=self.config.active.allow_remote,
        )  # fmt: skip
        self.active.switch(enabled=settings.enabled, credentials=settings.credentials)

    def _refresh_intel(self, command: Command) -> None:
        self.publisher.request_intel()

    def _on_intel(self, bundle: IntelBundle) -> None:
        from mimamori.detect.intel import Intel

        capture = self.capture
        if capture is None:
            return
        intel = Intel.from_bundle(bundle)
        save_intel(self.intel_path, bundle)

        def swap() -> None:
            capture.engine.set_intel(intel)
            self._intel_generated_at = bundle.generated_at
            log.info("agent: intel bundle %s in use (%d indicators)", bundle.version, len(intel))

        capture.door.submit(swap)

    # --- running -------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> int:
        """Run until ``stop`` is set (0) or capture dies (1); always shut down cleanly."""
        pub_stop = threading.Event()
        cap_stop = threading.Event()
        publisher = threading.Thread(
            target=self.publisher.run, args=(pub_stop,), name="publisher", daemon=True
        )
        capture_thread: threading.Thread | None = None
        status = 0
        publisher.start()
        self.heartbeater.start()
        if self.relay is not None:
            self.relay.start()  # connects in the background, retrying on its own
        try:
            if self.capture is not None:
                self.capture.live.start()
                capture_thread = threading.Thread(
                    target=self.capture.live.run, args=(self.capture.door,),
                    kwargs={"stop": cap_stop}, name="capture", daemon=True,
                )  # fmt: skip
                capture_thread.start()
                self._start_active()
            log.info(
                "agent: gateway %s (tenant %s) running; config %s",
                self.config.gateway.id, self.config.gateway.tenant, self.config_hash[:12],
            )  # fmt: skip
            while not stop.wait(WATCH_S):
                if self.capture is not None and not self.capture.live.alive:
                    log.error("agent: capture stopped: %s", self.capture.live.error)
                    status = 1
                    break
                if not publisher.is_alive():
                    log.error("agent: the publisher thread ended; restarting the agent")
                    status = 1
                    break
        except Exception as exc:
            # A capture start failure (no rights, no interface: CaptureError) ends the
            # agent: systemd restarts it and the missing heartbeats alert the SOC.
            log.error("agent: %s", exc)
            status = 1
        finally:
            self._shutdown(cap_stop, capture_thread, pub_stop, publisher)
        return status

    def _shutdown(
        self,
        cap_stop: threading.Event,
        capture_thread: threading.Thread | None,
        pub_stop: threading.Event,
        publisher: threading.Thread,
    ) -> None:
        log.info("agent: shutting down")
        self._stop_active()
        if self.capture is not None:
            cap_stop.set()
            if capture_thread is not None:
                capture_thread.join(timeout=10)
            try:
                self.capture.live.stop()
            except Exception:
                log.exception("agent: capture did not stop cleanly")
            # The capture thread is gone: the pipeline is ours. Flush what it holds.
            try:
                self.capture.pipeline.finish(time.time())
            except Exception:
                log.exception("agent: could not flush the pipeline")
            _end_meter_processes()
        if self.relay is not None:
            try:
                self.relay.stop()
            except Exception:
                log.exception("agent: the sensor relay did not stop cleanly")
        self.heartbeater.stop()
        pub_stop.set()
        publisher.join(timeout=30)
        self.outbox.close()
        log.info("agent: stopped")
