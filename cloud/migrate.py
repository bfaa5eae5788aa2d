"""Versioned, idempotent schema migrations for TimescaleDB or plain PostgreSQL 15+.

``migrate(dsn)`` detects the storage flavour on the first run (TimescaleDB when the
extension can be created: installed *and* preloaded, or already created), records it in
``schema_migrations`` with every version it applies, and on later runs applies only the
missing versions with the flavour recorded. Running it twice changes nothing. Concurrent
runs serialise on an advisory lock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal, cast

import psycopg
from mimamori.cloud.errors import MigrationError

Storage = Literal["postgresql", "timescaledb"]
STORAGES: tuple[Storage, ...] = ("postgresql", "timescaledb")

#: Key of the advisory lock migrations hold (any constant unique to mimamori).
LOCK_KEY = 0x6D696D616D6F7269 & 0x7FFFFFFFFFFFFFFF

_FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+?)(?:\.(postgresql|timescaledb))?\.sql$")

_BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    storage    text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


@dataclass(frozen=True)
class MigrationResult:
    storage: Storage
    applied: list[int]
    version: int


def migrations(storage: Storage) -> list[Migration]:
    """The migrations for ``storage``, in version order."""
    found: dict[int, Migration] = {}
    for entry in resources.files("mimamori.cloud.migrations").iterdir():
        m = _FILE_RE.match(entry.name)
        if not m:
            continue
        version, name, flavour = int(m.group(1)), m.group(2), m.group(3)
        if flavour is not None and flavour != storage:
            continue
        if version in found:
            raise MigrationError(f"two migration files for version {version} on {storage}")
        found[version] = Migration(version, name, entry.read_text(encoding="utf-8"))
    ordered = [found[v] for v in sorted(found)]
    if [m.version for m in ordered] != list(range(1, len(ordered) + 1)):
        raise MigrationError(f"migration versions are not 1..n: {sorted(found)}")
    return ordered


def detect_storage(conn: psycopg.Connection[Any]) -> Storage:
    """``timescaledb`` when the extension exists or can be created here, else ``postgresql``.

    Being listed in pg_available_extensions is not enough: TimescaleDB must also be in
    shared_preload_libraries, or CREATE EXTENSION fails.
    """
    row = conn.execute(
        """
        SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'),
               EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'),
               current_setting('shared_preload_libraries')
        """
    ).fetchone()
    assert row is not None
    created, available, preload = row
    if created:
        return "timescaledb"
    if available and "timescaledb" in str(preload):
        return "timescaledb"
    return "postgresql"


def recorded_storage(conn: psycopg.Connection[Any]) -> Storage | None:
    """The flavour the schema was created for, or None before the first migration."""
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return None
    row = conn.execute("SELECT storage FROM schema_migrations ORDER BY version LIMIT 1").fetchone()
    if row is None:
        return None
    value = str(row[0])
    if value not in STORAGES:
        raise MigrationError(f"schema_migrations names an unknown storage {value!r}")
    return cast(Storage, value)


def migrate(dsn: str, *, storage: Storage | Literal["auto"] = "auto") -> MigrationResult:
    """Bring the schema at ``dsn`` up to date; return what was applied.

    ``storage`` forces a flavour on the first run (``auto`` detects it); on later runs it
    must agree with the recorded one.
    """
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
            try:
                return _migrate_locked(conn, storage)
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
    except psycopg.Error as exc:
        raise MigrationError(f"migration failed: {exc}") from exc


def _migrate_locked(
    conn: psycopg.Connection[Any], requested: Storage | Literal["auto"]
) -> MigrationResult:
    recorded = recorded_storage(conn)
    if recorded is not None:
        if requested not in ("auto", recorded):
            raise MigrationError(
                f"the schema was created for {recorded}; cannot migrate it as {requested}"
            )
        storage: Storage = recorded
    elif requested == "auto":
        storage = detect_storage(conn)
    else:
        storage = requested
    conn.execute(_BOOKKEEPING)
    done = {int(r[0]) for r in conn.execute("SELECT version FROM schema_migrations")}
    applied: list[int] = []
    plan = migrations(storage)
    for m in plan:
        if m.version in done:
            continue
        with conn.transaction():
            try:
                conn.execute(m.sql)  # our own files, not input
            except psycopg.Error as exc:
                raise MigrationError(f"migration {m.version:04d}_{m.name} failed: {exc}") from exc
            conn.execute(
                "INSERT INTO schema_migrations (version, name, storage) VALUES (%s, %s, %s)",
                (m.version, m.name, storage),
            )
        applied.append(m.version)
    return MigrationResult(
        storage=storage, applied=applied, version=plan[-1].version if plan else 0
    )


def schema_storage(dsn: str) -> Storage:
    """The recorded flavour of a migrated database (MigrationError if not migrated)."""
    try:
        with psycopg.connect(dsn) as conn:
            found = recorded_storage(conn)
    except psycopg.Error as exc:
        raise MigrationError(f"cannot read schema_migrations: {exc}") from exc
    if found is None:
        raise MigrationError("the database is not migrated: run 'mimamori cloud migrate'")
    return found
