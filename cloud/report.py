"""The monthly customer report: what was watched, what was found, what to do next.

``collect`` reads one tenant's month from the store into a :class:`MonthData` (plain
figures, no I/O after it returns); ``write`` renders it to HTML (charts embedded as PNG)
and PDF. The month is a calendar month in the report's time zone (Japan by default).

Coverage: an hour counts as monitored for a gateway when at least one heartbeat of it
was stored in that hour; hours before the gateway's first heartbeat ever are not counted
(the gateway was not installed yet), nor hours after "now" in the current month.

Workflow columns (``resolution``, ``incident_actions``) are read when the schema has them,
so the report works on stores migrated before the SOC workflow existed.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from mimamori.cloud.errors import CloudError, StoreError
from mimamori.cloud.report_templates.catalogue import Lang, guidance
from psycopg.rows import dict_row

#: Time zone of the month boundaries and of the times printed in the report.
DEFAULT_TZ = "Asia/Tokyo"
#: At most this many recommended actions: an owner acts on a short list, not a long one.
MAX_ACTIONS = 5
#: Weight of each severity when ranking actions (one critical outweighs many infos).
SEVERITY_WEIGHT = {"critical": 100, "high": 30, "medium": 10, "low": 3, "info": 1}
FORMATS = ("html", "pdf")


class ReportError(CloudError):
    """A report cannot be produced (unknown tenant, bad month, rendering failed)."""


@dataclass
class Gap:
    """A run of consecutive hours with no heartbeat from one gateway."""

    gateway: str
    start: datetime
    hours: int


@dataclass
class Action:
    """One recommended action, tied to a rule of 5か条 and a threat of 10大脅威."""

    category: str
    rule: int
    threat: str
    score: int
    count: int


@dataclass
class MonthData:
    """Everything the monthly report shows, read from the store."""

    tenant: str
    tenant_name: str
    month: date  # first day
    tz: str
    start: datetime
    end: datetime  # exclusive; "now" for the current month
    gateways: list[dict[str, Any]]
    hours_expected: int
    hours_monitored: int
    gaps: list[Gap]
    daily_coverage: list[tuple[date, float]]  # share of gateway-hours monitored per day
    alerts_by_category: Counter[str]
    alerts_by_severity: Counter[str]
    daily_alerts: dict[date, Counter[str]]  # day -> severity -> count
    incidents: list[dict[str, Any]]
    devices: list[dict[str, Any]]
    actions: list[Action] = field(default_factory=list)

    @property
    def coverage(self) -> float:
        """Share of expected gateway-hours that were monitored (1.0 when none expected)."""
        return self.hours_monitored / self.hours_expected if self.hours_expected else 1.0


def parse_month(text: str) -> date:
    """``YYYY-MM`` → the first day of that month; ReportError otherwise."""
    try:
        parsed = datetime.strptime(text, "%Y-%m")
    except ValueError as exc:
        raise ReportError(f"not a month (YYYY-MM): {text!r}") from exc
    return parsed.date()


def _month_bounds(month: date, tz: ZoneInfo, now: datetime) -> tuple[datetime, datetime]:
    start = datetime(month.year, month.month, 1, tzinfo=tz)
    nxt = datetime(month.year + month.month // 12, month.month % 12 + 1, 1, tzinfo=tz)
    return start.astimezone(UTC), min(nxt, now).astimezone(UTC)


def _columns(conn: psycopg.Connection[Any], table: str) -> set[str]:
    rows = conn.execute(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = %s",
        (table,),
    ).fetchall()
    return {r[0] for r in rows}


def _coverage(
    conn: psycopg.Connection[Any], tenant: str, gateways: list[str], start: datetime,
    end: datetime, tz: ZoneInfo,
) -> tuple[int, int, list[Gap], list[tuple[date, float]]]:  # fmt: skip
    first = dict(conn.execute(
        "SELECT gateway, min(ts) FROM heartbeats WHERE tenant = %s AND ts < %s GROUP BY 1",
        (tenant, end),
    ).fetchall())  # fmt: skip
    seen = {(g, h) for g, h in conn.execute(
        "SELECT DISTINCT gateway, date_trunc('hour', ts) FROM heartbeats "
        "WHERE tenant = %s AND ts >= %s AND ts < %s",
        (tenant, start, end),
    ).fetchall()}  # fmt: skip
    expected = monitored = 0
    gaps: list[Gap] = []
    per_day: dict[date, list[int]] = {}
    for gw in gateways:
        if gw not in first:
            continue  # never heard from: not installed yet, nothing to measure
        hour = max(start, first[gw].replace(minute=0, second=0, microsecond=0))
        run: Gap | None = None
        while hour + timedelta(hours=1) <= end:
            day = hour.astimezone(tz).date()
            tally = per_day.setdefault(day, [0, 0])
            expected += 1
            tally[1] += 1
            if (gw, hour) in seen:
                monitored += 1
                tally[0] += 1
                run = None
            elif run is None:
                run = Gap(gateway=gw, start=hour, hours=1)
                gaps.append(run)
            else:
                run.hours += 1
            hour += timedelta(hours=1)
    daily = [(d, ok / total) for d, (ok, total) in sorted(per_day.items())]
    gaps.sort(key=lambda g: (-g.hours, g.start))
    return expected, monitored, gaps, daily


def _actions(data: MonthData) -> list[Action]:
    scores: dict[str, list[int]] = {}
    for inc in data.incidents:
        entry = scores.setdefault(inc["category"], [0, 0])
        entry[0] += SEVERITY_WEIGHT.get(inc["severity"], 1) * (2 if inc["status"] != "resolved"
                                                               else 1)  # fmt: skip
        entry[1] += 1
    for category, n in data.alerts_by_category.items():
        scores.setdefault(category, [0, 0])[0] += n  # alerts with no incident still count
        scores[category][1] = max(scores[category][1], 1)
    failing = [d for d in data.devices if d.get("outcome") == "does_not_meet"]
    if failing:  # devices below ★1 are an update/settings problem even with no alert
        scores.setdefault("old_os", [0, 0])[0] += 5 * len(failing)
        scores["old_os"][1] = max(scores["old_os"][1], len(failing))
    if data.gaps:
        entry = scores.setdefault("gateway_offline", [0, 0])
        entry[0] += sum(g.hours for g in data.gaps)
        entry[1] = max(entry[1], len(data.gaps))
    ranked = sorted(scores.items(), key=lambda kv: (-kv[1][0], kv[0]))[:MAX_ACTIONS]
    return [
        Action(category=c, rule=guidance(c).rule, threat=guidance(c).threat, score=s, count=n)
        for c, (s, n) in ranked
    ]


def collect(
    conn: psycopg.Connection[Any], *, tenant: str, month: date, tz: str = DEFAULT_TZ,
    now: datetime | None = None,
) -> MonthData:  # fmt: skip
    """Read ``tenant``'s figures for the calendar ``month`` (in ``tz``) from the store."""
    zone = ZoneInfo(tz)
    start, end = _month_bounds(month, zone, now or datetime.now(UTC))
    if end <= start:
        raise ReportError(f"{month:%Y-%m} has not started yet")
    try:
        return _collect(conn, tenant, month, tz, zone, start, end)
    except psycopg.Error as exc:
        raise StoreError(f"cannot read the report's data: {exc}") from exc


