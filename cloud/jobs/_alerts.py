"""Storing the alerts that cloud jobs raise (``source = 'cloud'``), once.

``alerts`` keeps one row per (gateway, alert_id), so a job re-run that raises the same
alert stores nothing. ``not_within`` also skips an alert when one with the same tenant and
dedup key was detected less than that long before it (a finding that keeps holding).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
from mimamori.protocol import Alert
from psycopg.types.json import Jsonb

_ALERT_SQL = """
INSERT INTO alerts (tenant, gateway, alert_id, category, severity, detected_at, actor, target,
    summary_en, summary_ja, dedup_key, rule, mac, evidence, source)
SELECT %(tenant)s, %(gateway)s, %(id)s, %(category)s, %(severity)s, to_timestamp(%(at)s),
       %(actor)s, %(target)s, %(summary_en)s, %(summary_ja)s, %(dedup_key)s, %(rule)s,
       %(mac)s, %(evidence)s, 'cloud'
WHERE NOT EXISTS (
    SELECT 1 FROM alerts
    WHERE tenant = %(tenant)s AND dedup_key = %(dedup_key)s
      AND detected_at > to_timestamp(%(at)s) - %(window)s::interval
)
ON CONFLICT (gateway, alert_id) DO NOTHING
"""


def store_alert(
    conn: psycopg.Connection[Any],
    *,
    tenant: str,
    gateway: str,
    alert: Alert,
    not_within: timedelta | None = None,
) -> int:
    """Insert ``alert`` for ``gateway`` of ``tenant``; 1 if stored, 0 if already there."""
    cur = conn.execute(
        _ALERT_SQL,
        {
            "tenant": tenant, "gateway": gateway, "id": alert.id, "category": alert.category,
            "severity": alert.severity, "at": alert.detected_at, "actor": alert.actor,
            "target": alert.target, "summary_en": alert.summary_en,
            "summary_ja": alert.summary_ja, "dedup_key": alert.dedup_key, "rule": alert.rule,
            "mac": alert.mac or None, "evidence": Jsonb(alert.evidence), "window": not_within,
        },
    )  # fmt: skip
    return cur.rowcount
