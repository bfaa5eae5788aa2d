"""Dashboards as code: build, provisioning, push, and every panel's SQL on a seeded store.

Panels are read from the built JSON, so a new panel is tested without touching this file.
The seeded store is the same on both storage flavours (``db`` fixture).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import Database, _fresh_database
from mimamori.dashboards.build import build_all, iter_panels
from mimamori.dashboards.cli import main as dashboards_main
from mimamori.dashboards.errors import PushError
from mimamori.dashboards.macros import TimeRange, expand
from mimamori.dashboards.push import push
from mimamori.dashboards.query import DATASOURCE_UID
from mimamori.dashboards.runner import panel_queries, resolve_variables, run, shape_problems
from mimamori.simulators.bench.dashboards import main as bench_main
from mimamori.simulators.seed import SeedPlan, seed

UIDS = ["mimamori-fleet", "mimamori-alerts", "mimamori-site", "mimamori-device",
        "mimamori-platform"]  # fmt: skip


# --- build ---------------------------------------------------------------------------


@pytest.mark.parametrize("lang", ["ja", "en"])
def test_build_has_stable_uids_and_sql_panels(lang: str) -> None:
    models = build_all(lang)
    assert [m["uid"] for m in models] == UIDS
    for model in models:
        panels = list(iter_panels(model))
        ids = [p["id"] for p in panels]
        assert ids == list(range(1, len(ids) + 1)), model["uid"]
        for panel in panels:
            for target in panel.get("targets", []):
                assert target["datasource"]["uid"] == DATASOURCE_UID
                assert target["rawSql"].strip()
                assert target["format"] in ("table", "time_series")


def test_languages_differ_only_in_text() -> None:
    ja, en = build_all("ja"), build_all("en")
    for a, b in zip(ja, en, strict=True):
        assert a["uid"] == b["uid"] and a["title"] != b["title"]
        assert [p["type"] for p in iter_panels(a)] == [p["type"] for p in iter_panels(b)]
    assert any("稼働中" in p.get("title", "") for p in iter_panels(ja[0]))
    # Table columns keep their SQL names and are shown under a name in the build's language.
    table = next(p for p in iter_panels(ja[0]) if p["type"] == "table")
    names = {o["matcher"]["options"]: o["properties"][0]["value"]
             for o in table["fieldConfig"]["overrides"]
             if o["properties"][0]["id"] == "displayName"}  # fmt: skip
    assert names["heartbeat_age_s"] == "最終ハートビート" and names["tenant"] == "テナント"


def test_cli_build_writes_dashboards_and_provisioning(tmp_path: Path) -> None:
    out = tmp_path / "grafana"
    code = dashboards_main(["build", "--out", str(out), "--lang", "en", "--db-host", "store",
                            "--db-user", "reader", "--db-password-env", "STORE_PW"])  # fmt: skip
    assert code == 0
    files = sorted(p.name for p in (out / "dashboards").iterdir())
    assert files == sorted(f"{uid}.json" for uid in UIDS)
    model = json.loads((out / "dashboards" / "mimamori-site.json").read_text())
    assert model["title"] == "mimamori: site"
    ds = (out / "provisioning" / "datasources" / "mimamori.yaml").read_text()
    assert f'uid: "{DATASOURCE_UID}"' in ds and 'url: "store:5432"' in ds
    assert 'user: "reader"' in ds and 'password: "${STORE_PW}"' in ds
    provider = (out / "provisioning" / "dashboards" / "mimamori.yaml").read_text()
    assert f'path: "{(out / "dashboards").resolve()}"' in provider
    assert 'folderUid: "mimamori"' in provider


def test_cli_build_needs_a_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MIMAMORI_GRAFANA_DB_HOST", raising=False)
    assert dashboards_main(["build", "--out", str(tmp_path)]) == 2


# --- push against a stand-in for Grafana's HTTP API ----------------------------------


class _FakeGrafana(BaseHTTPRequestHandler):
    """Just enough of Grafana's folder and dashboard API, recording what it is sent."""

    folders: set[str]
    dashboards: dict[str, dict[str, Any]]
    requests: list[tuple[str, str, dict[str, Any] | None, str]]

    def _reply(self, code: int, body: dict[str, Any]) -> None:
        raw = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _body(self) -> dict[str, Any] | None:
        n = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(n)) if n else None

    def do_GET(self) -> None:
        self.requests.append(("GET", self.path, None, self.headers.get("Authorization", "")))
        uid = self.path.rsplit("/", 1)[-1]
        if self.path.startswith("/api/folders/") and uid in self.folders:
            self._reply(200, {"uid": uid, "title": uid})
        else:
            self._reply(404, {"message": "not found"})

    def do_POST(self) -> None:
        body = self._body()
        self.requests.append(("POST", self.path, body, self.headers.get("Authorization", "")))
        assert body is not None
        if self.path == "/api/folders":
            self.folders.add(body["uid"])
            self._reply(200, {"uid": body["uid"]})
        elif self.path == "/api/dashboards/db":
            uid = body["dashboard"]["uid"]
            if uid in self.dashboards and not body.get("overwrite"):
                self._reply(412, {"message": "exists"})
                return
            self.dashboards[uid] = body
            self._reply(200, {"uid": uid, "status": "success"})
        else:
            self._reply(404, {"message": "not found"})

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def grafana() -> Iterator[tuple[str, type[_FakeGrafana]]]:
    handler = type("H", (_FakeGrafana,), {"folders": set(), "dashboards": {}, "requests": []})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", handler
    server.shutdown()
    server.server_close()


