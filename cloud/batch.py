"""One ingest batch, written in one transaction: receipts, rows, registry updates, quarantine.

Exactly-once: the batch first inserts one receipt per message (``ON CONFLICT DO NOTHING
RETURNING``); only messages whose receipt is new get their rows written, in the same
transaction. A message committed before (a re-send) is therefore acknowledged again but
never stored twice, even when two ingesters receive copies of it at once: the second
receipt insert waits for the first transaction and then finds the conflict.

A refused message whose sender can be told (its topic names a registered, unrevoked
gateway of that tenant, and the payload's header names the same gateway and a sequence
number) is committed to the quarantine table under a receipt of kind ``quarantine`` and
acknowledged like any other: its bytes are kept there with the reason, and the gateway
may drop it. Without that ack a window full of unstorable messages would stall the
gateway, and every re-send would add another quarantine row. Refused messages that
cannot be attributed are quarantined each time and never acknowledged.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from mimamori.cloud import _pgcopy, rows
from mimamori.cloud.rows import Prepared

_FLOWS_COPY = f"COPY flows ({', '.join(_pgcopy.FLOW_COLUMNS)}) FROM STDIN (FORMAT BINARY)"

_RECEIPTS_SQL = """
INSERT INTO receipts (gateway, seq, kind, rows)
SELECT * FROM unnest(%s::text[], %s::bigint[], %s::text[], %s::integer[])
ON CONFLICT (gateway, seq) DO NOTHING
RETURNING gateway, seq
"""

_QUARANTINE_SQL = """
INSERT INTO quarantine (received_at, topic, tenant, gateway, reason, detail, payload,
    payload_size)
VALUES (to_timestamp(%s), %s, %s, %s, %s, %s, %s, %s)
"""

#: Per-kind table that counts a message's rows in the metrics.
_ROW_TABLE = {
    "flows": "flows",
    "heartbeat": "heartbeats",
    "devices": "devices",
    "alerts": "alerts",
    "sensor": "sensor_messages",
    "status": "gateways",
}


@dataclass(slots=True)
class Item:
    """A message as received, with its prepared rows or the reason it is refused."""

    topic: str
    payload: bytes
    received_at: float
    prepared: Prepared | None = None
    tenant: str | None = None  # claimed by the topic
    gateway: str | None = None  # claimed by the topic (or payload)
    reason: str = ""
    detail: str = ""
    #: sequence number read from a refused message's header (see module docstring)
    ack_seq: int | None = None

    def reject(self, reason: str, detail: str) -> None:
        self.prepared = None
        self.reason = reason
        self.detail = detail


@dataclass
class Outcome:
    """What a committed batch did; acks are sent from it after the commit."""

    acks: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    stored: int = 0
    duplicates: int = 0
    rows: Counter[str] = field(default_factory=Counter)
    quarantined: Counter[str] = field(default_factory=Counter)
    #: sent_at of every stored message (for latency figures)
    sent_at: list[float] = field(default_factory=list)


def _check_registry(items: list[Item], registry: dict[str, tuple[str, bool]]) -> None:
    """Refuse messages of unknown or revoked gateways, or on another tenant's topic."""
    for item in items:
        p = item.prepared
        if p is None:
            continue
        known = registry.get(p.gateway)
        if known is None:
            item.reject("unknown_gateway", f"gateway {p.gateway!r} is not registered")
        elif known[1]:
            item.reject("revoked_gateway", f"gateway {p.gateway!r} is revoked")
        elif known[0] != p.tenant:
            item.reject(
                "tenant_mismatch",
                f"gateway {p.gateway!r} belongs to another tenant than topic's {p.tenant!r}",
            )


