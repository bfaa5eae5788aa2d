"""What every router needs: the app's ready objects, a database connection, the caller.

Routers declare ``ctx: Ctx``, ``conn: Conn`` and ``who: Caller`` (or ``Admin``) parameters;
authentication failures are audited here, once, so no route can forget to.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any, Protocol

import psycopg
from fastapi import Depends, HTTPException, Request
from mimamori.cloud.api import audit
from mimamori.cloud.api.auth import Principal, authenticate
from mimamori.cloud.errors import StoreError


class GatewayProvisioner(Protocol):
    """The broker side of enrollment (:class:`mimamori.cloud.broker.BrokerAdmin`)."""

    def provision_gateway(self, *, tenant: str, gateway: str, password: str) -> None: ...

    def revoke_gateway(self, gateway: str) -> None: ...


@dataclass(frozen=True, kw_only=True)
class BrokerEndpoint:
    """Where enrolled gateways connect, and the CA their broker's certificate chains to."""

    host: str
    port: int
    ca_pem: str


@dataclass(frozen=True, kw_only=True)
class ApiContext:
    dsn: str
    pepper: bytes = field(repr=False)
    broker: GatewayProvisioner
    endpoint: BrokerEndpoint


def _ctx(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx


Ctx = Annotated[ApiContext, Depends(_ctx)]


def remote(request: Request) -> str:
    return request.client.host if request.client else ""


def _conn(ctx: Ctx) -> Iterator[psycopg.Connection[Any]]:
    """One transaction per request: committed when the route returns, else rolled back."""
    try:
        conn = psycopg.connect(ctx.dsn)
    except psycopg.Error as exc:
        raise StoreError(f"cannot connect to the database: {exc}") from exc
    with conn:
        yield conn


Conn = Annotated[psycopg.Connection[Any], Depends(_conn)]


def _caller(request: Request, ctx: Ctx) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    who = None
    if scheme.lower() == "bearer" and token:
        try:
            with psycopg.connect(ctx.dsn, autocommit=True) as conn:
                who = authenticate(conn, pepper=ctx.pepper, token=token.strip())
        except psycopg.Error as exc:
            raise StoreError(f"cannot check an API token: {exc}") from exc
    if who is None:
        audit.record(
            ctx.dsn,
            actor="anonymous",
            action=f"{request.method} {request.url.path}",
            result="denied",
            detail={"reason": "missing or invalid token"},
            remote=remote(request),
        )
        raise HTTPException(
            401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"}
        )
    return who


Caller = Annotated[Principal, Depends(_caller)]


def _admin(request: Request, ctx: Ctx, who: Caller) -> Principal:
    if not who.is_admin:
        audit.record(
            ctx.dsn,
            actor=who.user,
            action=f"{request.method} {request.url.path}",
            result="denied",
            detail={"reason": "admin role required"},
            remote=remote(request),
        )
        raise HTTPException(403, "this action needs the admin role")
    return who


Admin = Annotated[Principal, Depends(_admin)]
