"""``mimamori bench dashboards``: every panel query's time on a seeded store.

::

    mimamori bench dashboards [--sites 100] [--days 30] [--flows-per-site-day 4000]
                              [--storage both|postgresql|timescaledb] [--runs 5]
                              [--dsn DSN [--measure-only]] [--json]

For each storage a private PostgreSQL is started (or ``--dsn`` names an empty database),
seeded with :mod:`mimamori.simulators.seed`, and every panel of every built dashboard is
run as Grafana would run it (variables resolved, macros expanded) with the dashboard's
default range and with a 30-day range; the median of ``--runs`` runs is reported. Goal:
every panel under 200 ms. ``--measure-only`` times a store seeded before (by an earlier
``--dsn`` run) again, without seeding it: the ranges end at its newest flow row.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import asdict, replace
from datetime import timedelta
from typing import Any

import psycopg
from mimamori.cloud.migrate import schema_storage
from mimamori.dashboards.build import build_all
from mimamori.dashboards.macros import TimeRange, parse_interval
from mimamori.dashboards.runner import panel_queries, resolve_variables, run
from mimamori.simulators.seed import SeedPlan, SeedReport, seed
from mimamori.simulators.services import Postgres, timescaledb_available

#: The goal every panel query should meet.
GOAL_MS = 200.0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mimamori bench dashboards", description=__doc__.split("\n")[0]
    )
    p.add_argument("--sites", type=int, default=100)
    p.add_argument("--days", type=float, default=30.0)
    p.add_argument("--flows-per-site-day", type=int, default=4000)
    p.add_argument("--storage", choices=["both", "postgresql", "timescaledb"], default="both")
    p.add_argument("--runs", type=int, default=5, help="runs per query; the median is reported")
    p.add_argument("--lang", choices=["ja", "en"], default="en")
    p.add_argument("--dsn", help="seed and measure this (empty) database instead of a private one")
    p.add_argument(
        "--measure-only",
        action="store_true",
        help="with --dsn: do not seed; time the store as an earlier run left it",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p  # fmt: skip


def _default_range(model: dict[str, Any], plan: SeedPlan) -> TimeRange:
    # "now-24h" -> the last 24 hours before the seeded data's end.
    span = str(model.get("time", {}).get("from", "now-24h")).removeprefix("now-")
    return TimeRange.last(timedelta(milliseconds=parse_interval(span)), now=plan.end)


def measure(
    dsn: str, plan: SeedPlan, *, runs: int, lang: str, seeded: bool = False
) -> dict[str, Any]:
    """Seed ``dsn`` (unless ``seeded``) and time every panel; return the seed report and
    per-panel medians."""
    if seeded:
        plan, report = _seeded(dsn, plan)
    else:
        report = seed(dsn, plan)
    panels: list[dict[str, Any]] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        for model in build_all("ja" if lang == "ja" else "en"):
            ranges = {
                "default": _default_range(model, plan),
                "30d": TimeRange.last(timedelta(days=30), now=plan.end),
            }
            timings: dict[tuple[int, str], dict[str, Any]] = {}
            for label, tr in ranges.items():
                variables = resolve_variables(conn, model, tr)
                for q in panel_queries(model, tr):
                    samples, rows = [], 0
                    for _ in range(max(runs, 1)):
                        result = run(conn, q, variables)
                        samples.append(result.seconds * 1000)
                        rows = len(result.rows)
                    entry = timings.setdefault(
                        (q.panel_id, q.title),
                        {"dashboard": q.dashboard, "panel": q.title, "type": q.panel_type},
                    )
                    entry[f"{label}_ms"] = round(statistics.median(samples), 1)
                    entry[f"{label}_rows"] = rows
            panels.extend(timings.values())
    worst = max((max(p.get("default_ms", 0), p.get("30d_ms", 0)) for p in panels), default=0.0)
    slow = [p for p in panels if max(p.get("default_ms", 0), p.get("30d_ms", 0)) > GOAL_MS]
    return {
        "storage": report.storage,
        "seed": {"rows": report.rows, "seconds": report.seconds},
        "panels": panels,
        "worst_ms": worst,
        "over_goal": len(slow),
    }


def _seeded(dsn: str, plan: SeedPlan) -> tuple[SeedPlan, SeedReport]:
    """The plan of a store seeded earlier (its end: the newest flow's minute, plus one)."""
    with psycopg.connect(dsn) as conn:
        end = conn.execute("SELECT max(ts) FROM flows").fetchone()
        storage = schema_storage(dsn)
        rows = {
            rel: int(conn.execute(f"SELECT count(*) FROM {rel}").fetchone()[0])  # type: ignore[index]
            for rel in ("flows", "heartbeats", "receipts", "alerts", "incidents")
        }
    if not end or end[0] is None:
        raise SystemExit("--measure-only: the store has no flows; seed it first")
    plan = replace(plan, end=end[0] + timedelta(minutes=1))
    return plan, SeedReport(storage=storage, rows=rows)


def _print(result: dict[str, Any]) -> None:
    print(f"\n== {result['storage']}: seeded {result['seed']['rows']}")
    print(f"   seed seconds {result['seed']['seconds']}")
    print(f"   {'dashboard':<18} {'panel':<44} {'default ms':>10} {'30d ms':>8}")
    for p in result["panels"]:
        mark = " *" if max(p["default_ms"], p["30d_ms"]) > GOAL_MS else ""
        print(
            f"   {p['dashboard']:<18} {p['panel'][:44]:<44} "
            f"{p['default_ms']:>10.1f} {p['30d_ms']:>8.1f}{mark}"
        )
    print(f"   worst {result['worst_ms']:.1f} ms; {result['over_goal']} over {GOAL_MS:.0f} ms (*)")


def main(argv: list[str]) -> int:
    """Entry point of ``mimamori bench dashboards``."""
    args = _parser().parse_args(argv)
    plan = SeedPlan(sites=args.sites, days=args.days, flows_per_site_day=args.flows_per_site_day)
    results = []
    if args.measure_only and not args.dsn:
        print("--measure-only needs --dsn (the store seeded earlier)", file=sys.stderr)
        return 2
    if args.dsn:
        results.append(
            measure(args.dsn, plan, runs=args.runs, lang=args.lang, seeded=args.measure_only)
        )
    else:
        storages = ["postgresql", "timescaledb"] if args.storage == "both" else [args.storage]
        for storage in storages:
            if storage == "timescaledb" and not timescaledb_available():
                print("timescaledb: not installed, skipped", file=sys.stderr)
                continue
            with Postgres(timescaledb=storage == "timescaledb") as pg:
                results.append(measure(pg.dsn, plan, runs=args.runs, lang=args.lang))
    if args.json:
        print(json.dumps({"plan": {**asdict(plan), "end": plan.end.isoformat()},
                          "results": results}, ensure_ascii=False))  # fmt: skip
    else:
        for result in results:
            _print(result)
    return 0
