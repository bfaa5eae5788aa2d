"""The gateway's durable outbox: every upstream message, numbered, until the cloud commits it.

A single SQLite database (WAL mode) holds:

* ``messages``: one row per message not yet acknowledged by the cloud: its sequence number,
  kind, drop priority, creation time and encoded payload (:func:`protocol.codec.encode`).
* ``counters``: the last sequence number used (``seq.last_used``) and how many messages the
  disk budget forced out, per kind (``dropped.<kind>``).

Numbering follows :mod:`protocol.sequence`: on open the outbox continues from
``max(last_used + 1, time_floor(now))``; every append stores the message and the new
``last_used`` in one transaction, so a power cut can lose an append that was still in
progress but never hands out a number twice. :meth:`Outbox.reserve` takes a number without
storing a message (for the MQTT last will, which the broker publishes on our behalf).

Disk budget (``budget_bytes``, 512 MiB by default): when an append would go over, older
messages are dropped, lowest priority first, oldest first within a priority:

1. ``flows`` (flow summaries: bulky and, after a day, the least useful)
2. ``heartbeat``, ``status`` and ``sensor`` (health; the newest says the most)
3. ``devices`` and ``alerts`` (inventory and detections: the reason the box exists)

A new message only pushes out messages of its own priority or lower; when that does not
free enough room, the new message itself is dropped. Every drop is counted per kind, kept
across restarts, logged, and shown by ``mimamori edge outbox-stats``. See docs/outbox.md.

The outbox is safe to use from several threads (one lock around one connection): the
capture pipeline and heartbeat timer append while the publisher reads and acknowledges.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import msgspec
from mimamori.edge.errors import OutboxCorrupt, OutboxError
from mimamori.protocol import codec, sequence
from mimamori.protocol.messages import Message

MIB = 1024 * 1024
DEFAULT_BUDGET = 512 * MIB

#: Drop priority per kind: lower is dropped first when the disk budget is exhausted.
PRIORITY: dict[str, int] = {
    "flows": 0,
    "heartbeat": 1,
    "status": 1,
    "sensor": 1,
    "devices": 2,
    "alerts": 2,
}
#: Bytes charged per row on top of its payload: the SQLite b-tree cell, the priority index
#: entry and page slack, measured at about 50-70 bytes for rows of a few kB.
ROW_OVERHEAD = 64
#: Payloads above this spill into overflow pages (page size 4096 minus headers) and are
#: charged in whole pages: charging bytes alone left the file 9% over the accounted size
#: with 20 kB flow batches.
INLINE_MAX = 4000
PAGE = 4096


def cost(size: int) -> int:
    """Bytes of disk a payload of ``size`` bytes is charged against the budget."""
    if size <= INLINE_MAX:
        return size + ROW_OVERHEAD
    return -(-size // PAGE) * PAGE + ROW_OVERHEAD


_COST_SQL = (
    f"COALESCE(SUM(CASE WHEN size <= {INLINE_MAX} THEN size + {ROW_OVERHEAD}"
    f" ELSE ((size + {PAGE - 1}) / {PAGE}) * {PAGE} + {ROW_OVERHEAD} END), 0)"
)
#: Messages older than this are dropped (and counted): the cloud remembers receipts for 31
#: days (docs/protocol.md, delivery contract), so an older re-send could be stored twice.
MAX_AGE_S = 31 * 86400
#: Rows examined per step while making room, so a full outbox is trimmed in bounded chunks.
EVICT_CHUNK = 256

Synchronous = Literal["FULL", "NORMAL", "OFF"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    seq        INTEGER PRIMARY KEY,
    kind       TEXT    NOT NULL,
    priority   INTEGER NOT NULL,
    created_at REAL    NOT NULL,
    size       INTEGER NOT NULL,
    payload    BLOB    NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_priority ON messages (priority, seq);
CREATE TABLE IF NOT EXISTS counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""

log = logging.getLogger(__name__)


class Pending(NamedTuple):
    """A stored message waiting for the cloud's acknowledgement."""

    seq: int
    kind: str
    payload: bytes


