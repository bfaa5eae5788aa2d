"""How each kind of upstream message becomes rows: the ingester's per-kind mapping.

``prepare`` runs as soon as a message is decoded (before it waits in the queue) and does
all the CPU work: flow batches become binary COPY data, other kinds become parameter
tuples for the statements below. ``Batch`` then applies many prepared messages in one
transaction. Times arrive as UNIX seconds and are converted by the database
(``to_timestamp``) except on the flows hot path (see :mod:`._pgcopy`).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

import msgspec
from mimamori.cloud import _pgcopy
from mimamori.cloud.errors import RowError
from mimamori.protocol import (
    AlertBatch,
    DeviceBatch,
    FlowBatch,
    Heartbeat,
    SensorMessage,
    Status,
    UpMessage,
    kind_of,
)
from psycopg.types.json import Jsonb

_json = msgspec.json.Encoder()
#: One encoder per process: its caches carry over between a gateway's batches.
_flow_encoder = _pgcopy.FlowEncoder()


@dataclass(slots=True)
class Prepared:
    """A decoded, validated message and the rows it will write.

    Flow batches keep only their encoded COPY data (``copy``), not the decoded rows, so a
    queue of prepared messages stays small.
    """

    kind: str
    tenant: str
    gateway: str
    seq: int
    sent_at: float
    rows: int
    copy: bytes = b""
    params: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)


def _no_nul(value: str, what: str) -> str:
    if "\x00" in value:
        raise RowError(f"{what} contains a NUL character")
    return value


def _json_param(value: dict[str, Any], what: str) -> Jsonb:
    # jsonb refuses \u0000 in strings; find it here rather than fail a whole batch.
    if b"\\u0000" in _json.encode(value):
        raise RowError(f"{what} contains a NUL character")
    return Jsonb(value)


def _ip(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError as exc:
        raise RowError(f"invalid IP address {value[:60]!r}") from exc
    return value


# --- statements, one per target table -----------------------------------------------

HEARTBEAT_SQL = """
INSERT INTO heartbeats (ts, tenant, gateway, seq, interval_s, uptime_s, load1, mem_used_pct,
    disk_used_pct, temp_c, packets_seen, packets_dropped, outbox_depth, outbox_bytes,
    agent_version, config_hash, intel_age_s)