def test_push_is_idempotent(grafana: tuple[str, type[_FakeGrafana]]) -> None:
    url, state = grafana
    first = push(url=url, token="tok", lang="ja")
    assert first.folder_created and first.dashboards == UIDS
    second = push(url=url, token="tok", lang="ja")
    assert not second.folder_created and second.dashboards == UIDS
    assert state.folders == {"mimamori"}
    assert sorted(state.dashboards) == sorted(UIDS)
    saves = [r for r in state.requests if r[1] == "/api/dashboards/db"]
    assert len(saves) == 10
    assert all(r[2] and r[2]["overwrite"] and r[2]["folderUid"] == "mimamori" for r in saves)
    assert all(r[3] == "Bearer tok" for r in state.requests)


def test_push_to_nowhere_is_a_clear_error() -> None:
    with pytest.raises(PushError, match="cannot reach"):
        push(url="http://127.0.0.1:9", token="t", lang="en", timeout_s=2)


# --- every panel on a seeded store ---------------------------------------------------

PLAN = dict(sites=3, days=3.0, devices_per_site=8, flows_per_site_day=600,
            alerts_per_site_day=4, heartbeat_interval_s=60)  # fmt: skip


@pytest.fixture(scope="module", params=["postgresql", "timescaledb"])
def seeded(request: pytest.FixtureRequest) -> tuple[Database, SeedPlan]:
    """One seeded database per storage flavour for this module (seeding takes seconds);
    the tests only read it. Same flavours and fresh databases as conftest's ``db``."""
    name = "pg_timescale" if request.param == "timescaledb" else "pg_plain"
    database = _fresh_database(request.getfixturevalue(name))
    plan = SeedPlan(**PLAN)
    seed(database.dsn, plan)
    return database, plan


def _flow_relations(plan_text: str) -> set[str]:
    """Relations a plan scans (``... on <relation> [alias]``) that hold flows."""
    # "Bitmap Index Scan on <index>" names an index, not a relation.
    names = {m.split(".")[-1] for m in re.findall(r"(?<!Bitmap Index Scan) on (\S+)", plan_text)}
    return {n for n in names if n.startswith(("flows", "_materialized_hypertable", "_hyper_"))}


