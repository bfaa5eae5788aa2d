"""Device labels in the cloud: JC-STAR-style ★1 labels computed from the store.

:func:`refresh` derives each device's evidence from what gateways already publish (the
``devices`` inventory, ``flows`` summaries of the last ``lookback_days``, and exposure /
old-OS alerts), labels it with the pure :func:`mimamori.detect.labels.assess`, and writes
``device_labels`` (current) and ``device_label_history`` (one row per change). No
protocol change is needed. The jobs runner calls ``refresh(conn, now=...)``;
:func:`fetch` and :func:`history` serve ``mimamori label``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from mimamori.cloud.errors import StoreError
from mimamori.detect.labels import Catalogue, Label, Observer, assess, load_catalogue
from mimamori.protocol import Device, FlowSummary
from psycopg.types.json import Jsonb

_DEVICES_SQL = """
SELECT tenant, mac::text, gateway, array(SELECT host(i) FROM unnest(ips) AS i), vendor,
       hostname, model, os_hint, services, extras, extract(epoch FROM first_seen),
       extract(epoch FROM last_seen)
FROM devices
WHERE (%(tenant)s::text IS NULL OR tenant = %(tenant)s)
ORDER BY tenant, mac
"""

# Summaries are folded per (device, peer, port, app, name): the checks need what was seen,
# not each interval, and the fold keeps the transfer small for a week of history.
_FLOWS_SQL = """
SELECT tenant, coalesce(mac::text, ''), host(local_ip), host(remote_ip), remote_port, proto,
       dir, app, sni, sum(conns), extract(epoch FROM max(coalesce(last_seen, ts)))
FROM flows
WHERE ts >= %(since)s AND ts <= %(now)s
  AND (%(tenant)s::text IS NULL OR tenant = %(tenant)s)
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9
"""

_ALERTS_SQL = """
SELECT tenant, coalesce(mac::text, ''), actor, category, extract(epoch FROM detected_at),
       summary_en
FROM alerts
WHERE category IN ('exposure', 'old_os') AND detected_at >= %(since)s
  AND detected_at <= %(now)s AND (%(tenant)s::text IS NULL OR tenant = %(tenant)s)
"""

_UPSERT_SQL = """
INSERT INTO device_labels (tenant, mac, gateway, outcome, kind, iot, impact, priority,
    criteria, reasons, advice, note, fingerprint, catalogue_version, assessed_at, changed_at)
VALUES (%(tenant)s, %(mac)s, %(gateway)s, %(outcome)s, %(kind)s, %(iot)s, %(impact)s,
    %(priority)s, %(criteria)s, %(reasons)s, %(advice)s, %(note)s, %(fingerprint)s,
    %(catalogue_version)s, %(now)s, %(now)s)
ON CONFLICT (tenant, mac) DO UPDATE SET
    gateway = EXCLUDED.gateway, outcome = EXCLUDED.outcome, kind = EXCLUDED.kind,
    iot = EXCLUDED.iot, impact = EXCLUDED.impact, priority = EXCLUDED.priority,
    criteria = EXCLUDED.criteria, reasons = EXCLUDED.reasons, advice = EXCLUDED.advice,
    note = EXCLUDED.note, catalogue_version = EXCLUDED.catalogue_version,
    assessed_at = EXCLUDED.assessed_at,
    changed_at = CASE WHEN device_labels.fingerprint = EXCLUDED.fingerprint
                       AND device_labels.outcome = EXCLUDED.outcome
                      THEN device_labels.changed_at ELSE EXCLUDED.changed_at END,
    fingerprint = EXCLUDED.fingerprint
"""

_HISTORY_SQL = """
INSERT INTO device_label_history (tenant, mac, gateway, outcome, fingerprint, reasons,
    catalogue_version, assessed_at)
VALUES (%(tenant)s, %(mac)s, %(gateway)s, %(outcome)s, %(fingerprint)s, %(reasons)s,
    %(catalogue_version)s, %(now)s)
