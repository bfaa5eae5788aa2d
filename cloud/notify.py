"""Notifications of high and critical incidents by webhook and e-mail, through an outbox.

The ``notify`` job (``mimamori cloud jobs run-once --only notify``) does three things:

1. **enqueue**: every live incident at or above ``NotifyConfig.min_severity`` whose tenant
   has notifications on gets one outbox row per channel and severity it reached. The row's
   ``idempotency_key`` (``incident:<id>:<severity>:<channel>``) is unique, so running the
   job twice, or crashing half-way, never makes a second message for the same event.
2. **deliver**: pending rows are sent (webhook: HTTP POST of the JSON payload, signed with
   HMAC-SHA256 when the tenant has a secret; e-mail: SMTP, STARTTLS whenever the server
   offers it). A failure is retried with capped exponential backoff; a row is marked sent
   only after the receiver accepted it, so delivery is *at least once* and receivers
   deduplicate on the ``Idempotency-Key`` header (webhook) or ``X-Mimamori-Idempotency-Key``
   and ``Message-ID`` (e-mail). More than ``max_per_hour`` messages per tenant and channel
   within an hour are *held* instead of sent.
3. **digest**: held rows are summarised in one digest message once the oldest is
   ``digest_after_s`` old, so a noisy hour pages once more, not a hundred times.

Subjects and bodies are bilingual, Japanese first.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import smtplib
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any, Protocol

import psycopg
from mimamori.cloud.errors import CloudError, ConfigError, StoreError
from psycopg.types.json import Jsonb

SEVERITIES = ("info", "low", "medium", "high", "critical")
_SEVERITY_JA = {"high": "高", "critical": "緊急", "medium": "中", "low": "低", "info": "情報"}
#: Header names of the webhook request.
SIGNATURE_HEADER = "X-Mimamori-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"


class NotifyError(CloudError):
    """A notification could not be delivered (the row is retried)."""


@dataclass(frozen=True, kw_only=True)
class NotifyConfig:
    #: Lowest severity that notifies: high and critical need someone now; medium waits for
    #: the SOC's next look at the dashboard.
    min_severity: str = "high"
    #: Messages per tenant and channel per hour before the rest are held for a digest; 10
    #: is more than a real small office produces, so only an alert storm reaches it.
    max_per_hour: int = 10
    #: How long held messages wait before their digest goes out (one rate-limit window).
    digest_after_s: float = 3600.0
    #: Attempts before a row is marked failed: 8 at 30 s doubling covers ~2 h of outage.
    max_attempts: int = 8
    retry_base_s: float = 30.0
    retry_cap_s: float = 3600.0
    #: Rows sent per run, so one run stays short even after a long outage.
    batch: int = 200

    def __post_init__(self) -> None:
        if self.min_severity not in SEVERITIES:
            raise ConfigError(f"min_severity must be one of {', '.join(SEVERITIES)}")
        if self.max_per_hour < 1 or self.max_attempts < 1 or self.batch < 1:
            raise ConfigError("max_per_hour, max_attempts and batch must be at least 1")

    def retry_delay(self, attempts: int) -> timedelta:
        """Wait after the ``attempts``-th failure (no jitter: one job process sends)."""
        return timedelta(seconds=min(self.retry_cap_s, self.retry_base_s * 2 ** (attempts - 1)))


DEFAULT = NotifyConfig()


@dataclass(frozen=True, kw_only=True)
class SmtpRelay:
    """The provider's outgoing mail server."""

    host: str
    port: int = 587
    sender: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    #: Refuse to send when the server does not offer STARTTLS (it would go in clear).
    require_tls: bool = True

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SmtpRelay | None:
        """``MIMAMORI_SMTP_HOST``, ``_PORT``, ``_FROM``, ``_USER``, ``_PASSWORD``,
        ``_REQUIRE_TLS`` (1/0); None when no host is set (e-mail rows then fail and retry)."""
        host = env.get("MIMAMORI_SMTP_HOST", "")
        if not host:
            return None
        try:
            port = int(env.get("MIMAMORI_SMTP_PORT", "587"))
        except ValueError as exc:
            raise ConfigError("MIMAMORI_SMTP_PORT must be a number") from exc
        return cls(
            host=host,
            port=port,
            sender=env.get("MIMAMORI_SMTP_FROM", "mimamori@localhost"),
            username=env.get("MIMAMORI_SMTP_USER") or None,
            password=env.get("MIMAMORI_SMTP_PASSWORD") or None,
            require_tls=env.get("MIMAMORI_SMTP_REQUIRE_TLS", "1") != "0",
        )


