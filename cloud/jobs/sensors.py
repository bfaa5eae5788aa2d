"""Sensor alerts: canary touches and silent sensors, from what the ingester stored.

The rules themselves are pure functions in :mod:`mimamori.cloud.sensors`; this job feeds
them stored rows and stores their alerts (``source = 'cloud'``). Both are idempotent:
alert ids name the canary message (gateway, seq) or the outage (last time heard), and
``alerts`` keeps one row per (gateway, alert_id).

Liveness is on the cloud's clock, as for gateways (:mod:`.liveness`): ``sensors.last_heard``
is set by the ingester in the transaction that stores each sensor message, and compared
with the job's ``now``. ``last_seen`` is the gateway's stamp (when its relay heard the
sensor): a gateway whose clock is behind, or whose backlog arrives after an outage, makes
it look old although the sensor is alive, so it is shown in the alert's evidence only, and
used only for sensors not heard since ``last_heard`` was added (NULL). The interval is the
one the sensor announced in its newest self-report (``sensors.heartbeat_s``), else the
configured default. Sensors behind an offline gateway are not judged, and after the
gateway's return their silence counts from then (see ``_SENSORS_SQL``).

A sensor stays ``offline`` until its next message (the ingester sets ``online``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from mimamori.cloud import sensors as rules
from mimamori.cloud.jobs._alerts import store_alert
from mimamori.protocol import SensorMessage

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

# Row locks: a sensor the ingester is updating right now was just heard; skip it (the
# next run judges it) rather than mark it offline on the value read before.
#
# A sensor is heard only through its gateway: while the gateway is offline its sensors
# are not judged (the gateway_offline alert covers the site; one page, not one per
# sensor), and after the gateway's return their silence counts from that moment, which
# leaves the gateway's outbox time to deliver what the sensors said meanwhile.
_SENSORS_SQL = """
SELECT s.tenant, s.gateway, s.sensor_id,
       extract(epoch FROM greatest(
           coalesce(s.last_heard, s.last_seen),
           CASE WHEN g.state = 'online' THEN g.state_changed_at END)),
       s.heartbeat_s, extract(epoch FROM s.last_seen)
FROM sensors s
LEFT JOIN gateways g ON g.id = s.gateway
WHERE s.state <> 'offline' AND g.state IS DISTINCT FROM 'offline'
ORDER BY s.tenant, s.sensor_id
FOR UPDATE OF s SKIP LOCKED
"""


@dataclass
class SensorsResult:
    canary_alerts: int = 0
    offline: int = 0


def check(
    conn: psycopg.Connection[Any], *, now: datetime, config: rules.SensorsConfig = rules.DEFAULT
) -> SensorsResult:
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
                alert = rules.canary_alert(message, config=config)
            except rules.SensorAlertError:
                continue  # a malformed canary report: nothing to alert on
            result.canary_alerts += store_alert(conn, tenant=tenant, gateway=gw, alert=alert)

        known = conn.execute(_SENSORS_SQL).fetchall()
        tenants = {(gw, sensor): tenant for tenant, gw, sensor, *_ in known}
        seen = [
            rules.SensorSeen(gateway=gw, sensor_id=sensor, last_heard=float(heard),
                             heartbeat_s=hb, last_seen=float(last_seen))
            for _, gw, sensor, heard, hb, last_seen in known
        ]  # fmt: skip
        for alert in rules.offline_alerts(seen, now=now.timestamp(), config=config):
            gw, sensor = alert.target, alert.actor
            store_alert(conn, tenant=tenants[(gw, sensor)], gateway=gw, alert=alert)
            conn.execute(
                "UPDATE sensors SET state = 'offline' WHERE tenant = %s AND sensor_id = %s",
                (tenants[(gw, sensor)], sensor),
            )
            result.offline += 1
    return result