"""


@dataclass(frozen=True)
class RefreshResult:
    """What one refresh did: devices labelled, labels that changed (history rows)."""

    labelled: int
    changed: int


def fingerprint(label: Label) -> str:
    """Criterion statuses in catalogue order, one letter each (p, f, u)."""
    return "".join(c.status[0] for c in label.criteria)


def _device(row: tuple[Any, ...]) -> tuple[str, str, Device]:
    tenant, mac, gateway, ips, vendor, hostname, model, os_hint, services, extras, fs, ls = row
    device = Device(
        mac=mac, ips=list(ips or ()), vendor=vendor, hostname=hostname, model=model,
        os_hint=os_hint, services=list(services or ()), first_seen=float(fs),
        last_seen=float(ls), extras={str(k): str(v) for k, v in (extras or {}).items()},
    )  # fmt: skip
    return tenant, gateway, device


def refresh(
    conn: psycopg.Connection[Any],
    *,
    now: datetime,
    tenant: str | None = None,
    catalogue: Catalogue | None = None,
) -> RefreshResult:
    """Label every device (of ``tenant``, or of all tenants) as of ``now``; store them."""
    cat = catalogue or load_catalogue()
    params = {"tenant": tenant, "now": now, "since": now - timedelta(days=cat.lookback_days)}
    try:
        devices = [_device(r) for r in conn.execute(_DEVICES_SQL, params).fetchall()]
        flows = conn.execute(_FLOWS_SQL, params).fetchall()
        alerts = conn.execute(_ALERTS_SQL, params).fetchall()
    except psycopg.Error as exc:
        raise StoreError(f"label refresh cannot read the store: {exc}") from exc
    observers: dict[str, Observer] = {}
    gateways: dict[tuple[str, str], str] = {}
    for t, gateway, device in devices:  # first: LAN servers are found by their addresses
        observers.setdefault(t, Observer(catalogue=cat)).device(device)
        gateways[(t, device.mac)] = gateway
    for t, mac, local, remote, port, proto, direction, app, sni, conns, last in flows:
        if t in observers:
            observers[t].summary(FlowSummary(
                ts=float(last), mac=mac, local_ip=local, remote_ip=remote, remote_port=port,
                proto=proto, dir=direction, app=app, sni=sni, conns=int(conns),
                last_seen=float(last),
            ))  # fmt: skip
    for t, mac, actor, category, ts, summary in alerts:
        if (obs := observers.get(t)) is not None:
            obs.alert(mac or obs.mac_of(actor), category=category, ts=float(ts), detail=summary)
    labelled = changed = 0
    stamp = now.timestamp()
    try:
        with conn.transaction():
            for t, obs in observers.items():
                previous = {
                    str(mac): (fp, outcome)
                    for mac, fp, outcome in conn.execute(
                        "SELECT mac::text, fingerprint, outcome FROM device_labels "
                        "WHERE tenant = %s",
                        (t,),
                    ).fetchall()
                }
                for mac, ev in obs.devices.items():
                    if (t, mac) not in gateways:
                        continue  # seen only in flows: not an inventoried device
                    label = assess(ev, catalogue=cat, now=stamp)
                    doc = label.to_dict()
                    row = {
                        "tenant": t, "mac": mac, "gateway": gateways[(t, mac)],
                        "outcome": label.outcome, "kind": label.kind, "iot": label.iot,
                        "impact": label.impact, "priority": label.priority,
                        "criteria": Jsonb(doc["criteria"]), "reasons": Jsonb(doc["reasons"]),
                        "advice": Jsonb(doc["advice"]), "note": label.note,
                        "fingerprint": fingerprint(label),
                        "catalogue_version": label.catalogue_version, "now": now,
                    }  # fmt: skip
                    conn.execute(_UPSERT_SQL, row)
                    labelled += 1
                    if previous.get(mac) != (row["fingerprint"], label.outcome):
                        conn.execute(_HISTORY_SQL, row)
                        changed += 1
    except psycopg.Error as exc:
        raise StoreError(f"label refresh cannot write labels: {exc}") from exc
    return RefreshResult(labelled=labelled, changed=changed)


_FETCH_SQL = """
SELECT mac::text, gateway, outcome, kind, iot, impact, priority, criteria, reasons, advice,
       note, catalogue_version, assessed_at, changed_at
FROM device_labels
WHERE tenant = %(tenant)s
  AND (%(gateway)s::text IS NULL OR gateway = %(gateway)s)
  AND (%(mac)s::macaddr IS NULL OR mac = %(mac)s::macaddr)
ORDER BY priority DESC, mac
"""
_FETCH_COLUMNS = (
    "mac", "gateway", "outcome", "kind", "iot", "impact", "priority", "criteria", "reasons",
    "advice", "note", "catalogue_version", "assessed_at", "changed_at",
)  # fmt: skip


def fetch(
    conn: psycopg.Connection[Any],
    *,
    tenant: str,
    gateway: str | None = None,
    mac: str | None = None,
) -> list[dict[str, Any]]:
    """Current labels of a site (or one gateway's, or one device's), most urgent first."""
    params = {"tenant": tenant, "gateway": gateway, "mac": mac}
    try:
        rows = conn.execute(_FETCH_SQL, params).fetchall()
    except psycopg.Error as exc:
        raise StoreError(f"cannot read labels: {exc}") from exc
    return [dict(zip(_FETCH_COLUMNS, row, strict=True)) for row in rows]


def history(conn: psycopg.Connection[Any], *, tenant: str, mac: str) -> list[dict[str, Any]]:
    """Label changes of one device, newest first."""
    try:
        rows = conn.execute(
            "SELECT outcome, fingerprint, reasons, assessed_at FROM device_label_history "
            "WHERE tenant = %s AND mac = %s::macaddr ORDER BY assessed_at DESC, id DESC",
            (tenant, mac),
        ).fetchall()
    except psycopg.Error as exc:
        raise StoreError(f"cannot read label history: {exc}") from exc
    return [{"outcome": o, "fingerprint": f, "reasons": r, "assessed_at": a} for o, f, r, a in rows]