class Transport(Protocol):
    """Where messages leave the process (the seam tests may replace)."""

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> None: ...

    def mail(self, message: EmailMessage) -> None: ...


class Delivery:
    """The real transport: urllib for webhooks, smtplib for e-mail."""

    def __init__(
        self,
        *,
        smtp: SmtpRelay | None,
        timeout_s: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.smtp = smtp
        self.timeout_s = timeout_s
        self.ssl_context = ssl_context or ssl.create_default_context()

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> None:
        """POST ``body``; any answer but 2xx is a failure."""
        if not url.startswith(("https://", "http://")):
            raise NotifyError(f"webhook URL must be http(s): {url!r}")
        req = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s, context=self.ssl_context):
                pass  # urlopen raises HTTPError for 4xx/5xx
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise NotifyError(f"webhook {url} failed: {exc}") from exc

    def mail(self, message: EmailMessage) -> None:
        """Send through the relay, upgrading to TLS whenever the server offers STARTTLS."""
        relay = self.smtp
        if relay is None:
            raise NotifyError("no SMTP relay configured (MIMAMORI_SMTP_HOST)")
        message["From"] = relay.sender
        try:
            with smtplib.SMTP(relay.host, relay.port, timeout=self.timeout_s) as smtp:
                smtp.ehlo()
                if smtp.has_extn("starttls"):
                    smtp.starttls(context=self.ssl_context)
                    smtp.ehlo()
                elif relay.require_tls:
                    raise NotifyError(f"SMTP server {relay.host} does not offer STARTTLS")
                if relay.username:
                    smtp.login(relay.username, relay.password or "")
                smtp.send_message(message)
        except (smtplib.SMTPException, OSError) as exc:
            raise NotifyError(f"mail via {relay.host}:{relay.port} failed: {exc}") from exc


# --- settings -------------------------------------------------------------------------


def configure(
    conn: psycopg.Connection[Any],
    *,
    tenant: str,
    webhook_url: str | None = None,
    webhook_secret: str | None = None,
    email_to: list[str] | None = None,
    max_per_hour: int | None = None,
    enabled: bool = True,
) -> None:
    """Create or replace a tenant's notification settings."""
    try:
        conn.execute(
            "INSERT INTO notify_settings (tenant, webhook_url, webhook_secret, email_to, "
            "max_per_hour, enabled) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (tenant) DO "
            "UPDATE SET webhook_url = EXCLUDED.webhook_url, webhook_secret = "
            "EXCLUDED.webhook_secret, email_to = EXCLUDED.email_to, max_per_hour = "
            "EXCLUDED.max_per_hour, enabled = EXCLUDED.enabled",
            (tenant, webhook_url, webhook_secret, email_to or [], max_per_hour, enabled),
        )
    except psycopg.Error as exc:
        raise StoreError(f"cannot store notification settings of {tenant!r}: {exc}") from exc


# --- the job --------------------------------------------------------------------------

_DUE_SQL = """
SELECT i.id, i.tenant, i.severity, i.title, i.category, i.gateway, i.alert_count,
       i.first_alert_at, i.status, s.webhook_url, s.email_to,
       EXISTS (SELECT 1 FROM notifications n WHERE n.incident_id = i.id),
       (SELECT a.detail ->> 'reason' FROM incident_actions a WHERE a.incident_id = i.id
          AND a.action = 'escalate' ORDER BY a.id DESC LIMIT 1)
FROM incidents i JOIN notify_settings s ON s.tenant = i.tenant AND s.enabled
WHERE i.severity = ANY(%s) AND i.status <> 'resolved' AND i.updated_at >= s.created_at
  AND NOT EXISTS (SELECT 1 FROM notifications n
                  WHERE n.incident_id = i.id AND n.severity = i.severity)
ORDER BY i.id
"""

_INSERT_SQL = """
INSERT INTO notifications (idempotency_key, tenant, incident_id, kind, channel, severity,
    payload, next_attempt_at, created_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (idempotency_key) DO NOTHING
"""


