"""Device labels in the cloud: replayed captures stored through the ingester's write path,
labelled by ``refresh`` on both storages, shown by ``mimamori label``."""

from __future__ import annotations

import asyncio
import io
import json
from contextlib import redirect_stdout
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from conftest import Database
from mimamori.cloud import labels, labels_cli
from mimamori.cloud.batch import Item, write_batch
from mimamori.cloud.rows import prepare
from mimamori.cloud.testing import prepare_database
from mimamori.edge.replay import ReplayResult, replay
from mimamori.protocol import AlertBatch, DeviceBatch, FlowBatch, UpMessage

TENANT, GATEWAY = "acme", "gw1"
TELNET_SERVER, TELNET_CLIENT = "00:00:c0:9f:a0:97", "00:a0:cc:3b:bf:fa"
PLUG = "50:c7:bf:00:c7:03"


def _store(dsn: str, result: ReplayResult, seq: int) -> int:
    """Write a replay's devices, flows and alerts as the ingester would; next free seq."""
    sent = result.stats["last_ts"]
    messages: list[UpMessage] = [
        DeviceBatch(gateway=GATEWAY, seq=seq, sent_at=sent, devices=result.devices),
        FlowBatch(gateway=GATEWAY, seq=seq + 1, sent_at=sent, flows=result.summaries),
    ]
    if result.alerts:
        messages.append(
            AlertBatch(gateway=GATEWAY, seq=seq + 2, sent_at=sent, alerts=result.alerts)
        )
    items = [
        Item(topic="t", payload=b"", received_at=sent, prepared=prepare(m, TENANT))
        for m in messages
    ]

    async def write() -> None:
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            out = await write_batch(conn, items, quarantine_bytes=1024)
            assert out.stored == len(items)

    asyncio.run(write())
    return seq + 3


def _at(result: ReplayResult) -> datetime:
    return datetime.fromtimestamp(result.stats["last_ts"], UTC) + timedelta(minutes=5)


def test_refresh_stores_labels_and_history(db: Database, shared_data: Path) -> None:
    dsn = db.dsn
    prepare_database(dsn, tenant=TENANT, gateways=[GATEWAY])
    telnet = replay([str(shared_data / "pcap/benign/cleartext/telnet_session.pcap")])
    plug = replay([str(shared_data / "pcap/benign/iot_setup/tplink_hs110.pcap")])
    seq = _store(dsn, telnet, 1)
    # The captures are years apart (1999, 2016): each refresh labels as of its own time.
    assert _at(plug) - _at(telnet) > timedelta(days=7)
    with psycopg.connect(dsn, autocommit=True) as conn:
        done = labels.refresh(conn, now=_at(telnet))
        assert done.labelled == 2 and done.changed == 2
        again = labels.refresh(conn, now=_at(telnet))
        assert again.labelled == 2 and again.changed == 0  # history records changes only
        found = {row["mac"]: row for row in labels.fetch(conn, tenant=TENANT)}
        server = found[TELNET_SERVER]
        assert server["outcome"] == "does_not_meet"
        failing = {c["id"] for c in server["criteria"] if c["status"] == "fail"}
        assert failing == {"S1.1-12", "S1.1-13"}
        assert any("Telnet" in a["en"] for a in server["advice"])
        assert found[TELNET_CLIENT]["outcome"] == "does_not_meet"
        assert len(labels.history(conn, tenant=TENANT, mac=TELNET_SERVER)) == 1

        _store(dsn, plug, seq)
        done = labels.refresh(conn, now=_at(plug), tenant=TENANT)
        found = {row["mac"]: row for row in labels.fetch(conn, tenant=TENANT)}
        # The plug's weakest ClientHello (TLS 1.0) reached the cloud through the device
        # inventory's extras: the same finding as at the edge.
        assert found[PLUG]["outcome"] == "does_not_meet"
        plug_failing = {c["id"] for c in found[PLUG]["criteria"] if c["status"] == "fail"}
        assert plug_failing == {"S1.1-12"}
        assert found[PLUG]["kind"] == "plug"
        # The Telnet flows are now outside the lookback window: nothing refutes any more,
        # and the change of the server's label is recorded.
        assert found[TELNET_SERVER]["outcome"] == "insufficient_evidence"
        hist = labels.history(conn, tenant=TENANT, mac=TELNET_SERVER)
        assert [h["outcome"] for h in hist] == ["insufficient_evidence", "does_not_meet"]
        assert [r["mac"] for r in labels.fetch(conn, tenant=TENANT, mac=PLUG)] == [PLUG]
        assert labels.fetch(conn, tenant="other") == []


def test_label_command_prints_labels(plain_db: Database, shared_data: Path) -> None:
    dsn = plain_db.dsn
    prepare_database(dsn, tenant=TENANT, gateways=[GATEWAY])
    telnet = replay([str(shared_data / "pcap/benign/cleartext/telnet_session.pcap")])
    _store(dsn, telnet, 1)
    with psycopg.connect(dsn, autocommit=True) as conn:
        labels.refresh(conn, now=_at(telnet))

    out = io.StringIO()
    with redirect_stdout(out):
        code = labels_cli.main(["--dsn", dsn, "--tenant", TENANT, "--json"])
    assert code == 0
    doc = json.loads(out.getvalue())
    assert {lab["mac"] for lab in doc["labels"]} == {TELNET_SERVER, TELNET_CLIENT}

    out = io.StringIO()
    with redirect_stdout(out):
        code = labels_cli.main(
            ["--dsn", dsn, "--tenant", TENANT, "--gateway", GATEWAY, "--mac", TELNET_SERVER]
        )
    assert code == 0
    text = out.getvalue()
    assert "does_not_meet" in text and "S1.1-12 fail" in text and "Telnet" in text
    assert "history" in text
    assert TELNET_CLIENT not in text

    assert labels_cli.main(["--dsn", dsn, "--tenant", TENANT, "--mac", "nonsense"]) == 2
