"""``mimamori demo``: the whole system on embedded defaults, in about two minutes.

It lives in the root package, beside the command, because it orchestrates every
component (cloud, simulators, dashboards); no component may import all of them.

It starts a private Mosquitto and a private PostgreSQL (with TimescaleDB when the
extension is installed), creates the schema, starts the ingester and the cloud jobs as
separate processes (as in production), runs a fleet of simulated gateways (the edge's
real outbox and publisher) through the pilots' scenarios, with a sensor node behind one
gateway (relayed by the edge's real sensor relay: heartbeats, a touch on its canary, then
silence), and ends with a summary of what the cloud stored and detected. It writes the Grafana dashboards (and a sample report when
the report module is installed) under ``--out`` and removes everything else it started.
Nothing leaves the machine: it works offline.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mimamori.simulators import scenarios
from mimamori.simulators.services import Mosquitto, Postgres, timescaledb_available

#: Scenarios the demo runs, one gateway each; the other gateways are ordinary offices.
DEMO_SCENARIOS = scenarios.NAMES
SEVERITY_ORDER = ("critical", "high", "medium", "low", "info")
#: Alerts the cloud must raise about the demo's sensor node (see SimSensor in fleet.py).
SENSOR_EXPECTED = ("canary_touch", "sensor_offline")


@dataclass
class Stage:
    """A line on the console for each step, in Japanese and English."""

    quiet: bool = False

    def say(self, ja: str, en: str) -> None:
        if not self.quiet:
            print(f"▶ {ja} / {en}", flush=True)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mimamori demo", description=__doc__.split("\n")[0])
    p.add_argument("--gateways", type=int, default=20, help="simulated gateways (default 20)")
    p.add_argument("--devices", type=int, default=20, help="devices per site (default 20)")
    p.add_argument(
        "--minutes", type=float, default=60.0,
        help="simulated minutes of office traffic (default 60)",
    )  # fmt: skip
    p.add_argument(
        "--speed", type=float, default=40.0,
        help="simulated seconds per wall second (default 40: 60 min in 90 s)",
    )  # fmt: skip
    p.add_argument("--out", type=Path, default=Path("demo-output"), help="where to write results")
    p.add_argument(
        "--storage", choices=("auto", "postgresql", "timescaledb"), default="auto",
        help="auto: TimescaleDB when installed",
    )  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


@contextlib.contextmanager
def _process(argv: list[str], log: Path, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """A child process that is stopped with SIGTERM (graceful flush) on exit."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=out, env=env, start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def sensor_gateways(demo_scenarios: tuple[str, ...], gateways: int) -> tuple[int, ...]:
    """The gateway with the demo's sensor node: the ``ransomware`` site, whose infected PC
    is the one that touches the canary; without that scenario, the first gateway that
    runs no fault scenario (a killed or cut-off gateway would blur the sensor's story)."""
    if "ransomware" in demo_scenarios:
        return (demo_scenarios.index("ransomware"),)
    for i in range(gateways):
        if i >= len(demo_scenarios) or demo_scenarios[i] not in scenarios.FAULTS:
            return (i,)
    return ()


def sensor_job_settings(minutes: float, speed: float) -> dict[str, str]:
    """``MIMAMORI_SENSORS_*`` for the demo's jobs: the simulated node's heartbeat interval
    on the cloud's clock.

    The sensors job judges a node's silence on the cloud's (wall) clock, in the node's
    heartbeat intervals. The node heartbeats every ``SENSOR_HEARTBEAT_S`` simulated
    seconds (and announces that in its self-report), which the fleet plays ``speed`` times
    faster: the cloud hears it every ``SENSOR_HEARTBEAT_S / speed`` wall seconds, so that
    is the interval the job must assume (default and maximum). The node is silent for the
    second half of the run; it is declared offline after a quarter of the run without a
    heartbeat (at least 3 intervals, the production default), which leaves a quarter of
    margin on each side: against delivery stalls while it heartbeats, and before the run
    ends.
    """
    from mimamori.simulators.fleet import SENSOR_HEARTBEAT_S, SENSOR_SILENT_AT

    interval = SENSOR_HEARTBEAT_S / speed
    intervals = max(3.0, (1.0 - SENSOR_SILENT_AT) / 2 * minutes * 60.0 / SENSOR_HEARTBEAT_S)
    return {
        "MIMAMORI_SENSORS_DEFAULT_HEARTBEAT_S": f"{interval:g}",
        "MIMAMORI_SENSORS_MAX_HEARTBEAT_S": f"{interval:g}",
        "MIMAMORI_SENSORS_OFFLINE_AFTER_INTERVALS": f"{intervals:g}",
    }


