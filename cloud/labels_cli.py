"""``mimamori label``: show the JC-STAR-style labels of a site's devices from the store.

::

    mimamori label --tenant T [--dsn DSN] [--gateway G] [--mac M] [--json] [--refresh]

Labels are computed by the jobs (:func:`mimamori.cloud.labels.refresh`); ``--refresh``
recomputes them first. With ``--mac`` the label history of that device is shown too.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import UTC, datetime
from typing import Any

from mimamori.cloud import settings as settings_mod
from mimamori.cloud.errors import CloudError

_MAC_RE = re.compile(r"^([0-9a-f]{2}[:-]){5}[0-9a-f]{2}$")
_OUTCOME_TEXT = {
    "meets_star1_observed": ("★1相当（観測の範囲で）", "meets ★1 as far as the network shows"),
    "does_not_meet": ("★1を満たしていません", "does not meet ★1"),
    "insufficient_evidence": ("判定材料が不足", "insufficient evidence"),
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mimamori label",
        description="Show the JC-STAR-style labels of a site's devices from the store "
        "(docs/labels.md).",
    )
    p.add_argument("--dsn", help="PostgreSQL connection string (default: $MIMAMORI_DSN)")
    p.add_argument("--tenant", required=True)
    p.add_argument("--gateway", help="only this gateway's devices")
    p.add_argument("--mac", help="only this device (and its label history)")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("--refresh", action="store_true", help="recompute the labels first")
    return p


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def _print_text(labels: list[dict[str, Any]], hist: list[dict[str, Any]] | None) -> None:
    if not labels:
        print("no labels (run the jobs, or pass --refresh)")
    for lab in labels:
        ja, en = _OUTCOME_TEXT.get(lab["outcome"], (lab["outcome"], lab["outcome"]))
        iot = "" if lab["iot"] else f" ({lab['note']})"
        print(f"{lab['mac']} [{lab['kind']}, impact {lab['impact']}] {lab['outcome']}: "
              f"{ja} / {en}{iot}")  # fmt: skip
        for c in lab["criteria"]:
            if c["status"] != "unknown":
                detail = "; ".join(e["detail"] for e in c["evidence"][:3])
                print(f"  {c['id']} {c['status']}: {detail}")
        for a in lab["advice"]:
            print(f"  -> {a['ja']} / {a['en']}")
    for h in hist or ():
        print(f"history {h['assessed_at'].isoformat()} {h['outcome']} {h['fingerprint']}")


def main(argv: list[str]) -> int:
    """Entry point of ``mimamori label``."""
    args = _parser().parse_args(argv)
    mac = args.mac.lower().replace("-", ":") if args.mac else None
    if mac is not None and not _MAC_RE.match(mac):
        print(f"mimamori label: not a MAC address: {args.mac!r}", file=sys.stderr)
        return 2
    try:
        import psycopg
        from mimamori.cloud import labels

        dsn = settings_mod.from_env().with_overrides(dsn=args.dsn).require_dsn()
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                if args.refresh:
                    labels.refresh(conn, now=datetime.now(UTC), tenant=args.tenant)
                found = labels.fetch(conn, tenant=args.tenant, gateway=args.gateway, mac=mac)
                hist = labels.history(conn, tenant=args.tenant, mac=mac) if mac else None
        except psycopg.Error as exc:
            raise CloudError(f"cannot connect to the database: {exc}") from exc
    except CloudError as exc:
        print(f"mimamori label: {exc}", file=sys.stderr)
        return 1
    if args.json:
        doc: dict[str, Any] = {"tenant": args.tenant, "labels": _jsonable(found)}
        if hist is not None:
            doc["history"] = _jsonable(hist)
        json.dump(doc, sys.stdout, ensure_ascii=False, indent=1)
        print()
    else:
        _print_text(found, hist)
    return 0