def _collect(
    conn: psycopg.Connection[Any], tenant: str, month: date, tz: str, zone: ZoneInfo,
    start: datetime, end: datetime,
) -> MonthData:  # fmt: skip
    # Hours are truncated on UTC boundaries whatever the server's TimeZone setting.
    conn.execute("SET TIME ZONE 'UTC'")
    row = conn.execute("SELECT name FROM tenants WHERE id = %s", (tenant,)).fetchone()
    if row is None:
        raise ReportError(f"unknown tenant {tenant!r}")
    with conn.cursor(row_factory=dict_row) as cur:
        gateways = cur.execute(
            "SELECT id, site, name, state, last_seen FROM gateways "
            "WHERE tenant = %s AND revoked_at IS NULL ORDER BY id", (tenant,)
        ).fetchall()  # fmt: skip
        expected, monitored, gaps, daily_cov = _coverage(
            conn, tenant, [g["id"] for g in gateways], start, end, zone
        )
        by_cat: Counter[str] = Counter()
        by_sev: Counter[str] = Counter()
        daily: dict[date, Counter[str]] = {}
        for r in cur.execute(
            "SELECT category, severity, (detected_at AT TIME ZONE %s)::date AS day, "
            "count(*) AS n FROM alerts WHERE tenant = %s AND detected_at >= %s "
            "AND detected_at < %s GROUP BY 1, 2, 3",
            (tz, tenant, start, end),
        ).fetchall():
            by_cat[r["category"]] += r["n"]
            by_sev[r["severity"]] += r["n"]
            daily.setdefault(r["day"], Counter())[r["severity"]] += r["n"]
        cols = _columns(conn, "incidents")
        resolution = "resolution" if "resolution" in cols else "''::text AS resolution"
        incidents = cur.execute(
            f"SELECT id, category, severity, status, title, gateway, alert_count, "
            f"first_alert_at, last_alert_at, resolved_at, {resolution} FROM incidents "
            "WHERE tenant = %s AND first_alert_at < %s AND last_alert_at >= %s "
            "ORDER BY first_alert_at, id",
            (tenant, end, start),
        ).fetchall()
        has_labels = bool(_columns(conn, "device_labels"))
        label_cols = ("l.outcome, l.kind, l.advice" if has_labels
                      else "''::text AS outcome, ''::text AS kind, '[]'::jsonb AS advice")
        label_join = ("LEFT JOIN device_labels l ON l.tenant = d.tenant AND l.mac = d.mac"
                      if has_labels else "")  # fmt: skip
        devices = cur.execute(
            "SELECT d.mac::text AS mac, ARRAY(SELECT host(i) FROM unnest(d.ips) i) AS ips, "
            f"d.vendor, d.hostname, d.model, "
            f"d.first_seen, d.last_seen, {label_cols} FROM devices d {label_join} "
            "WHERE d.tenant = %s AND d.first_seen < %s AND d.last_seen >= %s "
            "ORDER BY d.first_seen, d.mac",
            (tenant, end, start),
        ).fetchall()
    for d in devices:
        d["outcome"] = d["outcome"] or ""
        d["advice"] = d["advice"] or []
    data = MonthData(
        tenant=tenant, tenant_name=row[0] or tenant, month=month, tz=tz, start=start, end=end,
        gateways=gateways, hours_expected=expected, hours_monitored=monitored, gaps=gaps,
        daily_coverage=daily_cov, alerts_by_category=by_cat, alerts_by_severity=by_sev,
        daily_alerts=daily, incidents=incidents, devices=devices,
    )  # fmt: skip
    data.actions = _actions(data)
    return data


