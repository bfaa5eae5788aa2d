"""Alert statistics and indicators that providers can share without naming customers.

Two exports over a time window:

* **statistics**: alert counts by ISO week, industry, category and severity. No tenant,
  gateway, device, address or MAC leaves this module: rows carry only those four
  dimensions, the alert count and how many tenants contributed. A cell fed by fewer than
  ``min_tenants`` tenants (k-anonymity) is generalised step by step — its industry
  becomes ``other``, then its category, then its severity — and merged with the cells it
  now equals; a cell still too small after that is dropped and counted as suppressed.
* **indicators**: a STIX 2.1 bundle of the external addresses and domains behind
  ``intel_match``, ``bruteforce`` and ``scan`` alerts (the attacker for brute force and
  scans, the listed party for intelligence matches). Internal, private, loopback,
  link-local and documentation addresses and local names never become indicators.
"""

from __future__ import annotations

import csv
import io
import ipaddress
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from mimamori.cloud.errors import CloudError, StoreError


class StatsError(CloudError):
    """The statistics or indicators cannot be exported (bad window, bad format)."""


@dataclass(frozen=True)
class StatsConfig:
    """Export settings (defaults suit sharing within a provider group)."""

    #: k of k-anonymity: fewer contributing tenants than this and a cell is generalised.
    #: 3 is the smallest k where no two tenants can subtract their own counts to learn a
    #: third's.
    min_tenants: int = 3
    #: Alert categories whose external parties become indicators.
    indicator_categories: tuple[str, ...] = ("intel_match", "bruteforce", "scan")
    #: Categories where only the actor is the attacker (the target is the victim).
    actor_only: tuple[str, ...] = ("bruteforce", "scan")
    #: Name suffixes that are always local (never published as indicator domains).
    local_suffixes: tuple[str, ...] = (".local", ".lan", ".home", ".internal", ".arpa",
                                       ".localdomain", ".corp", ".intranet", ".test",
                                       ".invalid", ".example", ".localhost")  # fmt: skip

    def __post_init__(self) -> None:
        if self.min_tenants < 2:
            raise StatsError("min_tenants must be at least 2 (1 would name single tenants)")


Key = tuple[str, str, str, str]  # week, industry, category, severity
COLUMNS = ("week", "industry", "category", "severity", "alerts", "tenants")
OTHER = "other"


@dataclass
class Cell:
    """One statistics cell while it is built: its alerts and contributing tenants."""

    alerts: int = 0
    tenants: set[str] = field(default_factory=set)


@dataclass
class Stats:
    """The anonymised statistics of a window."""

    since: datetime
    until: datetime
    min_tenants: int
    rows: list[dict[str, Any]]
    suppressed_alerts: int


# Generalisation steps, in order: each replaces one dimension of the key by OTHER.
_STEPS: tuple[Callable[[Key], Key], ...] = (
    lambda k: (k[0], OTHER, k[2], k[3]),
    lambda k: (k[0], k[1], OTHER, k[3]),
    lambda k: (k[0], k[1], k[2], OTHER),
)


def anonymise(cells: dict[Key, Cell], *, min_tenants: int) -> tuple[dict[Key, Cell], int]:
    """Generalise cells with fewer than ``min_tenants`` tenants; drop what stays small.

    Returns the kept cells and the number of alerts in dropped cells. Pure: tested with
    hand-built cells.
    """
    cells = {k: Cell(c.alerts, set(c.tenants)) for k, c in cells.items()}
    for step in _STEPS:
        small = [k for k, c in cells.items() if len(c.tenants) < min_tenants]
        for key in small:
            cell = cells.pop(key)
            merged = cells.setdefault(step(key), Cell())
            merged.alerts += cell.alerts
            merged.tenants |= cell.tenants
    dropped = [k for k, c in cells.items() if len(c.tenants) < min_tenants]
    suppressed = sum(cells.pop(k).alerts for k in dropped)
    return cells, suppressed