def test_every_panel_runs_and_has_its_shape(seeded) -> None:
    """Every panel, both languages, three ranges (raw, 5-minute and hourly rollups)."""
    db, plan = seeded
    ranges = [timedelta(hours=2), timedelta(days=1), timedelta(days=30)]
    checked, with_rows = 0, 0
    with psycopg.connect(db.dsn, autocommit=True) as conn:
        for lang in ("ja", "en"):
            for model in build_all(lang):
                for span in ranges:
                    tr = TimeRange.last(span, now=plan.end)
                    variables = resolve_variables(conn, model, tr)
                    for q in panel_queries(model, tr):
                        result = run(conn, q, variables)
                        problems = shape_problems(result)
                        assert not problems, (model["uid"], q.title, span, problems, result.sql)
                        checked += 1
                        with_rows += bool(result.rows)
    targets = sum(
        len(p.get("targets", []))
        for lang in ("ja", "en")
        for m in build_all(lang)
        for p in iter_panels(m)
    )
    assert checked == len(ranges) * targets and targets > 80
    # The seed covers what panels read: nearly all return rows (the 2-hour range may miss
    # the few quarantined messages and alerts of a tiny seed).
    assert with_rows >= 0.85 * checked


def _relations_read(db: Database, plan: SeedPlan, uid: str, title: str) -> list[set[str]]:
    """Flow relations the plan of panel ``title`` scans with a 2-hour, 1-day and 30-day range
    (on TimescaleDB the materialization hypertables are named after their view)."""
    model = next(m for m in build_all("en") if m["uid"] == uid)
    seen = []
    with psycopg.connect(db.dsn, autocommit=True) as conn:
        mats: dict[str, str] = {}
        if db.storage == "timescaledb":
            mats = dict(conn.execute(
                "SELECT materialization_hypertable_name, view_name"
                " FROM timescaledb_information.continuous_aggregates").fetchall())  # fmt: skip
        for span in (timedelta(hours=2), timedelta(days=1), timedelta(days=30)):
            tr = TimeRange.last(span, now=plan.end)
            variables = resolve_variables(conn, model, tr)
            q = next(q for q in panel_queries(model, tr) if q.title == title)
            sql = expand(q.raw_sql, time_range=q.time_range, interval_ms=q.interval_ms,
                         variables=variables)  # fmt: skip
            text = "\n".join(r[0] for r in conn.execute(("EXPLAIN " + sql).encode()))
            rels = set()
            for rel in _flow_relations(text):
                if rel.startswith("_hyper_"):
                    hid = rel.split("_")[2]
                    rel = next((v for m, v in mats.items() if m.endswith(f"_{hid}")), "flows")
                rels.add(mats.get(rel, "flows" if rel.startswith("flows_p") else rel))
            seen.append(rels)
    return seen


def test_flow_series_read_one_relation_per_range(seeded) -> None:
    db, plan = seeded
    short, day, month = _relations_read(db, plan, "mimamori-site", "Traffic")
    if db.storage == "postgresql":
        assert short <= {"flows", "flows_default"}
        assert day == {"flows_5m"}
        assert month == {"flows_app_1h"}
    else:
        # Continuous aggregates are real-time: their newest buckets come from the relation
        # below them, so only the materialized side tells which one a range reads.
        assert short == {"flows"}
        assert "flows_5m" in day and not day & {"flows_1h", "flows_app_1h", "flows_1d"}
        assert "flows_app_1h" in month and "flows_1d" not in month
    device = _relations_read(db, plan, "mimamori-device", "Traffic")[2]
    assert "flows_1h" in device and not device & {"flows_app_1h", "flows_1d"}


def test_flow_totals_read_coarse_rollups_between_fine_edges(seeded) -> None:
    db, plan = seeded
    short, day, month = _relations_read(db, plan, "mimamori-site", "Top talkers (devices)")
    assert short <= {"flows", "flows_default"}
    if db.storage == "postgresql":
        assert day == {"flows_5m", "flows_1h"}
        assert month == {"flows_1h", "flows_1d"}
    else:
        assert {"flows_5m", "flows_1h"} <= day and "flows_1d" not in day
        assert {"flows_1h", "flows_1d"} <= month


