"""The API's authentication, tenant scope and audit trail (real PostgreSQL, TestClient).

The broker side of enrollment is replaced by a recorder here (the transport seam);
tests/test_enroll.py runs enrollment against a real Mosquitto over TLS.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from conftest import Database
from fastapi.testclient import TestClient
from mimamori.cloud import registry
from mimamori.cloud.api import audit, auth
from mimamori.cloud.api.app import create_app
from mimamori.cloud.api.context import BrokerEndpoint
from mimamori.cloud.api.enroll import issue_token
from mimamori.cloud.errors import ConfigError
from mimamori.cloud.migrate import migrate

PEPPER = b"p" * 32


class RecordingBroker:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def provision_gateway(self, *, tenant: str, gateway: str, password: str) -> None:
        self.calls.append(("provision", gateway))

    def revoke_gateway(self, gateway: str) -> None:
        self.calls.append(("revoke", gateway))


def _alert(
    conn: psycopg.Connection[Any], tenant: str, gateway: str, n: int, severity: str = "high"
) -> None:
    conn.execute(
        "INSERT INTO alerts (tenant, gateway, alert_id, category, severity, detected_at, actor,"
        " summary_en, summary_ja, dedup_key) VALUES (%s, %s, %s, 'scan', %s, %s, '10.0.0.9',"
        " 'scan', 'スキャン', %s)",
        (tenant, gateway, f"a{n}", severity, datetime(2026, 1, 1, tzinfo=UTC), f"k{n}"),
    )


@pytest.fixture
def api(plain_db: Database) -> Iterator[tuple[TestClient, str, RecordingBroker]]:
    migrate(plain_db.dsn)
    rec = RecordingBroker()
    app = create_app(
        dsn=plain_db.dsn,
        pepper=PEPPER,
        broker=rec,
        endpoint=BrokerEndpoint(host="mqtt.test", port=8883, ca_pem="(ca)"),
    )
    with psycopg.connect(plain_db.dsn) as conn:
        for tenant, gw in (("ta", "gw-a"), ("tb", "gw-b")):
            registry.add_gateway(conn, tenant=tenant, gateway=gw)
        _alert(conn, "ta", "gw-a", 1)
        _alert(conn, "ta", "gw-a", 2, severity="low")
        _alert(conn, "tb", "gw-b", 3)
        auth.add_user(conn, user="ana", role="analyst", tenants=["ta"])
        auth.add_user(conn, user="root", role="admin", tenants=[])
    with TestClient(app) as client:
        yield client, plain_db.dsn, rec


def _token(dsn: str, user: str, ttl: timedelta | None = None) -> dict[str, str]:
    with psycopg.connect(dsn) as conn:
        token = auth.issue_api_token(conn, pepper=PEPPER, user=user, ttl=ttl)
    return {"authorization": f"Bearer {token}"}


def _audit(dsn: str) -> list[audit.AuditEntry]:
    with psycopg.connect(dsn) as conn:
        return audit.entries(conn)


def test_analyst_sees_only_their_tenants_alerts(api: Any) -> None:
    client, dsn, _ = api
    ana = _token(dsn, "ana")
    got = client.get("/v1/alerts", headers=ana)
    assert got.status_code == 200
    assert {a["tenant"] for a in got.json()} == {"ta"} and len(got.json()) == 2
    assert client.get("/v1/alerts", params={"tenant": "tb"}, headers=ana).status_code == 403
    filtered = client.get("/v1/alerts", params={"min_severity": "medium"}, headers=ana).json()
    assert [a["summary_ja"] for a in filtered] == ["スキャン"] and filtered[0]["severity"] == "high"
    admin = client.get("/v1/alerts", headers=_token(dsn, "root")).json()
    assert {a["tenant"] for a in admin} == {"ta", "tb"}


def test_missing_expired_and_revoked_tokens_are_refused(api: Any) -> None:
    client, dsn, _ = api
    assert client.get("/v1/alerts").status_code == 401
    assert client.get("/v1/alerts", headers={"authorization": "Bearer nope"}).status_code == 401
    expired = _token(dsn, "ana", ttl=timedelta(seconds=-1))
    assert client.get("/v1/alerts", headers=expired).status_code == 401
    live = _token(dsn, "ana")
    with psycopg.connect(dsn) as conn:
        assert auth.revoke_api_tokens(conn, "ana") == 2
    assert client.get("/v1/alerts", headers=live).status_code == 401


def test_analyst_cannot_use_admin_endpoints(api: Any) -> None:
    client, dsn, rec = api
    ana = _token(dsn, "ana")
    body = {"tenant": "ta", "gateway": "gw-new"}
    assert client.post("/v1/admin/enrollment-tokens", json=body, headers=ana).status_code == 403
    assert client.post("/v1/admin/gateways/gw-a/revoke", headers=ana).status_code == 403
    assert rec.calls == []
    with psycopg.connect(dsn) as conn:
        assert registry.get_gateway(conn, "gw-new") is None
        assert registry.get_gateway(conn, "gw-a").revoked_at is None


def test_every_api_action_leaves_an_audit_row(api: Any) -> None:
    client, dsn, rec = api
    ana, root = _token(dsn, "ana"), _token(dsn, "root")
    before = len(_audit(dsn))
    client.get("/v1/alerts", headers=ana)
    client.get("/v1/alerts", params={"tenant": "tb"}, headers=ana)
    client.get("/v1/alerts")
    issued = client.post(
        "/v1/admin/enrollment-tokens",
        headers=root,
        json={"tenant": "ta", "gateway": "gw-c", "ttl_s": 60},
    )
    assert issued.status_code == 200
    assert client.post("/v1/enroll", json={"token": issued.json()["token"]}).status_code == 200
    assert client.post("/v1/enroll", json={"token": issued.json()["token"]}).status_code == 401
    assert client.post("/v1/admin/gateways/gw-c/revoke", headers=root).status_code == 200
    assert client.post("/v1/admin/gateways/nope/revoke", headers=root).status_code == 404
    rows = [(e.actor, e.action, e.target, e.result) for e in _audit(dsn)[before:]]
    assert rows == [
        ("ana", "alerts.list", "", "ok"),
        ("ana", "alerts.list", "", "denied"),
        ("anonymous", "GET /v1/alerts", "", "denied"),
        ("root", "token.issue", "gw-c", "ok"),
        ("gateway:gw-c", "enroll", "gw-c", "ok"),
        ("anonymous", "enroll", "", "denied"),
        ("root", "gateway.revoke", "gw-c", "ok"),
        ("root", "gateway.revoke", "nope", "invalid"),
    ]
    assert rec.calls == [("provision", "gw-c"), ("revoke", "gw-c")]


def test_secrets_are_stored_only_as_peppered_hashes(api: Any) -> None:
    client, dsn, _ = api
    header = _token(dsn, "ana")
    raw = header["authorization"].split()[1]
    with psycopg.connect(dsn) as conn:
        enroll_token, _ = issue_token(conn, pepper=PEPPER, tenant="ta", gateway="gw-d")
    answer = client.post("/v1/enroll", json={"token": enroll_token}).json()
    password = answer["mqtt"]["password"]
    assert answer["mqtt"]["username"] == answer["mqtt"]["client_id"] == "gw-d"
    assert len(password) >= 40
    with psycopg.connect(dsn) as conn:
        dump = " ".join(
            str(r)
            for table in ("api_tokens", "enrollment_tokens", "gateways", "audit_log")
            for r in conn.execute(f"SELECT * FROM {table}").fetchall()
        )
    assert auth.hash_secret(PEPPER, raw) in dump and auth.hash_secret(PEPPER, password) in dump
    for secret in (raw, enroll_token, password):
        assert secret not in dump


def test_expired_enrollment_token_is_refused_and_stays_unspent(api: Any) -> None:
    client, dsn, rec = api
    with psycopg.connect(dsn) as conn:
        token, _ = issue_token(conn, pepper=PEPPER, tenant="ta", gateway="gw-e")
        conn.execute("UPDATE enrollment_tokens SET expires_at = now() - interval '1 second'")
    assert client.post("/v1/enroll", json={"token": token}).status_code == 401
    assert rec.calls == []
    assert _audit(dsn)[-1].detail == {"reason": "expired"}


def test_short_pepper_is_a_config_error(plain_db: Database) -> None:
    with pytest.raises(ConfigError):
        create_app(
            dsn=plain_db.dsn,
            pepper=b"short",
            broker=RecordingBroker(),
            endpoint=BrokerEndpoint(host="h", port=1, ca_pem=""),
        )
