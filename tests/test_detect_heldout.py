"""Detection on held-out captures: attack variants and a benign week the shared set lacks.

The shared captures are what the thresholds were checked against; an outsider will run
``mimamori replay`` on others. These tests write the variants of
:mod:`mimamori.simulators.heldout` (other scans, C2 beacons with long periods and jitter,
lateral movement over WinRM/RPC/SMB, DNS tunnels with TXT/NULL records and base32 labels,
password guessing at tool pace) and a week of a small office's IoT devices into a
temporary directory, and replay each through the real gateway pipeline with the default
engine, as ``mimamori replay`` does.

Goals: every variant raises its category naming the acting host, and the office PCs
browsing in the background of each variant page nobody; the benign week raises nothing
of medium or above, and at most ``LOW_BUDGET_PER_DEVICE_DAY`` info/low findings per
device and day.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from mimamori.edge.replay import replay
from mimamori.protocol import PAGING_SEVERITIES, Alert
from mimamori.simulators import heldout

#: Posture notes (info/low) a benign device may cause per day: one every ten days. A
#: week of 7 devices may then carry 4 notes, such as the new_device of a phone that
#: first shows up after the engine's learning hour.
LOW_BUDGET_PER_DEVICE_DAY = 0.1
#: The office PCs browsing in the background of every attack variant.
BYSTANDERS = {heldout.lan(21), heldout.lan(22)}


def _describe(alerts: list[Alert]) -> str:
    counts = Counter((a.severity, a.category, a.actor, a.rule) for a in alerts)
    return "; ".join(f"{n}x [{s}] {c} by {actor} ({rule})" for (s, c, actor, rule), n in
                     sorted(counts.items())) or "no alerts"  # fmt: skip


@pytest.mark.parametrize("name", sorted(heldout.VARIANTS))
def test_attack_variant_raises_its_category_naming_the_actor(tmp_path: Path, name: str) -> None:
    case = heldout.write_variant(name, tmp_path)
    result = replay([str(case.path)], home_net=list(case.home_net))
    hits = [a for a in result.alerts if a.category == case.category and a.actor == case.actor]
    report = (
        f"{name} ({case.note}): expected {case.category} by {case.actor}; "
        f"{result.stats['flows']} flows; found: {_describe(result.alerts)}"
    )
    assert hits, report
    # The worst alert of the expected kind is one the SOC acts on, or a recorded note for
    # internet background scanning that nothing on the LAN answered.
    worst = max(hits, key=lambda a: list(PAGING_SEVERITIES).index(a.severity)
                if a.severity in PAGING_SEVERITIES else -1)  # fmt: skip
    inbound_unanswered = case.actor == heldout.INTERNET_ATTACKER and case.category == "scan"
    assert worst.severity in PAGING_SEVERITIES or inbound_unanswered, report
    bystanders = [a for a in result.alerts
                  if a.actor in BYSTANDERS and a.severity in PAGING_SEVERITIES]  # fmt: skip
    assert not bystanders, report


@pytest.mark.slow
def test_benign_iot_week_is_quiet(tmp_path: Path) -> None:
    week = heldout.write_iot_week(tmp_path / "week.pcap", days=7)
    result = replay([str(week.path)], home_net=list(week.home_net))
    device_days = len(week.devices) * week.days
    paging = [a for a in result.alerts if a.severity in PAGING_SEVERITIES]
    notes = [a for a in result.alerts if a.severity not in PAGING_SEVERITIES]
    rate = len(notes) / device_days
    report = (
        f"{len(week.devices)} devices x {week.days:g} days = {device_days:g} device-days, "
        f"{result.stats['flows']} flows; medium+ {len(paging)} "
        f"({len(paging) / device_days:.3f}/device-day), info/low {len(notes)} "
        f"({rate:.3f}/device-day, budget {LOW_BUDGET_PER_DEVICE_DAY}): "
        f"{_describe(result.alerts)}"
    )
    assert result.stats["flows"] > 10_000, report  # the week really was metered
    assert not paging, report
    assert rate <= LOW_BUDGET_PER_DEVICE_DAY, report
