"""Monthly customer report: a seeded month rendered to HTML and PDF, figures checked in
the PDF's text (pdftotext) and its pages rendered (pdftoppm)."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, date, datetime
from pathlib import Path

import psycopg
import pytest
from conftest import Database
from mimamori.cloud import report, report_cli
from mimamori.cloud.migrate import migrate
from mimamori.cloud.report_templates import catalogue
from mimamori.protocol.messages import CATEGORIES

MONTH = date(2026, 10, 1)
# October 2026 in Tokyo: 2026-09-30 15:00 UTC .. 2026-10-31 15:00 UTC, 744 hours.
START, END = "2026-09-30 15:00+00", "2026-10-31 15:00+00"


def _heartbeats(conn: psycopg.Connection, gateway: str, start: str, end: str) -> None:
    conn.execute(
        """
        INSERT INTO heartbeats (ts, tenant, gateway, seq, interval_s, uptime_s, load1,
            mem_used_pct, disk_used_pct, packets_seen, packets_dropped, outbox_depth,
            outbox_bytes, agent_version, config_hash)
        SELECT ts, 'acme', %s, row_number() OVER (), 600, 1, 0.1, 10, 10, 0, 0, 0, 0, '1', 'h'
        FROM generate_series(%s::timestamptz, %s::timestamptz - interval '1 second',
                             interval '10 minutes') ts
        """,
        (gateway, start, end),
    )


def seed_month(dsn: str) -> dict[str, int]:
    """One tenant's October: two gateways (one with a 5-hour gap, one installed on the
    20th), alerts, two incidents, devices and labels. Returns the incident ids."""
    migrate(dsn)
    with psycopg.connect(dsn) as conn:
        conn.execute("INSERT INTO tenants (id, name) VALUES ('acme', 'Acme 株式会社')")
        conn.execute("INSERT INTO gateways (id, tenant) VALUES ('gw-a', 'acme'), ('gw-b', 'acme')")
        _heartbeats(conn, "gw-a", START, "2026-10-10 00:00+00")
        _heartbeats(conn, "gw-a", "2026-10-10 05:00+00", END)  # gap: 5 hours
        _heartbeats(conn, "gw-b", "2026-10-20 00:00+00", END)  # 279 hours, no gap
        inc = {}
        for key, cat, sev, status in (
            ("bf", "bruteforce", "high", "resolved"),
            ("scan", "scan", "medium", "open"),
        ):
            inc[key] = conn.execute(
                "INSERT INTO incidents (tenant, dedup_key, category, severity, status, title,"
                " gateway, alert_count, first_alert_at, last_alert_at, resolved_at) VALUES "
                "('acme', %s, %s, %s, %s, %s, 'gw-a', 2, '2026-10-05 01:00+00',"
                " '2026-10-05 02:00+00', CASE WHEN %s = 'resolved' THEN "
                "'2026-10-06 00:00+00'::timestamptz END) RETURNING id",
                (key, cat, sev, status, f"{cat} title", status),
            ).fetchone()[0]
        alerts = [("bruteforce", "high", "bf", "203.0.113.9", "192.168.1.10")] * 2
        alerts += [("scan", "medium", "scan", "198.51.100.7", "192.168.1.0/24")] * 3
        alerts += [("old_os", "low", "os", "192.168.1.20", "")]
        for i, (cat, sev, key, actor, target) in enumerate(alerts):
            conn.execute(
                "INSERT INTO alerts (tenant, gateway, alert_id, category, severity, detected_at,"
                " actor, target, summary_en, summary_ja, dedup_key, incident_id, evidence)"
                " VALUES ('acme', 'gw-a', %s, %s, %s, %s, %s, %s, 'en', 'ja', %s, %s,"
                " '{\"n\": 1}')",
                (f"a{i}", cat, sev, datetime(2026, 10, 5 + i % 2, 1, 30, tzinfo=UTC), actor,
                 target, key, inc.get(key)),
            )  # fmt: skip
        # An alert of another month is not counted.
        conn.execute(
            "INSERT INTO alerts (tenant, gateway, alert_id, category, severity, detected_at,"
            " actor, summary_en, summary_ja, dedup_key) VALUES ('acme', 'gw-a', 'old', 'scan',"
            " 'high', '2026-09-01 00:00+00', 'x', 'en', 'ja', 'k')"
        )
        for mac, host, first in (("02:00:00:00:00:01", "nas-01", "2026-09-01"),
                                 ("02:00:00:00:00:02", "camera-7", "2026-10-12")):
            conn.execute(
                "INSERT INTO devices (tenant, mac, gateway, ips, hostname, first_seen, last_seen)"
                " VALUES ('acme', %s, 'gw-a', ARRAY[%s::inet], %s, %s, '2026-10-30')",
                (mac, "192.168.1." + mac[-1], host, first),
            )  # fmt: skip
        conn.execute(
            "INSERT INTO device_labels (tenant, mac, gateway, outcome, fingerprint,"
            " catalogue_version, assessed_at, changed_at) VALUES ('acme', '02:00:00:00:00:02',"
            " 'gw-a', 'does_not_meet', 'f', '1', now(), now())"
        )
    return inc


def test_every_category_has_guidance() -> None:
    for category in CATEGORIES:
        g = catalogue.GUIDANCE[category]
        assert g.rule in catalogue.RULES and g.threat in catalogue.THREATS


def test_collect_counts_coverage_alerts_and_devices(plain_db: Database) -> None:
    seed_month(plain_db.dsn)
    with psycopg.connect(plain_db.dsn) as conn:
        data = report.collect(conn, tenant="acme", month=MONTH,
                              now=datetime(2026, 11, 20, tzinfo=UTC))  # fmt: skip
    assert data.hours_expected == 744 + 279
    assert data.hours_monitored == 744 + 279 - 5
    assert [(g.gateway, g.hours) for g in data.gaps] == [("gw-a", 5)]
    assert data.gaps[0].start == datetime(2026, 10, 10, tzinfo=UTC)
    assert sum(data.alerts_by_category.values()) == 6
    assert data.alerts_by_category["scan"] == 3
    assert {i["category"] for i in data.incidents} == {"bruteforce", "scan"}
    assert [d["hostname"] for d in data.devices] == ["nas-01", "camera-7"]
    assert data.devices[1]["outcome"] == "does_not_meet"
    cats = [a.category for a in data.actions]
    assert cats[0] == "bruteforce"  # the high-severity incident ranks first
    assert {"scan", "old_os", "gateway_offline"} <= set(cats)


def test_current_month_stops_at_now(plain_db: Database) -> None:
    seed_month(plain_db.dsn)
    with psycopg.connect(plain_db.dsn) as conn:
        data = report.collect(conn, tenant="acme", month=MONTH,
                              now=datetime(2026, 10, 2, 15, tzinfo=UTC))  # fmt: skip
    assert data.hours_expected == 48 and data.hours_monitored == 48


@pytest.mark.skipif(shutil.which("pdftotext") is None, reason="poppler-utils not installed")
@pytest.mark.parametrize("lang", ["ja", "en"])
def test_report_pdf_shows_the_figures(plain_db: Database, tmp_path: Path, lang: str) -> None:
    seed_month(plain_db.dsn)
    rc = report_cli.main(["--dsn", plain_db.dsn, "--tenant", "acme", "--month", "2026-10",
                          "--lang", lang, "--out", str(tmp_path)])  # fmt: skip
    assert rc == 0
    pdf = tmp_path / f"report-acme-2026-10-{lang}.pdf"
    html = (tmp_path / pdf.name.replace(".pdf", ".html")).read_text(encoding="utf-8")
    assert html.count("data:image/png;base64,") == 2
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], check=True,
                          capture_output=True, text=True).stdout  # fmt: skip
    flat = "".join(text.split())  # lines wrap anywhere in Japanese text and tables
    assert "1018/1023h" in flat and "99.5%" in flat
    assert "nas-01" in flat and "camera-7" in flat and "gw-a" in flat
    assert "192.168.1.1(02:00:00:00:00:01)" in flat
    if lang == "ja":
        phrases = ["見守り率", "パスワードを強化しよう", "解決", "★1を満たしていません"]
    else:
        phrases = ["Coverage", "Use strong passwords", "resolved", "does not meet ★1"]
    for phrase in phrases:
        assert "".join(phrase.split()) in flat, phrase
    subprocess.run(["pdftoppm", "-r", "30", "-png", str(pdf), str(tmp_path / "page")],
                   check=True)  # fmt: skip
    pages = sorted(tmp_path.glob("page*.png"))
    assert 1 <= len(pages) <= 6 and all(p.stat().st_size > 1000 for p in pages)


def test_cli_rejects_bad_input(plain_db: Database, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    seed_month(plain_db.dsn)
    base = ["--dsn", plain_db.dsn, "--out", str(tmp_path)]
    assert report_cli.main([*base, "--tenant", "nobody", "--month", "2026-10"]) == 1
    assert "unknown tenant" in capsys.readouterr().err
    assert report_cli.main([*base, "--tenant", "acme", "--month", "2026-13"]) == 1
    assert report_cli.main([*base, "--tenant", "acme", "--month", "2026-10",
                            "--format", "docx"]) == 1  # fmt: skip
    assert not list(tmp_path.iterdir())


def test_sample_writes_the_first_tenants_report(plain_db: Database, tmp_path: Path) -> None:
    seed_month(plain_db.dsn)
    path = report.sample(plain_db.dsn, out=tmp_path)
    assert path.exists() and path.suffix == ".pdf" and "acme" in path.name
