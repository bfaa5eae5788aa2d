"""``mimamori eval``: scoring against labels, and the detection goal on the shared captures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mimamori.edge import evaluate
from mimamori.edge.evaluate import CaptureCase, load_labels, score_case
from mimamori.protocol import Alert


def _alert(category: str, actor: str, severity: str = "medium") -> Alert:
    return Alert(id="x", category=category, severity=severity, detected_at=1.0, actor=actor,
                 summary_en="s", summary_ja="s", dedup_key=f"{category}:{actor}")  # fmt: skip


@pytest.mark.parametrize(
    ("case", "alerts", "found", "missed", "false"),
    [
        (
            CaptureCase("m.pcap", [], [{"category": "scan", "actor": "10.0.0.1"}], False),
            [_alert("scan", "10.0.0.1"), _alert("beacon", "10.0.0.9", "high")],
            1, 0, 0,
        ),
        (
            CaptureCase("m.pcap", [], [{"category": "scan", "actor": "10.0.0.1"}], False),
            [_alert("scan", "10.0.0.2")],  # wrong actor
            0, 1, 0,
        ),
        (
            CaptureCase("b.pcap", [], [], True),
            [_alert("cleartext_credentials", "10.0.0.1", "low"), _alert("scan", "10.0.0.3")],
            0, 0, 1,  # only medium and above count against a benign capture
        ),
    ],
)  # fmt: skip
def test_score_case(
    case: CaptureCase, alerts: list[Alert], found: int, missed: int, false: int
) -> None:
    r = score_case(case, alerts)
    assert (len(r.found), len(r.missed), len(r.benign_alerts)) == (found, missed, false)
    assert r.ok() is (missed == 0 and false == 0)


def test_labels_file_loads(shared_data: Path) -> None:
    cases = load_labels(shared_data / "labels.json")
    assert any(c.benign for c in cases) and any(c.expected for c in cases)
    for c in cases:
        assert (shared_data / c.path).exists(), c.path


def test_cli_json_on_one_capture(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = evaluate.main(
        ["--labels", str(shared_data / "labels.json"), "--json", "--only", "scan/port_scan"]
    )
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert set(report) >= {"captures", "recall", "false_alerts"}
    (cap,) = report["captures"]
    assert set(cap) >= {"path", "expected", "found", "missed", "benign_alerts"}
    assert cap["found"] == [{"category": "scan", "actor": "192.168.2.154"}]
    assert report["recall"] == 1.0 and report["false_alerts"] == 0


def test_cli_reports_a_miss(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Thresholds no scan can reach: eval must say so and exit 1.
    override = tmp_path / "strict.toml"
    override.write_text("[scan]\nvertical_ports = 5000\nhorizontal_hosts = 5000\n")
    code = evaluate.main(
        ["--labels", str(shared_data / "labels.json"), "--only", "scan/port_scan",
         "--config", str(override)]
    )  # fmt: skip
    assert code == 1
    assert "missed scan by 192.168.2.154" in capsys.readouterr().out


def test_cli_bad_labels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "labels.json"
    bad.write_text("{not json")
    assert evaluate.main(["--labels", str(bad)]) == 2
    assert "cannot read labels" in capsys.readouterr().err


@pytest.mark.slow
def test_detection_goal_on_shared_captures(shared_data: Path) -> None:
    """Every malicious capture raises its expected alerts; no benign one pages the SOC."""
    report = evaluate.evaluate(shared_data / "labels.json")
    problems = [
        (c["path"], c["missed"], c["benign_alerts"], c["error"])
        for c in report["captures"]
        if not c["ok"]
    ]
    assert not problems
    assert report["recall"] == 1.0 and report["false_alerts"] == 0
