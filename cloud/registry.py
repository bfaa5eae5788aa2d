"""Tenants and gateways: the registry the ingester checks every message against.

Enrollment (one-time tokens, per-gateway credentials) is a later issue; for now an
operator registers gateways with ``mimamori cloud gateway add --tenant T --gateway G``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from mimamori.cloud.errors import RegistryError, StoreError
from mimamori.protocol import topics


@dataclass(frozen=True, kw_only=True)
class Gateway:
    id: str
    tenant: str
    site: str
    name: str
    state: str
    last_seen: datetime | None
    created_at: datetime
    revoked_at: datetime | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


_GATEWAY_COLUMNS = "id, tenant, site, name, state, last_seen, created_at, revoked_at"


def _check(what: str, value: str) -> None:
    if not topics.valid_id(value):
        raise RegistryError(f"{what} {value!r} is not a valid id (lowercase [a-z0-9_-], 1-63)")


def add_tenant(
    conn: psycopg.Connection[Any], tenant: str, *, name: str = "", industry: str | None = None
) -> bool:
    """Register a tenant; return False when it already existed.

    An existing tenant keeps its name; ``industry`` (for the shared statistics) is set
    when given.
    """
    _check("tenant", tenant)
    try:
        cur = conn.execute(
            "INSERT INTO tenants (id, name, industry) VALUES (%s, %s, %s) "
            "ON CONFLICT (id) DO NOTHING",
            (tenant, name, industry),
        )
        if cur.rowcount == 0 and industry is not None:
            conn.execute("UPDATE tenants SET industry = %s WHERE id = %s", (industry, tenant))
    except psycopg.Error as exc:
        raise StoreError(f"cannot add tenant {tenant!r}: {exc}") from exc
    return cur.rowcount == 1


def add_gateway(
    conn: psycopg.Connection[Any],
    *,
    tenant: str,
    gateway: str,
    site: str = "",
    name: str = "",
    industry: str | None = None,
) -> bool:
    """Register a gateway (and its tenant if new); return False if it already existed.

    Re-adding a gateway of the same tenant is a no-op; a gateway id belongs to one tenant
    forever, so adding it under another tenant is an error.
    """
    _check("gateway", gateway)
    add_tenant(conn, tenant, industry=industry)
    try:
        cur = conn.execute(
            "INSERT INTO gateways (id, tenant, site, name) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (id) DO NOTHING",
            (gateway, tenant, site, name),
        )
        if cur.rowcount == 1:
            return True
        row = conn.execute("SELECT tenant FROM gateways WHERE id = %s", (gateway,)).fetchone()
    except psycopg.Error as exc:
        raise StoreError(f"cannot add gateway {gateway!r}: {exc}") from exc
    if row is not None and row[0] != tenant:
        raise RegistryError(f"gateway {gateway!r} belongs to tenant {row[0]!r}, not {tenant!r}")
    return False


def revoke_gateway(conn: psycopg.Connection[Any], gateway: str) -> None:
    """Revoke a gateway: the ingester quarantines its messages from now on."""
    try:
        cur = conn.execute(
            "UPDATE gateways SET revoked_at = coalesce(revoked_at, now()) WHERE id = %s",
            (gateway,),
        )
    except psycopg.Error as exc:
        raise StoreError(f"cannot revoke gateway {gateway!r}: {exc}") from exc
    if cur.rowcount == 0:
        raise RegistryError(f"unknown gateway {gateway!r}")


def get_gateway(conn: psycopg.Connection[Any], gateway: str) -> Gateway | None:
    try:
        row = conn.execute(
            f"SELECT {_GATEWAY_COLUMNS} FROM gateways WHERE id = %s", (gateway,)
        ).fetchone()
    except psycopg.Error as exc:
        raise StoreError(f"cannot read gateway {gateway!r}: {exc}") from exc
    return (
        None
        if row is None
        else Gateway(**dict(zip(_GATEWAY_COLUMNS.split(", "), row, strict=True)))
    )


def list_gateways(conn: psycopg.Connection[Any], *, tenant: str | None = None) -> list[Gateway]:
    query = f"SELECT {_GATEWAY_COLUMNS} FROM gateways"
    params: tuple[str, ...] = ()
    if tenant is not None:
        query += " WHERE tenant = %s"
        params = (tenant,)
    try:
        rows = conn.execute(query + " ORDER BY tenant, id", params).fetchall()
    except psycopg.Error as exc:
        raise StoreError(f"cannot list gateways: {exc}") from exc
    names = _GATEWAY_COLUMNS.split(", ")
    return [Gateway(**dict(zip(names, r, strict=True))) for r in rows]
