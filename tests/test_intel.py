"""The cloud's threat-intelligence refresh: feeds -> bundle -> retained message per tenant."""

from __future__ import annotations

import http.server
import ipaddress
import random
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import paho.mqtt.client as mqtt
import psycopg
import pytest
from mimamori.cloud import intel as cloud_intel
from mimamori.cloud.jobs.runner import run_once
from mimamori.cloud.settings import Settings
from mimamori.cloud.testing import prepare_database
from mimamori.detect.intel import Intel, parse_feed
from mimamori.protocol import IntelBundle, codec, topics
from mimamori.simulators.services import Mosquitto
from paho.mqtt.enums import CallbackAPIVersion

NOW = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)


def _feeds_file(tmp_path: Path) -> Path:
    (tmp_path / "bad-ips.txt").write_text(
        "# a plain list, ipsum style: address, count of blacklists\n"
        "203.0.113.7\t5\n198.51.100.0/24\t2\nnot an indicator\n"
    )
    (tmp_path / "urls.csv").write_text(
        "# id,dateadded,url,threat\n"
        '1,2026-11-21,"http://evil.example/payload.exe",malware_download\n'
    )
    feeds = tmp_path / "feeds.toml"
    feeds.write_text(
        "refresh_s = 3600\n"
        f'[[feed]]\nname = "bad-ips"\nsource = "{tmp_path / "bad-ips.txt"}"\n'
        f'[[feed]]\nname = "urls"\nsource = "{tmp_path / "urls.csv"}"\nformat = "csv"\n'
    )
    return feeds


