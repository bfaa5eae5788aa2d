"""``mimamori report``: customer reports from the store.

::

    mimamori report --tenant T --month YYYY-MM [--dsn DSN] [--lang ja|en] [--out DIR]
                    [--format html,pdf] [--tz ZONE]
    mimamori report stats --since DATE --until DATE [--format csv|json|stix] --out FILE
                    [--min-tenants K]
    mimamori report incident --incident ID [--out DIR]

Exit status: 0 done, 1 the store or the rendering failed, 2 bad options.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

from mimamori.cloud import settings as settings_mod
from mimamori.cloud.errors import CloudError


def _dsn(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dsn", help="PostgreSQL connection string (default: $MIMAMORI_DSN)")


def _month_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mimamori report",
        description="Monthly customer report (HTML and PDF). Subcommands: 'stats' (alert "
        "statistics for sharing between providers), 'incident' (evidence export).",
    )
    _dsn(p)
    p.add_argument("--tenant", required=True)
    p.add_argument("--month", required=True, help="YYYY-MM")
    p.add_argument("--lang", choices=("ja", "en"), default="ja")
    p.add_argument("--out", type=Path, default=Path("."), help="output folder")
    p.add_argument("--format", default="html,pdf", help="comma-separated: html, pdf")
    p.add_argument("--tz", default="Asia/Tokyo", help="time zone of the month")
    return p


def _stats_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mimamori report stats",
        description="Anonymous alert statistics (csv/json) or external indicators (STIX 2.1).",
    )
    _dsn(p)
    p.add_argument("--since", required=True, help="start date or time (ISO 8601, UTC)")
    p.add_argument("--until", required=True, help="end date or time, exclusive")
    p.add_argument("--format", choices=("csv", "json", "stix"), default="csv")
    p.add_argument("--out", type=Path, required=True, help="output file")
    p.add_argument("--min-tenants", type=int, default=None,
                   help="k-anonymity: cells from fewer tenants are merged (default 3)")  # fmt: skip
    return p


def _incident_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mimamori report incident",
        description="Evidence of one incident (JSON, PDF and SHA-256 sums) for an insurer.",
    )
    _dsn(p)
    p.add_argument("--incident", type=int, required=True)
    p.add_argument("--out", type=Path, default=Path("."), help="output folder")
    return p


def _when(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _run(argv: list[str]) -> int:
    if argv and argv[0] == "stats":
        args = _stats_parser().parse_args(argv[1:])
        try:
            since, until = _when(args.since), _when(args.until)
        except ValueError as exc:
            print(f"mimamori report stats: {exc}", file=sys.stderr)
            return 2
        from mimamori.cloud import stats_export

        dsn = settings_mod.from_env().with_overrides(dsn=args.dsn).require_dsn()
        cfg = stats_export.StatsConfig()
        if args.min_tenants is not None:
            cfg = stats_export.StatsConfig(min_tenants=args.min_tenants)
        n = stats_export.export(dsn, since=since, until=until, fmt=args.format, out=args.out,
                                config=cfg)  # fmt: skip
        print(f"{args.out}: {n} {'indicators' if args.format == 'stix' else 'rows'}")
        return 0
    if argv and argv[0] == "incident":
        args = _incident_parser().parse_args(argv[1:])
        from mimamori.cloud import evidence

        dsn = settings_mod.from_env().with_overrides(dsn=args.dsn).require_dsn()
        for path in evidence.export(dsn, incident=args.incident, out=args.out):
            print(path)
        return 0
    args = _month_parser().parse_args(argv)
    from mimamori.cloud import report

    formats = tuple(f.strip() for f in args.format.split(",") if f.strip())
    month = report.parse_month(args.month)
    dsn = settings_mod.from_env().with_overrides(dsn=args.dsn).require_dsn()
    paths = report.generate(dsn, tenant=args.tenant, month=month, out=args.out,
                            lang=args.lang, formats=formats, tz=args.tz)  # fmt: skip
    for path in paths.values():
        print(path)
    return 0


def main(argv: list[str]) -> int:
    """Entry point of ``mimamori report``."""
    try:
        return _run(argv)
    except CloudError as exc:
        print(f"mimamori report: {exc}", file=sys.stderr)
        return 1
