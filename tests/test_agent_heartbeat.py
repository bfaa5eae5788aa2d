"""Heartbeats: what the probe reads, and the timer that stores them in the outbox."""

from __future__ import annotations

import time
from pathlib import Path

from mimamori.edge.heartbeat import HealthProbe, Heartbeater, read_temperature
from mimamori.edge.outbox import Outbox
from mimamori.protocol import Heartbeat, decode_up

from mimamori import __version__


def zone(root: Path, n: int, kind: str, millideg: str) -> None:
    d = root / f"thermal_zone{n}"
    d.mkdir(parents=True)
    (d / "type").write_text(kind + "\n")
    (d / "temp").write_text(millideg + "\n")


def test_temperature_prefers_the_cpu_zone(tmp_path: Path) -> None:
    assert read_temperature(tmp_path / "none") is None  # a board without sensors
    zone(tmp_path, 0, "acpitz", "27800")
    assert read_temperature(tmp_path) == 27.8
    zone(tmp_path, 1, "cpu-thermal", "51234")
    zone(tmp_path, 2, "broken", "n/a")
    assert read_temperature(tmp_path) == 51.234


def test_probe_reports_counters_and_excludes_itself_from_depth(tmp_path: Path) -> None:
    with Outbox(path=tmp_path / "outbox.db") as box:
        zone(tmp_path / "thermal", 0, "cpu-thermal", "48000")
        ticks = iter([100.0, 142.5, 150.0])
        probe = HealthProbe(
            gateway="gw1", outbox=box, interval=15.0, config_hash="ab" * 32,
            packets=lambda: (1234, 5), intel_age=lambda: 60.0,
            thermal_root=tmp_path / "thermal", monotonic=lambda: next(ticks),
        )  # fmt: skip
        seq = box.append(probe.heartbeat)
        assert seq is not None
        stored = box.get(seq)
        assert stored is not None
        hb = decode_up(stored.payload)
        assert isinstance(hb, Heartbeat)
        assert hb.seq == seq and hb.uptime_s == 42.5 and hb.interval_s == 15.0
        assert (hb.packets_seen, hb.packets_dropped) == (1234, 5)
        assert hb.outbox_depth == 0 and hb.outbox_bytes == 0  # this one excluded
        assert hb.temp_c == 48.0 and hb.intel_age_s == 60.0
        assert hb.agent_version == __version__ and hb.config_hash == "ab" * 32
        assert 0 < hb.mem_used_pct <= 100 and 0 < hb.disk_used_pct <= 100
        second = probe.heartbeat(seq + 1)
        assert second.outbox_depth == 1 and second.outbox_bytes == box.size_bytes()


def test_heartbeater_stores_on_a_timer_and_runs_housekeeping(tmp_path: Path) -> None:
    with Outbox(path=tmp_path / "outbox.db") as box:
        probe = HealthProbe(gateway="gw1", outbox=box, interval=0.05)
        chores: list[int] = []

        def housekeeping() -> None:
            chores.append(box.depth())
            if len(chores) == 2:
                raise RuntimeError("housekeeping failures are logged, not fatal")

        beater = Heartbeater(probe=probe, on_beat=housekeeping)
        beater.start()
        deadline = time.monotonic() + 10
        while box.depth() < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        beater.stop()
        depth = box.depth()
        assert depth >= 5 and beater.sent == depth
        assert chores[:3] == [1, 2, 3]  # ran after each heartbeat, and survived a failure
        time.sleep(0.15)
        assert box.depth() == depth  # stopped means stopped
        seqs = [p.seq for p in box.pending()]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
