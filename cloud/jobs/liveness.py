"""Gateway liveness: a gateway not heard from for a few of its heartbeat intervals is marked
offline and a ``gateway_offline`` alert is raised, once per outage.

"Heard" is on the cloud's clock: ``gateways.last_heard``, set by the ingester when it
commits a heartbeat, compared with the job's ``now``. The heartbeat's own ``sent_at``
(``last_seen``) is the gateway's clock, which may be off (or, in a simulator, run faster
than real time); it is shown to staff but not used here, except for gateways not heard
since ``last_heard`` was added (NULL), where it is the only time there is.

The gateway stays ``offline`` until its next heartbeat (the ingester sets ``online``).
The alert id names the outage (the last heartbeat's time), so re-running the job never
raises a second alert for the same outage, and the dedup key names the gateway, so the
incident job groups repeated outages of one gateway into one incident while it is open.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from mimamori.cloud.jobs.config import JobsConfig
from psycopg.types.json import Jsonb

_STALE_SQL = """
SELECT id, tenant, site, name, coalesce(last_heard, last_seen), last_seen,
       coalesce(heartbeat_interval_s, %(default)s)
FROM gateways
WHERE revoked_at IS NULL
  AND coalesce(last_heard, last_seen) IS NOT NULL
  AND coalesce(last_heard, last_seen) < %(now)s - make_interval(
        secs => %(factor)s * coalesce(heartbeat_interval_s, %(default)s))
  AND (state <> 'offline'
       OR NOT EXISTS (SELECT 1 FROM alerts a WHERE a.gateway = gateways.id
                      AND a.alert_id = 'gateway_offline:'
                          || floor(extract(epoch FROM coalesce(last_heard, last_seen)))::bigint))
ORDER BY id
FOR UPDATE SKIP LOCKED
"""

_ALERT_SQL = """
INSERT INTO alerts (tenant, gateway, alert_id, category, severity, detected_at, actor, target,
    summary_en, summary_ja, dedup_key, rule, evidence, source)
VALUES (%s, %s, %s, 'gateway_offline', %s, %s, %s, %s, %s, %s, %s, 'cloud.liveness', %s,
    'cloud')
ON CONFLICT (gateway, alert_id) DO NOTHING
"""


def check(conn: psycopg.Connection[Any], *, now: datetime, config: JobsConfig) -> list[str]:
    """Mark stale gateways offline and alert; return the ids newly found offline."""
    found: list[str] = []
    with conn.transaction():
        stale = conn.execute(
            _STALE_SQL,
            {"now": now, "factor": config.offline_after_intervals,
             "default": config.default_heartbeat_interval_s},
        ).fetchall()  # fmt: skip
        for gateway, tenant, site, name, heard, last_seen, interval in stale:
            label = name or gateway
            silent_min = max(1, round((now - heard).total_seconds() / 60))
            conn.execute(
                "UPDATE gateways SET state = 'offline', state_changed_at = %s "
                "WHERE id = %s AND state <> 'offline'",
                (now, gateway),
            )
            conn.execute(
                _ALERT_SQL,
                (
                    tenant, gateway, f"gateway_offline:{int(heard.timestamp())}",
                    config.offline_severity, now, gateway, site,
                    f"Gateway {label} has sent no heartbeat for {silent_min} min: "
                    "the site is not being watched.",
                    f"ゲートウェイ {label} から {silent_min} 分間ハートビートがありません。"
                    "現在このサイトは監視されていません。",
                    f"gateway_offline:{gateway}",
                    Jsonb({"last_heard": heard.isoformat(),
                           "last_seen": last_seen.isoformat() if last_seen else None,
                           "interval_s": interval,
                           "missed_intervals": config.offline_after_intervals}),
                ),
            )  # fmt: skip
            found.append(gateway)
    return found
