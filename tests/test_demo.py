"""The README's first command, scaled down: every scenario detected, nothing lost."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_demo_detects_every_scenario_and_loses_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "mimamori", "demo", "--gateways", "8", "--devices", "8",
         "--minutes", "20", "--speed", "40", "--out", str(out), "--quiet"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = proc.stdout
    assert "MISSED" not in text
    for scenario in ("beacon", "intel_match", "emotet", "rdp_bruteforce", "ransomware"):
        line = next(ln for ln in text.splitlines() if ln.strip().startswith(scenario) and "→" in ln)
        assert "detected" in line, line
    for fault in ("power_cut", "site_offline"):
        line = next(ln for ln in text.splitlines() if ln.strip().startswith(fault) and "→" in ln)
        assert "no loss" in line, line
    lost_line = next(ln for ln in text.splitlines() if ln.startswith("lost"))
    assert lost_line.split(":", 1)[1].strip().startswith("0 of "), lost_line
    assert (out / "grafana" / "provisioning" / "datasources" / "mimamori.yaml").exists()
    assert list((out / "grafana" / "dashboards").glob("*.json"))
