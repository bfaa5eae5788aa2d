"""``mimamori edge``: run the gateway agent, check its configuration, inspect its outbox.

::

    mimamori edge run --config FILE        run capture + outbox + publisher + heartbeats
    mimamori edge check-config FILE        validate a configuration file and print a summary
    mimamori edge outbox-stats (--config FILE | --path DB) [--json]
                                           depth, size, oldest message, drop counters
    mimamori edge enroll --token T --url URL [--ca FILE] [--state-dir DIR] [--config-out FILE]
                                           trade a one-time token for the broker credential
    mimamori edge factory-reset [--config FILE] [--state-dir DIR] [--yes]
                                           erase the site's data and the gateway's credentials
                                           (lists the files without --yes)

Exit status: 0 success, 1 runtime failure (capture died, outbox unusable), 2 bad usage or
an invalid configuration (the message names the field and the fix).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from types import FrameType

from mimamori.edge import config as cfg
from mimamori.edge.errors import ConfigError, EdgeError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mimamori edge", description="the gateway agent")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")

    run = sub.add_parser("run", help="run the gateway agent")
    run.add_argument("--config", required=True, type=Path, help="configuration file (TOML)")
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])

    check = sub.add_parser("check-config", help="validate a configuration file")
    check.add_argument("file", type=Path)

    stats = sub.add_parser("outbox-stats", help="show the outbox's depth, size and drops")
    where = stats.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", type=Path, help="read the outbox path from this config")
    where.add_argument("--path", type=Path, help="the outbox database file")
    stats.add_argument("--json", action="store_true", help="print JSON")

    enroll = sub.add_parser("enroll", help="enroll this gateway with a one-time token")
    enroll.add_argument("--token", required=True, help="the one-time token on the box")
    enroll.add_argument("--url", required=True, help="the cloud API, e.g. https://api.example")
    enroll.add_argument("--ca", type=Path, help="CA of the API's certificate (default: system)")
    enroll.add_argument("--state-dir", type=Path, default=Path("/var/lib/mimamori"),
                        help="where credential, broker CA and config go (mode 0600)")  # fmt: skip
    enroll.add_argument("--config-out", type=Path, help="configuration file to write "
                        "(default: <state-dir>/edge.toml)")  # fmt: skip
    reset = sub.add_parser("factory-reset", help="erase the site's data and the credentials")
    reset.add_argument("--config", type=Path, help="the gateway's configuration file")
    reset.add_argument("--state-dir", type=Path, default=Path("/var/lib/mimamori"),
                       help="enrollment's state directory (default /var/lib/mimamori)")  # fmt: skip
    reset.add_argument("--yes", action="store_true", help="really delete (default: list only)")
    return parser


def main(argv: list[str]) -> int:
    """Entry point of ``mimamori edge``."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            return _run(args.config, args.log_level)
        if args.command == "check-config":
            return _check(args.file)
        if args.command == "outbox-stats":
            return _stats(args.config, args.path, args.json)
        if args.command == "factory-reset":
            return _reset(args.config, args.state_dir, args.yes)
        return _enroll(args)
    except ConfigError as exc:
        print(f"mimamori edge: configuration error: {exc}", file=sys.stderr)
        return 2
    except EdgeError as exc:
        print(f"mimamori edge: {exc}", file=sys.stderr)
        return 1


