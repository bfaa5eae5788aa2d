"""``mimamori bench``: benchmarks, one module per subject.

Each subject module exposes ``main(argv) -> int``; it prints a readable summary, or one
JSON object with ``--json``. Figures go to docs/performance.md with the command line.
"""

from __future__ import annotations

import importlib
import sys

SUBJECTS: dict[str, tuple[str, str]] = {
    "ingest": ("mimamori.simulators.bench.ingest", "raw COPY vs the MQTT-to-database pipeline"),
    "edge": ("mimamori.simulators.bench.edge", "edge pipeline vs bare nfstream on a capture"),
    "fleet": ("mimamori.simulators.bench.fleet", "a simulated fleet of gateways against one cloud"),
    "alert-latency": ("mimamori.simulators.bench.alert_latency", "packet-to-alert-row latency"),
    "dashboards": ("mimamori.simulators.bench.dashboards", "every panel query on seeded data"),
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] in {"-h", "--help"}:
        print("usage: mimamori bench <subject> [options]\n\nsubjects:")
        for name, (_, help_) in SUBJECTS.items():
            print(f"  {name:<14} {help_}")
        return 0
    if argv[0] not in SUBJECTS:
        print(f"mimamori bench: unknown subject {argv[0]!r}", file=sys.stderr)
        return 2
    module = importlib.import_module(SUBJECTS[argv[0]][0])
    result: int = module.main(argv[1:])
    return result
