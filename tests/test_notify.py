"""Notifications: a real local SMTP server (aiosmtpd, with STARTTLS) and a real local
HTTP receiver; the outbox's retry after a failure, idempotency and the hourly rate limit.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
from aiosmtpd.controller import Controller
from conftest import Database
from fastapi.testclient import TestClient
from mimamori.cloud import notify, registry
from mimamori.cloud.api import auth
from mimamori.cloud.jobs import incidents as incident_job
from mimamori.cloud.jobs import runner
from mimamori.cloud.jobs.config import DEFAULT
from mimamori.cloud.migrate import migrate
from mimamori.cloud.pki import CertificateAuthority
from test_soc_api import make_app, token

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
SECRET = "webhook-secret"


@dataclass
class Receiver:
    """An HTTP server that records POSTs and answers 500 to the first ``fail`` of them."""

    fail: int = 0
    got: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if rec.fail > 0:
                rec.fail -= 1
                self.send_response(500)
            else:
                rec.got.append((dict(self.headers.items()), body))
                self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    rec.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    yield rec
    server.shutdown()
    server.server_close()


class Inbox:
    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        msg["X-Seen-TLS"] = "yes" if session.ssl else "no"
        self.messages.append(msg)
        return "250 OK"


def start_smtp(inbox: Inbox, **kw: Any) -> Controller:
    """aiosmtpd checks its own port after starting, so it needs a real one, not 0."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(inbox, hostname="127.0.0.1", port=port, **kw)
    controller.start()
    return controller


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[tuple[Inbox, notify.Delivery]]:
    """A local SMTP server offering STARTTLS under a private CA the client trusts."""
    ca = CertificateAuthority.create(common_name="test mail CA")
    cert, key = ca.issue_server(common_name="localhost", hosts=["127.0.0.1"]).write(
        tmp_path, "smtp"
    )
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    inbox = Inbox()
    controller = start_smtp(inbox, tls_context=server_ctx, require_starttls=True)
    client_ctx = ssl.create_default_context(cadata=ca.cert_pem.decode())
    relay = notify.SmtpRelay(host="127.0.0.1", port=controller.port, sender="soc@mimamori.test")
    yield inbox, notify.Delivery(smtp=relay, timeout_s=5, ssl_context=client_ctx)
    controller.stop()


def seed(dsn: str, alerts: list[tuple[str, str]]) -> None:
    """Migrate, register tenant ta, store ``(dedup_key, severity)`` alerts, group them."""
    migrate(dsn)
    with psycopg.connect(dsn) as conn:
        registry.add_gateway(conn, tenant="ta", gateway="gw-a")
    add_alerts(dsn, alerts)


def add_alerts(dsn: str, alerts: list[tuple[str, str]]) -> None:
    with psycopg.connect(dsn) as conn:
        for n, (key, severity) in enumerate(alerts):
            conn.execute(
                "INSERT INTO alerts (tenant, gateway, alert_id, category, severity, detected_at,"
                " actor, summary_en, summary_ja, dedup_key) VALUES ('ta', 'gw-a', %s, 'scan', %s,"
                " %s, '10.0.0.9', %s, 'スキャン', %s)",
                (f"{key}-{n}", severity, T0, f"port scan {key}", key),
            )
    with psycopg.connect(dsn, autocommit=True) as conn:
        incident_job.group(conn, config=DEFAULT)


def run(dsn: str, transport: notify.Transport, now: datetime, **cfg: Any) -> dict[str, int]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return notify.run(conn, transport=transport, now=now, config=notify.NotifyConfig(**cfg))


def settings(dsn: str, **kw: Any) -> None:
    with psycopg.connect(dsn) as conn:
        notify.configure(conn, tenant="ta", **kw)


def test_webhook_signed_retried_once_and_not_duplicated(
    plain_db: Database, receiver: Receiver
) -> None:
    dsn = plain_db.dsn
    migrate(dsn)
    with psycopg.connect(dsn) as conn:
        registry.add_gateway(conn, tenant="ta", gateway="gw-a")
    settings(dsn, webhook_url=receiver.url, webhook_secret=SECRET)
    add_alerts(dsn, [("k1", "high"), ("k2", "medium")])
    receiver.fail = 1
    delivery = notify.Delivery(smtp=None, timeout_s=5)
    first = run(dsn, delivery, T0)
    assert first["queued"] == 1 and first["retry"] == 1 and receiver.got == []
    # Not due yet: the backoff holds it back.
    assert run(dsn, delivery, T0 + timedelta(seconds=10))["sent"] == 0
    second = run(dsn, delivery, T0 + timedelta(seconds=31))
    assert second == {"queued": 0, "digests": 0, "sent": 1, "held": 0, "retry": 0, "failed": 0}
    assert run(dsn, delivery, T0 + timedelta(minutes=5))["sent"] == 0
    [(headers, body)] = receiver.got
    mac = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert headers[notify.SIGNATURE_HEADER] == f"sha256={mac}"
    payload = json.loads(body)
    assert headers[notify.IDEMPOTENCY_HEADER] == payload["idempotency_key"]
    assert payload["kind"] == "new" and payload["incident"]["severity"] == "high"
    assert payload["subject"].startswith("[mimamori] 新しいインシデント（高）")
    assert "/ new incident (high)" in payload["subject"]
    assert payload["text"].index("重大度") < payload["text"].index("Severity")
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT status, attempts, last_error FROM notifications").fetchone()
    assert row is not None and row[:2] == ("sent", 2) and row[2] == ""


