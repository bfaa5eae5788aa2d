"""``mimamori cloud``: migrate the schema, run the ingester and jobs, manage gateways.

::

    mimamori cloud migrate [--dsn DSN] [--storage auto|postgresql|timescaledb]
    mimamori cloud gateway add --tenant T --gateway G [--site S] [--name N] [--industry I]
    mimamori cloud gateway revoke --gateway G
    mimamori cloud gateway list [--tenant T]
    mimamori cloud ingest [--dsn DSN] [--mqtt-host H] [--mqtt-port P] [--metrics-port P]
    mimamori cloud jobs run-once|loop [--dsn DSN] [--interval S]
    mimamori cloud broker|token|user|api ...   (security: see mimamori.cloud.api.cli)
    mimamori cloud active --tenant T --gateway G --on|--off [--credentials]

Settings come from the environment (see :mod:`mimamori.cloud.settings`); options override.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from mimamori.cloud import settings as settings_mod
from mimamori.cloud.errors import CloudError


def _add_dsn(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dsn", help="PostgreSQL connection string (default: $MIMAMORI_DSN)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mimamori cloud", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("migrate", help="create or update the database schema (idempotent)")
    _add_dsn(p)
    p.add_argument("--storage", choices=["auto", "postgresql", "timescaledb"], default="auto",
                   help="storage flavour on the first run (default: detect)")  # fmt: skip

    p = sub.add_parser("gateway", help="register, revoke and list gateways")
    gsub = p.add_subparsers(dest="action", required=True)
    a = gsub.add_parser("add", help="register a gateway (and its tenant)")
    _add_dsn(a)
    a.add_argument("--tenant", required=True)
    a.add_argument("--gateway", required=True)
    a.add_argument("--site", default="")
    a.add_argument("--name", default="")
    a.add_argument(
        "--industry", help="the tenant's industry, for the shared alert statistics (e.g. retail)"
    )
    r = gsub.add_parser(
        "revoke",
        help="revoke a gateway in the registry: its messages go to quarantine "
        "('mimamori cloud broker revoke' also deletes its broker login)",
    )
    _add_dsn(r)
    r.add_argument("--gateway", required=True)
    ls = gsub.add_parser("list", help="list gateways")
    _add_dsn(ls)
    ls.add_argument("--tenant")

    p = sub.add_parser("ingest", help="run an ingester (joins the shared subscription)")
    _add_dsn(p)
    p.add_argument("--mqtt-host")
    p.add_argument("--mqtt-port", type=int)
    p.add_argument("--mqtt-username")
    p.add_argument("--mqtt-tls-ca")
    p.add_argument("--client-id", dest="mqtt_client_id")
    p.add_argument("--metrics-port", type=int, help="Prometheus exporter port (0: off)")
    p.add_argument("--batch-rows", type=int)
    p.add_argument("--batch-delay", type=float, dest="batch_delay_s")
    p.add_argument("--log-format", choices=["json", "console"], default="json")

    p = sub.add_parser("jobs", help="maintenance jobs: rollups, partitions, liveness, incidents")
    jsub = p.add_subparsers(dest="action", required=True)
    once = jsub.add_parser("run-once", help="run every job once and exit")
    _add_dsn(once)
    once.add_argument("--only", action="append", help="run only this job (repeatable)")
    loop = jsub.add_parser("loop", help="run the jobs forever, every --interval seconds")
    _add_dsn(loop)
    loop.add_argument("--interval", type=float, default=60.0)
    loop.add_argument("--only", action="append", help="run only this job (repeatable)")
    return parser


def _migrate(args: argparse.Namespace, dsn: str) -> int:
    from mimamori.cloud.migrate import migrate

    result = migrate(dsn, storage=args.storage)
    applied = ", ".join(f"{v:04d}" for v in result.applied) or "none (up to date)"
    print(f"schema version {result.version} on {result.storage}; applied: {applied}")
    return 0


def _gateway(args: argparse.Namespace, dsn: str) -> int:
    import psycopg
    from mimamori.cloud import registry

    try:
        with psycopg.connect(dsn) as conn:
            if args.action == "add":
                new = registry.add_gateway(
                    conn, tenant=args.tenant, gateway=args.gateway, site=args.site,
                    name=args.name, industry=args.industry,
                )  # fmt: skip
                print(f"gateway {args.gateway} ({args.tenant}): {'added' if new else 'exists'}")
            elif args.action == "revoke":
                registry.revoke_gateway(conn, args.gateway)
                print(f"gateway {args.gateway}: revoked in the registry (its messages go to "
                      "quarantine)")  # fmt: skip
                print(
                    "  its broker login still exists: to disconnect it and delete the login, "
                    f"run 'mimamori cloud broker revoke --gateway {args.gateway} --dir DIR' "
                    "(DIR: the broker's directory) / ブローカーのログインは残っています: "
                    "上のコマンドで削除してください",
                    file=sys.stderr,
                )
            else:
                for g in registry.list_gateways(conn, tenant=args.tenant):
                    revoked = " revoked" if g.revoked else ""
                    print(f"{g.tenant}\t{g.id}\t{g.state}{revoked}\t{g.last_seen or '-'}")
    except psycopg.OperationalError as exc:
        raise CloudError(f"cannot connect to the database: {exc}") from exc
    return 0


def main(argv: list[str]) -> int:
    """Entry point of ``mimamori cloud``."""
    if argv and argv[0] in ("broker", "token", "user", "api"):
        from mimamori.cloud.api import cli as security_cli

        return security_cli.main(argv)
    if argv and argv[0] == "active":
        from mimamori.cloud import active_cli

        return active_cli.main(argv[1:])
    args = _parser().parse_args(argv)
    overrides: dict[str, Any] = {"dsn": args.dsn}
    try:
        settings = settings_mod.from_env().with_overrides(**overrides)
        if args.command == "migrate":
            return _migrate(args, settings.require_dsn())
        if args.command == "gateway":
            return _gateway(args, settings.require_dsn())
        if args.command == "ingest":
            from mimamori.cloud.ingest_cli import run_ingest

            return run_ingest(args, settings)
        if args.command == "jobs":
            from mimamori.cloud.jobs.runner import run_cli

            return run_cli(args, settings)
    except CloudError as exc:
        print(f"mimamori cloud {args.command}: {exc}", file=sys.stderr)
        return 1
    return 2
