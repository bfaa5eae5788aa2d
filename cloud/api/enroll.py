"""Gateway enrollment with one-time tokens, and the admin actions around it.

An operator issues a token for a (tenant, gateway) pair; it is printed on the box or as a
QR code. The box presents it once to ``POST /v1/enroll`` over HTTPS and receives its
broker credential (username = gateway id, a random password) and the broker's CA. The
token is then spent: a second use, an expired token or an unknown one is refused with
the same answer, so a guesser learns nothing. Enrolling again (with a new token) replaces
the broker client, which disconnects anything still using the old password.

Revoking a gateway deletes its broker client (disconnecting it), spends its outstanding
tokens, and marks it revoked so the ingester quarantines anything that still arrives.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, HTTPException, Request
from mimamori.cloud import registry
from mimamori.cloud.api import audit
from mimamori.cloud.api.auth import hash_secret, new_token
from mimamori.cloud.api.context import Admin, Conn, Ctx, remote
from mimamori.cloud.broker import BrokerAdminError, new_password
from mimamori.cloud.errors import CloudError, RegistryError, StoreError
from pydantic import BaseModel, Field

#: Default life of an enrollment token: long enough to ship a box, short enough that a
#: token lost in transit soon stops mattering.
DEFAULT_TTL = timedelta(days=14)
MAX_TTL = timedelta(days=90)


class EnrollmentError(CloudError):
    """A token was refused; ``reason`` says why (for the audit log, not for the caller)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"enrollment token refused: {reason}")
        self.reason = reason


def issue_token(
    conn: psycopg.Connection[Any],
    *,
    pepper: bytes,
    tenant: str,
    gateway: str,
    ttl: timedelta = DEFAULT_TTL,
    site: str = "",
    created_by: str = "",
) -> tuple[str, datetime]:
    """Register the gateway if new and issue a one-time token for it: (token, expiry)."""
    if not timedelta(0) < ttl <= MAX_TTL:
        raise RegistryError(f"token lifetime must be positive and at most {MAX_TTL.days} days")
    registry.add_gateway(conn, tenant=tenant, gateway=gateway, site=site)
    token = new_token()
    try:
        row = conn.execute(
            "INSERT INTO enrollment_tokens (token_hash, tenant, gateway, created_by, expires_at) "
            "VALUES (%s, %s, %s, %s, now() + %s) RETURNING expires_at",
            (hash_secret(pepper, token), tenant, gateway, created_by, ttl),
        ).fetchone()
    except psycopg.Error as exc:
        raise StoreError(f"cannot issue a token for {gateway!r}: {exc}") from exc
    assert row is not None
    return token, row[0]


def spend_token(conn: psycopg.Connection[Any], *, pepper: bytes, token: str) -> tuple[str, str]:
    """Mark a token used and return its (tenant, gateway); raise :class:`EnrollmentError`.

    The row is locked, so two concurrent uses of one token cannot both succeed.
    """
    try:
        row = conn.execute(
            "SELECT tenant, gateway, used_at IS NOT NULL, expires_at <= now() "
            "FROM enrollment_tokens WHERE token_hash = %s FOR UPDATE",
            (hash_secret(pepper, token),),
        ).fetchone()
        if row is None:
            raise EnrollmentError("unknown")
        tenant, gateway, used, expired = row
        if used:
            raise EnrollmentError("already used")
        if expired:
            raise EnrollmentError("expired")
        conn.execute(
            "UPDATE enrollment_tokens SET used_at = now() WHERE token_hash = %s",
            (hash_secret(pepper, token),),
        )
    except psycopg.Error as exc:
        raise StoreError(f"cannot check an enrollment token: {exc}") from exc
    return tenant, gateway


def record_credential(
    conn: psycopg.Connection[Any], *, pepper: bytes, gateway: str, password: str
) -> None:
    """Store the new credential's hash and clear any revocation (an admin issued the token)."""
    try:
        conn.execute(
            "UPDATE gateways SET credential_hash = %s, enrolled_at = now(), revoked_at = NULL "
            "WHERE id = %s",
            (hash_secret(pepper, password), gateway),
        )
    except psycopg.Error as exc:
        raise StoreError(f"cannot record the credential of {gateway!r}: {exc}") from exc


def revoke(conn: psycopg.Connection[Any], gateway: str) -> int:
    """Mark the gateway revoked and spend its outstanding tokens; return how many."""
    registry.revoke_gateway(conn, gateway)
    try:
        cur = conn.execute(
            "UPDATE enrollment_tokens SET used_at = now() WHERE gateway = %s AND used_at IS NULL",
            (gateway,),
        )
    except psycopg.Error as exc:
        raise StoreError(f"cannot spend the tokens of {gateway!r}: {exc}") from exc
    return cur.rowcount


# --- HTTP -------------------------------------------------------------------------------

router = APIRouter(prefix="/v1", tags=["enrollment"])

Token = Annotated[str, Field(min_length=16, max_length=256)]
Id = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]


class EnrollRequest(BaseModel):
    token: Token


class MqttCredential(BaseModel):
    host: str
    port: int
    username: str
    password: str
    client_id: str
    ca_pem: str