@pytest.mark.parametrize("days", [1, 3, 30])
def test_flow_totals_equal_the_series_sums(seeded, days: int) -> None:
    """The tiered totals add up to exactly what one scan of the series' relation gives."""
    db, plan = seeded
    site = next(m for m in build_all("en") if m["uid"] == "mimamori-site")
    # An end off the hour and day boundaries, so that every range has partial edges.
    tr = TimeRange.last(timedelta(days=days), now=plan.end - timedelta(hours=5, minutes=7))
    relation = "flows_5m" if days < 4 else "flows_1h"
    with psycopg.connect(db.dsn, autocommit=True) as conn:
        variables = resolve_variables(conn, site, tr)
        q = next(q for q in panel_queries(site, tr) if q.title == "Traffic in range")
        (total,) = run(conn, q, variables).rows[0]
        gateways = list(variables["gateway"].values)
        (expected,) = conn.execute(
            f"SELECT coalesce(sum(bytes_out + bytes_in), 0) FROM {relation}"
            " WHERE tenant = %s AND gateway = ANY(%s) AND bucket BETWEEN %s AND %s",
            (variables["tenant"].values[0], gateways, tr.start, tr.end),
        ).fetchone()
        q = next(q for q in panel_queries(site, tr) if q.title == "Top talkers (devices)")
        talkers = run(conn, q, variables).rows
        (top,) = conn.execute(
            f"SELECT max(b) FROM (SELECT sum(bytes_out + bytes_in) AS b FROM {relation}"
            " WHERE tenant = %s AND gateway = ANY(%s) AND bucket BETWEEN %s AND %s"
            " GROUP BY mac, local_ip) x",
            (variables["tenant"].values[0], gateways, tr.start, tr.end),
        ).fetchone()
    assert total > 0 and total == expected
    assert talkers[0][4] + talkers[0][5] == top


def test_seeded_rollups_match_raw_flows(seeded) -> None:
    db, _ = seeded
    with psycopg.connect(db.dsn) as conn:
        sums = [conn.execute(f"SELECT sum(bytes_in), sum(conns), count(*) FROM {rel}").fetchall()[0]
                for rel in ("flows", "flows_5m", "flows_1h")]  # fmt: skip
        summaries = conn.execute("SELECT sum(summaries) FROM flows_1h").fetchone()
        rows = conn.execute("SELECT state, count(*) FROM gateways GROUP BY 1").fetchall()
        states: dict[str, int] = dict(rows)
    assert sums[0][2] > 1000
    assert sums[0][:2] == sums[1][:2] == sums[2][:2]
    assert summaries == (sums[0][2],)
    assert sum(states.values()) == PLAN["sites"]


def test_seed_leaves_every_index_valid(seeded) -> None:
    """The seed drops secondary indexes during the load and builds them again after."""
    db, _ = seeded
    with psycopg.connect(db.dsn) as conn:
        invalid = conn.execute(
            "SELECT indexrelid::regclass::text FROM pg_index WHERE NOT indisvalid"
        ).fetchall()
        # Every daily partition of flows and heartbeats carries the parent's indexes.
        unindexed = conn.execute(
            """
            SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
            WHERE i.inhparent IN (to_regclass('flows'), to_regclass('heartbeats'))
              AND c.relkind = 'r'
              AND NOT EXISTS (SELECT 1 FROM pg_index x WHERE x.indrelid = c.oid)
            """
        ).fetchall()
        names = {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes")}
    assert invalid == [] and unindexed == []
    assert {
        "flows_tenant_gateway_ts",
        "heartbeats_gateway_ts",
        "flows_1d_tenant_mac_bucket",
    } <= names


def test_bench_runs_on_a_tiny_store(plain_db, capsys: pytest.CaptureFixture[str]) -> None:
    code = bench_main(["--dsn", plain_db.dsn, "--sites", "2", "--days", "1",
                       "--flows-per-site-day", "200", "--runs", "1", "--json"])  # fmt: skip
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    (result,) = out["results"]
    expected = sum(1 for m in build_all("en") for p in iter_panels(m) if p.get("targets"))
    assert len(result["panels"]) == expected
    assert all(p["default_ms"] > 0 and p["30d_ms"] > 0 for p in result["panels"])