def _industry_column(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute(
        "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() "
        "AND table_name = 'tenants' AND column_name = 'industry'"
    ).fetchone()
    return "coalesce(nullif(t.industry, ''), 'unknown')" if row else "'unknown'::text"


def _window(since: datetime, until: datetime) -> None:
    if since.tzinfo is None or until.tzinfo is None:
        raise StatsError("since and until need a time zone")
    if until <= since:
        raise StatsError("until must be after since")


def statistics(
    conn: psycopg.Connection[Any], *, since: datetime, until: datetime,
    config: StatsConfig | None = None,
) -> Stats:  # fmt: skip
    """Anonymised alert counts of ``[since, until)`` across all tenants."""
    cfg = config or StatsConfig()
    _window(since, until)
    try:
        conn.execute("SET TIME ZONE 'UTC'")  # ISO weeks on UTC days
        rows = conn.execute(
            f"SELECT to_char(a.detected_at, 'IYYY-\"W\"IW'), {_industry_column(conn)}, "
            "a.category, a.severity, a.tenant, count(*) FROM alerts a "
            "LEFT JOIN tenants t ON t.id = a.tenant "
            "WHERE a.detected_at >= %s AND a.detected_at < %s GROUP BY 1, 2, 3, 4, 5",
            (since, until),
        ).fetchall()
    except psycopg.Error as exc:
        raise StoreError(f"cannot read alert statistics: {exc}") from exc
    cells: dict[Key, Cell] = {}
    for week, industry, category, severity, tenant, n in rows:
        cell = cells.setdefault((week, industry, category, severity), Cell())
        cell.alerts += n
        cell.tenants.add(tenant)
    kept, suppressed = anonymise(cells, min_tenants=cfg.min_tenants)
    out = [
        dict(zip(COLUMNS, (*key, c.alerts, len(c.tenants)), strict=True))
        for key, c in sorted(kept.items())
    ]
    return Stats(since=since, until=until, min_tenants=cfg.min_tenants, rows=out,
                 suppressed_alerts=suppressed)  # fmt: skip


_DOMAIN_RE = re.compile(r"^(?=.{4,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")


def external(value: str, config: StatsConfig) -> tuple[str, str] | None:
    """``(stix_type, value)`` when ``value`` is a public address, network or domain."""
    text = value.strip().lower()
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        if _DOMAIN_RE.match(text) and not text.endswith(config.local_suffixes):
            return "domain-name", text
        return None
    if not net.is_global or net.is_multicast:
        return None
    kind = "ipv4-addr" if net.version == 4 else "ipv6-addr"
    single = net.num_addresses == 1
    return kind, str(net.network_address) if single else str(net)


def _candidates(category: str, actor: str, target: str, evidence: Any,
                config: StatsConfig) -> Iterable[str]:  # fmt: skip
    if category in config.actor_only:
        return (actor,)
    listed = evidence.get("indicator") if isinstance(evidence, dict) else None
    return (listed, actor, target) if isinstance(listed, str) else (actor, target)


def indicators(
    conn: psycopg.Connection[Any], *, since: datetime, until: datetime,
    config: StatsConfig | None = None,
) -> Any:  # fmt: skip
    """A STIX 2.1 bundle of external indicators seen in ``[since, until)``."""
    import stix2

    cfg = config or StatsConfig()
    _window(since, until)
    try:
        rows = conn.execute(
            "SELECT category, actor, target, evidence, detected_at FROM alerts "
            "WHERE detected_at >= %s AND detected_at < %s AND category = ANY(%s) "
            "ORDER BY detected_at",
            (since, until, list(cfg.indicator_categories)),
        ).fetchall()
    except psycopg.Error as exc:
        raise StoreError(f"cannot read alerts for indicators: {exc}") from exc
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for category, actor, target, evidence, at in rows:
        for value in _candidates(category, actor, target, evidence, cfg):
            found = external(value, cfg) if value else None
            if found is None:
                continue
            entry = seen.setdefault(found, {"first": at, "last": at, "n": 0, "cats": set()})
            entry["last"], entry["n"] = at, entry["n"] + 1
            entry["cats"].add(category)
            break  # one indicator per alert: the first external party in priority order
    objects = []
    for (kind, value), e in sorted(seen.items()):
        cats = ", ".join(sorted(e["cats"]))
        objects.append(stix2.Indicator(
            name=f"{value} ({cats})",
            description=f"Seen in {e['n']} alert(s) of category {cats} between "
                        f"{e['first']:%Y-%m-%d} and {e['last']:%Y-%m-%d}.",
            pattern=f"[{kind}:value = '{value}']",
            pattern_type="stix",
            indicator_types=["malicious-activity"],
            valid_from=e["first"],
        ))  # fmt: skip
    return stix2.Bundle(objects=objects) if objects else stix2.Bundle()


def render(stats: Stats, fmt: str) -> str:
    """The statistics as CSV or JSON text."""
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(stats.rows)
        return buf.getvalue()
    if fmt == "json":
        doc = {"since": stats.since.isoformat(), "until": stats.until.isoformat(),
               "min_tenants": stats.min_tenants, "suppressed_alerts": stats.suppressed_alerts,
               "rows": stats.rows}  # fmt: skip
        return json.dumps(doc, ensure_ascii=False, indent=1) + "\n"
    raise StatsError(f"unknown format {fmt!r} (csv, json)")


def export(
    dsn: str, *, since: datetime, until: datetime, fmt: str, out: Path,
    config: StatsConfig | None = None,
) -> int:  # fmt: skip
    """Write the statistics (csv/json) or the indicator bundle (stix) to ``out``.

    Returns the number of rows or indicators written.
    """
    if fmt not in ("csv", "json", "stix"):
        raise StatsError(f"unknown format {fmt!r} (csv, json, stix)")
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            if fmt == "stix":
                bundle = indicators(conn, since=since, until=until, config=config)
                text, n = bundle.serialize(pretty=True) + "\n", len(bundle.get("objects", []))
            else:
                stats = statistics(conn, since=since, until=until, config=config)
                text, n = render(stats, fmt), len(stats.rows)
    except psycopg.Error as exc:
        raise StoreError(f"cannot connect to the database: {exc}") from exc
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return n

