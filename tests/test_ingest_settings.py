"""Cloud settings from the environment, and the ingester's pure parts (no services)."""

from __future__ import annotations

import pytest
from mimamori.cloud._backoff import Backoff
from mimamori.cloud._pgcopy import FlowEncoder, inet, macaddr
from mimamori.cloud.errors import ConfigError, RowError
from mimamori.cloud.ingest import Ingester
from mimamori.cloud.metrics import IngestMetrics
from mimamori.cloud.settings import Settings, from_env
from mimamori.protocol import FlowBatch, FlowSummary, encode, topics
from prometheus_client import CollectorRegistry


def test_from_env_reads_and_validates() -> None:
    s = from_env({"MIMAMORI_DSN": "postgresql://x/y", "MIMAMORI_MQTT_PORT": "1999",
                  "MIMAMORI_BATCH_ROWS": "500", "MIMAMORI_BATCH_DELAY_S": "0.5"})  # fmt: skip
    assert (s.dsn, s.port, s.batch_rows, s.batch_delay_s) == ("postgresql://x/y", 1999, 500, 0.5)
    assert from_env({}).port == 1883
    assert from_env({"MIMAMORI_MQTT_TLS_CA": "/ca.pem"}).port == 8883
    with pytest.raises(ConfigError, match="MIMAMORI_MQTT_PORT"):
        from_env({"MIMAMORI_MQTT_PORT": "many"})
    with pytest.raises(ConfigError, match="MIMAMORI_DSN"):
        from_env({}).require_dsn()
    assert from_env({}).with_overrides(dsn="d", mqtt_host=None).mqtt_host == "127.0.0.1"


def test_backoff_is_capped_and_jittered() -> None:
    b = Backoff(base=1.0, cap=8.0)
    delays = [b.next_delay() for _ in range(10)]
    assert all(0.5 <= d <= 8.0 for d in delays)
    assert max(delays[5:]) > 4.0  # reached the cap region
    b.reset()
    assert b.next_delay() <= 1.0


def test_inet_and_mac_encoding() -> None:
    assert inet("192.168.1.2") == b"\x00\x00\x00\x08\x02\x20\x00\x04\xc0\xa8\x01\x02"
    assert inet("::1")[:8] == b"\x00\x00\x00\x14\x03\x80\x00\x10"
    assert macaddr("") == b"\xff\xff\xff\xff"
    assert macaddr("02:00:00:00:00:0a") == b"\x00\x00\x00\x06\x02\x00\x00\x00\x00\x0a"
    for bad in ("300.1.1.1", "fe80::1%eth0", "10.0.0.0/8", "host"):
        with pytest.raises(RowError):
            inet(bad)


def test_encoder_refuses_nul_and_caches_across_batches() -> None:
    enc = FlowEncoder(max_entries=2)
    row = FlowSummary(ts=1.7e9, local_ip="10.0.0.1", remote_ip="10.0.0.2", proto=6)
    assert enc.encode("t", "g", [row]) == enc.encode("t", "g", [row])
    with pytest.raises(RowError):
        enc.encode("t", "g", [FlowSummary(ts=1.7e9, local_ip="10.0.0.1",
                                          remote_ip="10.0.0.2", proto=6, app="a\x00b")])  # fmt: skip


def test_classify_reasons_without_services() -> None:
    ing = Ingester(settings=Settings(dsn="postgresql://unused"),
                   metrics=IngestMetrics(registry=CollectorRegistry()))  # fmt: skip
    good = FlowBatch(gateway="gw1", seq=1, sent_at=1.7e9, flows=[
        FlowSummary(ts=1.7e9, local_ip="10.0.0.1", remote_ip="10.0.0.2", proto=6)])  # fmt: skip
    ok = ing.classify(topics.up("acme", "gw1", "flows"), encode(good))
    assert ok.prepared is not None and ok.prepared.rows == 1 and ok.tenant == "acme"
    cases = {
        "malformed": (topics.up("acme", "gw1", "flows"), b"\x00\x01"),
        "topic_mismatch": (topics.up("acme", "gw2", "flows"), encode(good)),
        "too_large": (topics.up("acme", "gw1", "flows"), b"{" + b" " * 300_000 + b"}"),
    }
    for reason, (topic, payload) in cases.items():
        item = ing.classify(topic, payload)
        assert item.prepared is None and item.reason == reason, reason
    bad_topic = ing.classify("mimamori/v1/up/ACME/gw1/flows", encode(good))
    assert bad_topic.reason == "topic_mismatch" and bad_topic.gateway == "gw1"
