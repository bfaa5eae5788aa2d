"""Security commands of ``mimamori cloud``: broker/API secrets, tokens, SOC users, the API.

::

    mimamori cloud broker init --dir D --host H [--host H2] [--port 8883]
    mimamori cloud broker revoke --dir D --gateway G [--admin-host H] [--admin-port P]
    mimamori cloud broker add-ingester --dir D --username U [--admin-host H] [--admin-port P]
    mimamori cloud token issue --tenant T --gateway G [--ttl-days N] [--site S]
    mimamori cloud user add --user U --role analyst|admin [--tenant T ...]
    mimamori cloud user token --user U [--ttl-days N]
    mimamori cloud user revoke --user U
    mimamori cloud api serve --dir D [--bind 0.0.0.0] [--port 8443]
                             [--broker-host H] [--broker-port 8883]

``broker init`` writes into D: the CA (ca.pem, ca.key), the broker's and the API's
certificates, ``dynamic-security.json`` with a generated admin credential
(``dynamic-security.json.admin``), ``mosquitto.conf`` and the token ``pepper``; every
secret with mode 0600. Other commands find the pepper with ``--secrets D`` or
``$MIMAMORI_SECRETS_DIR``.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import ssl
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

from mimamori.cloud import settings as settings_mod
from mimamori.cloud.errors import CloudError, ConfigError

COMMANDS = ("broker", "token", "user", "api")
PEPPER_FILE = "pepper"


def _secrets_dir(arg: str | None) -> Path:
    value = arg or os.environ.get("MIMAMORI_SECRETS_DIR")
    if not value:
        raise ConfigError("no secrets directory: pass --secrets DIR or set MIMAMORI_SECRETS_DIR")
    return Path(value)


def read_pepper(directory: Path) -> bytes:
    """The token pepper written by ``broker init``."""
    path = directory / PEPPER_FILE
    try:
        if path.stat().st_mode & 0o077:
            raise ConfigError(f"{path} is readable by others; chmod 600 it")
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the token pepper {path}: {exc}") from exc


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mimamori cloud", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("broker", help="broker and API secrets")
    bsub = p.add_subparsers(dest="action", required=True)
    i = bsub.add_parser("init", help="write CA, certificates, dynsec file, config, pepper")
    i.add_argument("--dir", type=Path, required=True)
    i.add_argument(
        "--host", action="append", required=True, help="name or address clients use (repeatable)"
    )
    i.add_argument("--port", type=int, default=8883)
    i.add_argument("--local-port", type=int, help="loopback-only plaintext listener")
    i.add_argument(
        "--user",
        help="Unix user Mosquitto runs as (it drops root); gets the broker's key and dynsec file",
    )
    g = bsub.add_parser("add-ingester", help="create an ingester's broker login")
    g.add_argument("--dir", type=Path, required=True, help="directory of 'broker init'")
    g.add_argument("--username", required=True)
    g.add_argument("--admin-host", default="127.0.0.1", help="where the broker listens")
    g.add_argument("--admin-port", type=int, default=8883)
    r = bsub.add_parser("revoke", help="revoke a gateway: broker login, tokens, its data")
    r.add_argument("--dsn", help="PostgreSQL connection string (default: $MIMAMORI_DSN)")
    r.add_argument("--dir", type=Path, required=True, help="directory of 'broker init'")
    r.add_argument("--gateway", required=True)
    r.add_argument("--admin-host", default="127.0.0.1", help="where the broker listens")
    r.add_argument("--admin-port", type=int, default=8883)

    def dsn_and_secrets(q: argparse.ArgumentParser) -> None:
        q.add_argument("--dsn", help="PostgreSQL connection string (default: $MIMAMORI_DSN)")
        q.add_argument("--secrets", help="directory of 'broker init' ($MIMAMORI_SECRETS_DIR)")

    p = sub.add_parser("token", help="one-time enrollment tokens")
    tsub = p.add_subparsers(dest="action", required=True)
    t = tsub.add_parser("issue", help="issue a token for a gateway (registers it if new)")
    dsn_and_secrets(t)
    t.add_argument("--tenant", required=True)
    t.add_argument("--gateway", required=True)
    t.add_argument("--site", default="")
    t.add_argument("--ttl-days", type=float, default=14.0)

    p = sub.add_parser("user", help="SOC users of the API")
    usub = p.add_subparsers(dest="action", required=True)
    a = usub.add_parser("add", help="add a user and print its first API token")
    dsn_and_secrets(a)
    a.add_argument("--user", required=True)
    a.add_argument("--role", choices=["analyst", "admin"], required=True)
    a.add_argument("--tenant", action="append", default=[])
    a.add_argument("--ttl-days", type=float)
    k = usub.add_parser("token", help="issue another API token for a user")
    dsn_and_secrets(k)
    k.add_argument("--user", required=True)
    k.add_argument("--ttl-days", type=float)

    v = usub.add_parser("revoke", help="revoke every API token of a user")
    dsn_and_secrets(v)
    v.add_argument("--user", required=True)

    p = sub.add_parser("api", help="the HTTPS API")
    asub = p.add_subparsers(dest="action", required=True)
    s = asub.add_parser("serve", help="serve the API over TLS")
    s.add_argument("--dsn")
    s.add_argument("--dir", type=Path, required=True, help="directory of 'broker init'")
    s.add_argument("--bind", default="0.0.0.0")
    s.add_argument("--port", type=int, default=8443)
    s.add_argument("--broker-host", required=True, help="host gateways connect to")
    s.add_argument("--broker-port", type=int, default=8883)
    s.add_argument("--admin-host", default="127.0.0.1", help="where the API reaches the broker")
    s.add_argument("--admin-port", type=int, help="(default: --broker-port)")
    return parser


def _broker_init(args: argparse.Namespace) -> int:
    from mimamori.cloud import broker
    from mimamori.cloud.pki import CertificateAuthority, write_secret

    files = broker.prepare(
        args.dir, hosts=args.host, port=args.port, local_port=args.local_port, user=args.user
    )
    if args.user:
        # Mosquitto reads its key and rewrites the dynsec file as this user; the CA key,
        # the pepper and the admin credential stay with the operator.
        for path in (args.dir / "broker.key", files.config.dynsec_file):
            shutil.chown(path, user=args.user)
    ca = CertificateAuthority.load(args.dir)
    ca.issue_server(common_name=args.host[0], hosts=args.host).write(args.dir, "api")
    if not (args.dir / PEPPER_FILE).exists():
        write_secret(args.dir / PEPPER_FILE, secrets.token_bytes(32))
    print(f"wrote {files.config_path}, CA {files.ca}, admin credential {files.admin_credential}")
    return 0


def _admin(directory: Path, host: str, port: int) -> Any:
    from mimamori.cloud import broker

    user, password = broker.read_credential(directory / "dynamic-security.json.admin")
    context = ssl.create_default_context(cafile=str(directory / "ca.pem"))
    return broker.BrokerAdmin(
        host=host, port=port, username=user, password=password, ssl_context=context
    )


def _broker_revoke(args: argparse.Namespace, env: settings_mod.Settings) -> int:
    import psycopg
    from mimamori.cloud.api import audit
    from mimamori.cloud.api.enroll import revoke

    dsn = env.with_overrides(dsn=args.dsn).require_dsn()
    admin = _admin(args.dir, args.admin_host, args.admin_port)
    try:
        with psycopg.connect(dsn) as conn:
            spent = revoke(conn, args.gateway)
            # Broker first, then commit: a failure leaves nothing half-revoked in the registry.
            admin.revoke_gateway(args.gateway)
    finally:
        admin.close()
    audit.record(
        dsn,
        actor="cli",
        action="gateway.revoke",
        target=args.gateway,
        result="ok",
        detail={"tokens_spent": spent},
    )
    print(f"gateway {args.gateway}: revoked (broker login deleted, {spent} token(s) spent)")
    return 0


def _add_ingester(args: argparse.Namespace, env: settings_mod.Settings) -> int:
    from mimamori.cloud import broker
    from mimamori.cloud.pki import write_secret

    password = broker.new_password()
    admin = _admin(args.dir, args.admin_host, args.admin_port)
    try:
        admin.provision_ingester(username=args.username, password=password)
    finally:
        admin.close()
    path = args.dir / f"ingester-{args.username}.toml"
    write_secret(path, f'username = "{args.username}"\npassword = "{password}"\n'.encode())
    print(f"ingester {args.username}: created; its credential is in {path} (mode 0600)")
    return 0


def _ttl(days: float | None) -> timedelta | None:
    return None if days is None else timedelta(days=days)


def _db(args: argparse.Namespace, env: settings_mod.Settings) -> tuple[str, bytes]:
    return env.with_overrides(dsn=args.dsn).require_dsn(), read_pepper(_secrets_dir(args.secrets))


def _token(args: argparse.Namespace, env: settings_mod.Settings) -> int:
    import psycopg
    from mimamori.cloud.api import audit
    from mimamori.cloud.api.enroll import issue_token

    dsn, pepper = _db(args, env)
    with psycopg.connect(dsn) as conn:
        token, expires = issue_token(
            conn,
            pepper=pepper,
            tenant=args.tenant,
            gateway=args.gateway,
            ttl=timedelta(days=args.ttl_days),
            site=args.site,
            created_by="cli",
        )
    audit.record(
        dsn,
        actor="cli",
        action="token.issue",
        target=args.gateway,
        tenant=args.tenant,
        result="ok",
        detail={"expires_at": expires.isoformat()},
    )
    print(f"enrollment token for {args.gateway} ({args.tenant}), valid until {expires:%F %T %Z}:")
    print(token)
    return 0


def _user(args: argparse.Namespace, env: settings_mod.Settings) -> int:
    import psycopg
    from mimamori.cloud.api import audit, auth

    dsn, pepper = _db(args, env)
    with psycopg.connect(dsn) as conn:
        if args.action == "revoke":
            n = auth.revoke_api_tokens(conn, args.user)
            message = f"user {args.user}: {n} token(s) revoked"
        else:
            if args.action == "add":
                auth.add_user(conn, user=args.user, role=args.role, tenants=args.tenant)
            message = auth.issue_api_token(
                conn, pepper=pepper, user=args.user, ttl=_ttl(args.ttl_days)
            )
    audit.record(dsn, actor="cli", action=f"user.{args.action}", target=args.user, result="ok")
    print(message)
    return 0


def _serve(args: argparse.Namespace, env: settings_mod.Settings) -> int:
    import uvicorn
    from mimamori.cloud.api.app import create_app
    from mimamori.cloud.api.context import BrokerEndpoint

    d: Path = args.dir
    admin = _admin(d, args.admin_host, args.admin_port or args.broker_port)
    app = create_app(
        dsn=env.with_overrides(dsn=args.dsn).require_dsn(),
        pepper=read_pepper(d),
        broker=admin,
        endpoint=BrokerEndpoint(
            host=args.broker_host, port=args.broker_port, ca_pem=(d / "ca.pem").read_text()
        ),
    )
    uvicorn.run(
        app,
        host=args.bind,
        port=args.port,
        ssl_certfile=str(d / "api.pem"),
        ssl_keyfile=str(d / "api.key"),
        log_level="info",
    )
    admin.close()
    return 0


def main(argv: list[str]) -> int:
    """Entry point for the security subcommands of ``mimamori cloud``."""
    args = _parser().parse_args(argv)
    try:
        env = settings_mod.from_env()
        handler: Any = {
            ("broker", "init"): lambda a, _e: _broker_init(a),
            ("broker", "revoke"): _broker_revoke,
            ("broker", "add-ingester"): _add_ingester,
        }.get((args.command, args.action)) or {"token": _token, "user": _user, "api": _serve}[
            args.command
        ]
        return cast(int, handler(args, env))
    except CloudError as exc:
        print(f"mimamori cloud {args.command}: {exc}", file=sys.stderr)
        return 1
