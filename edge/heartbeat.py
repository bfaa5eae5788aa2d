"""Gateway health: a :class:`~protocol.Heartbeat` into the outbox every ``interval`` seconds.

:class:`HealthProbe` samples the box (psutil for load, memory and the outbox's filesystem;
``/sys/class/thermal`` for the SoC temperature when the board has a sensor) and the agent's
own counters (packets seen and dropped by capture, outbox depth and size). Counters are
cumulative since the agent started, as the protocol asks. :class:`Heartbeater` builds a
heartbeat from a sample and appends it to the outbox on a timer thread.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
from mimamori.edge.errors import OutboxError
from mimamori.edge.outbox import Outbox
from mimamori.protocol import Heartbeat

from mimamori import __version__

log = logging.getLogger(__name__)

THERMAL_ROOT = Path("/sys/class/thermal")
#: Thermal zone types that measure the SoC/CPU, by preference (Raspberry Pi: cpu-thermal).
_CPU_ZONES = ("cpu-thermal", "cpu_thermal", "soc_thermal", "x86_pkg_temp", "cpu")

#: (packets seen, packets dropped) since the agent started, from the capture.
PacketCounter = Callable[[], tuple[int, int]]


def read_temperature(root: Path = THERMAL_ROOT) -> float | None:
    """The SoC temperature in °C from the kernel's thermal zones, or None without a sensor.

    Prefers a zone whose type names the CPU/SoC; otherwise the first readable zone.
    """
    try:
        zones = sorted(root.glob("thermal_zone*"))
    except OSError:
        return None
    readings: list[tuple[str, float]] = []
    for zone in zones:
        try:
            kind = (zone / "type").read_text().strip()
            millideg = int((zone / "temp").read_text().strip())
        except (OSError, ValueError):
            continue
        readings.append((kind, millideg / 1000.0))
    for wanted in _CPU_ZONES:
        for kind, value in readings:
            if kind == wanted:
                return value
    return readings[0][1] if readings else None


class HealthProbe:
    """Samples what a heartbeat reports. Construct once; :meth:`heartbeat` is cheap."""

    def __init__(
        self,
        *,
        gateway: str,
        outbox: Outbox,
        interval: float = 30.0,
        config_hash: str = "",
        packets: PacketCounter | None = None,
        intel_age: Callable[[], float | None] | None = None,
        thermal_root: Path = THERMAL_ROOT,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.gateway = gateway
        self.outbox = outbox
        self.interval = interval
        self.config_hash = config_hash
        self.packets = packets
        self.intel_age = intel_age
        self.thermal_root = thermal_root
        self._clock = clock
        self._monotonic = monotonic
        self._started = monotonic()
        # The filesystem holding the outbox is the one whose filling up hurts.
        self._disk_path = str(outbox.path.parent if outbox.path.parent.exists() else os.sep)

    def heartbeat(self, seq: int) -> Heartbeat:
        """A heartbeat numbered ``seq`` with the current readings."""
        seen, dropped = self.packets() if self.packets else (0, 0)
        try:
            disk = psutil.disk_usage(self._disk_path).percent
        except OSError:
            disk = 0.0
        intel_age = self.intel_age() if self.intel_age else None
        return Heartbeat(
            gateway=self.gateway,
            seq=seq,
            sent_at=self._clock(),
            interval_s=self.interval,
            uptime_s=max(0.0, self._monotonic() - self._started),
            load1=max(0.0, os.getloadavg()[0]),
            mem_used_pct=min(100.0, max(0.0, psutil.virtual_memory().percent)),
            disk_used_pct=min(100.0, max(0.0, disk)),
            temp_c=read_temperature(self.thermal_root),
            packets_seen=max(0, seen),
            packets_dropped=max(0, dropped),
            # Read before this heartbeat is stored: "this one excluded", as the protocol says.
            outbox_depth=self.outbox.depth(),
            outbox_bytes=self.outbox.size_bytes(),
            agent_version=__version__,
            config_hash=self.config_hash,
            intel_age_s=intel_age,
        )


class Heartbeater:
    """Appends a heartbeat to the outbox every ``probe.interval`` seconds in a thread.

    ``on_beat`` runs after each heartbeat in the same thread (the agent uses it for outbox
    housekeeping); its failures are logged, never fatal.
    """

    def __init__(self, *, probe: HealthProbe, on_beat: Callable[[], None] | None = None) -> None:
        self.probe = probe
        self.on_beat = on_beat
        self.sent = 0
        self.failed = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> int | None:
        """Store one heartbeat now; return its sequence number (None if it was dropped)."""
        try:
            seq = self.probe.outbox.append(self.probe.heartbeat)
        except OutboxError:
            self.failed += 1
            log.exception("heartbeat: could not store a heartbeat")
            return None
        self.sent += 1
        if self.on_beat is not None:
            try:
                self.on_beat()
            except Exception:
                log.exception("heartbeat: housekeeping failed")
        return seq

    def _run(self) -> None:
        # The first heartbeat goes out at once: the cloud learns of a restart immediately.
        while True:
            self.beat()
            if self._stop.wait(self.probe.interval):
                return

    def start(self) -> None:
        """Start the timer thread."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the timer thread (waits for a heartbeat in progress)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
