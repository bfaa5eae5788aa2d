"""Sensor alerts: canary touches and silent sensors, from what the ingester stored.

The rules themselves are pure functions in :mod:`mimamori.cloud.sensors`; this job feeds
them stored rows and stores their alerts (``source = 'cloud'``). Both are idempotent:
alert ids name the canary message (gateway, seq) or the outage (last time seen), and
``alerts`` keeps one row per (gateway, alert_id).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from mimamori.cloud import sensors as rules
from mimamori.protocol import Alert, SensorMessage
from psycopg.types.json import Jsonb

#: Canary messages ingested this recently are (re)considered each run; re-considering is
#: harmless (same alert id), and the window covers a jobs outage of a day.
CANARY_LOOKBACK = timedelta(days=1)

_CANARIES_SQL = """
SELECT tenant, gateway, seq, sensor_id, extract(epoch FROM sent_at),
       extract(epoch FROM ts), body
FROM sensor_messages
WHERE sensor_kind = 'canary' AND ingested_at >= %s
ORDER BY ingested_at
"""

_SENSORS_SQL = """
SELECT tenant, gateway, sensor_id, extract(epoch FROM last_seen),
       CASE WHEN jsonb_typeof(last_body -> 'heartbeat_s') = 'number'
            THEN (last_body ->> 'heartbeat_s')::float8 END
FROM sensors
WHERE state <> 'offline'
"""

_ALERT_SQL = """
INSERT INTO alerts (tenant, gateway, alert_id, category, severity, detected_at, actor, target,
    summary_en, summary_ja, dedup_key, rule, mac, evidence, source)
VALUES (%s, %s, %s, %s, %s, to_timestamp(%s), %s, %s, %s, %s, %s, %s, %s, %s, 'cloud')
ON CONFLICT (gateway, alert_id) DO NOTHING
"""


@dataclass
class SensorsResult:
    canary_alerts: int = 0
    offline: int = 0


def _row(tenant: str, gateway: str, a: Alert) -> tuple[Any, ...]:
    return (tenant, gateway, a.id, a.category, a.severity, a.detected_at, a.actor, a.target,
            a.summary_en, a.summary_ja, a.dedup_key, a.rule, a.mac or None,
            Jsonb(a.evidence))  # fmt: skip


def check(conn: psycopg.Connection[Any], *, now: datetime) -> SensorsResult:
    """Raise canary_touch alerts for recent canary messages and sensor_offline alerts."""
    result = SensorsResult()
    with conn.transaction():
        for tenant, gw, seq, sensor, sent_at, received_at, body in conn.execute(
            _CANARIES_SQL, (now - CANARY_LOOKBACK,)
        ).fetchall():
            message = SensorMessage(
                gateway=gw,
                seq=seq,
                sent_at=float(sent_at),
                sensor_id=sensor,
                sensor_kind="canary",
                received_at=float(received_at),
                body=body,
            )
            try:
                alert = rules.canary_alert(message)
            except rules.SensorAlertError:
                continue  # a malformed canary report: nothing to alert on
            cur = conn.execute(_ALERT_SQL, _row(tenant, gw, alert))
            result.canary_alerts += cur.rowcount

        known = conn.execute(_SENSORS_SQL).fetchall()
        tenants = {(gw, sensor): tenant for tenant, gw, sensor, _, _ in known}
        seen = [
            rules.SensorSeen(gateway=gw, sensor_id=sensor, last_seen=float(last), heartbeat_s=hb)
            for _, gw, sensor, last, hb in known
        ]
        for alert in rules.offline_alerts(seen, now=now.timestamp()):
            gw, sensor = alert.target, alert.actor
            conn.execute(_ALERT_SQL, _row(tenants[(gw, sensor)], gw, alert))
            conn.execute(
                "UPDATE sensors SET state = 'offline' WHERE tenant = %s AND sensor_id = %s",
                (tenants[(gw, sensor)], sensor),
            )
            result.offline += 1
    return result
