"""Admin routes for a tenant's notification settings (``cloud/notify.py`` sends them).

``GET`` never returns the webhook secret, only whether one is set.
"""

from __future__ import annotations

from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, HTTPException, Path, Request
from mimamori.cloud import notify
from mimamori.cloud.api import audit
from mimamori.cloud.api.context import Admin, Conn, Ctx, remote
from mimamori.cloud.api.incidents import Problem
from mimamori.cloud.errors import StoreError
from pydantic import BaseModel, Field

router = APIRouter(
    prefix="/v1/admin",
    tags=["notifications"],
    responses={code: {"model": Problem} for code in (401, 403, 404, 503)},
)
TenantId = Annotated[str, Path(pattern=r"^[a-z0-9_-]{1,63}$")]


class NotifySettingsIn(BaseModel):
    webhook_url: Annotated[str | None, Field(max_length=2000, pattern=r"^https?://[^\x00\s]+$")] = (
        None
    )
    webhook_secret: Annotated[
        str | None, Field(min_length=16, max_length=200, pattern=r"^[^\x00]+$")
    ] = None
    email_to: list[
        Annotated[str, Field(max_length=254, pattern=r"^[^@\s\x00,]+@[^@\s\x00,]+$")]
    ] = Field(default_factory=list, max_length=20)
    max_per_hour: Annotated[int | None, Field(ge=1, le=10000)] = None
    enabled: bool = True


class NotifySettingsOut(BaseModel):
    tenant: str
    webhook_url: str | None
    has_webhook_secret: bool
    email_to: list[str]
    max_per_hour: int | None
    enabled: bool


def _read(conn: psycopg.Connection[Any], tenant: str) -> NotifySettingsOut | None:
    try:
        row = conn.execute(
            "SELECT tenant, webhook_url, webhook_secret IS NOT NULL, email_to, max_per_hour, "
            "enabled FROM notify_settings WHERE tenant = %s",
            (tenant,),
        ).fetchone()
    except psycopg.Error as exc:
        raise StoreError(f"cannot read notification settings: {exc}") from exc
    if row is None:
        return None
    names = tuple(NotifySettingsOut.model_fields)
    return NotifySettingsOut(**dict(zip(names, row, strict=True)))


@router.get("/tenants/{tenant}/notify", response_model=NotifySettingsOut)
def get_settings(
    request: Request, ctx: Ctx, conn: Conn, who: Admin, tenant: TenantId
) -> NotifySettingsOut:
    """A tenant's notification settings (404 when none are set)."""
    got = _read(conn, tenant)
    audit.record(
        ctx.dsn,
        actor=who.user,
        action="notify.show",
        tenant=tenant,
        result="ok" if got else "invalid",
        remote=remote(request),
    )
    if got is None:
        raise HTTPException(404, f"tenant {tenant!r} has no notification settings")
    return got


@router.put("/tenants/{tenant}/notify", response_model=NotifySettingsOut)
def put_settings(
    request: Request, ctx: Ctx, conn: Conn, who: Admin, tenant: TenantId, body: NotifySettingsIn
) -> NotifySettingsOut:
    """Create or replace a tenant's notification settings."""
    detail = body.model_dump(exclude={"webhook_secret"})
    detail["webhook_secret_set"] = body.webhook_secret is not None
    try:
        known = conn.execute("SELECT 1 FROM tenants WHERE id = %s", (tenant,)).fetchone()
    except psycopg.Error as exc:
        raise StoreError(f"cannot look up tenant {tenant!r}: {exc}") from exc
    if known is None:
        audit.record(
            ctx.dsn,
            actor=who.user,
            action="notify.set",
            tenant=tenant,
            result="invalid",
            detail=detail,
            remote=remote(request),
        )
        raise HTTPException(404, f"no tenant {tenant!r}")
    notify.configure(conn, tenant=tenant, **body.model_dump())
    audit.record(
        ctx.dsn,
        actor=who.user,
        action="notify.set",
        tenant=tenant,
        result="ok",
        detail=detail,
        remote=remote(request),
    )
    out = _read(conn, tenant)
    assert out is not None
    return out
