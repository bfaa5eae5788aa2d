"""Evidence of one incident for the customer's insurer: JSON, PDF and SHA-256 sums.

The JSON holds the incident, its alerts with their evidence, what was done (the SOC
workflow tables — actions, notes, on-site dispatches — where the schema has them) and one
timeline merging all of it. Hashes let a third party check that nothing changed after
export: each alert carries the SHA-256 of its canonical JSON, the document carries
``content_sha256`` over its canonical JSON without that member, and ``SHA256SUMS`` (the
``sha256sum -c`` format) covers the JSON and PDF files as written.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any

import psycopg
from mimamori.cloud.errors import CloudError, StoreError
from psycopg.rows import dict_row

FORMAT = "mimamori-incident-evidence/1"


class EvidenceError(CloudError):
    """The evidence cannot be exported (unknown incident, printing failed)."""


def _plain(value: Any) -> Any:
    """JSON-ready form: times as ISO 8601 UTC, nested values converted."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)  # inet, macaddr, Decimal: their text form


def canonical(value: Any) -> bytes:
    """Canonical JSON bytes (sorted keys, no spaces, UTF-8) that hashes are taken over."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def _tables(conn: psycopg.Connection[Any]) -> set[str]:
    rows = conn.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
    ).fetchall()
    return {r[0] for r in rows}


def collect(conn: psycopg.Connection[Any], *, incident: int) -> dict[str, Any]:
    """The evidence document of ``incident`` (EvidenceError when it does not exist)."""
    try:
        with conn.cursor(row_factory=dict_row) as cur:
            inc = cur.execute("SELECT * FROM incidents WHERE id = %s", (incident,)).fetchone()
            if inc is None:
                raise EvidenceError(f"unknown incident {incident}")
            tenant = cur.execute("SELECT id, name FROM tenants WHERE id = %s",
                                 (inc["tenant"],)).fetchone()  # fmt: skip
            alerts = cur.execute(
                "SELECT id, gateway, alert_id, category, severity, detected_at, received_at,"
                " actor, target, summary_en, summary_ja, dedup_key, rule, mac::text AS mac,"
                " evidence, source FROM alerts WHERE incident_id = %s ORDER BY detected_at, id",
                (incident,),
            ).fetchall()
            tables = _tables(conn)
            extra: dict[str, list[dict[str, Any]]] = {}
            for table in ("incident_actions", "incident_notes", "dispatches"):
                extra[table] = (cur.execute(f"SELECT * FROM {table} WHERE incident_id = %s "
                                            "ORDER BY id", (incident,)).fetchall()
                                if table in tables else [])  # fmt: skip
    except psycopg.Error as exc:
        raise StoreError(f"cannot read incident {incident}: {exc}") from exc
    plain_alerts = []
    for a in alerts:
        item = _plain(a)
        item["sha256"] = sha256(canonical(item))
        plain_alerts.append(item)
    doc: dict[str, Any] = {
        "format": FORMAT,
        "generated_at": _plain(datetime.now(UTC)),
        "tenant": _plain(tenant),
        "incident": _plain(inc),
        "timeline": _timeline(inc, alerts, extra),
        "alerts": plain_alerts,
        "actions": _plain(extra["incident_actions"]),
        "notes": _plain(extra["incident_notes"]),
        "dispatches": _plain(extra["dispatches"]),
    }
    doc["content_sha256"] = sha256(canonical(doc))
    return doc


def _timeline(inc: dict[str, Any], alerts: list[dict[str, Any]],
              extra: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:  # fmt: skip
    events: list[tuple[datetime, str, str]] = [(inc["opened_at"], "opened", inc["title"])]
    for a in alerts:
        events.append((a["detected_at"], "alert", f"[{a['severity']}] {a['summary_en']}"))
    if inc.get("acknowledged_at"):
        events.append((inc["acknowledged_at"], "acknowledged", inc.get("acknowledged_by") or ""))
    for act in extra["incident_actions"]:
        events.append((act["at"], act["action"],
                       f"{act['actor']}: {act['from_status']} -> {act['to_status']}"))  # fmt: skip
    for note in extra["incident_notes"]:
        events.append((note["at"], "note", f"{note['author']}: {note['body']}"))
    for d in extra["dispatches"]:
        events.append((d["dispatched_at"], "dispatch", f"{d['who']}: {d['outcome']} {d['notes']}"))
    if inc.get("resolved_at"):
        events.append((inc["resolved_at"], "resolved", inc.get("resolution") or ""))
    events.sort(key=lambda e: e[0])
    return [{"at": _plain(at), "event": kind, "detail": detail} for at, kind, detail in events]


def _html(doc: dict[str, Any]) -> str:
    from mimamori.cloud.report_templates.render import page

    e = escape
    inc = doc["incident"]
    rows = "".join(f"<tr><td>{e(t['at'])}</td><td>{e(t['event'])}</td><td>{e(t['detail'])}"
                   "</td></tr>" for t in doc["timeline"])  # fmt: skip
    # One block per alert (not table columns), so every hash stays on one unbroken line.
    alerts = "".join(
        f"<div class='box'><b>{e(a['detected_at'])} · {e(a['category'])} / {e(a['severity'])}"
        f"</b><br>{e(a['summary_ja'])}<br>{e(a['summary_en'])}<br>"
        f"<span class='note'>{e(a['actor'])} → {e(a['target'])} · "
        f"{e(json.dumps(a['evidence'], ensure_ascii=False))}</span><br>"
        f"<span class='hash'>SHA-256 {e(a['sha256'])}</span></div>"
        for a in doc["alerts"]
    )
    body = (
        f"<h1>インシデント証跡 / Incident evidence #{inc['id']}</h1>"
        f"<p>{e((doc['tenant'] or {}).get('name') or inc['tenant'])} · {e(inc['title'])} · "
        f"{e(inc['category'])} / {e(inc['severity'])} · {e(inc['status'])}</p>"
        f"<p class='hash'>content_sha256 {e(doc['content_sha256'])}<br>"
        f"generated_at: {e(doc['generated_at'])}</p>"
        f"<h2>時系列 / Timeline</h2><table><tr><th>UTC</th><th>event</th><th>detail</th></tr>"
        f"{rows}</table>"
        f"<h2>検知と根拠 / Alerts and evidence ({len(doc['alerts'])})</h2>{alerts}"
    )
    return page(f"Incident {inc['id']}", body, "ja")


def export(dsn: str, *, incident: int, out: Path) -> list[Path]:
    """Write ``incident-<id>.json``, ``.pdf`` and ``incident-<id>.SHA256SUMS`` into ``out``."""
    from mimamori.cloud.report_templates.render import pdf

    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            doc = collect(conn, incident=incident)
    except psycopg.Error as exc:
        raise StoreError(f"cannot connect to the database: {exc}") from exc
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"incident-{incident}"
    json_path, pdf_path = stem.with_suffix(".json"), stem.with_suffix(".pdf")
    json_path.write_text(json.dumps(doc, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    try:
        pdf(_html(doc), pdf_path)
    except CloudError as exc:
        raise EvidenceError(str(exc)) from exc
    sums = stem.with_suffix(".SHA256SUMS")
    sums.write_text("".join(f"{sha256(p.read_bytes())}  {p.name}\n"
                            for p in (json_path, pdf_path)))  # fmt: skip
    return [json_path, pdf_path, sums]