def write(
    data: MonthData, *, out: Path, lang: Lang = "ja", formats: tuple[str, ...] = FORMATS
) -> dict[str, Path]:
    """Render ``data`` into ``out`` in each of ``formats``; return format -> path."""
    from mimamori.cloud.report_templates import render

    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ReportError(f"unknown format(s): {', '.join(sorted(unknown))}")
    out.mkdir(parents=True, exist_ok=True)
    stem = f"report-{data.tenant}-{data.month:%Y-%m}-{lang}"
    page = render.month_html(data, lang=lang)
    written: dict[str, Path] = {}
    if "html" in formats:
        written["html"] = out / f"{stem}.html"
        written["html"].write_text(page, encoding="utf-8")
    if "pdf" in formats:
        written["pdf"] = out / f"{stem}.pdf"
        render.pdf(page, written["pdf"])
    return written


def generate(
    dsn: str, *, tenant: str, month: date, out: Path, lang: Lang = "ja",
    formats: tuple[str, ...] = FORMATS, tz: str = DEFAULT_TZ, now: datetime | None = None,
) -> dict[str, Path]:  # fmt: skip
    """Collect and write one tenant's monthly report (the CLI's whole job)."""
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            data = collect(conn, tenant=tenant, month=month, tz=tz, now=now)
    except psycopg.Error as exc:
        raise StoreError(f"cannot connect to the database: {exc}") from exc
    return write(data, out=out, lang=lang, formats=formats)


def sample(dsn: str, *, out: Path) -> Path:
    """The demo's sample: the first tenant's report for the current month, as PDF.

    Falls back to HTML alone when PDF rendering fails (e.g. pango missing).
    """
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            row = conn.execute("SELECT min(id) FROM tenants").fetchone()
    except psycopg.Error as exc:
        raise StoreError(f"cannot connect to the database: {exc}") from exc
    if row is None or row[0] is None:
        raise ReportError("no tenant in the store")
    now = datetime.now(ZoneInfo(DEFAULT_TZ))
    month = date(now.year, now.month, 1)
    try:
        paths = generate(dsn, tenant=row[0], month=month, out=out)
    except ReportError:
        paths = generate(dsn, tenant=row[0], month=month, out=out, formats=("html",))
    return paths.get("pdf", paths["html"])
