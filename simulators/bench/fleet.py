"""``mimamori bench fleet``: a simulated fleet against one private cloud, end to end.

Starts a private Mosquitto and PostgreSQL (:mod:`mimamori.simulators.services`),
migrates the schema, registers the fleet's gateways, starts ``--ingesters`` ingester
processes (``mimamori cloud ingest``, sharing the subscription), runs the fleet
(:mod:`mimamori.simulators.fleet`) at the reference profile (office hours, see
docs/performance.md) with a progress bar on stderr, and then compares what the gateways'
outboxes numbered (their ledgers) with what the database committed (``receipts``):

* ``msgs_per_s``, ``rows_per_s``: committed messages and rows over the fleet's run time;
* ``latency_p50_s``, ``latency_p99_s``: from a message's creation (``sent_at``, which at
  ``--speed 1`` is the wall clock) to ``receipts.committed_at``;
* ``lost``: numbered messages without a receipt; ``duplicated``: rows stored more than
  once (heartbeats and alerts by identity, flow rows by count against the ledger);
* CPU (mean % of one core) and peak resident memory of broker, ingesters and database;
* ``uplink_bytes_per_site_day``: bytes of encoded messages one reference site sends
  in a working day (the fleet's generator run through a whole day without a broker).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from mimamori.simulators.fleet import (
    Entry,
    FleetConfig,
    FleetResult,
    ProgressBar,
    register_fleet,
    run_fleet,
    site_day_uplink,
)
from mimamori.simulators.services import Mosquitto, Postgres

#: The reference profile's hour (JST): mid-morning of a working day.
REFERENCE_HOUR = 10.5
#: Seconds without a new receipt after the fleet drained before the count is final.
SETTLE_S = 3.0


# --- resource sampling ------------------------------------------------------------------


@dataclass
class Usage:
    """CPU and memory of one role's processes over the run."""

    cpu_samples: list[float] = field(default_factory=list)
    rss_peak: int = 0

    def summary(self) -> dict[str, float]:
        cpu = statistics.fmean(self.cpu_samples) if self.cpu_samples else 0.0
        peak = max(self.cpu_samples) if self.cpu_samples else 0.0
        return {
            "cpu_mean_pct": round(cpu, 1),
            "cpu_peak_pct": round(peak, 1),
            "rss_peak_mb": round(self.rss_peak / 2**20, 1),
        }


