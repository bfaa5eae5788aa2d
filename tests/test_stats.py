"""Alert statistics for sharing between providers: no identifiers leave, small cells are
generalised or suppressed (k-anonymity), and the STIX bundle holds only external
indicators."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
import stix2
from conftest import Database
from mimamori.cloud import report_cli, stats_export
from mimamori.cloud.migrate import migrate
from mimamori.cloud.stats_export import Cell, StatsConfig

TENANTS = {"tenant-alpha": "retail", "tenant-bravo": "retail", "tenant-charlie": "manufacturing",
           "tenant-delta": "retail"}  # fmt: skip
IP_RE = re.compile(r"\b\d{1,3}(\.\d{1,3}){3}\b|\b[0-9a-f]{1,4}(:[0-9a-f]{0,4}){2,7}\b", re.I)
MAC_RE = re.compile(r"\b[0-9a-f]{2}([:-][0-9a-f]{2}){5}\b", re.I)
SINCE, UNTIL = "2026-10-26", "2026-11-09"  # ISO weeks 44 and 45 of 2026


def _alert(conn: psycopg.Connection, n: int, tenant: str, category: str, severity: str,
           day: int, actor: str = "192.168.1.5", target: str = "",
           evidence: str = "{}") -> None:  # fmt: skip
    conn.execute(
        "INSERT INTO alerts (tenant, gateway, alert_id, category, severity, detected_at,"
        " actor, target, summary_en, summary_ja, dedup_key, mac, evidence) VALUES"
        " (%s, %s, %s, %s, %s, %s, %s, %s, 'en', 'ja', 'k', '02:aa:bb:cc:dd:ee', %s)",
        (tenant, f"gw-{tenant}", f"a{n}", category, severity,
         datetime(2026, 10, day, 12, tzinfo=UTC) if day > 9 else
         datetime(2026, 11, day, 12, tzinfo=UTC), actor, target, evidence),
    )  # fmt: skip


def _seed(dsn: str, *, industry: bool = True) -> None:
    migrate(dsn)
    with psycopg.connect(dsn) as conn:
        if industry:  # as a store whose tenants table has the optional industry column
            conn.execute("ALTER TABLE tenants ADD COLUMN IF NOT EXISTS industry text")
        for tenant, ind in TENANTS.items():
            conn.execute("INSERT INTO tenants (id) VALUES (%s)", (tenant,))
            if industry:
                conn.execute("UPDATE tenants SET industry = %s WHERE id = %s", (ind, tenant))
        n = 0
        for tenant in TENANTS:  # week 44: every tenant, 2 scans each
            for _ in range(2):
                n += 1
                _alert(conn, n, tenant, "scan", "medium", 27, actor="192.168.1.5")
        _alert(conn, 100, "tenant-alpha", "bruteforce", "high", 28, actor="1.2.3.4",
               target="192.168.1.10")  # fmt: skip
        _alert(conn, 101, "tenant-delta", "exposure", "low", 29)
        _alert(conn, 102, "tenant-bravo", "beacon", "high", 3, target="7.7.7.7")  # week 45
        # Indicator sources (week 45 too, all from tenant-bravo or -charlie).
        _alert(conn, 103, "tenant-bravo", "scan", "low", 4, actor="5.6.7.8",
               target="192.168.1.0/24")  # fmt: skip
        _alert(conn, 104, "tenant-charlie", "intel_match", "high", 4, actor="192.168.1.10",
               target="9.9.9.9", evidence='{"indicator": "bad-domain.xyz"}')  # fmt: skip
        _alert(conn, 105, "tenant-charlie", "intel_match", "high", 5, actor="192.168.1.11",
               target="2606:4700::6810:1", evidence='{"indicator": "printer.local"}')  # fmt: skip
        _alert(conn, 106, "tenant-charlie", "bruteforce", "medium", 5, actor="192.168.1.12",
               target="1.1.1.1")  # outbound: 1.1.1.1 is the victim, not an indicator
        _alert(conn, 107, "tenant-charlie", "scan", "low", 6, actor="10.0.0.8")


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_anonymise_generalises_then_suppresses() -> None:
    cells = {
        ("w", "retail", "scan", "medium"): Cell(6, {"a", "b", "d"}),
        ("w", "manufacturing", "scan", "medium"): Cell(2, {"c"}),
        ("w", "retail", "bruteforce", "high"): Cell(1, {"a"}),
        ("w", "retail", "exposure", "low"): Cell(1, {"d"}),
        ("v", "retail", "beacon", "high"): Cell(1, {"b"}),
    }
    kept, suppressed = stats_export.anonymise(cells, min_tenants=3)
    assert {k: (c.alerts, len(c.tenants)) for k, c in kept.items()} == {
        ("w", "retail", "scan", "medium"): (6, 3),
        ("w", "other", "other", "other"): (4, 3),  # c, a and d merged at the last step
    }
    assert suppressed == 1
    assert cells[("w", "manufacturing", "scan", "medium")].alerts == 2  # input untouched
    with pytest.raises(stats_export.StatsError):
        StatsConfig(min_tenants=1)


def test_statistics_export_has_no_identifiers(plain_db: Database, tmp_path: Path) -> None:
    _seed(plain_db.dsn)
    with psycopg.connect(plain_db.dsn) as conn:
        stats = stats_export.statistics(conn, since=_when(SINCE), until=_when(UNTIL))
    assert stats.rows == [
        {"week": "2026-W44", "industry": "other", "category": "other", "severity": "other",
         "alerts": 4, "tenants": 3},
        {"week": "2026-W44", "industry": "retail", "category": "scan", "severity": "medium",
         "alerts": 6, "tenants": 3},
    ]  # fmt: skip
    assert stats.suppressed_alerts == 6  # week 45: at most two tenants in any cell
    for fmt in ("csv", "json"):
        out = tmp_path / f"stats.{fmt}"
        rc = report_cli.main(["stats", "--dsn", plain_db.dsn, "--since", SINCE, "--until",
                              UNTIL, "--format", fmt, "--out", str(out)])  # fmt: skip
        assert rc == 0
        text = out.read_text(encoding="utf-8")
        for ident in [*TENANTS, *(f"gw-{t}" for t in TENANTS)]:
            assert ident not in text
        assert not IP_RE.search(text) and not MAC_RE.search(text)
    doc = json.loads((tmp_path / "stats.json").read_text(encoding="utf-8"))
    assert doc["rows"] == stats.rows and doc["min_tenants"] == 3
    assert (tmp_path / "stats.csv").read_text().splitlines()[0] == ",".join(stats_export.COLUMNS)


def test_industry_is_unknown_without_the_column(plain_db: Database) -> None:
    _seed(plain_db.dsn, industry=False)
    with psycopg.connect(plain_db.dsn) as conn:
        stats = stats_export.statistics(conn, since=_when(SINCE), until=_when(UNTIL),
                                        config=StatsConfig(min_tenants=2))  # fmt: skip
    assert {r["industry"] for r in stats.rows} <= {"unknown", "other"}
    assert {"week": "2026-W44", "industry": "unknown", "category": "scan", "severity": "medium",
            "alerts": 8, "tenants": 4} in stats.rows  # fmt: skip


def test_stix_bundle_holds_only_external_indicators(plain_db: Database, tmp_path: Path) -> None:
    _seed(plain_db.dsn)
    out = tmp_path / "indicators.json"
    rc = report_cli.main(["stats", "--dsn", plain_db.dsn, "--since", SINCE, "--until", UNTIL,
                          "--format", "stix", "--out", str(out)])  # fmt: skip
    assert rc == 0
    text = out.read_text(encoding="utf-8")
    bundle = stix2.parse(text, allow_custom=False)
    patterns = sorted(o.pattern for o in bundle.objects)
    assert patterns == [
        "[domain-name:value = 'bad-domain.xyz']",
        "[ipv4-addr:value = '1.2.3.4']",
        "[ipv4-addr:value = '5.6.7.8']",
        "[ipv6-addr:value = '2606:4700::6810:1']",
    ]
    assert all(o.type == "indicator" and o.pattern_type == "stix" for o in bundle.objects)
    for ident in [*TENANTS, *(f"gw-{t}" for t in TENANTS), "192.168.", "10.0.0.", "02:aa"]:
        assert ident not in text
    assert "1.1.1.1" not in text and "9.9.9.9" not in text  # victim; superseded by the domain


def test_stats_cli_rejects_bad_windows(plain_db: Database, tmp_path: Path) -> None:
    migrate(plain_db.dsn)
    base = ["stats", "--dsn", plain_db.dsn, "--out", str(tmp_path / "x.csv")]
    assert report_cli.main([*base, "--since", "2026-11-09", "--until", "2026-10-01"]) == 1
    assert report_cli.main([*base, "--since", "yesterday", "--until", "2026-10-01"]) == 2
    assert not (tmp_path / "x.csv").exists()


def test_gateway_add_records_the_tenants_industry(plain_db: Database) -> None:
    import subprocess
    import sys

    from mimamori.cloud.migrate import migrate

    migrate(plain_db.dsn)
    for i in range(3):
        subprocess.run(
            [sys.executable, "-m", "mimamori", "cloud", "gateway", "add", "--dsn", plain_db.dsn,
             "--tenant", f"shop{i}", "--gateway", f"shop{i}-gw", "--industry", "retail"],
            check=True, capture_output=True,
        )  # fmt: skip
    with psycopg.connect(plain_db.dsn) as conn:
        rows = conn.execute("SELECT id, industry FROM tenants ORDER BY id").fetchall()
    assert rows == [("shop0", "retail"), ("shop1", "retail"), ("shop2", "retail")]