class EnrollResponse(BaseModel):
    tenant: str
    gateway: str
    mqtt: MqttCredential


class TokenRequest(BaseModel):
    tenant: Id
    gateway: Id
    site: str = ""
    ttl_s: int = Field(default=int(DEFAULT_TTL.total_seconds()), gt=0)


class TokenResponse(BaseModel):
    tenant: str
    gateway: str
    token: str
    expires_at: datetime


class RevokeResponse(BaseModel):
    gateway: str
    revoked: bool
    tokens_spent: int


@router.post("/enroll", response_model=EnrollResponse)
def enroll(body: EnrollRequest, request: Request, ctx: Ctx, conn: Conn) -> EnrollResponse:
    """Exchange a one-time token for the gateway's broker credential."""
    where = remote(request)
    try:
        tenant, gateway = spend_token(conn, pepper=ctx.pepper, token=body.token)
    except EnrollmentError as exc:
        audit.record(
            ctx.dsn,
            actor="anonymous",
            action="enroll",
            result="denied",
            detail={"reason": exc.reason},
            remote=where,
        )
        # One answer for unknown, used and expired tokens: a guesser learns nothing.
        raise HTTPException(401, "invalid, expired or already used token") from exc
    actor = f"gateway:{gateway}"
    password = new_password()
    try:
        ctx.broker.provision_gateway(tenant=tenant, gateway=gateway, password=password)
    except BrokerAdminError as exc:
        conn.rollback()  # the token stays valid: the box may retry
        audit.record(
            ctx.dsn,
            actor=actor,
            action="enroll",
            target=gateway,
            tenant=tenant,
            result="error",
            detail={"error": str(exc)},
            remote=where,
        )
        raise HTTPException(503, "the broker is unavailable; try again later") from exc
    record_credential(conn, pepper=ctx.pepper, gateway=gateway, password=password)
    conn.commit()
    audit.record(
        ctx.dsn,
        actor=actor,
        action="enroll",
        target=gateway,
        tenant=tenant,
        result="ok",
        remote=where,
    )
    ep = ctx.endpoint
    return EnrollResponse(
        tenant=tenant,
        gateway=gateway,
        mqtt=MqttCredential(
            host=ep.host,
            port=ep.port,
            username=gateway,
            password=password,
            client_id=gateway,
            ca_pem=ep.ca_pem,
        ),
    )


@router.post("/admin/enrollment-tokens", response_model=TokenResponse)
def create_token(
    body: TokenRequest, request: Request, ctx: Ctx, conn: Conn, who: Admin
) -> TokenResponse:
    """Issue a one-time enrollment token (registering the gateway if it is new)."""
    try:
        token, expires = issue_token(
            conn,
            pepper=ctx.pepper,
            tenant=body.tenant,
            gateway=body.gateway,
            ttl=timedelta(seconds=body.ttl_s),
            site=body.site,
            created_by=who.user,
        )
        conn.commit()
    except RegistryError as exc:
        conn.rollback()
        audit.record(
            ctx.dsn,
            actor=who.user,
            action="token.issue",
            target=body.gateway,
            tenant=body.tenant,
            result="invalid",
            detail={"error": str(exc)},
            remote=remote(request),
        )
        raise HTTPException(409, str(exc)) from exc
    audit.record(
        ctx.dsn,
        actor=who.user,
        action="token.issue",
        target=body.gateway,
        tenant=body.tenant,
        result="ok",
        detail={"expires_at": expires.isoformat()},
        remote=remote(request),
    )
    return TokenResponse(tenant=body.tenant, gateway=body.gateway, token=token, expires_at=expires)


@router.post("/admin/gateways/{gateway}/revoke", response_model=RevokeResponse)
def revoke_gateway(
    gateway: str, request: Request, ctx: Ctx, conn: Conn, who: Admin
) -> RevokeResponse:
    """Revoke a gateway: delete its broker login, spend its tokens, quarantine its data."""
    where = remote(request)
    gw = registry.get_gateway(conn, gateway)
    if gw is None:
        audit.record(
            ctx.dsn,
            actor=who.user,
            action="gateway.revoke",
            target=gateway,
            result="invalid",
            detail={"error": "unknown gateway"},
            remote=where,
        )
        raise HTTPException(404, f"unknown gateway {gateway!r}")
    spent = revoke(conn, gateway)
    try:
        ctx.broker.revoke_gateway(gateway)
    except BrokerAdminError as exc:
        conn.rollback()
        audit.record(
            ctx.dsn,
            actor=who.user,
            action="gateway.revoke",
            target=gateway,
            tenant=gw.tenant,
            result="error",
            detail={"error": str(exc)},
            remote=where,
        )
        raise HTTPException(503, "the broker is unavailable; nothing was revoked") from exc
    conn.commit()
    audit.record(
        ctx.dsn,
        actor=who.user,
        action="gateway.revoke",
        target=gateway,
        tenant=gw.tenant,
        result="ok",
        detail={"tokens_spent": spent},
        remote=where,
    )
    return RevokeResponse(gateway=gateway, revoked=True, tokens_spent=spent)
