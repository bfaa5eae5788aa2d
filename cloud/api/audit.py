"""The audit log: one row per API action (who, when, what, on what, with what result).

Rows are written on a connection of their own in autocommit mode, so an action that fails
and rolls its transaction back (or is refused before it starts) still leaves its row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from mimamori.cloud.errors import StoreError
from psycopg.types.json import Jsonb

#: Outcomes an audit row can record.
RESULTS = ("ok", "denied", "invalid", "error")


@dataclass(frozen=True, kw_only=True)
class AuditEntry:
    id: int
    at: datetime
    actor: str
    action: str
    target: str
    tenant: str | None
    result: str
    detail: dict[str, Any]
    remote: str


def record(
    dsn: str,
    *,
    actor: str,
    action: str,
    result: str,
    target: str = "",
    tenant: str | None = None,
    detail: dict[str, Any] | None = None,
    remote: str = "",
) -> None:
    """Append one audit row, committed at once and independent of any other transaction."""
    if result not in RESULTS:
        raise ValueError(f"unknown audit result {result!r}")
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO audit_log (actor, action, target, tenant, result, detail, remote) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (actor, action, target, tenant, result, Jsonb(detail or {}), remote),
            )
    except psycopg.Error as exc:
        raise StoreError(f"cannot write the audit log: {exc}") from exc


def entries(conn: psycopg.Connection[Any], *, limit: int = 1000) -> list[AuditEntry]:
    """The newest audit rows, oldest first."""
    try:
        rows = conn.execute(
            "SELECT id, at, actor, action, target, tenant, result, detail, remote "
            "FROM (SELECT * FROM audit_log ORDER BY id DESC LIMIT %s) t ORDER BY id",
            (limit,),
        ).fetchall()
    except psycopg.Error as exc:
        raise StoreError(f"cannot read the audit log: {exc}") from exc
    return [
        AuditEntry(
            id=r[0],
            at=r[1],
            actor=r[2],
            action=r[3],
            target=r[4],
            tenant=r[5],
            result=r[6],
            detail=r[7],
            remote=r[8],
        )
        for r in rows
    ]