def _reset(config_path: Path | None, state_dir: Path, yes: bool) -> int:
    from mimamori.edge.reset import erase, plan

    config = cfg.parse(_read(config_path), source=str(config_path)) if config_path else None
    paths = plan(config, state_dir if state_dir.is_dir() else None)
    if not paths:
        print("初期化: 削除するファイルはありません\nfactory reset: nothing to remove")
        return 0
    if not yes:
        print("初期化で削除されるファイル / files a factory reset removes:")
        for path in paths:
            print(f"  {path}")
        print("停止してから --yes を付けて実行してください / stop the agent, then add --yes")
        return 0
    result = erase(paths)
    for path in result.removed:
        print(f"  removed {path}")
    for path, why in result.failed:
        print(f"  NOT removed {path}: {why}", file=sys.stderr)
    print(result.summary())
    gateway = f" {config.gateway.id}" if config else " <gateway>"
    print(f"クラウド側の認証情報は SOC が失効させてください / ask the SOC to revoke the "
          f"credential: mimamori cloud gateway revoke --gateway{gateway}")  # fmt: skip
    return 1 if result.failed else 0


def _enroll(args: argparse.Namespace) -> int:
    from mimamori.edge.enroll import enroll

    result, path = enroll(
        url=args.url, token=args.token, state_dir=args.state_dir, ca_file=args.ca,
        config_out=args.config_out,
    )  # fmt: skip
    print(f"enrolled as gateway {result.gateway} of tenant {result.tenant}; "
          f"run: mimamori edge run --config {path}")  # fmt: skip
    return 0


def _run(path: Path, level: str) -> int:
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        logging.getLogger(__name__).info("received %s", signal.Signals(signum).name)
        stop.set()

    # First thing: a SIGTERM during start-up (opening a large outbox, starting capture)
    # must still end in a clean shutdown.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    config = cfg.load(path)
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # paho logs every reconnect attempt at its own level; ours are enough.
    logging.getLogger("paho").setLevel(logging.WARNING)
    from mimamori.edge.agent import Agent

    return Agent(config=config).run(stop)


def _check(path: Path) -> int:
    config = cfg.load(path)
    creds = cfg.credentials(config)
    m = config.mqtt
    transport = "plain TCP (loopback test broker)" if m.insecure_plaintext else "TLS"
    print(f"{path}: valid")
    print(f"  gateway   {config.gateway.id} (tenant {config.gateway.tenant})")
    print(f"  broker    {m.host}:{m.port} over {transport}, "
          f"user {creds.username if creds else '(anonymous)'}")  # fmt: skip
    print(f"  capture   {config.capture.interface or '(off: heartbeats only)'}")
    print(f"  outbox    {config.outbox.path} (budget {config.outbox.budget_mb} MB)")
    print(f"  heartbeat every {config.heartbeat.interval_s:g} s")
    print(f"  hash      {cfg.config_hash(config)}")
    return 0


def _stats(config_path: Path | None, db_path: Path | None, as_json: bool) -> int:
    from mimamori.edge.outbox import MIB, Outbox

    budget = 512 * MIB
    if config_path is not None:
        config = cfg.parse(_read(config_path), source=str(config_path))
        db_path = Path(config.outbox.path)
        budget = config.outbox.budget_mb * MIB
    assert db_path is not None
    if not db_path.exists():
        print(f"mimamori edge: no outbox at {db_path}", file=sys.stderr)
        return 1
    with Outbox(path=db_path, budget_bytes=budget, check=False) as box:
        stats = box.stats()
    doc = asdict(stats)
    if as_json:
        print(json.dumps(doc, sort_keys=True))
        return 0
    age = f"{time.time() - stats.oldest_created_at:.0f} s" if stats.oldest_created_at else "-"
    print(f"outbox    {db_path}")
    print(f"depth     {stats.depth} message(s) waiting for the cloud's ack")
    print(f"size      {stats.bytes / MIB:.1f} MB of {stats.budget / MIB:.0f} MB budget")
    print(f"oldest    seq {stats.oldest_seq if stats.oldest_seq is not None else '-'}, age {age}")
    print(f"next seq  {stats.last_seq + 1} (or the time floor, if higher)")
    dropped = ", ".join(f"{k} {v}" for k, v in sorted(stats.dropped.items())) or "none"
    print(f"dropped   {dropped} (disk budget / age); rejected (too large): {stats.rejected}")
    return 0


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc}).") from exc
