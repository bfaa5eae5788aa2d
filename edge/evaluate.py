"""``mimamori eval``: replay labelled captures and score detection against the labels.

The labels file (``labels.json``, see the shared data's README) lists malicious captures
with the alerts they must raise (category and acting IP) and benign captures that must
raise nothing of severity medium or above. Each capture is replayed through the real
gateway pipeline (:func:`~.replay.replay`) with its own ``home_net``; the report says per
capture which expected alerts were found or missed and which benign-capture alerts would
have paged the SOC, with ``recall`` and ``false_alerts`` over all of them. The exit status
is 0 when every expected alert is found and no false alert is raised, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mimamori.detect import ConfigError, DetectError, Engine, Intel, load_config, parse_feed
from mimamori.detect.config import DetectConfig
from mimamori.edge.capture import CaptureError
from mimamori.edge.inventory import VendorLookup
from mimamori.edge.replay import replay
from mimamori.edge.summaries import Network, parse_home_net
from mimamori.protocol import PAGING_SEVERITIES, Alert


class LabelsError(Exception):
    """The labels file is missing, unreadable or not in the expected shape."""


@dataclass
class CaptureCase:
    """One capture of the labels file and what it must (not) raise."""

    path: str  # as written in the labels file (relative to its folder)
    home_net: list[str]
    expected: list[dict[str, str]]  # [{"category": ..., "actor": ...}]
    benign: bool


@dataclass
class CaptureResult:
    path: str
    expected: list[dict[str, str]]
    found: list[dict[str, str]] = field(default_factory=list)
    missed: list[dict[str, str]] = field(default_factory=list)
    benign_alerts: list[dict[str, Any]] = field(default_factory=list)
    alerts: int = 0
    seconds: float = 0.0
    error: str = ""

    def ok(self) -> bool:
        return not (self.missed or self.benign_alerts or self.error)


def load_labels(path: Path) -> list[CaptureCase]:
    """Read ``labels.json`` into cases: malicious ones first, then benign ones."""
    try:
        doc = json.loads(path.read_text("utf-8"))
        cases = [
            CaptureCase(
                path=rel,
                home_net=list(entry["home_net"]),
                expected=[
                    {"category": e["category"], "actor": e["actor"]} for e in entry["expect"]
                ],
                benign=False,
            )
            for rel, entry in doc.get("captures", {}).items()
        ]
        benign_net = list(doc.get("benign_home_net", []))
        cases += [
            CaptureCase(path=rel, home_net=benign_net, expected=[], benign=True)
            for rel in doc.get("benign", [])
        ]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LabelsError(f"cannot read labels {path}: {exc}") from exc
    return cases


def _alert_doc(alert: Alert) -> dict[str, Any]:
    return {
        "category": alert.category,
        "severity": alert.severity,
        "actor": alert.actor,
        "target": alert.target,
        "rule": alert.rule,
        "summary": alert.summary_en,
    }


def score_case(case: CaptureCase, alerts: Sequence[Alert]) -> CaptureResult:
    """Compare one capture's alerts with its labels (pure: no replay)."""
    result = CaptureResult(path=case.path, expected=case.expected, alerts=len(alerts))
    raised = {(a.category, a.actor) for a in alerts}
    for exp in case.expected:
        (result.found if (exp["category"], exp["actor"]) in raised else result.missed).append(exp)
    if case.benign:
        result.benign_alerts = [_alert_doc(a) for a in alerts if a.severity in PAGING_SEVERITIES]
    return result


def evaluate(
    labels: Path,
    *,
    config: DetectConfig | None = None,
    intel: Intel | None = None,
    only: str = "",
) -> dict[str, Any]:
    """Replay every capture of ``labels`` and return the report (see the module doc)."""
    cfg = config or load_config()
    base = labels.parent
    # As on a gateway: the engine knows device vendors from the OUI registry.
    vendors = VendorLookup()
    results: list[CaptureResult] = []
    for case in load_labels(labels):
        if only and only not in case.path:
            continue
        nets: tuple[Network, ...] = tuple(parse_home_net(case.home_net))
        started = time.monotonic()
        try:
            out = replay(
                [str(base / case.path)],
                home_net=nets,
                engine_factory=lambda n: Engine(
                    home_net=n, config=cfg, intel=intel, vendor_of=vendors.lookup
                ),
                vendors=vendors,
                detect_config=cfg,
            )
        except CaptureError as exc:
            result = CaptureResult(path=case.path, expected=case.expected, error=str(exc))
            result.missed = list(case.expected)
        else:
            result = score_case(case, out.alerts)
        result.seconds = round(time.monotonic() - started, 2)
        results.append(result)
    expected = sum(len(r.expected) for r in results)
    found = sum(len(r.found) for r in results)
    false_alerts = sum(len(r.benign_alerts) for r in results)
    return {
        "labels": str(labels),
        "captures": [vars(r) | {"ok": r.ok()} for r in results],
        "expected": expected,
        "found": found,
        "recall": found / expected if expected else 1.0,
        "false_alerts": false_alerts,
        "errors": sum(1 for r in results if r.error),
        "ok": all(r.ok() for r in results),
    }


def _print_text(report: dict[str, Any]) -> None:
    for cap in report["captures"]:
        mark = "ok  " if cap["ok"] else "FAIL"
        print(f"{mark} {cap['path']} ({cap['alerts']} alerts, {cap['seconds']} s)")
        if cap["error"]:
            print(f"     error: {cap['error']}")
        for exp in cap["missed"]:
            print(f"     missed {exp['category']} by {exp['actor']}")
        for exp in cap["found"]:
            print(f"     found  {exp['category']} by {exp['actor']}")
        for alert in cap["benign_alerts"]:
            print(f"     false  [{alert['severity']}] {alert['category']} {alert['actor']}: "
                  f"{alert['summary']}")  # fmt: skip
    print(
        f"\nrecall {report['found']}/{report['expected']} = {report['recall']:.3f}, "
        f"false alerts {report['false_alerts']}, errors {report['errors']}"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mimamori eval",
        description="Replay the captures listed in a labels file through the gateway "
        "pipeline and report expected alerts found or missed, and benign captures' "
        "alerts of severity medium or higher.",
    )
    parser.add_argument("--labels", required=True, type=Path, help="labels.json")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument(
        "--intel",
        action="append",
        type=Path,
        default=[],
        metavar="FILE",
        help="threat-intel list or CSV feed to load (repeatable)",
    )
    parser.add_argument(
        "--config", type=Path, help="TOML file overriding detection thresholds (partial)"
    )
    parser.add_argument("--only", default="", help="only captures whose path contains this")
    return parser


def main(argv: list[str]) -> int:
    """Entry point of ``mimamori eval``."""
    args = _parser().parse_args(argv)
    try:
        cfg = load_config(args.config.read_text("utf-8") if args.config else None)
        intel = Intel()
        for feed in args.intel:
            intel = intel.merged(parse_feed(feed.read_text("utf-8"), source=feed.name))
        report = evaluate(args.labels, config=cfg, intel=intel, only=args.only)
    except (ConfigError, DetectError, LabelsError, OSError, ValueError) as exc:
        print(f"mimamori eval: {exc}", file=sys.stderr)
        return 2
    if args.json:
        json.dump(report, sys.stdout, ensure_ascii=False, indent=1)
        print()
    else:
        _print_text(report)
    return 0 if report["ok"] else 1
