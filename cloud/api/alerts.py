"""``GET /v1/alerts``: the alerts of the caller's tenants, newest first, with filters."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, HTTPException, Query, Request
from mimamori.cloud.api import audit
from mimamori.cloud.api.context import Caller, Conn, Ctx, remote
from mimamori.cloud.api.incidents import NO_NUL
from mimamori.cloud.errors import StoreError
from pydantic import BaseModel

router = APIRouter(prefix="/v1", tags=["alerts"])

SEVERITIES = ("info", "low", "medium", "high", "critical")
#: Most rows one request returns; page with ``before_id``.
MAX_LIMIT = 1000


class AlertOut(BaseModel):
    id: int
    tenant: str
    gateway: str
    category: str
    severity: str
    detected_at: datetime
    actor: str
    target: str
    summary_en: str
    summary_ja: str
    incident_id: int | None


_COLUMNS = (
    "id, tenant, gateway, category, severity, detected_at, actor, target, summary_en, "
    "summary_ja, incident_id"
)


@router.get("/alerts", response_model=list[AlertOut])
def list_alerts(
    request: Request,
    ctx: Ctx,
    conn: Conn,
    who: Caller,
    tenant: Annotated[str | None, Query(max_length=63, pattern=NO_NUL)] = None,
    gateway: Annotated[str | None, Query(max_length=63, pattern=NO_NUL)] = None,
    category: Annotated[str | None, Query(max_length=40, pattern=NO_NUL)] = None,
    min_severity: Annotated[str | None, Query(pattern="^(info|low|medium|high|critical)$")] = None,
    since: datetime | None = None,
    before_id: int | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
) -> list[AlertOut]:
    """Alerts visible to the caller; an analyst asking for another tenant gets 403."""
    filters = {
        k: v
        for k, v in {
            "tenant": tenant,
            "gateway": gateway,
            "category": category,
            "min_severity": min_severity,
        }.items()
        if v is not None
    }
    if tenant is not None and not who.can_see(tenant):
        audit.record(
            ctx.dsn,
            actor=who.user,
            action="alerts.list",
            tenant=tenant,
            result="denied",
            detail=filters,
            remote=remote(request),
        )
        raise HTTPException(403, f"no access to tenant {tenant!r}")
    where: list[str] = ["true"]
    params: list[Any] = []
    if not who.is_admin:
        where.append("tenant = ANY(%s)")
        params.append(sorted(who.tenants))
    for column, value in (("tenant", tenant), ("gateway", gateway), ("category", category)):
        if value is not None:
            where.append(f"{column} = %s")
            params.append(value)
    if min_severity is not None:
        where.append("severity = ANY(%s)")
        params.append(list(SEVERITIES[SEVERITIES.index(min_severity) :]))
    if since is not None:
        where.append("detected_at >= %s")
        params.append(since)
    if before_id is not None:
        where.append("id < %s")
        params.append(before_id)
    try:
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM alerts WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT %s",
            [*params, limit],
        ).fetchall()
    except psycopg.Error as exc:
        raise StoreError(f"cannot list alerts: {exc}") from exc
    names = _COLUMNS.split(", ")
    out = [AlertOut(**dict(zip(names, r, strict=True))) for r in rows]
    audit.record(
        ctx.dsn,
        actor=who.user,
        action="alerts.list",
        tenant=tenant,
        result="ok",
        detail={**filters, "rows": len(out)},
        remote=remote(request),
    )
    return out