def _retained(broker: Mosquitto, topic: str, timeout: float = 10.0) -> bytes:
    """Subscribe after the fact, like a gateway connecting later: the broker replays it."""
    got: list[bytes] = []
    done = threading.Event()
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)

    def on_message(_c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.retain:
            got.append(msg.payload)
            done.set()

    client.on_message = on_message
    client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        assert done.wait(timeout), f"no retained message on {topic}"
    finally:
        client.loop_stop()
        client.disconnect()
    return got[0]


def test_intel_job_publishes_a_retained_bundle_every_tenant_receives(
    broker: Mosquitto, plain_db: Any, topic_prefix: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    other = f"{topic_prefix}b"
    prepare_database(plain_db.dsn, tenant=topic_prefix, gateways=["gw1"])
    prepare_database(plain_db.dsn, tenant=other, gateways=["gw2"])
    monkeypatch.setenv(cloud_intel.FEEDS_ENV, str(_feeds_file(tmp_path)))
    settings = Settings(dsn=plain_db.dsn, mqtt_port=broker.port)

    first = run_once(plain_db.dsn, only=["intel"], now=NOW, settings=settings)["intel"]
    assert first.new_bundle and first.tenants == 2 and first.failed_feeds == []

    for tenant in (topic_prefix, other):
        bundle = codec.decode_down(_retained(broker, topics.intel(tenant)))
        assert isinstance(bundle, IntelBundle)
        assert bundle.version == first.version
        assert bundle.generated_at == NOW.timestamp()
        assert bundle.ips == ["203.0.113.7"]
        assert bundle.cidrs == ["198.51.100.0/24"]
        assert bundle.domains == ["evil.example"]
        assert sorted(bundle.sources) == ["bad-ips", "urls"]
        intel = Intel.from_bundle(bundle)
        assert intel.match_ip("198.51.100.99") == "198.51.100.0/24"

    # Not due again within refresh_s; due later, and an unchanged set keeps its version.
    assert run_once(plain_db.dsn, only=["intel"], now=NOW + timedelta(minutes=5),
                    settings=settings)["intel"].due is False  # fmt: skip
    again = run_once(plain_db.dsn, only=["intel"], now=NOW + timedelta(hours=2),
                     settings=settings)["intel"]  # fmt: skip
    assert again.version == first.version and not again.new_bundle
    with psycopg.connect(plain_db.dsn) as conn:
        feeds = conn.execute(
            "SELECT name, indicators, rejected, failures FROM intel_feeds ORDER BY name"
        ).fetchall()
        bundles = conn.execute("SELECT version, tenants FROM intel_bundles").fetchall()
    assert feeds == [("bad-ips", 2, 1, 0), ("urls", 1, 0, 0)]  # the bad line is counted
    assert bundles == [(first.version, 2)]


def test_missing_feed_keeps_its_last_body_and_is_counted(
    broker: Mosquitto, plain_db: Any, topic_prefix: str, tmp_path: Path
) -> None:
    prepare_database(plain_db.dsn, tenant=topic_prefix, gateways=["gw1"])
    feeds = cloud_intel.load_feeds(_feeds_file(tmp_path))
    settings = Settings(dsn=plain_db.dsn, mqtt_port=broker.port)
    with psycopg.connect(plain_db.dsn, autocommit=True) as conn:
        first = cloud_intel.refresh(conn, feeds=feeds, settings=settings, now=NOW)
        (tmp_path / "bad-ips.txt").unlink()
        later = cloud_intel.refresh(conn, feeds=feeds, settings=settings,
                                    now=NOW + timedelta(hours=2))  # fmt: skip
        [(failures, error)] = conn.execute(
            "SELECT failures, last_error FROM intel_feeds WHERE name = 'bad-ips'"
        ).fetchall()
    assert later.failed_feeds == ["bad-ips"]
    assert later.version == first.version  # the stored body still counts
    assert failures == 1 and "cannot read" in error


def test_no_usable_feed_publishes_nothing(
    broker: Mosquitto, plain_db: Any, topic_prefix: str, tmp_path: Path
) -> None:
    prepare_database(plain_db.dsn, tenant=topic_prefix, gateways=["gw1"])
    feeds = cloud_intel.load_feeds(_feeds_file(tmp_path))
    for name in ("bad-ips.txt", "urls.csv"):
        (tmp_path / name).unlink()
    settings = Settings(dsn=plain_db.dsn, mqtt_port=broker.port)
    with psycopg.connect(plain_db.dsn, autocommit=True) as conn:
        result = cloud_intel.refresh(conn, feeds=feeds, settings=settings, now=NOW)
        bundles = conn.execute("SELECT count(*) FROM intel_bundles").fetchall()
    assert result.version == "" and sorted(result.failed_feeds or []) == ["bad-ips", "urls"]
    assert bundles == [(0,)]  # an empty bundle would have wiped the gateways' intel


def test_bad_feeds_file_is_a_clear_error_not_a_crash(plain_db: Any, tmp_path: Path) -> None:
    bad = tmp_path / "feeds.toml"
    bad.write_text('[[feed]]\nname = "Bad Name"\nsource = "/x"\n')
    with pytest.raises(cloud_intel.ConfigError, match="feed name"):
        cloud_intel.load_feeds(bad)
    prepare_database(plain_db.dsn, tenant="acme", gateways=[])
    with psycopg.connect(plain_db.dsn, autocommit=True) as conn:
        out = cloud_intel.run_job(conn, settings=Settings(), env={cloud_intel.FEEDS_ENV: str(bad)})
    assert isinstance(out, str) and out.startswith("failed:") and "feed name" in out


class _FeedHandler(http.server.BaseHTTPRequestHandler):
    body = b"192.0.2.1\n"
    etag = '"v1"'
    seen: ClassVar[list[dict[str, str]]] = []

    def do_GET(self) -> None:
        type(self).seen.append(dict(self.headers))
        if self.headers.get("If-None-Match") == self.etag:
            self.send_response(304)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("ETag", self.etag)
        self.send_header("Last-Modified", "Sat, 21 Nov 2026 00:00:00 GMT")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def feed_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FeedHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/feed.txt"
    server.shutdown()
    server.server_close()


def test_url_feed_uses_conditional_get(feed_server: str) -> None:
    feed = cloud_intel.Feed(name="web", source=feed_server)
    first = cloud_intel.fetch(feed, etag=None, last_modified=None, timeout=5)
    assert first.body == "192.0.2.1\n" and first.etag == '"v1"'
    second = cloud_intel.fetch(feed, etag=first.etag, last_modified=first.last_modified,
                               timeout=5)  # fmt: skip
    assert second.body is None  # 304: unchanged, the stored body stays in use
    sent = _FeedHandler.seen[-1]
    assert sent["If-None-Match"] == '"v1"'
    assert sent["If-Modified-Since"] == "Sat, 21 Nov 2026 00:00:00 GMT"
    with pytest.raises(cloud_intel.IntelFeedError, match="cannot fetch"):
        cloud_intel.fetch(cloud_intel.Feed(name="dead", source="http://127.0.0.1:1/x"),
                          etag=None, last_modified=None, timeout=2)  # fmt: skip


def test_ipsum_level3_fits_in_one_payload(shared_data: Path) -> None:
    text = (shared_data / "intel" / "ipsum_level3.txt").read_text()
    intel = parse_feed(text, source="ipsum")
    built = cloud_intel.build(intel, generated_at=1.0, score={})
    assert built.dropped == 0
    assert len(built.bundle.ips) == len(intel) > 10_000
    assert len(built.payload) < codec.MAX_PAYLOAD


def test_oversized_feed_keeps_the_highest_scored_indicators() -> None:
    # 70,000 random public addresses compress to well over 256 KiB (ipsum's 14k: 51 KB).
    rng = random.Random(7)
    ips = list(dict.fromkeys(str(ipaddress.ip_address(rng.randrange(2**24, 2**31)))
                             for _ in range(70_000)))  # fmt: skip
    body = "".join(f"{ip}\t{1 + (i % 10)}\n" for i, ip in enumerate(ips))
    intel = parse_feed(body, source="big")
    built = cloud_intel.build(intel, generated_at=1.0, score=cloud_intel.scores({"big": body}))
    assert 0 < built.dropped < len(ips)
    assert len(built.payload) <= codec.MAX_PAYLOAD
    kept = set(built.bundle.ips)
    # Everything kept scores at least as high as everything dropped.
    score = {ip: 1 + (i % 10) for i, ip in enumerate(ips)}
    assert min(score[ip] for ip in kept) >= max(score[ip] for ip in ips if ip not in kept)
    assert any(s.startswith("truncated: kept") for s in built.bundle.sources)
    assert codec.decode_down(built.payload) == built.bundle


def test_a_gateway_agent_applies_the_published_bundle(
    broker: Mosquitto, plain_db: Any, topic_prefix: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Cloud job to gateway engine: the agent's publisher gets the retained bundle."""
    from mimamori.edge import config as edge_config
    from mimamori.edge.agent import Agent
    from mimamori.protocol import FlowRecord

    prepare_database(plain_db.dsn, tenant=topic_prefix, gateways=["gw1"])
    monkeypatch.setenv(cloud_intel.FEEDS_ENV, str(_feeds_file(tmp_path)))
    now = datetime.now(UTC)
    result = run_once(plain_db.dsn, only=["intel"], now=now,
                      settings=Settings(dsn=plain_db.dsn, mqtt_port=broker.port))["intel"]
    config = edge_config.parse(f"""
[gateway]
id = "gw1"
tenant = "{topic_prefix}"
[capture]
interface = "lo"
home_net = ["192.168.1.0/24"]
[mqtt]
host = "{broker.host}"
port = {broker.port}
insecure_plaintext = true
client_id = "{topic_prefix}-gw1"
[outbox]
path = "{tmp_path / "gw" / "outbox.db"}"
""")  # fmt: skip
    agent = Agent(config=config)
    assert agent.capture is not None
    stop = threading.Event()
    thread = threading.Thread(target=agent.publisher.run, args=(stop,), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not agent.intel_path.exists():
            assert time.monotonic() < deadline, "the agent never got the bundle"
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(10)
        agent.outbox.close()
    agent.capture.door.tick(time.time())  # what the capture thread does between records
    t = time.time()
    flow = FlowRecord(first_seen=t, last_seen=t + 1, src_ip="192.168.1.10", src_port=50000,
                      dst_ip="198.51.100.20", dst_port=443, proto=6, pkts_src2dst=3,
                      pkts_dst2src=3, bytes_src2dst=300, bytes_dst2src=600, syn=1, synack=1)
    alerts = [a for a in agent.capture.engine.on_flow(flow) if a.category == "intel_match"]
    assert alerts and alerts[0].evidence  # the CIDR from the feed file matched
    beat = agent.probe.heartbeat(1)
    assert beat.intel_age_s is not None and beat.intel_age_s < 60
    assert result.version and codec.decode_down(agent.intel_path.read_bytes()).version == (
        result.version
    )
