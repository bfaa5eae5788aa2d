"""``mimamori sim``: the fleet simulator and the capture synthesiser.

::

    mimamori sim fleet --gateways N --devices M --minutes T [--scenario NAME ...]
                       [--speed X] [--mqtt-host H] [--mqtt-port P] [--register DSN]
    mimamori sim pcap --profile NAME --out FILE [--seed S] [--hours A-B]
    mimamori sim list

``fleet`` runs simulated gateways against a broker (the gateways must be registered
with the cloud, or their messages are quarantined: ``--register DSN`` does it).
``pcap`` writes a capture file of the office day or of one scenario.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from mimamori.simulators import scenarios


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mimamori sim", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    f = sub.add_parser("fleet", help="simulated gateways publishing through real outboxes")
    f.add_argument("--gateways", type=int, required=True)
    f.add_argument("--devices", type=int, default=30, help="devices per site (default 30)")
    f.add_argument("--minutes", type=float, required=True, help="simulated minutes")
    f.add_argument("--speed", type=float, default=1.0, help="simulated seconds per wall second")
    f.add_argument(
        "--scenario", action="append", default=[], choices=scenarios.NAMES,
        help="inject a scenario at the next gateway (repeatable; gateway 0 gets the first)",
    )  # fmt: skip
    f.add_argument("--mqtt-host", default="127.0.0.1")
    f.add_argument("--mqtt-port", type=int, default=1883)
    f.add_argument("--prefix", default="sim", help="tenant and gateway id prefix")
    f.add_argument("--workers", type=int, default=0, help="processes (0: automatic)")
    f.add_argument("--seed", type=int, default=1)
    f.add_argument("--workdir", help="outboxes and ledgers (default: a temporary directory)")
    f.add_argument("--local-hour", type=float, help="pin the traffic profile to this JST hour")
    f.add_argument("--drain", type=float, default=120.0, help="seconds to wait for outboxes")
    f.add_argument("--register", metavar="DSN", help="register the gateways in this database")
    f.add_argument("--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("pcap", help="write a synthetic capture (office day or a scenario)")
    p.add_argument("--profile", required=True, help="office-day or a scenario name")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--devices", type=int, default=30)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--hours", help="JST hours to cover, e.g. 9-11 (office-day default 0-24; "
        "scenarios default 10-11)",
    )  # fmt: skip

    sub.add_parser("list", help="list capture profiles and scenarios")
    return parser


def _fleet(args: argparse.Namespace) -> int:
    from mimamori.simulators.fleet import FleetConfig, ProgressBar, register_fleet, run_fleet

    workdir = args.workdir or tempfile.mkdtemp(prefix="mimamori-fleet-")
    try:
        config = FleetConfig(
            gateways=args.gateways, devices=args.devices, minutes=args.minutes,
            speed=args.speed, scenarios=tuple(args.scenario), host=args.mqtt_host,
            port=args.mqtt_port, prefix=args.prefix, workers=args.workers, seed=args.seed,
            workdir=workdir, local_hour=args.local_hour, drain_s=args.drain,
        )  # fmt: skip
    except ValueError as exc:
        print(f"mimamori sim fleet: {exc}", file=sys.stderr)
        return 2
    if args.register:
        register_fleet(args.register, config)
    with ProgressBar(enabled=not args.quiet) as bar:
        result = run_fleet(config, progress=bar.update)
    alerts = ", ".join(f"{k}={v}" for k, v in sorted(result.alerts().items())) or "none"
    print(
        f"{config.gateways} gateways x {config.devices} devices, {config.minutes:g} simulated "
        f"minutes in {result.wall_s:.0f} s: {result.messages} messages numbered, "
        f"{result.undelivered} still in outboxes; alerts: {alerts}; "
        f"power cuts: {result.power_cuts}; workdir {result.workdir}"
    )
    return 0 if result.undelivered == 0 else 1


def _pcap(args: argparse.Namespace) -> int:
    from mimamori.simulators.pcapgen import PROFILES, write_profile

    if args.profile not in PROFILES:
        print(
            f"mimamori sim pcap: unknown profile {args.profile!r}; known: {', '.join(PROFILES)}",
            file=sys.stderr,
        )
        return 2
    hours = None
    if args.hours:
        try:
            a, b = (float(x) for x in args.hours.split("-", 1))
        except ValueError:
            print("mimamori sim pcap: --hours takes A-B, e.g. 9-11", file=sys.stderr)
            return 2
        if not 0 <= a < b <= 24:
            print("mimamori sim pcap: --hours must satisfy 0 <= A < B <= 24", file=sys.stderr)
            return 2
        hours = (a, b)
    stats = write_profile(args.profile, args.out, devices=args.devices, seed=args.seed, hours=hours)
    print(
        f"{args.out}: {stats.packets} packets, {stats.connections} connections, "
        f"{stats.bytes} bytes, {stats.first_ts:.0f}-{stats.last_ts:.0f}"
    )
    return 0


def main(argv: list[str]) -> int:
    """Entry point of ``mimamori sim``."""
    args = _parser().parse_args(argv)
    if args.command == "fleet":
        return _fleet(args)
    if args.command == "pcap":
        return _pcap(args)
    from mimamori.simulators.pcapgen import PROFILES

    print("capture profiles:", ", ".join(PROFILES))
    print("fleet scenarios: ", ", ".join(scenarios.NAMES))
    return 0
