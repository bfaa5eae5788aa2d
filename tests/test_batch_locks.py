"""Two ingesters writing batches that upsert the same devices must not deadlock.

With a shared subscription, consecutive messages of one gateway can be written by two
ingesters at once; each batch upserts rows of ``devices`` (and ``sensors``, gateways) in
one transaction. The rows are locked in key order whatever order the messages list them.
"""

from __future__ import annotations

import asyncio

import psycopg
from conftest import Database
from mimamori.cloud.batch import Item, write_batch
from mimamori.cloud.rows import prepare
from mimamori.cloud.testing import prepare_database
from mimamori.protocol import Device, DeviceBatch

TENANT, GATEWAY = "locks", "gw-locks"
ROUNDS = 6


def _batch(seq: int, macs: list[str], at: float) -> list[Item]:
    devices = [Device(mac=m, first_seen=at, last_seen=at + seq) for m in macs]
    message = DeviceBatch(gateway=GATEWAY, seq=seq, sent_at=at, devices=devices)
    return [Item(topic="t", payload=b"", received_at=at, prepared=prepare(message, TENANT))]


def test_concurrent_device_batches_in_opposite_orders_do_not_deadlock(plain_db: Database) -> None:
    dsn = plain_db.dsn
    prepare_database(dsn, tenant=TENANT, gateways=[GATEWAY])
    macs = [f"02:00:00:00:{i // 256:02x}:{i % 256:02x}" for i in range(300)]
    at = 1_760_000_000.0

    async def writer(conn: psycopg.AsyncConnection[object], seq: int, order: list[str]) -> int:
        out = await write_batch(conn, _batch(seq, order, at), quarantine_bytes=1024)
        return out.stored

    async def rounds() -> list[int]:
        stored: list[int] = []
        async with (
            await psycopg.AsyncConnection.connect(dsn) as a,
            await psycopg.AsyncConnection.connect(dsn) as b,
        ):
            for r in range(ROUNDS):
                stored += await asyncio.gather(
                    writer(a, 10 * r + 1, macs), writer(b, 10 * r + 2, macs[::-1])
                )
        return stored

    assert asyncio.run(rounds()) == [1] * (2 * ROUNDS)
    with psycopg.connect(dsn) as conn:
        count, last = conn.execute(
            "SELECT count(*), max(last_seen) FROM devices WHERE tenant = %s", (TENANT,)
        ).fetchone()  # type: ignore[misc]
    assert count == len(macs)
    assert last.timestamp() == at + 10 * (ROUNDS - 1) + 2
