"""``mimamori dashboards``: build Grafana dashboards and provisioning files, or push them.

::

    mimamori dashboards build --out DIR [--lang ja|en] [--db-host H] [--db-port P]
                              [--db-name N] [--db-user U] [--db-password-env VAR]
                              [--db-sslmode M] [--timescaledb] [--dashboards-path PATH]
    mimamori dashboards push --url URL --token TOKEN [--lang ja|en]

Options fall back to the environment:

==============================  =============================================  ==========
variable                        meaning                                        default
==============================  =============================================  ==========
MIMAMORI_DASHBOARDS_LANG        ja or en                                       ja
MIMAMORI_GRAFANA_DB_HOST        store host as Grafana reaches it               (required)
MIMAMORI_GRAFANA_DB_PORT        its port                                       5432
MIMAMORI_GRAFANA_DB_NAME        database name                                  mimamori
MIMAMORI_GRAFANA_DB_USER        role Grafana logs in as (make it read-only)    grafana
MIMAMORI_GRAFANA_DB_SSLMODE     libpq sslmode                                  require
MIMAMORI_GRAFANA_URL            Grafana base URL (push)                        (required)
MIMAMORI_GRAFANA_TOKEN          service-account token (push)                   (required)
==============================  =============================================  ==========

The store's password is never written or given here: the data source file names an
environment variable (``--db-password-env``, default ``MIMAMORI_GRAFANA_DB_PASSWORD``) that
Grafana reads when it starts.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import cast

from mimamori.dashboards.errors import DashboardError
from mimamori.dashboards.panels import LANGS, Lang


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name, "")
    return value if value else default


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mimamori dashboards", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    lang = _env("MIMAMORI_DASHBOARDS_LANG", "ja")

    b = sub.add_parser("build", help="write dashboard JSON and Grafana provisioning files")
    b.add_argument("--out", required=True, type=Path, help="output directory")
    b.add_argument("--lang", choices=LANGS, default=lang, help="titles and labels (default ja)")
    b.add_argument("--db-host", default=_env("MIMAMORI_GRAFANA_DB_HOST"))
    b.add_argument(
        "--db-port", type=int, default=int(_env("MIMAMORI_GRAFANA_DB_PORT", "5432") or 0)
    )
    b.add_argument("--db-name", default=_env("MIMAMORI_GRAFANA_DB_NAME", "mimamori"))
    b.add_argument("--db-user", default=_env("MIMAMORI_GRAFANA_DB_USER", "grafana"))
    b.add_argument(
        "--db-password-env",
        default="MIMAMORI_GRAFANA_DB_PASSWORD",
        help="environment variable holding the password, in Grafana's environment",
    )
    b.add_argument(
        "--db-sslmode",
        default=_env("MIMAMORI_GRAFANA_DB_SSLMODE", "require"),
        choices=["disable", "require", "verify-ca", "verify-full"],
    )
    b.add_argument(
        "--timescaledb",
        action="store_true",
        help="tell Grafana the store is TimescaleDB (panels do not need it)",
    )
    b.add_argument(
        "--dashboards-path",
        help="where Grafana sees OUT/dashboards (default: its absolute path here)",
    )

    p = sub.add_parser("push", help="upload the dashboards to Grafana (idempotent)")
    p.add_argument("--url", default=_env("MIMAMORI_GRAFANA_URL"))
    p.add_argument("--token", default=_env("MIMAMORI_GRAFANA_TOKEN"))
    p.add_argument("--lang", choices=LANGS, default=lang)
    return parser  # fmt: skip


def main(argv: list[str]) -> int:
    """Entry point of ``mimamori dashboards``."""
    args = _parser().parse_args(argv)
    lang = cast(Lang, args.lang)
    try:
        if args.command == "build":
            from mimamori.dashboards.build import StoreSettings, write

            if not args.db_host:
                print("mimamori dashboards build: give --db-host or MIMAMORI_GRAFANA_DB_HOST "
                      "(the store's host as Grafana reaches it)", file=sys.stderr)  # fmt: skip
                return 2
            store = StoreSettings(
                host=args.db_host,
                port=args.db_port,
                database=args.db_name,
                user=args.db_user,
                password_env=args.db_password_env,
                sslmode=args.db_sslmode,
                timescaledb=args.timescaledb,
            )
            paths = write(args.out, lang=lang, store=store, dashboards_path=args.dashboards_path)
            for path in paths:
                print(path)
            return 0
        from mimamori.dashboards.push import push

        if not args.url or not args.token:
            print("mimamori dashboards push: give --url and --token (or MIMAMORI_GRAFANA_URL "
                  "and MIMAMORI_GRAFANA_TOKEN)", file=sys.stderr)  # fmt: skip
            return 2
        report = push(url=args.url, token=args.token, lang=lang)
        created = " (folder created)" if report.folder_created else ""
        print(f"pushed {len(report.dashboards)} dashboards to {args.url}{created}: "
              + ", ".join(report.dashboards))  # fmt: skip
        return 0
    except DashboardError as exc:
        print(f"mimamori dashboards: {exc}", file=sys.stderr)
        return 1