async def write_batch(
    conn: psycopg.AsyncConnection[Any], items: list[Item], *, quarantine_bytes: int
) -> Outcome:
    """Write ``items`` in one transaction and return the outcome (raises psycopg errors)."""
    out = Outcome()
    async with conn.transaction(), conn.cursor() as cur:
        candidates = [i for i in items if i.prepared is not None]
        attributable = [i for i in items if i.prepared is None and i.ack_seq is not None]
        registry: dict[str, tuple[str, bool]] = {}
        if candidates or attributable:
            ids = sorted(
                {i.prepared.gateway for i in candidates if i.prepared}
                | {i.gateway for i in attributable if i.gateway}
            )
            await cur.execute(
                "SELECT id, tenant, revoked_at IS NOT NULL FROM gateways WHERE id = ANY(%s)",
                (ids,),
            )
            registry = {r[0]: (r[1], r[2]) for r in await cur.fetchall()}
            _check_registry(candidates, registry)

        # One message per (gateway, seq), in key order so concurrent ingesters lock
        # receipts in the same order and cannot deadlock.
        unique: dict[tuple[str, int], Prepared] = {}
        for item in items:
            p = item.prepared
            if p is None:
                continue
            out.acks.setdefault((p.tenant, p.gateway), []).append(p.seq)
            if (p.gateway, p.seq) in unique:
                out.duplicates += 1
            else:
                unique[(p.gateway, p.seq)] = p
        # Refused messages of a known sender, quarantined once and acknowledged.
        held: dict[tuple[str, int], Item] = {}
        for item in items:
            if item.prepared is not None or item.ack_seq is None or not item.gateway:
                continue
            known = registry.get(item.gateway)
            if known is None or known[1] or known[0] != item.tenant:
                continue
            key = (item.gateway, item.ack_seq)
            if key in unique:
                continue  # a valid copy of the same message is in this batch
            out.acks.setdefault((known[0], item.gateway), []).append(item.ack_seq)
            held.setdefault(key, item)
        keys = sorted({*unique, *held})
        new: list[Prepared] = []
        fresh: set[tuple[str, int]] = set()
        if keys:
            await cur.execute(
                _RECEIPTS_SQL,
                (
                    [k[0] for k in keys],
                    [k[1] for k in keys],
                    [unique[k].kind if k in unique else "quarantine" for k in keys],
                    [unique[k].rows if k in unique else 0 for k in keys],
                ),
            )
            fresh = {(r[0], r[1]) for r in await cur.fetchall()}
            new = [unique[k] for k in keys if k in fresh and k in unique]
            out.duplicates += len([k for k in unique if k not in fresh])

        flows = [p for p in new if p.copy]
        if flows:
            async with cur.copy(_FLOWS_COPY) as copy:
                await copy.write(_pgcopy.HEADER)
                for p in flows:
                    await copy.write(p.copy)
                await copy.write(_pgcopy.TRAILER)
        for name, sql in rows.STATEMENTS.items():
            params = [t for p in new for t in p.params.get(name, ())]
            if params:
                # Upserts lock rows: every ingester takes them in key order, so two
                # batches touching the same gateways, devices or sensors cannot deadlock.
                # (The sort is stable: a key's updates keep their order.)
                order = _LOCK_ORDER.get(name)
                if order is not None:
                    params.sort(key=order)
                await cur.executemany(sql, params)

        # Refusals of a known sender are stored once: the first copy whose receipt is new.
        def stored_here(i: Item) -> bool:
            if i.prepared is not None:
                return False
            key = (i.gateway or "", i.ack_seq if i.ack_seq is not None else -1)
            if key not in held:
                return True
            return held[key] is i and key in fresh

        refused = [i for i in items if stored_here(i)]
        if refused:
            await cur.executemany(
                _QUARANTINE_SQL,
                [
                    (i.received_at, i.topic[:1024], i.tenant, i.gateway, i.reason,
                     i.detail[:2000], i.payload[:quarantine_bytes], len(i.payload))
                    for i in refused
                ],
            )  # fmt: skip
    # Committed.
    for p in new:
        out.rows[_ROW_TABLE.get(p.kind, p.kind)] += p.rows
        out.sent_at.append(p.sent_at)
    out.stored = len(new)
    for i in refused:
        out.quarantined[i.reason] += 1
    return out


#: The key of each upserted row (its position in the statement's parameters).
_LOCK_ORDER: dict[str, Callable[[tuple[Any, ...]], Any]] = {
    "gateway_seen": lambda t: t[-1],
    "gateway_state": lambda t: t[-1],
    "devices": lambda t: (t[0], t[1]),  # tenant, mac
    "sensors": lambda t: (t[0], t[1]),  # tenant, sensor_id
}


def now() -> float:
    return time.time()