VALUES (to_timestamp(%s), %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
"""

# A heartbeat means the gateway is up now; last_seen never moves back (re-sent old ones).
# last_heard is the cloud's clock (this transaction's), which liveness compares with.
GATEWAY_SEEN_SQL = """
UPDATE gateways SET
    last_seen = greatest(last_seen, to_timestamp(%s)),
    last_heard = greatest(last_heard, now()),
    heartbeat_interval_s = %s,
    state_changed_at = CASE WHEN state <> 'online' THEN now() ELSE state_changed_at END,
    state = 'online'
WHERE id = %s
"""

GATEWAY_STATE_SQL = """
UPDATE gateways SET
    state_changed_at = CASE WHEN state <> %s THEN now() ELSE state_changed_at END,
    state = %s
WHERE id = %s
"""

# Facts from a report older than what we hold (a re-sent batch) do not overwrite newer ones;
# empty facts never erase known ones.
_NEWER = "EXCLUDED.last_seen >= d.last_seen"
DEVICE_SQL = f"""
INSERT INTO devices AS d (tenant, mac, gateway, ips, vendor, hostname, dhcp_fingerprint,
    dhcp_vendor_class, model, os_hint, services, extras, first_seen, last_seen)
VALUES (%s, %s, %s, %s::inet[], %s, %s, %s, %s, %s, %s, %s::text[], %s,
    to_timestamp(%s), to_timestamp(%s))
ON CONFLICT (tenant, mac) DO UPDATE SET
    gateway = CASE WHEN {_NEWER} THEN EXCLUDED.gateway ELSE d.gateway END,
    ips = CASE WHEN {_NEWER} AND cardinality(EXCLUDED.ips) > 0
          THEN EXCLUDED.ips ELSE d.ips END,
    services = CASE WHEN {_NEWER} AND cardinality(EXCLUDED.services) > 0
               THEN EXCLUDED.services ELSE d.services END,
    {
    ", ".join(
        f"{c} = CASE WHEN {_NEWER} AND EXCLUDED.{c} <> '' THEN EXCLUDED.{c} ELSE d.{c} END"
        for c in ("vendor", "hostname", "dhcp_fingerprint", "dhcp_vendor_class", "model", "os_hint")
    )
},
    extras = CASE WHEN {_NEWER} THEN d.extras || EXCLUDED.extras
             ELSE EXCLUDED.extras || d.extras END,
    first_seen = least(d.first_seen, EXCLUDED.first_seen),
    last_seen = greatest(d.last_seen, EXCLUDED.last_seen),
    updated_at = now()
"""

ALERT_SQL = """
INSERT INTO alerts (tenant, gateway, alert_id, category, severity, detected_at, actor, target,
    summary_en, summary_ja, dedup_key, rule, mac, evidence)
VALUES (%s, %s, %s, %s, %s, to_timestamp(%s), %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (gateway, alert_id) DO NOTHING
"""

SENSOR_MESSAGE_SQL = """
INSERT INTO sensor_messages (ts, tenant, gateway, seq, sensor_id, sensor_kind, sent_at, body)
VALUES (to_timestamp(%s), %s, %s, %s, %s, %s, to_timestamp(%s), %s)
"""

# last_heard is the cloud's clock (this transaction's), which the sensors job judges
# liveness with; a message stored now means the sensor was heard: online (as a gateway on
# a heartbeat), even if the gateway's stamp is older than last_seen (its clock went back).
# last_seen (the relay's stamp, the gateway's clock) never moves back.
# heartbeat_s comes only from self-reports, and only from one at least as new as the one
# it came from before (self_report_at); other kinds leave it as it is.
SENSOR_SQL = """
INSERT INTO sensors AS s (tenant, sensor_id, gateway, state, last_kind, first_seen, last_seen,
    last_body, last_heard, heartbeat_s, self_report_at)
VALUES (%s, %s, %s, 'online', %s, to_timestamp(%s), to_timestamp(%s), %s, now(), %s,
    to_timestamp(%s))
ON CONFLICT (tenant, sensor_id) DO UPDATE SET
    gateway = EXCLUDED.gateway,
    first_seen = least(s.first_seen, EXCLUDED.first_seen),
    last_seen = greatest(s.last_seen, EXCLUDED.last_seen),
    last_heard = greatest(s.last_heard, EXCLUDED.last_heard),
    state = 'online',
    last_kind = CASE WHEN EXCLUDED.last_seen >= s.last_seen
                THEN EXCLUDED.last_kind ELSE s.last_kind END,
    last_body = CASE WHEN EXCLUDED.last_seen >= s.last_seen
                THEN EXCLUDED.last_body ELSE s.last_body END,
    heartbeat_s = CASE WHEN EXCLUDED.heartbeat_s IS NOT NULL
                       AND EXCLUDED.self_report_at >= coalesce(s.self_report_at, '-infinity')
                  THEN EXCLUDED.heartbeat_s ELSE s.heartbeat_s END,
    self_report_at = CASE WHEN EXCLUDED.heartbeat_s IS NOT NULL
                          AND EXCLUDED.self_report_at >= coalesce(s.self_report_at, '-infinity')
                     THEN EXCLUDED.self_report_at ELSE s.self_report_at END
"""

#: Largest heartbeat interval taken from a self-report (a day): the firmware accepts
#: 10-3600 s; anything beyond a day is a faulty report, not a setting.
MAX_REPORTED_HEARTBEAT_S = 86_400.0


def reported_heartbeat(message: SensorMessage) -> float | None:
    """The interval a self-report announces, or None (other kinds, missing or nonsense).

    A self-report with a faulty ``heartbeat_s`` is still stored: its other facts matter,
    and the sensors job then uses its default interval for that sensor.
    """
    if message.sensor_kind != "self_report":
        return None
    value = message.body.get("heartbeat_s")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if 0 < value <= MAX_REPORTED_HEARTBEAT_S else None


#: Statement per parameter list name, in the order a batch applies them.
STATEMENTS: dict[str, str] = {
    "heartbeats": HEARTBEAT_SQL,
    "gateway_seen": GATEWAY_SEEN_SQL,
    "gateway_state": GATEWAY_STATE_SQL,
    "devices": DEVICE_SQL,
    "alerts": ALERT_SQL,
    "sensor_messages": SENSOR_MESSAGE_SQL,
    "sensors": SENSOR_SQL,
}


def prepare(message: UpMessage, tenant: str) -> Prepared:
    """Map a decoded message of ``tenant`` to rows. RowError if the database would refuse."""
    p = Prepared(
        kind=kind_of(message),
        tenant=tenant,
        gateway=message.gateway,
        seq=message.seq,
        sent_at=message.sent_at,
        rows=0,
    )
    gw = message.gateway
    if isinstance(message, FlowBatch):
        p.copy = _flow_encoder.encode(tenant, gw, message.flows)
        p.rows = len(message.flows)
    elif isinstance(message, Heartbeat):
        h = message
        p.params["heartbeats"] = [(
            h.sent_at, tenant, gw, h.seq, h.interval_s, h.uptime_s, h.load1, h.mem_used_pct,
            h.disk_used_pct, h.temp_c, h.packets_seen, h.packets_dropped, h.outbox_depth,
            h.outbox_bytes, _no_nul(h.agent_version, "agent_version"),
            _no_nul(h.config_hash, "config_hash"), h.intel_age_s,
        )]  # fmt: skip
        p.params["gateway_seen"] = [(h.sent_at, h.interval_s, gw)]
        p.rows = 1
    elif isinstance(message, Status):
        p.params["gateway_state"] = [(message.state, message.state, gw)]
    elif isinstance(message, DeviceBatch):
        p.params["devices"] = [
            (
                tenant, d.mac, gw, [_ip(ip) for ip in d.ips], _no_nul(d.vendor, "vendor"),
                _no_nul(d.hostname, "hostname"), _no_nul(d.dhcp_fingerprint, "dhcp_fingerprint"),
                _no_nul(d.dhcp_vendor_class, "dhcp_vendor_class"), _no_nul(d.model, "model"),
                _no_nul(d.os_hint, "os_hint"), [_no_nul(s, "service") for s in d.services],
                _json_param(dict(d.extras), "extras"), d.first_seen, d.last_seen,
            )
            for d in message.devices
        ]  # fmt: skip
        p.rows = len(message.devices)
    elif isinstance(message, AlertBatch):
        p.params["alerts"] = [
            (
                tenant, gw, _no_nul(a.id, "alert id"), a.category, a.severity, a.detected_at,
                _no_nul(a.actor, "actor"), _no_nul(a.target, "target"),
                _no_nul(a.summary_en, "summary_en"), _no_nul(a.summary_ja, "summary_ja"),
                _no_nul(a.dedup_key, "dedup_key"), _no_nul(a.rule, "rule"), a.mac or None,
                _json_param(a.evidence, "evidence"),
            )
            for a in message.alerts
        ]  # fmt: skip
        p.rows = len(message.alerts)
    elif isinstance(message, SensorMessage):
        s = message
        body = _json_param(s.body, "body")
        p.params["sensor_messages"] = [
            (s.received_at, tenant, gw, s.seq, s.sensor_id, s.sensor_kind, s.sent_at, body)
        ]
        heartbeat_s = reported_heartbeat(s)
        p.params["sensors"] = [(
            tenant, s.sensor_id, gw, s.sensor_kind, s.received_at, s.received_at, body,
            heartbeat_s, s.received_at if heartbeat_s is not None else None,
        )]  # fmt: skip
        p.rows = 1
    return p