@dataclass(frozen=True)
class OutboxStats:
    """A snapshot of the outbox for heartbeats, logs and ``mimamori edge outbox-stats``."""

    depth: int
    bytes: int
    budget: int
    last_seq: int
    oldest_seq: int | None
    oldest_created_at: float | None
    dropped: dict[str, int] = field(default_factory=dict)
    rejected: int = 0


Builder = Callable[[int], Message]


class Outbox:
    """A numbered, durable queue of encoded upstream messages.

    ``path``: the database file (its directory must exist). ``budget_bytes``: the disk
    budget described in the module docstring. ``synchronous``: SQLite's ``synchronous``
    pragma; keep ``FULL`` on a gateway (see below); ``OFF`` is for simulators running
    hundreds of outboxes on one disk where a power cut is not part of the test.

    Why ``FULL`` and not ``NORMAL``: in WAL mode ``NORMAL`` stays consistent after a power
    cut but may roll back the last commits. A message can be on the wire a few milliseconds
    after its commit; if that commit were rolled back, its sequence number would be handed
    out again to a different message, which the cloud would then drop as a duplicate.
    """

    def __init__(
        self,
        *,
        path: str | Path,
        budget_bytes: int = DEFAULT_BUDGET,
        synchronous: Synchronous = "FULL",
        check: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if budget_bytes <= 0:
            raise OutboxError(f"outbox budget must be positive, got {budget_bytes} bytes")
        if synchronous not in ("FULL", "NORMAL", "OFF"):
            raise OutboxError(f"unknown synchronous mode {synchronous!r}")
        self.path = Path(path)
        self.budget = budget_bytes
        self._clock = clock
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(
                str(self.path), isolation_level=None, check_same_thread=False, timeout=30
            )
        except sqlite3.Error as exc:
            raise OutboxError(f"cannot open outbox {self.path}: {exc}") from exc
        try:
            self._setup(synchronous, check)
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise OutboxCorrupt(f"outbox {self.path} is not a usable database: {exc}") from exc
        except OutboxError:
            self._db.close()
            raise

    def _setup(self, synchronous: str, check: bool) -> None:
        db = self._db
        db.execute(f"PRAGMA page_size={PAGE}")  # only takes effect on a new database
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={synchronous}")
        if check:
            # quick_check reads every page once but skips the index cross-checks of
            # integrity_check: a few seconds for a full budget on an SD card, once at start.
            rows = db.execute("PRAGMA quick_check").fetchall()
            if rows != [("ok",)]:
                detail = "; ".join(str(r[0]) for r in rows[:5])
                raise OutboxCorrupt(f"outbox {self.path} failed its integrity check: {detail}")
        db.executescript(_SCHEMA)
        last_used = self._load_counts()
        self._next = sequence.next_start(last_used, self._clock())

    def _load_counts(self) -> int | None:
        """Read depth, size and drop counters; return the last sequence number used."""
        count, total, max_seq = self._db.execute(
            f"SELECT COUNT(*), {_COST_SQL}, MAX(seq) FROM messages"
        ).fetchone()
        self._depth: int = count
        self._charged: int = total
        counters = dict(self._db.execute("SELECT name, value FROM counters").fetchall())
        self._dropped = {
            name.removeprefix("dropped."): value
            for name, value in counters.items()
            if name.startswith("dropped.")
        }
        self._rejected: int = counters.get("rejected", 0)
        last_used: int | None = counters.get("seq.last_used")
        if max_seq is not None and (last_used is None or max_seq > last_used):
            last_used = max_seq  # defensive: never behind a stored message
        return last_used

    # --- writing -------------------------------------------------------------------------

    def append(self, message: Message | Builder) -> int | None:
        """Number, encode and store a message; return its sequence number.

        ``message`` is either a protocol message (its ``seq`` is replaced) or a function
        that builds one from the sequence number. Returns ``None`` when the message was
        dropped: too large for the wire, or no room under the disk budget (both counted).
        """
        with self._lock:
            seq = self._next
            built = message(seq) if callable(message) else msgspec.structs.replace(message, seq=seq)
            kind = codec.kind_of(built)
            payload = codec.encode(built)
            if len(payload) > codec.MAX_PAYLOAD:
                log.error(
                    "outbox: %s message of %d bytes is too large; dropped", kind, len(payload)
                )
                self._count("rejected", 1)
                self._rejected += 1
                return None
            priority = PRIORITY.get(kind, 0)
            charge = cost(len(payload))
            try:
                self._db.execute("BEGIN IMMEDIATE")
                if not self._make_room(charge, priority):
                    self._bump_dropped(kind, 1)
                    self._db.execute("COMMIT")
                    log.warning("outbox: full, new %s message dropped", kind)
                    return None
                self._db.execute(
                    "INSERT INTO messages (seq, kind, priority, created_at, size, payload)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (seq, kind, priority, built.sent_at, len(payload), payload),
                )
                self._set_last_used(seq)
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise OutboxError(f"outbox append failed: {exc}") from exc
            self._next = seq + 1
            self._depth += 1
            self._charged += charge
            return seq

    def reserve(self) -> int:
        """Take the next sequence number without storing a message (e.g. the last will)."""
        with self._lock:
            seq = self._next
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._set_last_used(seq)
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise OutboxError(f"outbox reserve failed: {exc}") from exc
            self._next = seq + 1
            return seq

    def ack(self, ranges: Iterable[tuple[int, int]]) -> int:
        """Delete the messages in the inclusive ``(first, last)`` ranges; return how many.

        Ranges may repeat, overlap or name messages that are already gone (acks are
        idempotent); a range with ``first > last`` is ignored.
        """
        spans = [(int(a), int(b)) for a, b in ranges if int(a) <= int(b)]
        if not spans:
            return 0
        removed = 0
        freed = 0
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                for first, last in spans:
                    rows = self._db.execute(
                        "DELETE FROM messages WHERE seq BETWEEN ? AND ? RETURNING size",
                        (first, last),
                    ).fetchall()
                    removed += len(rows)
                    freed += sum(cost(r[0]) for r in rows)
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise OutboxError(f"outbox ack failed: {exc}") from exc
            self._depth -= removed
            self._charged -= freed
        return removed

    def expire(self, max_age_s: float = MAX_AGE_S) -> int:
        """Drop (and count) messages created more than ``max_age_s`` ago; return how many."""
        cutoff = self._clock() - max_age_s
        with self._lock:
            try:
                oldest = self._db.execute(
                    "SELECT created_at FROM messages ORDER BY seq LIMIT 1"
                ).fetchone()
                # Sequence order follows creation order, so the oldest row answers cheaply.
                if oldest is None or oldest[0] >= cutoff:
                    return 0
                self._db.execute("BEGIN IMMEDIATE")
                rows = self._db.execute(
                    "DELETE FROM messages WHERE created_at < ? RETURNING kind, size", (cutoff,)
                ).fetchall()
                per_kind: dict[str, int] = {}
                for kind, size in rows:
                    per_kind[kind] = per_kind.get(kind, 0) + 1
                    self._depth -= 1
                    self._charged -= cost(size)
                for kind, n in per_kind.items():
                    self._bump_dropped(kind, n)
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise OutboxError(f"outbox expiry failed: {exc}") from exc
        if rows:
            log.warning("outbox: dropped %d message(s) older than %.0f days", len(rows),
                        max_age_s / 86400)  # fmt: skip
        return len(rows)

    # --- budget --------------------------------------------------------------------------

    def _make_room(self, charge: int, priority: int) -> bool:
        """Drop old messages (inside the caller's transaction) until ``charge`` fits."""
        need = self._used() + charge - self.budget
        for level in sorted(set(PRIORITY.values())):
            if need <= 0:
                break
            if level > priority:
                break
            while need > 0:
                rows = self._db.execute(
                    "SELECT seq, kind, size FROM messages WHERE priority = ? ORDER BY seq LIMIT ?",
                    (level, EVICT_CHUNK),
                ).fetchall()
                if not rows:
                    break
                victims: list[int] = []
                per_kind: dict[str, int] = {}
                for seq, kind, size in rows:
                    victims.append(seq)
                    per_kind[kind] = per_kind.get(kind, 0) + 1
                    self._depth -= 1
                    self._charged -= cost(size)
                    need -= cost(size)
                    if need <= 0:
                        break
                self._db.execute(
                    "DELETE FROM messages WHERE priority = ? AND seq BETWEEN ? AND ?",
                    (level, victims[0], victims[-1]),
                )
                for kind, n in per_kind.items():
                    self._bump_dropped(kind, n)
                    log.warning("outbox: over budget, dropped %d oldest %s message(s)", n, kind)
        return need <= 0

    def _used(self) -> int:
        return self._charged

    def _bump_dropped(self, kind: str, n: int) -> None:
        self._count(f"dropped.{kind}", n)
        self._dropped[kind] = self._dropped.get(kind, 0) + n

    def _count(self, name: str, n: int) -> None:
        self._db.execute(
            "INSERT INTO counters (name, value) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
            (name, n),
        )

    def _set_last_used(self, seq: int) -> None:
        self._db.execute(
            "INSERT INTO counters (name, value) VALUES ('seq.last_used', ?)"
            " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (seq,),
        )

    def _rollback(self) -> None:
        """Roll back the open transaction and re-read the counters it may have touched."""
        if self._db.in_transaction:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error:
                log.exception("outbox: rollback failed")
        try:
            self._load_counts()
        except sqlite3.Error:
            log.exception("outbox: could not re-read counters after a failed write")

    # --- reading -------------------------------------------------------------------------

    def pending(self, after_seq: int = -1, limit: int = 100) -> list[Pending]:
        """Stored messages with ``seq > after_seq``, in sequence order, at most ``limit``."""
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT seq, kind, payload FROM messages WHERE seq > ? ORDER BY seq LIMIT ?",
                    (after_seq, limit),
                ).fetchall()
            except sqlite3.Error as exc:
                raise OutboxError(f"outbox read failed: {exc}") from exc
        return [Pending(seq, kind, bytes(payload)) for seq, kind, payload in rows]

    def get(self, seq: int) -> Pending | None:
        """The stored message ``seq``, or ``None`` if it was acknowledged or dropped."""
        with self._lock:
            try:
                row = self._db.execute(
                    "SELECT seq, kind, payload FROM messages WHERE seq = ?", (seq,)
                ).fetchone()
            except sqlite3.Error as exc:
                raise OutboxError(f"outbox read failed: {exc}") from exc
        return Pending(row[0], row[1], bytes(row[2])) if row else None

    @property
    def last_seq(self) -> int:
        """The last sequence number handed out (stored or reserved)."""
        return self._next - 1

    def depth(self) -> int:
        """Number of messages waiting for the cloud's acknowledgement."""
        return self._depth

    def size_bytes(self) -> int:
        """Bytes charged against the budget (payloads plus per-row overhead)."""
        return self._used()

    def dropped(self) -> dict[str, int]:
        """Messages dropped by the disk budget since the outbox was created, per kind."""
        with self._lock:
            return dict(self._dropped)

    def stats(self) -> OutboxStats:
        """A consistent snapshot of depth, size, oldest message and drop counters."""
        with self._lock:
            try:
                oldest = self._db.execute(
                    "SELECT seq, created_at FROM messages ORDER BY seq LIMIT 1"
                ).fetchone()
            except sqlite3.Error as exc:
                raise OutboxError(f"outbox read failed: {exc}") from exc
            return OutboxStats(
                depth=self._depth,
                bytes=self._used(),
                budget=self.budget,
                last_seq=self._next - 1,
                oldest_seq=oldest[0] if oldest else None,
                oldest_created_at=oldest[1] if oldest else None,
                dropped=dict(self._dropped),
                rejected=self._rejected,
            )

    def close(self) -> None:
        """Checkpoint the WAL and close the database."""
        with self._lock:
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                log.warning("outbox: WAL checkpoint at close failed", exc_info=True)
            self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