def test_escalation_to_critical_notifies_again(plain_db: Database, receiver: Receiver) -> None:
    seed(plain_db.dsn, [])
    settings(plain_db.dsn, webhook_url=receiver.url)
    add_alerts(plain_db.dsn, [("k1", "medium")])
    delivery = notify.Delivery(smtp=None, timeout_s=5)
    assert run(plain_db.dsn, delivery, T0)["queued"] == 0  # medium does not page
    with psycopg.connect(plain_db.dsn) as conn:
        auth.add_user(conn, user="ana", role="analyst", tenants=["ta"])
        (iid,) = conn.execute("SELECT id FROM incidents").fetchone() or (0,)
    with TestClient(make_app(plain_db.dsn)) as client:
        answer = client.post(
            f"/v1/incidents/{iid}/escalate",
            json={"severity": "high", "reason": "暗号化を確認"},
            headers=token(plain_db.dsn, "ana"),
        )
        assert answer.status_code == 200
        assert run(plain_db.dsn, delivery, T0)["sent"] == 1
        again = client.post(
            f"/v1/incidents/{iid}/escalate",
            json={"severity": "critical", "reason": "社内全体に拡大"},
            headers=token(plain_db.dsn, "ana"),
        )
        assert again.status_code == 200
    assert run(plain_db.dsn, delivery, T0)["sent"] == 1
    first, second = (json.loads(body) for _, body in receiver.got)
    assert (first["kind"], first["reason"], first["incident"]["severity"]) == (
        "escalated",
        "暗号化を確認",
        "high",
    )
    assert (
        "重大度が上がりました（緊急）" in second["subject"] and second["reason"] == "社内全体に拡大"
    )


def test_email_over_starttls_with_idempotency_headers(
    plain_db: Database, smtp: tuple[Inbox, notify.Delivery]
) -> None:
    inbox, delivery = smtp
    seed(plain_db.dsn, [])
    settings(plain_db.dsn, email_to=["soc@example.test", "owner@example.test"])
    add_alerts(plain_db.dsn, [("k1", "critical")])
    assert run(plain_db.dsn, delivery, T0)["sent"] == 1
    [msg] = inbox.messages
    assert msg["X-Seen-TLS"] == "yes"
    assert msg["To"] == "soc@example.test, owner@example.test"
    assert msg["From"] == "soc@mimamori.test"
    assert str(msg["Subject"]).startswith("[mimamori] 新しいインシデント（緊急）")
    key = str(msg["X-Mimamori-Idempotency-Key"])
    assert key.startswith("incident:") and key.endswith(":critical:email")
    assert hashlib.sha256(key.encode()).hexdigest()[:32] in str(msg["Message-ID"])
    text = msg.get_content()
    assert "お客様: ta" in text and "Tenant: ta" in text


def test_email_refused_without_starttls_is_retried(plain_db: Database) -> None:
    inbox = Inbox()
    controller = start_smtp(inbox)
    try:
        seed(plain_db.dsn, [])
        settings(plain_db.dsn, email_to=["soc@example.test"])
        add_alerts(plain_db.dsn, [("k1", "high")])
        relay = notify.SmtpRelay(host="127.0.0.1", port=controller.port, sender="a@b.test")
        strict = notify.Delivery(smtp=relay, timeout_s=5)
        assert run(plain_db.dsn, strict, T0)["retry"] == 1 and inbox.messages == []
        with psycopg.connect(plain_db.dsn) as conn:
            row = conn.execute("SELECT last_error FROM notifications").fetchone()
        assert row is not None and "STARTTLS" in row[0]
        relaxed = notify.Delivery(
            smtp=notify.SmtpRelay(
                host="127.0.0.1", port=controller.port, sender="a@b.test", require_tls=False
            ),
            timeout_s=5,
        )
        assert run(plain_db.dsn, relaxed, T0 + timedelta(minutes=1))["sent"] == 1
        assert inbox.messages[0]["X-Seen-TLS"] == "no"
    finally:
        controller.stop()


