"""Long-window detection: the rules of :mod:`mimamori.detect.longwindow` over stored rows.

A gateway keeps a day of call-back times in memory and no upload history at all, so two
detections need the store:

* slow beacons (one call-back every 5 to 60 minutes), scored over a day of outbound flow
  summaries with new connections (raw ``flows``; ``beacon.history_s``);
* exfiltration: a device's upload in the last complete hour against its own hourly
  uploads of the week before (``exfiltration.baseline_s``), read from the ``flows_1h``
  rollup, and the judged hour itself from raw ``flows`` (a rollup may not hold it yet).

The job judges complete hours: ``now`` is cut to the hour, so every run within one hour
sees the same rows and produces the same alert ids (``ON CONFLICT DO NOTHING``). It runs
gateway by gateway, for the gateways that sent outbound traffic in the judged hour. An
alert is not stored again while one with the same tenant and dedup key (the gateway's own
beacon rule uses the same keys) is younger than the category's window: a day for beacons
(``beacon.history_s``), the engine's suppression window for exfiltration.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from mimamori.cloud.jobs._alerts import store_alert
from mimamori.detect.config import DetectConfig, load_config
from mimamori.detect.longwindow import beacon_alerts, exfiltration_alerts
from mimamori.protocol import FlowSummary

_GATEWAYS_SQL = """
SELECT DISTINCT tenant, gateway FROM flows
WHERE ts >= %(start)s AND ts < %(end)s AND dir = 'out'
ORDER BY tenant, gateway
"""

_COLUMNS = """extract(epoch FROM {ts}), mac::text, host(local_ip), host(remote_ip),
    remote_port, proto, app, sni, pkts_out, pkts_in, bytes_out, bytes_in, conns"""

_BEACON_SQL = f"""
SELECT {_COLUMNS.format(ts="ts")}, extract(epoch FROM first_seen), extract(epoch FROM last_seen)
FROM flows
WHERE tenant = %(tenant)s AND gateway = %(gateway)s AND dir = 'out' AND conns > 0
  AND ts >= %(start)s AND ts < %(end)s
"""

# Rollup rows stand at the middle of their hour: the rule buckets rows by
# (now - ts) // bucket_s, and an hour's start would fall into the bucket after it.
_BASELINE_SQL = f"""
SELECT {_COLUMNS.format(ts="bucket + interval '30 minutes'")}, NULL, NULL
FROM flows_1h
WHERE tenant = %(tenant)s AND gateway = %(gateway)s AND dir = 'out'
  AND bucket >= %(start)s AND bucket < %(judged)s
UNION ALL
SELECT {_COLUMNS.format(ts="ts")}, NULL, NULL
FROM flows
WHERE tenant = %(tenant)s AND gateway = %(gateway)s AND dir = 'out'
  AND ts >= %(judged)s AND ts < %(end)s
"""


@dataclass
class LongWindowResult:
    gateways: int = 0
    beacon: int = 0
    exfiltration: int = 0


def _summary(row: tuple[Any, ...]) -> FlowSummary:
    (ts, mac, local, remote, port, proto, app, sni, p_out, p_in, b_out, b_in, conns, first,
     last) = row  # fmt: skip
    return FlowSummary(
        ts=float(ts), mac=mac or "", local_ip=local, remote_ip=remote, remote_port=port,
        proto=proto, dir="out", app=app, sni=sni, pkts_out=int(p_out), pkts_in=int(p_in),
        bytes_out=int(b_out), bytes_in=int(b_in), conns=int(conns),
        first_seen=None if first is None else float(first),
        last_seen=None if last is None else float(last),
    )  # fmt: skip


def run(
    conn: psycopg.Connection[Any], *, now: datetime, config: DetectConfig | None = None
) -> LongWindowResult:
    """Judge the last complete hour before ``now`` for every gateway with outbound traffic."""
    cfg = config or load_config()
    end = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    judged = end - timedelta(seconds=cfg.exfiltration.bucket_s)
    params: dict[str, Any] = {"end": end, "judged": judged, "start": judged}
    result = LongWindowResult()
    windows = {
        "beacon": timedelta(seconds=cfg.beacon.history_s),
        "exfiltration": timedelta(seconds=cfg.engine.suppress_s),
    }
    gateways = conn.execute(_GATEWAYS_SQL, params).fetchall()
    for tenant, gateway in gateways:
        result.gateways += 1
        scope = {**params, "tenant": tenant, "gateway": gateway}
        rows = conn.execute(
            _BEACON_SQL, {**scope, "start": end - timedelta(seconds=cfg.beacon.history_s)}
        ).fetchall()
        alerts = beacon_alerts([_summary(r) for r in rows], config=cfg, now=end.timestamp())
        rows = conn.execute(
            _BASELINE_SQL,
            {**scope, "start": judged - timedelta(seconds=cfg.exfiltration.baseline_s)},
        ).fetchall()
        alerts += exfiltration_alerts([_summary(r) for r in rows], config=cfg, now=end.timestamp())
        with conn.transaction():
            for alert in alerts:
                stored = store_alert(
                    conn,
                    tenant=tenant,
                    gateway=gateway,
                    alert=alert,
                    not_within=windows[alert.category],
                )
                if alert.category == "beacon":
                    result.beacon += stored
                else:
                    result.exfiltration += stored
    return result
