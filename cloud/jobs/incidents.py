"""Group alerts into incidents: the unit of work of the SOC.

Alerts with the same ``(tenant, dedup_key)`` join the incident that is open for that key
(any status but ``resolved``); once it is resolved, the next such alert opens a new one.
An incident's severity is the highest of its alerts', raised one level each time its alert
count reaches one of ``JobsConfig.escalate_at_counts`` (capped at ``escalate_cap``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from mimamori.cloud.jobs.config import JobsConfig
from mimamori.protocol import SEVERITIES

_RANK = {s: i for i, s in enumerate(SEVERITIES)}

_PENDING_SQL = """
SELECT id, tenant, dedup_key, category, severity, detected_at, gateway, summary_en
FROM alerts
WHERE incident_id IS NULL
ORDER BY id
LIMIT %s
FOR UPDATE SKIP LOCKED
"""

_UPSERT_SQL = """
INSERT INTO incidents AS i (tenant, dedup_key, category, severity, title, gateway, alert_count,
    first_alert_at, last_alert_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (tenant, dedup_key) WHERE status <> 'resolved' DO UPDATE SET
    alert_count = i.alert_count + EXCLUDED.alert_count,
    first_alert_at = least(i.first_alert_at, EXCLUDED.first_alert_at),
    last_alert_at = greatest(i.last_alert_at, EXCLUDED.last_alert_at),
    updated_at = now()
RETURNING id, severity, alert_count
"""


@dataclass
class _Group:
    tenant: str
    dedup_key: str
    category: str
    severity: str
    title: str
    gateway: str
    first: datetime
    last: datetime
    alert_ids: list[int]


def escalated(current: str, newest: str, before: int, after: int, config: JobsConfig) -> str:
    """Severity after an incident's count went from ``before`` to ``after`` alerts.

    Never lower than the highest alert (``newest`` for the new ones, ``current`` already
    includes the older ones); one level up per threshold crossed, capped.
    """
    base = max(_RANK[current], _RANK[newest])
    steps = sum(1 for t in config.escalate_at_counts if before < t <= after)
    cap = max(_RANK[config.escalate_cap], base)
    return SEVERITIES[min(base + steps, cap)]


def group(conn: psycopg.Connection[Any], *, config: JobsConfig) -> int:
    """Attach every ungrouped alert to its incident; return the number of alerts grouped."""
    with conn.transaction():
        pending = conn.execute(_PENDING_SQL, (config.incident_batch,)).fetchall()
        groups: dict[tuple[str, str], _Group] = {}
        for aid, tenant, key, category, severity, detected, gateway, summary in pending:
            g = groups.get((tenant, key))
            if g is None:
                groups[(tenant, key)] = _Group(tenant, key, category, severity, summary[:200],
                                               gateway, detected, detected, [aid])  # fmt: skip
                continue
            g.alert_ids.append(aid)
            g.first, g.last = min(g.first, detected), max(g.last, detected)
            if _RANK[severity] > _RANK[g.severity]:
                g.severity = severity
        for g in sorted(groups.values(), key=lambda g: (g.tenant, g.dedup_key)):
            row = conn.execute(
                _UPSERT_SQL,
                (g.tenant, g.dedup_key, g.category, g.severity, g.title, g.gateway,
                 len(g.alert_ids), g.first, g.last),
            ).fetchone()  # fmt: skip
            assert row is not None
            incident_id, current, count = row
            target = escalated(current, g.severity, count - len(g.alert_ids), count, config)
            if target != current:
                conn.execute(
                    "UPDATE incidents SET severity = %s WHERE id = %s", (target, incident_id)
                )
            conn.execute(
                "UPDATE alerts SET incident_id = %s WHERE id = ANY(%s)",
                (incident_id, g.alert_ids),
            )
    return len(pending)