def _wait_ingester_subscribed(log: Path, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the ingester exited early; see {log}")
        text = log.read_text(errors="replace") if log.exists() else ""
        if "subscribed" in text:
            return
        time.sleep(0.2)
    # Not fatal: a gateway re-sends whatever was not acknowledged.


def _query(dsn: str) -> dict[str, Any]:
    import psycopg

    out: dict[str, Any] = {}
    with psycopg.connect(dsn) as conn:
        one = conn.execute
        out["tenants"] = one("SELECT count(*) FROM tenants").fetchone()[0]  # type: ignore[index]
        out["gateways"] = dict(
            one("SELECT state, count(*) FROM gateways GROUP BY state").fetchall()
        )
        out["devices"] = one("SELECT count(*) FROM devices").fetchone()[0]  # type: ignore[index]
        out["flow_rows"] = one("SELECT count(*) FROM flows").fetchone()[0]  # type: ignore[index]
        out["messages"] = one("SELECT count(*) FROM receipts").fetchone()[0]  # type: ignore[index]
        out["quarantined"] = one("SELECT count(*) FROM quarantine").fetchone()[0]  # type: ignore[index]
        out["alerts"] = dict(
            one("SELECT severity, count(*) FROM alerts GROUP BY severity").fetchall()
        )
        out["incidents"] = dict(
            one("SELECT severity, count(*) FROM incidents GROUP BY severity").fetchall()
        )
        out["reported"] = one(
            "SELECT count(*) FROM gateways WHERE last_seen IS NOT NULL"
        ).fetchone()[0]  # type: ignore[index]
        out["alerts_by_category"] = one(
            "SELECT category, severity, count(*) FROM alerts GROUP BY 1, 2 ORDER BY 3 DESC"
        ).fetchall()
        out["receipts"] = set(one("SELECT gateway, seq FROM receipts").fetchall())
        out["alerts_by_gateway"] = {}
        for gateway, category, n in one(
            "SELECT gateway, category, count(*) FROM alerts GROUP BY gateway, category"
        ).fetchall():
            out["alerts_by_gateway"].setdefault(gateway, {})[category] = n
        out["sensor_alerts"] = one(
            "SELECT gateway, category, actor, target FROM alerts WHERE category = ANY(%s)",
            (list(SENSOR_EXPECTED),),
        ).fetchall()
    return out


def _by_severity(counts: dict[str, int]) -> str:
    parts = [f"{s} {counts[s]}" for s in SEVERITY_ORDER if counts.get(s)]
    return ", ".join(parts) if parts else "0"


def _summary(stats: dict[str, Any], config: Any, result: Any, storage: str) -> tuple[str, int]:
    """The closing summary, and how many scenarios were not detected."""
    lines = ["", "=" * 72, "mimamori デモ結果 / demo summary", "=" * 72]
    numbered = {(e.gateway, e.seq) for e in result.entries()}
    lost = len(numbered - stats["receipts"])
    lines += [
        f"storage / 保存先            : {storage}",
        f"customers / 顧客            : {stats['tenants']}",
        f"sites reporting / 報告した拠点: {stats['reported']} of {config.gateways}"
        " (all offline now: the simulation has ended / 模擬終了のため現在は全拠点オフライン)",
        f"devices / 機器               : {stats['devices']}",
        f"messages stored / 受信メッセージ: {stats['messages']} "
        f"(quarantined: {stats['quarantined']})",
        f"lost / 欠損                  : {lost} of {len(numbered)} messages the gateways numbered",
        f"flow summary rows / フロー要約: {stats['flow_rows']}",
        f"alerts / アラート            : {_by_severity(stats['alerts'])}",
        f"incidents / インシデント     : {_by_severity(stats['incidents'])}",
        "alerts by category / 種類別:",
        *(f"  {cat:<22} {sev:<8} {n}" for cat, sev, n in stats["alerts_by_category"]),
        "",
        "scenarios / シナリオ:",
    ]
    missed = 0
    for i in range(config.gateways):
        scenario = config.scenario_of(i)
        if scenario is None:
            continue
        gateway = config.gateway(i)
        found = stats["alerts_by_gateway"].get(gateway, {})
        expected = scenarios.EXPECTED.get(scenario, ())
        if expected:
            hit = [c for c in expected if found.get(c)]
            ok = len(hit) == len(expected)
            missed += 0 if ok else 1
            mark = "detected / 検知" if ok else f"MISSED / 未検知 (found: {sorted(found) or '-'})"
            lines.append(f"  {scenario:<15} {gateway}: {', '.join(expected)} → {mark}")
        else:
            state = (
                "no loss / 欠損なし"
                if result.gateways.get(gateway, {}).get("outbox_depth", 1) == 0
                else "outbox not drained / 未送信あり"
            )
            lines.append(f"  {scenario:<15} {gateway}: fault injected → {state}")
    sensor_lines, sensor_missed = _sensor_summary(stats, config, result)
    lines += sensor_lines
    return "\n".join(lines), missed + sensor_missed + (1 if lost else 0)


def _sensor_summary(stats: dict[str, Any], config: Any, result: Any) -> tuple[list[str], int]:
    """Lines about the sensor nodes, and how many of their expected alerts are missing.

    An alert counts only when it names what the node did: the canary alert the source
    address and the touched port, the offline alert the node and its gateway.
    """
    lines: list[str] = []
    missed = 0
    sim_end = result.clock.sim_start + config.minutes * 60.0
    for i in config.sensors:
        gateway = config.gateway(i)
        node = result.gateways.get(gateway, {}).get("sensor")
        if not node:
            lines += ["", f"sensor node / センサー at {gateway}: no report / 報告なし"]
            missed += len(SENSOR_EXPECTED)
            continue
        sensor = node["sensor_id"]
        relayed = sum(node["relayed"].values())
        dropped = sum(n for k, n in node["relay_counters"].items() if k.startswith("dropped"))
        lines += [
            "",
            f"sensor node / センサー {sensor} at {gateway}: {relayed} messages relayed "
            f"/ 中継 {relayed} 件 (dropped / 破棄: {dropped})",
        ]
        canary = node["canary"] or {}
        found = {
            (cat, actor, target)
            for gw, cat, actor, target in stats["sensor_alerts"]
            if gw == gateway
        }
        touched = f"{sensor}:{canary.get('port')}"
        silent_min = (sim_end - (node["last_sent"] or sim_end)) / 60.0
        expected = [
            ("canary_touch", (canary.get("src_ip"), touched),
             f"{canary.get('src_ip')}:{canary.get('src_port')} → port {canary.get('port')} "
             "touched the canary / おとりに接続"),
            ("sensor_offline", (sensor, gateway),
             f"silent for the last {silent_min:.0f} min / 最後の {silent_min:.0f} 分間無通信"),
        ]  # fmt: skip
        for category, (actor, target), what in expected:
            ok = (category, actor, target) in found
            missed += 0 if ok else 1
            mark = "detected / 検知" if ok else "MISSED / 未検知"
            lines.append(f"  {category:<15} {what} → {mark}")
    return lines, missed


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    from mimamori.cloud.migrate import migrate
    from mimamori.simulators.fleet import FleetConfig, ProgressBar, register_fleet, run_fleet

    stage = Stage()
    use_tsdb = {"auto": None, "postgresql": False, "timescaledb": True}[args.storage]
    if use_tsdb and not timescaledb_available():
        print("mimamori demo: --storage timescaledb, but TimescaleDB is not installed",
              file=sys.stderr)  # fmt: skip
        return 2
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="mimamori-demo-"))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cli = [sys.executable, "-m", "mimamori"]
    started = time.monotonic()
    try:
        stage.say(
            "非公開のブローカーとデータベースを起動", "starting a private broker and database"
        )
        with Mosquitto() as broker, Postgres(timescaledb=use_tsdb) as db:
            storage = db.storage
            stage.say(f"スキーマ作成 ({storage})", f"creating the schema on {storage}")
            migrate(db.dsn)
            demo_scenarios = tuple(DEMO_SCENARIOS[: args.gateways])
            config = FleetConfig(
                gateways=args.gateways, devices=args.devices, minutes=args.minutes,
                speed=args.speed, scenarios=demo_scenarios, port=broker.port, prefix="demo",
                workdir=str(work / "fleet"), local_hour=10.0, drain_s=60.0,
                power_cut_downtime_s=10.0,
                sensors=sensor_gateways(demo_scenarios, args.gateways),
            )  # fmt: skip
            register_fleet(db.dsn, config)
            jobs_env = {**env, **sensor_job_settings(args.minutes, args.speed)}
            stage.say("インジェスタとクラウドジョブを起動", "starting the ingester and cloud jobs")
            ingest_log = out / "ingester.log"
            ingest_log.unlink(missing_ok=True)
            with _process(
                [*cli, "cloud", "ingest", "--dsn", db.dsn, "--mqtt-port", str(broker.port),
                 "--log-format", "json"], ingest_log, env,
            ) as ingester, _process(
                [*cli, "cloud", "jobs", "loop", "--dsn", db.dsn, "--interval", "10"],
                out / "jobs.log", jobs_env,
            ):  # fmt: skip
                _wait_ingester_subscribed(ingest_log, ingester, timeout=20)
                stage.say(
                    f"{config.gateways} 拠点のゲートウェイを模擬 ({', '.join(config.scenarios)})",
                    f"simulating {config.gateways} gateways with scenarios",
                )
                for i in config.sensors:
                    stage.say(
                        f"{config.gateway(i)} の LAN にセンサー 1 台 (おとりへの接続、その後無通信)",
                        f"a sensor node behind {config.gateway(i)}: a canary touch, then silence",
                    )
                with ProgressBar(enabled=not args.quiet) as bar:
                    result = run_fleet(config, progress=bar.update)
                # Let the ingester commit the last batches, then run every job once more
                # so incidents and liveness reflect the end of the run.
                time.sleep(2.0)
                subprocess.run([*cli, "cloud", "jobs", "run-once", "--dsn", db.dsn],
                               check=False, capture_output=True, env=jobs_env)  # fmt: skip
                stats = _query(db.dsn)
            text, missed = _summary(stats, config, result, storage)
            print(text)
            _write_outputs(out, db, stage)
            stage.say("後片付け", "cleaning up")
        print(f"\nelapsed / 所要時間: {time.monotonic() - started:.0f} s")
        return 1 if missed else 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _write_outputs(out: Path, db: Postgres, stage: Stage) -> None:
    """Dashboards (and a sample report, where available) for the demo's database."""
    try:
        from mimamori.dashboards.build import StoreSettings, write
    except ImportError:
        print("dashboards: not installed (pip install 'mimamori[dashboards]')")
    else:
        store = StoreSettings(host=db.host, port=db.port, database=db.dbname, user=db.user,
                              sslmode="disable", timescaledb=db.storage == "timescaledb")  # fmt: skip
        paths = write(out / "grafana", lang="ja", store=store)
        print(f"dashboards / ダッシュボード: {len(paths)} files in {out / 'grafana'}")
    try:
        from mimamori.cloud import report
    except ImportError:
        print("sample report: not installed (pip install 'mimamori[cloud]')")
        return
    try:
        path = report.sample(db.dsn, out=out)
    except Exception as exc:  # the summary above matters more than the sample report
        print(f"sample report / レポート見本: not written ({type(exc).__name__}: {exc})")
    else:
        print(f"sample report / レポート見本: {path}")
