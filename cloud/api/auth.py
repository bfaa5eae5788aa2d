"""SOC users, their API tokens, and the secret hashing shared with enrollment tokens.

Tokens are 256-bit random strings shown once; the database keeps only
``HMAC-SHA256(pepper, token)``. The pepper is a server secret kept outside the database
(a 0600 file), so a leaked dump neither reveals tokens nor lets anyone mint new ones.

Roles: ``analyst`` sees the tenants listed on their user; ``admin`` sees every tenant and
may enroll and revoke gateways.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import psycopg
from mimamori.cloud.errors import RegistryError, StoreError
from mimamori.protocol import topics

Role = Literal["analyst", "admin"]
ROLES: tuple[Role, ...] = ("analyst", "admin")
#: Shortest pepper accepted: as long as the HMAC key it becomes.
MIN_PEPPER_BYTES = 32


def new_token() -> str:
    """A fresh random token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def hash_secret(pepper: bytes, secret: str) -> str:
    """The stored form of a token or credential: hex HMAC-SHA256 under the pepper."""
    if len(pepper) < MIN_PEPPER_BYTES:
        raise ValueError(f"the pepper must be at least {MIN_PEPPER_BYTES} bytes")
    return hmac.new(pepper, secret.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True, kw_only=True)
class Principal:
    """The authenticated caller of an API request."""

    user: str
    role: Role
    tenants: frozenset[str]

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def can_see(self, tenant: str) -> bool:
        """Whether this caller may read or act on ``tenant``'s data."""
        return self.is_admin or tenant in self.tenants


def add_user(conn: psycopg.Connection[Any], *, user: str, role: Role, tenants: list[str]) -> None:
    """Create a SOC user (an error if the id is taken)."""
    if role not in ROLES:
        raise RegistryError(f"unknown role {role!r}; use one of {', '.join(ROLES)}")
    if not topics.valid_id(user):
        raise RegistryError(f"user {user!r} is not a valid id (lowercase [a-z0-9_-], 1-63)")
    try:
        conn.execute(
            "INSERT INTO api_users (id, role, tenants) VALUES (%s, %s, %s)",
            (user, role, sorted(set(tenants))),
        )
    except psycopg.errors.UniqueViolation as exc:
        raise RegistryError(f"user {user!r} exists") from exc
    except psycopg.Error as exc:
        raise StoreError(f"cannot add user {user!r}: {exc}") from exc


def issue_api_token(
    conn: psycopg.Connection[Any],
    *,
    pepper: bytes,
    user: str,
    ttl: timedelta | None = None,
) -> str:
    """A new API token for ``user`` (shown once; only its hash is stored)."""
    token = new_token()
    try:
        cur = conn.execute(
            "INSERT INTO api_tokens (token_hash, user_id, expires_at) "
            "SELECT %s, id, now() + %s FROM api_users WHERE id = %s AND disabled_at IS NULL",
            (hash_secret(pepper, token), ttl, user),
        )
    except psycopg.Error as exc:
        raise StoreError(f"cannot issue a token for {user!r}: {exc}") from exc
    if cur.rowcount != 1:
        raise RegistryError(f"unknown or disabled user {user!r}")
    return token


def revoke_api_tokens(conn: psycopg.Connection[Any], user: str) -> int:
    """Revoke every token of ``user``; return how many were live."""
    try:
        cur = conn.execute(
            "UPDATE api_tokens SET revoked_at = now() WHERE user_id = %s AND revoked_at IS NULL",
            (user,),
        )
    except psycopg.Error as exc:
        raise StoreError(f"cannot revoke tokens of {user!r}: {exc}") from exc
    return cur.rowcount


def authenticate(
    conn: psycopg.Connection[Any], *, pepper: bytes, token: str, now: datetime | None = None
) -> Principal | None:
    """The user a bearer token belongs to, or None when it is unknown, expired or revoked."""
    try:
        row = conn.execute(
            "UPDATE api_tokens t SET last_used_at = now() FROM api_users u "
            "WHERE t.token_hash = %s AND u.id = t.user_id AND t.revoked_at IS NULL "
            "AND u.disabled_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > %s) "
            "RETURNING u.id, u.role, u.tenants",
            (hash_secret(pepper, token), now or datetime.now().astimezone()),
        ).fetchone()
    except psycopg.Error as exc:
        raise StoreError(f"cannot check an API token: {exc}") from exc
    if row is None:
        return None
    return Principal(user=row[0], role=row[1], tenants=frozenset(row[2]))
