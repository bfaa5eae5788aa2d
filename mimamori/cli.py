"""The ``mimamori`` command: one entry point, subcommand groups owned by components.

Each group lives in the component it belongs to and is imported only when used, so a
gateway installed with ``mimamori[edge]`` never imports the cloud's database driver.
A group module exposes ``main(argv: list[str]) -> int``.
"""

from __future__ import annotations

import importlib
import sys

# name -> (module, one-line help). Order is the order shown in --help.
GROUPS: dict[str, tuple[str, str]] = {
    "demo": (
        "mimamori.demo",
        "run the whole system on embedded defaults (broker, database, fleet)",
    ),
    "edge": ("mimamori.edge.cli", "gateway agent: run, enroll, check a config"),
    "replay": (
        "mimamori.edge.replay",
        "run the gateway pipeline over capture files and print what it would publish",
    ),
    "eval": ("mimamori.edge.evaluate", "replay labelled captures and score detection"),
    "cloud": ("mimamori.cloud.cli", "cloud: migrate, ingest, jobs, API"),
    "label": ("mimamori.cloud.labels_cli", "show JC-STAR-style labels of a site's devices"),
    "soc": ("mimamori.cloud.soc_cli", "SOC actions on alerts and incidents"),
    "report": ("mimamori.cloud.report_cli", "monthly customer report"),
    "dashboards": ("mimamori.dashboards.cli", "build and push Grafana dashboards"),
    "sim": ("mimamori.simulators.cli", "fleet and capture simulators"),
    "bench": (
        "mimamori.simulators.bench",
        "benchmarks: ingest, edge, fleet, alert-latency, dashboards",
    ),
}


#: The pip extra that brings a component's third-party dependencies.
EXTRAS = {"edge": "edge", "cloud": "cloud", "dashboards": "dashboards", "simulators": "sim"}


def _usage() -> str:
    width = max(len(name) for name in GROUPS)
    lines = ["usage: mimamori <command> [options]", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {help_}" for name, (_, help_) in GROUPS.items()]
    lines += ["", "Run 'mimamori <command> --help' for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help", "help"}:
        print(_usage())
        return 0
    if args[0] in {"-V", "--version"}:
        from mimamori import __version__

        print(f"mimamori {__version__}")
        return 0
    name, rest = args[0], args[1:]
    if name not in GROUPS:
        print(f"mimamori: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, _ = GROUPS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if (exc.name or "").startswith("mimamori"):
            raise  # our own module is missing: a packaging bug, not a missing extra
        # A gateway install lacks the cloud's extras: say which extra to install.
        extra = EXTRAS.get(module_name.split(".")[1], "all")
        print(
            f"mimamori {name}: this installation lacks a module it needs ({exc.name}). "
            f"Install the '{extra}' extra: pip install 'mimamori[{extra}]'",
            file=sys.stderr,
        )
        return 2
    result: int = module.main(rest)
    return result


if __name__ == "__main__":
    sys.exit(main())