def incident_text(kind: str, inc: dict[str, Any], reason: str | None) -> tuple[str, str]:
    """Subject and body of one incident's message, Japanese first, then English."""
    sev, sev_ja = inc["severity"], _SEVERITY_JA[inc["severity"]]
    verb_ja, verb_en = (
        ("重大度が上がりました", "escalated")
        if kind == "escalated"
        else ("新しいインシデント", "new incident")
    )
    subject = (
        f"[mimamori] {verb_ja}（{sev_ja}）#{inc['id']} {inc['tenant']} / "
        f"{verb_en} ({sev}) #{inc['id']}: {inc['title']}"
    )
    lines_ja = [
        f"お客様: {inc['tenant']}  ゲートウェイ: {inc['gateway'] or '-'}",
        f"重大度: {sev_ja}  種別: {inc['category']}  アラート数: {inc['alert_count']}",
        f"概要: {inc['title']}",
    ]
    lines_en = [
        f"Tenant: {inc['tenant']}  Gateway: {inc['gateway'] or '-'}",
        f"Severity: {sev}  Category: {inc['category']}  Alerts: {inc['alert_count']}",
        f"Summary: {inc['title']}",
    ]
    if reason:
        lines_ja.append(f"理由: {reason}")
        lines_en.append(f"Reason: {reason}")
    body = "\n".join([*lines_ja, "", "---", "", *lines_en, ""])
    return subject, body


def enqueue(conn: psycopg.Connection[Any], *, now: datetime, config: NotifyConfig = DEFAULT) -> int:
    """Add outbox rows for incidents that reached a notifying severity; return how many."""
    wanted = list(SEVERITIES[SEVERITIES.index(config.min_severity) :])
    added = 0
    with conn.transaction():
        for row in conn.execute(_DUE_SQL, (wanted,)).fetchall():
            (
                iid,
                tenant,
                sev,
                title,
                category,
                gateway,
                count,
                first,
                status,
                url,
                emails,
                notified,
                reason,
            ) = row
            kind = "escalated" if notified or reason else "new"
            inc = {
                "id": iid,
                "tenant": tenant,
                "severity": sev,
                "title": title,
                "category": category,
                "gateway": gateway,
                "alert_count": count,
                "first_alert_at": first.isoformat(),
                "status": status,
            }
            subject, text = incident_text(kind, inc, reason)
            for channel in ("webhook", "email"):
                if (channel == "webhook" and not url) or (channel == "email" and not emails):
                    continue
                key = f"incident:{iid}:{sev}:{channel}"
                payload = {
                    "idempotency_key": key,
                    "kind": kind,
                    "tenant": tenant,
                    "incident": inc,
                    "reason": reason,
                    "subject": subject,
                    "text": text,
                }
                cur = conn.execute(
                    _INSERT_SQL, (key, tenant, iid, kind, channel, sev, Jsonb(payload), now, now)
                )
                added += cur.rowcount
    return added


def digest(conn: psycopg.Connection[Any], *, now: datetime, config: NotifyConfig = DEFAULT) -> int:
    """Fold held rows whose oldest waited ``digest_after_s`` into one digest each."""
    made = 0
    cutoff = now - timedelta(seconds=config.digest_after_s)
    with conn.transaction():
        groups = conn.execute(
            "SELECT tenant, channel, array_agg(id ORDER BY id) FROM notifications "
            "WHERE status = 'held' GROUP BY tenant, channel HAVING min(created_at) <= %s "
            "ORDER BY tenant, channel",
            (cutoff,),
        ).fetchall()
        for tenant, channel, ids in groups:
            held = conn.execute(
                "SELECT payload, severity FROM notifications WHERE id = ANY(%s) ORDER BY id "
                "FOR UPDATE",
                (ids,),
            ).fetchall()
            top = max((r[1] for r in held), key=SEVERITIES.index)
            key = f"digest:{tenant}:{channel}:{ids[0]}-{ids[-1]}"
            subject = (
                f"[mimamori] まとめ: {len(ids)} 件のインシデント {tenant} / "
                f"digest: {len(ids)} incidents held by the rate limit"
            )
            items = [
                f"- #{p['incident']['id']} ({p['incident']['severity']}) {p['incident']['title']}"
                for p, _ in held
            ]
            text = "\n".join(
                [
                    f"通知の上限を超えたため、{len(ids)} 件をまとめて送ります。",
                    *items,
                    "",
                    "---",
                    "",
                    f"{len(ids)} notifications exceeded the hourly limit; here they are at once.",
                    *items,
                    "",
                ]
            )
            payload = {
                "idempotency_key": key,
                "kind": "digest",
                "tenant": tenant,
                "incidents": [p["incident"] for p, _ in held],
                "subject": subject,
                "text": text,
            }
            (digest_id,) = conn.execute(
                "INSERT INTO notifications (idempotency_key, tenant, kind, channel, severity, "
                "payload, next_attempt_at, created_at) VALUES (%s, %s, 'digest', %s, %s, %s, "
                "%s, %s) RETURNING id",
                (key, tenant, channel, top, Jsonb(payload), now, now),
            ).fetchone() or (0,)
            conn.execute(
                "UPDATE notifications SET status = 'digested', digest_id = %s WHERE id = ANY(%s)",
                (digest_id, ids),
            )
            made += 1
    return made