def test_rate_limit_holds_then_sends_one_digest(plain_db: Database, receiver: Receiver) -> None:
    seed(plain_db.dsn, [])
    settings(plain_db.dsn, webhook_url=receiver.url, max_per_hour=2)
    add_alerts(plain_db.dsn, [(f"k{n}", "high") for n in range(5)])
    delivery = notify.Delivery(smtp=None, timeout_s=5)
    first = run(plain_db.dsn, delivery, T0, digest_after_s=1800)
    assert (first["queued"], first["sent"], first["held"], first["digests"]) == (5, 2, 3, 0)
    assert run(plain_db.dsn, delivery, T0 + timedelta(minutes=10), digest_after_s=1800)["sent"] == 0
    later = run(plain_db.dsn, delivery, T0 + timedelta(minutes=31), digest_after_s=1800)
    assert later["digests"] == 1 and later["sent"] == 1
    kinds = [json.loads(body)["kind"] for _, body in receiver.got]
    assert kinds == ["new", "new", "digest"]
    digest = json.loads(receiver.got[-1][1])
    assert len(digest["incidents"]) == 3 and digest["subject"].startswith("[mimamori] まとめ: 3 件")
    # Once the hour has passed, single messages flow again.
    add_alerts(plain_db.dsn, [("k9", "critical")])
    again = run(plain_db.dsn, delivery, T0 + timedelta(minutes=61), digest_after_s=1800)
    assert again["sent"] == 1 and again["held"] == 0
    with psycopg.connect(plain_db.dsn) as conn:
        statuses = conn.execute(
            "SELECT status, count(*) FROM notifications GROUP BY 1 ORDER BY 1"
        ).fetchall()
    assert statuses == [("digested", 3), ("sent", 4)]


def test_gives_up_after_max_attempts(plain_db: Database) -> None:
    # An incident older than the settings does not page (no blast when turning it on).
    seed(plain_db.dsn, [("k0", "critical")])
    settings(plain_db.dsn, webhook_url="http://127.0.0.1:9/closed")
    add_alerts(plain_db.dsn, [("k1", "high")])
    delivery = notify.Delivery(smtp=None, timeout_s=2)
    results = [
        run(plain_db.dsn, delivery, T0 + timedelta(hours=h), max_attempts=3) for h in range(4)
    ]
    assert [(r["retry"], r["failed"]) for r in results] == [(1, 0), (1, 0), (0, 1), (0, 0)]


def test_config_and_env_are_checked() -> None:
    with pytest.raises(notify.ConfigError):
        notify.NotifyConfig(min_severity="urgent")
    assert notify.SmtpRelay.from_env({}) is None
    relay = notify.SmtpRelay.from_env(
        {"MIMAMORI_SMTP_HOST": "mx", "MIMAMORI_SMTP_PORT": "25", "MIMAMORI_SMTP_REQUIRE_TLS": "0"}
    )
    assert relay is not None and (relay.port, relay.require_tls) == (25, False)
    with pytest.raises(notify.ConfigError):
        notify.SmtpRelay.from_env({"MIMAMORI_SMTP_HOST": "mx", "MIMAMORI_SMTP_PORT": "x"})
    assert [notify.DEFAULT.retry_delay(n).total_seconds() for n in (1, 2, 3, 20)] == [
        30,
        60,
        120,
        3600,
    ]


def test_jobs_runner_runs_notify(plain_db: Database, receiver: Receiver) -> None:
    seed(plain_db.dsn, [])
    settings(plain_db.dsn, webhook_url=receiver.url)
    with psycopg.connect(plain_db.dsn) as conn:
        conn.execute(
            "INSERT INTO alerts (tenant, gateway, alert_id, category, severity, detected_at,"
            " actor, summary_en, summary_ja, dedup_key) VALUES ('ta', 'gw-a', 'x1', 'scan',"
            " 'critical', now(), '10.0.0.9', 'scan', 'スキャン', 'kx')"
        )
    out = runner.run_once(plain_db.dsn, only=["incidents", "notify"])
    assert out["incidents"] == 1 and out["notify"]["sent"] == 1
    assert json.loads(receiver.got[0][1])["incident"]["severity"] == "critical"


def test_disabled_tenant_gets_nothing_until_enabled(plain_db: Database, receiver: Receiver) -> None:
    seed(plain_db.dsn, [])
    settings(plain_db.dsn, webhook_url=receiver.url)
    add_alerts(plain_db.dsn, [("k1", "high")])
    receiver.fail = 1
    delivery = notify.Delivery(smtp=None, timeout_s=5)
    assert run(plain_db.dsn, delivery, T0)["retry"] == 1
    settings(plain_db.dsn, webhook_url=receiver.url, enabled=False)
    assert run(plain_db.dsn, delivery, T0 + timedelta(minutes=5))["sent"] == 0
    settings(plain_db.dsn, webhook_url=receiver.url, enabled=True)
    assert run(plain_db.dsn, delivery, T0 + timedelta(minutes=6))["sent"] == 1
    assert len(receiver.got) == 1