class Sampler:
    """Samples CPU and RSS of process trees (by role) once a second, in a thread."""

    def __init__(self, roles: dict[str, list[int]], *, every: float = 1.0) -> None:
        self.roles = roles
        self.every = every
        self.usage = {role: Usage() for role in roles}
        self._stop = threading.Event()
        self._procs: dict[int, psutil.Process] = {}
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _tree(self, pid: int) -> list[psutil.Process]:
        try:
            root = psutil.Process(pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def _members(self, role: str) -> list[psutil.Process]:
        if role != "fleet":
            return [p for pid in self.roles[role] for p in self._tree(pid)]
        # The fleet: this process's other children (its worker processes).
        others = {p.pid for r in self.roles if r != "fleet" for p in self._members(r)}
        return [p for p in self._tree(self.roles[role][0])[1:] if p.pid not in others]

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            for role in self.roles:
                cpu = 0.0
                rss = 0
                for proc in self._members(role):
                    # Keep one Process object per pid: cpu_percent measures since its
                    # previous call on the same object.
                    proc = self._procs.setdefault(proc.pid, proc)
                    try:
                        cpu += proc.cpu_percent(None)
                        rss += proc.memory_info().rss
                    except psutil.Error:
                        continue
                self.usage[role].cpu_samples.append(cpu)
                self.usage[role].rss_peak = max(self.usage[role].rss_peak, rss)


# --- accounting -------------------------------------------------------------------------


@dataclass
class Accounting:
    """Ledger against database."""

    numbered: int
    committed: int
    rows: int
    lost: int
    undelivered: int
    duplicated: int
    extra_receipts: int
    latencies: list[float]
    lags: list[float]
    first_commit: float | None
    last_commit: float | None
    quarantined: int
    alerts: dict[str, int]


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def wait_settled(dsn: str, *, expected: int, timeout: float) -> int:
    """Wait until ``expected`` receipts exist or the count stops growing."""
    import psycopg

    deadline = time.monotonic() + timeout
    last, last_change = -1, time.monotonic()
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute("SELECT count(*) FROM receipts WHERE kind <> 'status'").fetchone()
            n = int(row[0]) if row else 0
            if n >= expected:
                return n
            if n != last:
                last, last_change = n, time.monotonic()
            elif time.monotonic() - last_change > SETTLE_S * 10:
                return n
            time.sleep(0.5)
    return last


def still_queued(fleet_dir: Path) -> set[tuple[str, int]]:
    """(gateway, seq) of every message still in a gateway's outbox after the run: not
    delivered (yet), so not lost."""
    from mimamori.edge.outbox import Outbox

    out: set[tuple[str, int]] = set()
    for path in sorted((fleet_dir / "outboxes").glob("*.sqlite")):
        with Outbox(path=path, synchronous="OFF", check=False) as ob:
            out.update((path.stem, p.seq) for p in ob.pending(limit=10**9))
    return out


def account(
    dsn: str, entries: list[Entry], *, speed: float, queued: set[tuple[str, int]] | None = None
) -> Accounting:
    """Compare the gateways' ledgers with the database's receipts and rows."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        receipts = {
            (g, s): (kind, rows, committed.timestamp())
            for g, s, kind, rows, committed in conn.execute(
                "SELECT gateway, seq, kind, rows, committed_at FROM receipts"
            )
        }
        hb = conn.execute(
            "SELECT count(*), count(DISTINCT (gateway, seq)) FROM heartbeats"
        ).fetchone()
        al = conn.execute(
            "SELECT count(*), count(DISTINCT (gateway, alert_id)) FROM alerts"
        ).fetchone()
        flow_rows = conn.execute("SELECT count(*) FROM flows").fetchone()
        quarantined = conn.execute("SELECT count(*) FROM quarantine").fetchone()
        cats: dict[str, int] = dict(
            conn.execute("SELECT category, count(*) FROM alerts GROUP BY 1").fetchall()
        )
    lost = undelivered = 0
    latencies: list[float] = []
    lags: list[float] = []
    committed_rows = 0
    expected_flow_rows = 0
    row_mismatch = 0
    seen: set[tuple[str, int]] = set()
    for e in entries:
        key = (e.gateway, e.seq)
        seen.add(key)
        got = receipts.get(key)
        if got is None:
            if queued is not None and key in queued:
                undelivered += 1
            else:
                lost += 1
            continue
        committed_rows += e.rows
        if e.kind == "flows":
            expected_flow_rows += e.rows
        if got[1] != e.rows:
            row_mismatch += 1
        # From the moment the gateway made the message (wall clock; equal to sent_at at
        # --speed 1) to the commit of its rows.
        latencies.append(got[2] - e.wall_at)
        if speed == 1.0:
            lags.append(e.wall_at - e.due)
    extra = sum(1 for k, v in receipts.items() if k not in seen and v[0] != "status")
    duplicated = (
        (int(hb[0]) - int(hb[1]) if hb else 0)
        + (int(al[0]) - int(al[1]) if al else 0)
        + max(0, (int(flow_rows[0]) if flow_rows else 0) - expected_flow_rows)
        + row_mismatch
    )
    commits = [v[2] for v in receipts.values()]
    return Accounting(
        numbered=len(entries), committed=len(entries) - lost - undelivered,
        rows=committed_rows, lost=lost, undelivered=undelivered,
        duplicated=duplicated, extra_receipts=extra, latencies=latencies, lags=lags,
        first_commit=min(commits) if commits else None,
        last_commit=max(commits) if commits else None,
        quarantined=int(quarantined[0]) if quarantined else 0, alerts=cats,
    )  # fmt: skip


# --- the run ----------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mimamori bench fleet", description=__doc__.split("\n")[0])
    p.add_argument("--gateways", type=int, default=1000)
    p.add_argument("--devices", type=int, default=30)
    p.add_argument("--minutes", type=float, default=10.0, help="simulated minutes")
    p.add_argument("--speed", type=float, default=1.0)
    # Two ingesters keep the database busy while one decodes (see "Cloud ingest").
    p.add_argument("--ingesters", type=int, default=2)
    p.add_argument("--workers", type=int, default=0, help="fleet processes (0: automatic)")
    p.add_argument("--storage", choices=["auto", "postgresql", "timescaledb"], default="auto")
    p.add_argument("--local-hour", type=float, default=REFERENCE_HOUR)
    p.add_argument("--scenario", action="append", default=[])
    p.add_argument("--drain", type=float, default=600.0,
                   help="seconds to wait for the outboxes to drain after the run")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--no-uplink", action="store_true", help="skip the site-day uplink figure")
    p.add_argument("--keep", action="store_true", help="keep the working directory")
    return p


def _start_ingesters(
    n: int, *, dsn: str, port: int, workdir: Path
) -> list[subprocess.Popen[bytes]]:
    procs = []
    for k in range(n):
        log = open(workdir / f"ingester-{k}.log", "ab")  # noqa: SIM115 - owned by the process
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "mimamori", "cloud", "ingest", "--dsn", dsn,
                 "--mqtt-host", "127.0.0.1", "--mqtt-port", str(port),
                 "--client-id", f"bench-ingest-{k}", "--log-format", "json"],
                stdout=log, stderr=log,
            )
        )  # fmt: skip
    return procs


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark; return the figures (the --json document plus details)."""
    from mimamori.cloud.migrate import migrate

    workdir = Path(tempfile.mkdtemp(prefix="mimamori-bench-fleet-"))
    storage = None if args.storage == "auto" else args.storage == "timescaledb"
    with Mosquitto() as broker, Postgres(timescaledb=storage) as pg:
        migrate(pg.dsn, storage=args.storage)
        config = FleetConfig(
            gateways=args.gateways, devices=args.devices, minutes=args.minutes,
            speed=args.speed, scenarios=tuple(args.scenario), port=broker.port,
            prefix="bench", workers=args.workers, workdir=str(workdir / "fleet"),
            local_hour=args.local_hour, drain_s=args.drain,
        )  # fmt: skip
        register_fleet(pg.dsn, config)
        ingesters = _start_ingesters(args.ingesters, dsn=pg.dsn, port=broker.port, workdir=workdir)
        assert broker.proc is not None and pg.proc is not None
        sampler = Sampler(
            {
                "broker": [broker.proc.pid],
                "ingester": [p.pid for p in ingesters],
                "database": [pg.proc.pid],
                "fleet": [os.getpid()],
            }
        ).start()
        try:
            time.sleep(2.0)  # let the ingesters subscribe before the first publish
            with ProgressBar(enabled=True) as bar:
                result: FleetResult = run_fleet(config, progress=bar.update)
            entries = list(result.entries())
            drained_at = time.time()
            wait_settled(pg.dsn, expected=len(entries), timeout=120)
        finally:
            sampler.stop()
            for proc in ingesters:
                proc.terminate()
            for proc in ingesters:
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
        acc = account(pg.dsn, entries, speed=args.speed, queued=still_queued(workdir / "fleet"))
        storage_name = pg.storage
    uplink = {} if args.no_uplink else site_day_uplink(devices=args.devices, workdir=workdir)
    run_s = args.minutes * 60.0 / args.speed
    figures: dict[str, Any] = {
        "gateways": args.gateways,
        "devices": args.devices,
        "minutes": args.minutes,
        "speed": args.speed,
        "storage": storage_name,
        "ingesters": args.ingesters,
        "msgs_per_s": round(acc.committed / run_s, 1),
        "rows_per_s": round(acc.rows / run_s, 1),
        "latency_p50_s": round(_percentile(acc.latencies, 50), 3),
        "latency_p99_s": round(_percentile(acc.latencies, 99), 3),
        "latency_max_s": round(max(acc.latencies, default=float("nan")), 3),
        # How late the simulator made messages against their schedule (its own CPU
        # starvation): not part of the delivery latency above.
        "schedule_lag_p50_s": round(_percentile(acc.lags, 50), 3),
        "schedule_lag_p99_s": round(_percentile(acc.lags, 99), 3),
        "lost": acc.lost,
        "duplicated": acc.duplicated,
        "messages": acc.numbered,
        "rows": acc.rows,
        "extra_receipts": acc.extra_receipts,
        "quarantined": acc.quarantined,
        "alerts": acc.alerts,
        "undelivered_in_outboxes": acc.undelivered,
        "power_cuts": result.power_cuts,
        "wall_s": round(result.wall_s, 1),
        "drain_s": round(drained_at - result.clock.wall_start - run_s, 1),
        "connect_s": round(result.connect_s, 1),
        "uplink_bytes_per_site_day": uplink.get("total"),
        "uplink_by_kind": {k: v for k, v in uplink.items() if k != "total"},
        "resources": {role: u.summary() for role, u in sampler.usage.items()},
        "load_avg_1m_end": round(psutil.getloadavg()[0], 2),
    }
    if not args.keep:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    else:
        figures["workdir"] = str(workdir)
    return figures


def _print_text(f: dict[str, Any]) -> None:
    print(
        f"fleet: {f['gateways']} gateways x {f['devices']} devices, {f['minutes']:g} simulated "
        f"minutes at speed {f['speed']:g} ({f['storage']}, {f['ingesters']} ingester(s))"
    )
    print(f"  messages    {f['messages']} numbered, {f['msgs_per_s']} msgs/s, "
          f"{f['rows_per_s']} rows/s")  # fmt: skip
    print(f"  latency     p50 {f['latency_p50_s']} s, p99 {f['latency_p99_s']} s, "
          f"max {f['latency_max_s']} s (creation to committed row); simulator behind "
          f"schedule p50 {f['schedule_lag_p50_s']} s, p99 {f['schedule_lag_p99_s']} s")  # fmt: skip
    print(f"  delivery    lost {f['lost']}, duplicated {f['duplicated']}, "
          f"quarantined {f['quarantined']}, left in outboxes {f['undelivered_in_outboxes']}")  # fmt: skip
    for role, u in f["resources"].items():
        print(f"  {role:<11} cpu mean {u['cpu_mean_pct']}% (peak {u['cpu_peak_pct']}%), "
              f"rss peak {u['rss_peak_mb']} MB")  # fmt: skip
    if f["uplink_bytes_per_site_day"] is not None:
        print(f"  uplink      {f['uplink_bytes_per_site_day'] / 1e6:.2f} MB per site-day "
              f"{f['uplink_by_kind']}")  # fmt: skip


def main(argv: list[str]) -> int:
    """Entry point of ``mimamori bench fleet``."""
    args = _parser().parse_args(argv)
    try:
        figures = run(args)
    except ValueError as exc:
        print(f"mimamori bench fleet: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(figures))
    else:
        _print_text(figures)
    return 0 if figures["lost"] == 0 and figures["duplicated"] == 0 else 1