def _message(payload: dict[str, Any], to: list[str]) -> EmailMessage:
    msg = EmailMessage()
    key = payload["idempotency_key"]
    msg["To"] = ", ".join(to)
    msg["Subject"] = payload["subject"]
    # A Message-ID derived from the key lets a mailbox drop a redelivered copy.
    msg["Message-ID"] = f"<{hashlib.sha256(key.encode()).hexdigest()[:32]}@mimamori>"
    msg["X-Mimamori-Idempotency-Key"] = key
    msg.set_content(payload["text"], charset="utf-8")
    return msg


def _send(
    transport: Transport, channel: str, payload: dict[str, Any], settings: tuple[Any, ...]
) -> None:
    url, secret, emails = settings
    if channel == "email":
        if not emails:
            raise NotifyError("the tenant has no e-mail recipients any more")
        transport.mail(_message(payload, list(emails)))
        return
    if not url:
        raise NotifyError("the tenant has no webhook URL any more")
    body = json.dumps(payload, ensure_ascii=False, sort_keys=True).encode()
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        IDEMPOTENCY_HEADER: payload["idempotency_key"],
    }
    if secret:
        mac = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        headers[SIGNATURE_HEADER] = f"sha256={mac}"
    transport.post(url, body, headers)


def deliver(
    conn: psycopg.Connection[Any],
    *,
    transport: Transport,
    now: datetime,
    config: NotifyConfig = DEFAULT,
) -> dict[str, int]:
    """Send due rows one by one, each in its own transaction; return counts by outcome."""
    counts = {"sent": 0, "held": 0, "retry": 0, "failed": 0}
    for _ in range(config.batch):
        with conn.transaction():
            row = conn.execute(
                "SELECT n.id, n.tenant, n.channel, n.kind, n.payload, n.attempts, "
                "s.webhook_url, s.webhook_secret, s.email_to, coalesce(s.max_per_hour, %s) "
                "FROM notifications n JOIN notify_settings s ON s.tenant = n.tenant AND s.enabled "
                "WHERE n.status = 'pending' AND n.next_attempt_at <= %s ORDER BY n.id LIMIT 1 "
                "FOR UPDATE OF n SKIP LOCKED",
                (config.max_per_hour, now),
            ).fetchone()
            if row is None:
                break
            nid, tenant, channel, kind, payload, attempts, url, secret, emails, limit = row
            if kind != "digest":
                (recent,) = conn.execute(
                    "SELECT count(*) FROM notifications WHERE status = 'sent' AND tenant = %s "
                    "AND channel = %s AND kind <> 'digest' AND sent_at > %s",
                    (tenant, channel, now - timedelta(hours=1)),
                ).fetchone() or (0,)
                if recent >= limit:
                    conn.execute("UPDATE notifications SET status = 'held' WHERE id = %s", (nid,))
                    counts["held"] += 1
                    continue
            try:
                _send(transport, channel, payload, (url, secret, emails))
            except NotifyError as exc:
                failed = attempts + 1 >= config.max_attempts
                conn.execute(
                    "UPDATE notifications SET attempts = attempts + 1, last_error = %s, "
                    "status = %s, next_attempt_at = %s WHERE id = %s",
                    (
                        str(exc)[:500],
                        "failed" if failed else "pending",
                        now + config.retry_delay(attempts + 1),
                        nid,
                    ),
                )
                counts["failed" if failed else "retry"] += 1
                continue
            conn.execute(
                "UPDATE notifications SET status = 'sent', sent_at = %s, attempts = attempts + 1,"
                " last_error = '' WHERE id = %s",
                (now, nid),
            )
            counts["sent"] += 1
    return counts


def run(
    conn: psycopg.Connection[Any],
    *,
    transport: Transport,
    now: datetime,
    config: NotifyConfig = DEFAULT,
) -> dict[str, int]:
    """One pass of the job: enqueue, deliver (holding what exceeds the limit), digest."""
    try:
        queued = enqueue(conn, now=now, config=config)
        counts = deliver(conn, transport=transport, now=now, config=config)
        digests = digest(conn, now=now, config=config)
        if digests:
            more = deliver(conn, transport=transport, now=now, config=config)
            counts = {k: counts[k] + more[k] for k in counts}
    except psycopg.Error as exc:
        raise StoreError(f"notify job failed: {exc}") from exc
    return {"queued": queued, "digests": digests, **counts}
