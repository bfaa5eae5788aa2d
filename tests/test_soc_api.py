"""The SOC workflow API: tenant scope, roles, the incident state machine, the timeline and
an audit row for every action (real PostgreSQL, FastAPI TestClient).

Incidents are made the way production makes them: alerts inserted, then the incidents job.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from conftest import Database
from fastapi.testclient import TestClient
from mimamori.cloud import registry
from mimamori.cloud.api import audit, auth, workflow
from mimamori.cloud.api.app import create_app
from mimamori.cloud.api.context import BrokerEndpoint
from mimamori.cloud.jobs import incidents as incident_job
from mimamori.cloud.jobs.config import DEFAULT
from mimamori.cloud.migrate import migrate

PEPPER = b"s" * 32


class NoBroker:
    def provision_gateway(self, *, tenant: str, gateway: str, password: str) -> None:
        raise AssertionError("not used here")

    def revoke_gateway(self, gateway: str) -> None:
        raise AssertionError("not used here")


@dataclass
class Soc:
    client: TestClient
    dsn: str
    ana: dict[str, str]  # analyst of tenant ta
    bob: dict[str, str]  # analyst of tenant tb
    root: dict[str, str]  # admin
    ta: int  # the high incident of ta
    ta_low: int
    tb: int


def add_alert(
    conn: psycopg.Connection[Any],
    tenant: str,
    gateway: str,
    n: int,
    *,
    severity: str = "high",
    category: str = "scan",
) -> None:
    """One alert as a gateway would have sent it."""
    conn.execute(
        "INSERT INTO alerts (tenant, gateway, alert_id, category, severity, detected_at, actor,"
        " summary_en, summary_ja, dedup_key) VALUES (%s, %s, %s, %s, %s, %s, '10.0.0.9',"
        " %s, 'スキャン', %s)",
        (tenant, gateway, f"a{n}", category, severity, datetime(2026, 1, 1, n, tzinfo=UTC),
         f"{category} from 10.0.0.9 #{n}", f"k{n}"),
    )  # fmt: skip


def token(dsn: str, user: str) -> dict[str, str]:
    with psycopg.connect(dsn) as conn:
        return {"authorization": f"Bearer {auth.issue_api_token(conn, pepper=PEPPER, user=user)}"}


def make_app(dsn: str) -> Any:
    return create_app(
        dsn=dsn,
        pepper=PEPPER,
        broker=NoBroker(),
        endpoint=BrokerEndpoint(host="mqtt.test", port=8883, ca_pem="(ca)"),
    )


def seed(dsn: str) -> dict[str, int]:
    """Two tenants, three users, three incidents; return incident ids by name."""
    migrate(dsn)
    with psycopg.connect(dsn) as conn:
        for tenant, gw in (("ta", "gw-a"), ("tb", "gw-b")):
            registry.add_gateway(conn, tenant=tenant, gateway=gw)
        add_alert(conn, "ta", "gw-a", 1)
        add_alert(conn, "ta", "gw-a", 2, severity="low", category="arp_spoof")
        add_alert(conn, "tb", "gw-b", 3)
        auth.add_user(conn, user="ana", role="analyst", tenants=["ta"])
        auth.add_user(conn, user="bob", role="analyst", tenants=["tb"])
        auth.add_user(conn, user="root", role="admin", tenants=[])
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert incident_job.group(conn, config=DEFAULT) == 3
        rows = conn.execute("SELECT dedup_key, id FROM incidents").fetchall()
    ids = dict(rows)
    return {"ta": ids["k1"], "ta_low": ids["k2"], "tb": ids["k3"]}


@pytest.fixture
def soc(plain_db: Database) -> Iterator[Soc]:
    ids = seed(plain_db.dsn)
    with TestClient(make_app(plain_db.dsn)) as client:
        yield Soc(client, plain_db.dsn, token(plain_db.dsn, "ana"), token(plain_db.dsn, "bob"),
                  token(plain_db.dsn, "root"), ids["ta"], ids["ta_low"], ids["tb"])  # fmt: skip


def audit_rows(dsn: str, since: int = 0) -> list[tuple[str, str, str, str]]:
    with psycopg.connect(dsn) as conn:
        return [(e.actor, e.action, e.target, e.result) for e in audit.entries(conn)[since:]]


def test_list_filters_and_tenant_scope(soc: Soc) -> None:
    c = soc.client
    mine = c.get("/v1/incidents", headers=soc.ana).json()
    assert sorted(i["id"] for i in mine) == sorted([soc.ta, soc.ta_low])
    assert c.get("/v1/incidents", params={"tenant": "tb"}, headers=soc.ana).status_code == 403
    high = c.get("/v1/incidents", params={"min_severity": "high"}, headers=soc.ana).json()
    assert [i["id"] for i in high] == [soc.ta]
    cat = c.get("/v1/incidents", params={"category": "arp_spoof"}, headers=soc.root).json()
    assert [i["id"] for i in cat] == [soc.ta_low]
    gw = c.get("/v1/incidents", params={"gateway": "gw-b"}, headers=soc.root).json()
    assert [i["id"] for i in gw] == [soc.tb]
    window = {"since": "2026-01-01T01:30:00Z", "until": "2026-01-01T02:30:00Z"}
    assert [i["id"] for i in c.get("/v1/incidents", params=window, headers=soc.root).json()] == [
        soc.ta_low
    ]
    page1 = c.get("/v1/incidents", params={"limit": 2}, headers=soc.root).json()
    page2 = c.get(
        "/v1/incidents", params={"limit": 2, "before_id": page1[-1]["id"]}, headers=soc.root
    ).json()
    assert [i["id"] for i in page1 + page2] == sorted([soc.ta, soc.ta_low, soc.tb], reverse=True)
    assert c.get("/v1/incidents", params={"status": "resolved"}, headers=soc.root).json() == []


def test_other_tenants_incident_is_not_found_and_untouched(soc: Soc) -> None:
    c = soc.client
    before = len(audit_rows(soc.dsn))
    assert c.get(f"/v1/incidents/{soc.tb}", headers=soc.ana).status_code == 404
    assert c.post(f"/v1/incidents/{soc.tb}/acknowledge", headers=soc.ana).status_code == 404
    note = c.post(f"/v1/incidents/{soc.tb}/notes", json={"text": "x"}, headers=soc.ana)
    assert note.status_code == 404
    assert c.post(f"/v1/incidents/{soc.ta}/acknowledge", headers=soc.bob).status_code == 404
    with psycopg.connect(soc.dsn) as conn:
        statuses = dict(conn.execute("SELECT id, status FROM incidents").fetchall())
        assert conn.execute("SELECT count(*) FROM incident_notes").fetchone() == (0,)
    assert set(statuses.values()) == {"open"}
    rows = audit_rows(soc.dsn, before)
    assert rows == [
        ("ana", "incident.show", f"incident:{soc.tb}", "denied"),
        ("ana", "incident.acknowledge", f"incident:{soc.tb}", "denied"),
        ("ana", "incident.note", f"incident:{soc.tb}", "denied"),
        ("bob", "incident.acknowledge", f"incident:{soc.ta}", "denied"),
    ]
    # An id that exists nowhere is audited too, as invalid rather than denied.
    assert c.get("/v1/incidents/999999", headers=soc.root).status_code == 404
    assert audit_rows(soc.dsn)[-1] == ("root", "incident.show", "incident:999999", "invalid")


def test_workflow_end_to_end_with_timeline_and_audit(soc: Soc) -> None:
    c, i = soc.client, soc.ta
    before = len(audit_rows(soc.dsn))
    ack = c.post(f"/v1/incidents/{i}/acknowledge", headers=soc.ana)
    assert ack.status_code == 200
    assert ack.json()["status"] == "acknowledged" and ack.json()["assignee"] == "ana"
    assert ack.json()["acknowledged_by"] == "ana"
    assert (
        c.post(f"/v1/incidents/{i}/assign", json={"user": "bob"}, headers=soc.ana).status_code
        == 400
    )
    assert (
        c.post(f"/v1/incidents/{i}/assign", json={"user": "root"}, headers=soc.ana).json()[
            "assignee"
        ]
        == "root"
    )
    esc = c.post(f"/v1/incidents/{i}/escalate", headers=soc.ana,
                 json={"severity": "critical", "reason": "ransomware note seen"})  # fmt: skip
    assert esc.status_code == 200 and esc.json()["severity"] == "critical"
    disp = c.post(f"/v1/incidents/{i}/dispatch", headers=soc.ana,
                  json={"who": "Tanaka", "dispatched_at": "2026-01-02T09:00:00+09:00",
                        "outcome": "pending", "notes": "on the way"})  # fmt: skip
    assert disp.status_code == 200 and disp.json()["status"] == "dispatched"
    with psycopg.connect(soc.dsn) as conn:
        (did,) = conn.execute("SELECT id FROM dispatches WHERE incident_id = %s", (i,)).fetchone()
    out = c.post(f"/v1/incidents/{i}/dispatches/{did}/outcome", headers=soc.ana,
                 json={"outcome": "mitigated", "notes": "unplugged the NAS"})  # fmt: skip
    assert out.status_code == 200
    assert c.post(f"/v1/incidents/{i}/notes", json={"text": "customer told"},
                  headers=soc.ana).status_code == 200  # fmt: skip
    res = c.post(f"/v1/incidents/{i}/resolve", json={"note": "NAS rebuilt"}, headers=soc.ana)
    assert res.status_code == 200
    assert res.json()["status"] == "resolved" and res.json()["resolution"] == "NAS rebuilt"
    assert res.json()["resolved_by"] == "ana" and res.json()["resolved_at"] is not None

    detail = c.get(f"/v1/incidents/{i}", headers=soc.ana).json()
    kinds = [(e["kind"], e["text"]) for e in detail["timeline"]]
    assert kinds[0] == ("alert", "scan from 10.0.0.9 #1")
    assert ("dispatch", "Tanaka") in kinds and ("note", "customer told") in kinds
    actions = [e["text"] for e in detail["timeline"] if e["kind"] == "action"]
    assert actions == ["acknowledge", "assign", "escalate", "dispatch", "dispatch_outcome",
                       "resolve"]  # fmt: skip
    dispatch = next(e for e in detail["timeline"] if e["kind"] == "dispatch")
    assert dispatch["detail"]["outcome"] == "mitigated"
    assert dispatch["detail"]["notes"] == "unplugged the NAS"
    assert dispatch["at"].startswith("2026-01-02T00:00:00")
    esc_entry = next(e for e in detail["timeline"] if e["text"] == "escalate")
    assert esc_entry["detail"]["reason"] == "ransomware note seen"

    target = f"incident:{i}"
    assert audit_rows(soc.dsn, before) == [
        ("ana", "incident.acknowledge", target, "ok"),
        ("ana", "incident.assign", target, "invalid"),  # bob cannot see tenant ta
        ("ana", "incident.assign", target, "ok"),
        ("ana", "incident.escalate", target, "ok"),
        ("ana", "incident.dispatch", target, "ok"),
        ("ana", "incident.dispatch_outcome", target, "ok"),
        ("ana", "incident.note", target, "ok"),
        ("ana", "incident.resolve", target, "ok"),
        ("ana", "incident.show", target, "ok"),
    ]


def test_invalid_transitions_answer_409_and_change_nothing(soc: Soc) -> None:
    c, i = soc.client, soc.ta
    res = c.post(f"/v1/incidents/{i}/resolve", json={"note": "x"}, headers=soc.ana)
    assert res.status_code == 409 and "acknowledge it first" in res.json()["detail"]
    disp = c.post(f"/v1/incidents/{i}/dispatch", json={"who": "x"}, headers=soc.ana)
    assert disp.status_code == 409
    lower = c.post(f"/v1/incidents/{i}/escalate", json={"severity": "low", "reason": "r"},
                   headers=soc.ana)  # fmt: skip
    assert lower.status_code == 409 and "raise the severity" in lower.json()["detail"]
    assert c.post(f"/v1/incidents/{i}/acknowledge", headers=soc.ana).status_code == 200
    assert c.post(f"/v1/incidents/{i}/acknowledge", headers=soc.ana).status_code == 409
    assert c.post(f"/v1/incidents/{i}/resolve", json={"note": "ok"}, headers=soc.ana).is_success
    again = c.post(f"/v1/incidents/{i}/assign", json={"user": "ana"}, headers=soc.ana)
    assert again.status_code == 409 and "reopen it first" in again.json()["detail"]
    with psycopg.connect(soc.dsn) as conn:
        row = conn.execute("SELECT status, severity, assignee FROM incidents WHERE id = %s", (i,))
        assert row.fetchone() == ("resolved", "high", "ana")
        n = conn.execute("SELECT count(*) FROM incident_actions WHERE incident_id = %s", (i,))
        assert n.fetchone() == (2,)
    results = [r[3] for r in audit_rows(soc.dsn) if r[1].startswith("incident.")]
    assert results == ["invalid", "invalid", "invalid", "ok", "invalid", "ok", "invalid"]


def test_reopen_is_admin_only(soc: Soc) -> None:
    c, i = soc.client, soc.ta
    c.post(f"/v1/incidents/{i}/acknowledge", headers=soc.ana)
    c.post(f"/v1/incidents/{i}/resolve", json={"note": "done"}, headers=soc.ana)
    body = {"reason": "came back"}
    assert c.post(f"/v1/incidents/{i}/reopen", json=body, headers=soc.ana).status_code == 403
    assert audit_rows(soc.dsn)[-1][1:] == (f"POST /v1/incidents/{i}/reopen", "", "denied")
    ok = c.post(f"/v1/incidents/{i}/reopen", json=body, headers=soc.root)
    assert ok.status_code == 200 and ok.json()["status"] == "open"
    assert ok.json()["resolved_at"] is None
    assert c.post(f"/v1/incidents/{soc.tb}/reopen", json=body, headers=soc.root).status_code == 409
    # A new alert for the same problem opened a fresh incident: reopening the old one
    # would make two live incidents for one problem.
    c.post(f"/v1/incidents/{i}/acknowledge", headers=soc.ana)
    c.post(f"/v1/incidents/{i}/resolve", json={"note": "done"}, headers=soc.ana)
    with psycopg.connect(soc.dsn) as conn:
        conn.execute(
            "INSERT INTO alerts (tenant, gateway, alert_id, category, severity, detected_at,"
            " actor, summary_en, summary_ja, dedup_key) VALUES ('ta', 'gw-a', 'a9', 'scan',"
            " 'high', now(), 'x', 's', 's', 'k1')"
        )
    with psycopg.connect(soc.dsn, autocommit=True) as conn:
        incident_job.group(conn, config=DEFAULT)
    clash = c.post(f"/v1/incidents/{i}/reopen", json=body, headers=soc.root)
    assert clash.status_code == 409 and "newer incident" in clash.json()["detail"]


def test_audit_log_is_admin_only(soc: Soc) -> None:
    c = soc.client
    assert c.get("/v1/audit", headers=soc.ana).status_code == 403
    c.post(f"/v1/incidents/{soc.ta}/acknowledge", headers=soc.ana)
    got = c.get("/v1/audit", params={"actor": "ana", "action": "incident.acknowledge"},
                headers=soc.root)  # fmt: skip
    assert got.status_code == 200
    assert [(e["target"], e["tenant"], e["result"]) for e in got.json()] == [
        (f"incident:{soc.ta}", "ta", "ok")
    ]
    assert got.json()[0]["detail"] == {"from": "open", "to": "acknowledged"}
    assert len(c.get("/v1/audit", params={"limit": 2}, headers=soc.root).json()) == 2


@pytest.mark.parametrize(
    ("status", "action", "expected"),
    [
        ("open", "acknowledge", "acknowledged"),
        ("acknowledged", "dispatch", "dispatched"),
        ("dispatched", "dispatch", "dispatched"),
        ("dispatched", "resolve", "resolved"),
        ("acknowledged", "resolve", "resolved"),
        ("assigned", "resolve", "resolved"),
        ("resolved", "reopen", "open"),
        ("open", "escalate", "open"),
        ("resolved", "note", "resolved"),
        ("open", "resolve", None),
        ("open", "dispatch", None),
        ("acknowledged", "acknowledge", None),
        ("resolved", "escalate", None),
        ("open", "reopen", None),
    ],
)
def test_state_machine_table(status: str, action: workflow.Action, expected: str | None) -> None:
    if expected is None:
        with pytest.raises(workflow.TransitionError, match=f"cannot {action}"):
            workflow.next_status(status, action)
    else:
        assert workflow.next_status(status, action) == expected


def test_nul_bytes_are_bad_input_not_a_database_error(soc: Soc) -> None:
    c = soc.client
    assert c.get("/v1/incidents", params={"tenant": "t\x00"}, headers=soc.root).status_code == 422
    assert c.get("/v1/audit", params={"actor": "\x00"}, headers=soc.root).status_code == 422
    for name in ("tenant", "gateway", "category"):
        bad = c.get("/v1/alerts", params={name: "a\x00"}, headers=soc.root)
        assert bad.status_code == 422, (name, bad.status_code)
    note = c.post(f"/v1/incidents/{soc.ta}/notes", json={"text": "a\x00b"}, headers=soc.root)
    assert note.status_code == 422
    who = c.post(f"/v1/incidents/{soc.ta}/assign", json={"user": "\x00"}, headers=soc.root)
    assert who.status_code == 422


def test_workflow_on_both_storages(db: Database) -> None:
    ids = seed(db.dsn)
    with TestClient(make_app(db.dsn)) as c:
        ana = token(db.dsn, "ana")
        assert c.post(f"/v1/incidents/{ids['ta']}/acknowledge", headers=ana).status_code == 200
        done = c.post(f"/v1/incidents/{ids['ta']}/resolve", json={"note": "ok"}, headers=ana)
        assert done.json()["status"] == "resolved"
        shown = c.get(f"/v1/incidents/{ids['ta']}", headers=ana).json()
    assert [e["kind"] for e in shown["timeline"]] == ["alert", "action", "action"]
