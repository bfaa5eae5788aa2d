"""Incident evidence export: JSON with timeline and hashed alerts, a PDF, and SHA-256 sums
that ``sha256sum -c`` accepts."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import psycopg
import pytest
from conftest import Database
from mimamori.cloud import evidence, report_cli
from mimamori.cloud.migrate import migrate


def _seed(dsn: str) -> tuple[int, bool]:
    """An incident of two alerts; a SOC action when the workflow tables exist."""
    migrate(dsn)
    with psycopg.connect(dsn) as conn:
        conn.execute("INSERT INTO tenants (id, name) VALUES ('acme', 'Acme')")
        conn.execute("INSERT INTO gateways (id, tenant) VALUES ('gw-a', 'acme')")
        inc = conn.execute(
            "INSERT INTO incidents (tenant, dedup_key, category, severity, status, title,"
            " gateway, alert_count, first_alert_at, last_alert_at, opened_at, resolved_at)"
            " VALUES ('acme', 'bf', 'bruteforce', 'high', 'resolved', 'Password guessing',"
            " 'gw-a', 2, '2026-10-05 01:00+00', '2026-10-05 01:05+00', '2026-10-05 01:01+00',"
            " '2026-10-05 03:00+00') RETURNING id"
        ).fetchone()[0]
        for i, minute in enumerate((0, 5)):
            conn.execute(
                "INSERT INTO alerts (tenant, gateway, alert_id, category, severity, detected_at,"
                " actor, target, summary_en, summary_ja, dedup_key, incident_id, mac, evidence)"
                " VALUES ('acme', 'gw-a', %s, 'bruteforce', 'high', %s, '1.2.3.4',"
                " '192.168.1.10:22', %s, 'パスワード総当たり', 'bf', %s, '02:00:00:00:00:01',"
                " '{\"attempts\": 40}')",
                (f"a{i}", f"2026-10-05 01:{minute:02d}+00", f"guess {i}", inc),
            )  # fmt: skip
        workflow = conn.execute("SELECT to_regclass('incident_actions') IS NOT NULL").fetchone()[0]
        if workflow:
            conn.execute(
                "INSERT INTO incident_actions (incident_id, at, actor, action, from_status,"
                " to_status) VALUES (%s, '2026-10-05 02:00+00', 'soc-1', 'resolve', 'open',"
                " 'resolved')",
                (inc,),
            )
    return inc, workflow


@pytest.mark.skipif(shutil.which("pdftotext") is None, reason="poppler-utils not installed")
def test_evidence_export_is_complete_and_verifiable(plain_db: Database, tmp_path: Path) -> None:
    inc, workflow = _seed(plain_db.dsn)
    assert report_cli.main(["incident", "--dsn", plain_db.dsn, "--incident", str(inc),
                            "--out", str(tmp_path)]) == 0  # fmt: skip
    doc = json.loads((tmp_path / f"incident-{inc}.json").read_text(encoding="utf-8"))
    assert doc["incident"]["id"] == inc and doc["tenant"]["name"] == "Acme"
    assert [a["alert_id"] for a in doc["alerts"]] == ["a0", "a1"]
    assert doc["alerts"][0]["evidence"] == {"attempts": 40}
    assert doc["alerts"][0]["mac"] == "02:00:00:00:00:01"
    events = [t["event"] for t in doc["timeline"]]
    expected = ["alert", "opened", "alert", *(["resolve"] if workflow else []), "resolved"]
    assert events == expected
    assert len(doc["actions"]) == (1 if workflow else 0)
    # Hashes: each alert's, the document's, and the files'.
    for a in doc["alerts"]:
        digest = a.pop("sha256")
        assert digest == evidence.sha256(evidence.canonical(a))
        a["sha256"] = digest
    content = doc.pop("content_sha256")
    assert content == evidence.sha256(evidence.canonical(doc))
    subprocess.run(["sha256sum", "-c", f"incident-{inc}.SHA256SUMS"], cwd=tmp_path, check=True,
                   capture_output=True)  # fmt: skip
    text = subprocess.run(["pdftotext", str(tmp_path / f"incident-{inc}.pdf"), "-"], check=True,
                          capture_output=True, text=True).stdout  # fmt: skip
    flat = "".join(text.split())  # table cells wrap long hashes and sentences
    assert content in flat and "guess1" in flat and "パスワード総当たり" in flat
    assert all(a["sha256"] in flat for a in doc["alerts"])
    # A changed file no longer verifies.
    with (tmp_path / f"incident-{inc}.json").open("a") as f:
        f.write(" ")
    check = subprocess.run(["sha256sum", "-c", f"incident-{inc}.SHA256SUMS"], cwd=tmp_path,
                           capture_output=True)  # fmt: skip
    assert check.returncode != 0


def test_unknown_incident_is_a_clear_error(plain_db: Database, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    migrate(plain_db.dsn)
    assert report_cli.main(["incident", "--dsn", plain_db.dsn, "--incident", "999",
                            "--out", str(tmp_path)]) == 1  # fmt: skip
    assert "unknown incident 999" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
