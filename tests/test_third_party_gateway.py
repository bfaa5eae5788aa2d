"""Is docs/protocol.md sufficient? A gateway written from it alone must work with the cloud.

``ThirdPartyGateway`` below was written from docs/protocol.md only, as an outside vendor
would: raw paho-mqtt, json, zstandard and the standard library, and nothing of mimamori
(``test_gateway_code_uses_nothing_of_mimamori`` checks that). The tests are the harness:
they may import mimamori to decode what the gateway produced, start the real ingester and
look at the database. Three levels: the reference decoder accepts every message the
gateway encodes; over a real broker, with the harness playing the cloud, the gateway
drains its outbox on acks, re-sends what was not acknowledged and leaves a will; and
against the real ingester and PostgreSQL, every row is stored exactly once, re-sends are
acked but not stored again, and a bad message is quarantined once and acknowledged. Last, the
same gateway over TLS with a password, behind the broker ACL that docs/protocol.md
section 14 prints, cannot speak for or listen as another gateway.

Where the document was the only guide, comments cite its section (``§10``).
"""

from __future__ import annotations

import ast
import contextlib
import json
import re
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import zstandard
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

# --- the gateway: docs/protocol.md only -------------------------------------------------

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"  # §5.2
COMPRESS_OVER = 1024  # §5.2: compress other kinds when the JSON is larger
MAX_PAYLOAD = 262_144  # §5.3
SESSION_EXPIRY_S = 86_400  # §3


def encode(doc: dict[str, Any]) -> bytes:
    """JSON in UTF-8; zstd for every ``flows`` message and anything over 1,024 bytes (§5)."""
    raw = json.dumps(doc, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
    if doc["kind"] == "flows" or len(raw) > COMPRESS_OVER:
        # One-shot compression records the content size in the frame header (§5.2).
        raw = zstandard.ZstdCompressor(level=6).compress(raw)
    if len(raw) > MAX_PAYLOAD:
        raise ValueError(f"{doc['kind']} message of {len(raw)} bytes: split the batch (§5.3)")
    return raw


def decode(payload: bytes) -> dict[str, Any]:
    """A downstream payload: zstd frame or plain JSON, told apart by the magic (§5.2)."""
    if payload[:4] == ZSTD_MAGIC:
        payload = zstandard.ZstdDecompressor().decompress(payload, max_output_size=8 << 20)
    doc = json.loads(payload)
    if not isinstance(doc, dict):
        raise ValueError("downstream payload is not a JSON object")
    return doc


class ThirdPartyGateway:
    """A minimal compatible gateway: numbered outbox in SQLite, QoS 1, acks, re-sends."""

    def __init__(
        self,
        *,
        tenant: str,
        gateway: str,
        host: str,
        port: int,
        outbox: Path,
        password: str | None = None,
        ca_file: str | None = None,
        ack_timeout_s: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.tenant, self.gateway = tenant, gateway
        self.host, self.port = host, port
        self.ack_timeout_s = ack_timeout_s
        self.clock = clock
        self.acks: list[dict[str, Any]] = []
        self.connected = threading.Event()
        self._lock = threading.Lock()
        # §13 step 3: seq -> payload, plus the last used seq, one transaction per message.
        self._db = sqlite3.connect(str(outbox), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY, kind TEXT NOT NULL,"
            " payload BLOB NOT NULL, sent_at_mono REAL)"
        )
        self._db.execute("CREATE TABLE IF NOT EXISTS state (k TEXT PRIMARY KEY, v INTEGER)")
        row = self._db.execute("SELECT v FROM state WHERE k = 'last_used'").fetchone()
        floor = int(self.clock() * 1000) * 1000  # §9 step 2
        self._next_seq = max(row[0] + 1, floor) if row else floor
        self._started = time.monotonic()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=gateway, protocol=mqtt.MQTTv5
        )  # §3: the client id is the gateway id
        self.client.username_pw_set(gateway, password)
        if ca_file is not None:
            # §3: TLS, the broker's certificate checked against the provider's CA, host
            # name included (paho's default once a CA is given).
            self.client.tls_set(ca_certs=ca_file)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.will_seqs: list[int] = []
        self._stopping = threading.Event()
        self._resender = threading.Thread(target=self._resend_loop, name="resend", daemon=True)

    def _topic(self, direction: str, leaf: str) -> str:
        return f"mimamori/v1/{direction}/{self.tenant}/{self.gateway}/{leaf}"

    def _take_seq(self) -> int:
        seq = self._next_seq
        self._next_seq += 1
        self._db.execute("INSERT OR REPLACE INTO state (k, v) VALUES ('last_used', ?)", (seq,))
        return seq

    def _document(self, kind: str, seq: int, body: dict[str, Any]) -> dict[str, Any]:
        # §6: the header, then the kind's own keys.
        return {"kind": kind, "v": 1, "gateway": self.gateway, "seq": seq,
                "sent_at": self.clock(), **body}  # fmt: skip

    def submit(self, kind: str, body: dict[str, Any]) -> int:
        """Number, store, then publish one message (§10, gateway rules 1-2)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                seq = self._take_seq()
                payload = encode(self._document(kind, seq, body))
                self._db.execute(
                    "INSERT INTO outbox (seq, kind, payload) VALUES (?, ?, ?)",
                    (seq, kind, payload),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        if self.connected.is_set():
            self._publish(seq, kind, payload)
        return seq

    def _publish(self, seq: int, kind: str, payload: bytes) -> None:
        self.client.publish(self._topic("up", kind), payload, qos=1, retain=False)
        with self._lock:
            self._db.execute(
                "UPDATE outbox SET sent_at_mono = ? WHERE seq = ?", (time.monotonic(), seq)
            )

    def pending(self) -> list[int]:
        """Sequence numbers still waiting for an ack."""
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT seq FROM outbox ORDER BY seq")]

    def payloads(self) -> list[tuple[str, bytes]]:
        """(topic, payload) of every stored message, oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT kind, payload FROM outbox ORDER BY seq").fetchall()
        return [(self._topic("up", kind), bytes(payload)) for kind, payload in rows]

    def _arm_will(self) -> None:
        """A fresh offline status with its own reserved seq, for the next CONNECT (§7.2)."""
        with self._lock:
            seq = self._take_seq()  # persisted as used, never stored in the outbox
            doc = self._document("status", seq, {"state": "offline", "reason": "connection lost"})
        self.client.will_set(self._topic("up", "status"), encode(doc), qos=1, retain=False)
        self.will_seqs.append(seq)

    def start(self) -> None:
        """Connect (§3, §13 step 6)."""
        self._arm_will()
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        self.client.connect(self.host, self.port, keepalive=60, clean_start=False,
                            properties=props)  # fmt: skip
        self.client.loop_start()
        self._resender.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._resender.is_alive():
            self._resender.join()
        self.client.disconnect()
        self.client.loop_stop()
        self._db.close()

    def _resend_loop(self) -> None:
        while not self._stopping.wait(min(1.0, self.ack_timeout_s / 4)):
            if self.connected.is_set():
                self.resend()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:  # fmt: skip
        if reason.is_failure:
            return
        # §3 "After every connection": subscribe, announce, re-send the outbox.
        client.subscribe([(self._topic("down", "ack"), 1), (self._topic("down", "command"), 1),
                          (f"mimamori/v1/down/{self.tenant}/intel", 1)])  # fmt: skip
        self.connected.set()
        online = self.submit("status", {"state": "online", "reason": "started"})
        self.resend(older_than_s=0.0, below=online)  # everything stored before it

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:  # fmt: skip
        self.connected.clear()
        self._arm_will()  # paho reconnects by itself; give that connection its own will

    def resend(self, older_than_s: float | None = None, below: int = 2**63 - 1) -> int:
        """Re-publish what has waited longer than the ack timeout (§10 rule 4)."""
        limit = self.ack_timeout_s if older_than_s is None else older_than_s
        cutoff = time.monotonic() - limit
        with self._lock:
            due = self._db.execute(
                "SELECT seq, kind, payload FROM outbox WHERE seq < ?"
                " AND (sent_at_mono IS NULL OR sent_at_mono <= ?) ORDER BY seq",
                (below, cutoff),
            ).fetchall()
        for seq, kind, payload in due:
            self._publish(seq, kind, bytes(payload))
        return len(due)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            doc = decode(bytes(msg.payload))
        except ValueError:
            return  # §8: ignore what we cannot read
        if doc.get("kind") != "ack" or doc.get("gateway") != self.gateway:
            return  # commands and intel are not used by this gateway
        with self._lock:
            for first, last in doc.get("ranges", []):
                if first <= last:  # §8.1: ignore inverted ranges
                    self._db.execute("DELETE FROM outbox WHERE seq BETWEEN ? AND ?", (first, last))
        self.acks.append(doc)


def heartbeat_body(uptime_s: float) -> dict[str, Any]:
    """§7.1, with the optional fields this gateway can fill in, and one of its own."""
    # "acme_fan_rpm" is this vendor's own key: receivers ignore unknown keys (§5.1).
    return {"interval_s": 30.0, "uptime_s": uptime_s, "load1": 0.25, "mem_used_pct": 41.0,
            "disk_used_pct": 9.5, "temp_c": None, "packets_seen": 1000, "packets_dropped": 0,
            "outbox_depth": 0, "outbox_bytes": 0, "agent_version": "acme-gw 2.3",
            "config_hash": "abc123", "intel_age_s": None,
            "acme_fan_rpm": 2400}  # fmt: skip


def flows_body(ts: float, rows: int) -> dict[str, Any]:
    """§7.3: ``rows`` summaries of one 60-second interval, every field written explicitly."""
    flows = []
    for i in range(rows):
        flows.append({
            "ts": ts, "mac": f"02:00:00:00:{i // 256:02x}:{i % 256:02x}",
            "local_ip": f"192.168.{i // 250}.{i % 250 + 2}", "remote_ip": "203.0.113.80",
            "remote_port": 443, "proto": 6, "dir": "out", "app": "TLS", "sni": "example.jp",
            "pkts_out": 10 + i, "pkts_in": 12 + i, "bytes_out": 1500 + i, "bytes_in": 9000 + i,
            "conns": 1, "first_seen": ts + 1.5, "last_seen": ts + 58.25,
        })  # fmt: skip
    # One row with the MAC unknown and the defaults left out.
    flows.append({"ts": ts, "mac": "", "local_ip": "10.0.0.9", "remote_ip": "10.0.0.1",
                  "proto": 17})  # fmt: skip
    return {"interval_s": 60, "flows": flows}


def devices_body(now: float) -> dict[str, Any]:
    """§7.4: one fully described device and one the gateway knows little about."""
    return {"devices": [
        {"mac": "02:00:00:00:00:01", "ips": ["192.168.0.2"], "vendor": "ACME",
         "hostname": "受付PC", "dhcp_fingerprint": "1,3,6,15", "dhcp_vendor_class": "MSFT 5.0",
         "model": "", "os_hint": "Windows", "services": ["_smb._tcp"],
         "first_seen": now - 3600, "last_seen": now, "extras": {"note": "reception"}},
        {"mac": "02:00:00:00:00:02", "first_seen": now - 60, "last_seen": now},
    ]}  # fmt: skip


def alerts_body(now: float) -> dict[str, Any]:
    """§7.5: one alert."""
    return {"alerts": [{
        "id": "acme-0001", "category": "bruteforce", "severity": "medium", "detected_at": now,
        "actor": "198.51.100.7", "target": "192.168.0.2:22",
        "summary_en": "198.51.100.7 tried 120 SSH logins on 192.168.0.2 in 5 minutes",
        "summary_ja": "198.51.100.7 が5分間に192.168.0.2へSSHログインを120回試行しました",
        "dedup_key": "bruteforce:198.51.100.7:192.168.0.2", "rule": "acme.ssh_bruteforce",
        "mac": "", "evidence": {"attempts": 120, "window_s": 300},
    }]}  # fmt: skip


# --- the harness -------------------------------------------------------------------------

GATEWAY_CODE_END = "# --- the harness"


def test_gateway_code_uses_nothing_of_mimamori() -> None:
    """The gateway half of this file is independent of mimamori, or the test proves nothing."""
    source = Path(__file__).read_text(encoding="utf-8")
    gateway_code = source.split(GATEWAY_CODE_END)[0]
    for node in ast.walk(ast.parse(gateway_code)):
        if isinstance(node, ast.Import):
            assert not any(a.name.split(".")[0] == "mimamori" for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert (node.module or "").split(".")[0] != "mimamori"
    assert "mimamori." not in gateway_code.replace("mimamori/v1", "")


def _fill(gw: ThirdPartyGateway, now: float) -> dict[str, int]:
    """Submit one message of each kind the test covers; return kind -> seq."""
    return {
        "heartbeat": gw.submit("heartbeat", heartbeat_body(uptime_s=12.5)),
        "flows": gw.submit("flows", flows_body(ts=now - 60, rows=300)),
        "devices": gw.submit("devices", devices_body(now)),
        "alerts": gw.submit("alerts", alerts_body(now)),
    }


def test_reference_decoder_accepts_every_message_of_the_third_party_gateway(
    tmp_path: Path,
) -> None:
    from mimamori.protocol import AlertBatch, DeviceBatch, FlowBatch, Heartbeat, codec

    now = time.time()
    gw = ThirdPartyGateway(tenant="acme", gateway="acme-gw-7", host="127.0.0.1", port=1,
                           outbox=tmp_path / "outbox.db")  # fmt: skip
    seqs = _fill(gw, now)
    decoded = {}
    for topic, payload in gw.payloads():
        message = codec.decode_up(payload, topic)  # raises on any disagreement with the topic
        decoded[codec.kind_of(message)] = (message, payload)
    gw.stop()

    assert set(decoded) == set(seqs)
    for kind, seq in seqs.items():
        assert decoded[kind][0].seq == seq and decoded[kind][0].gateway == "acme-gw-7"
    # Numbering starts at the time floor (§9) and the flow batch went out compressed (§5.2).
    assert min(seqs.values()) >= int(now * 1000) * 1000
    flows, payload = decoded["flows"]
    assert isinstance(flows, FlowBatch) and payload[:4] == codec.ZSTD_MAGIC
    assert len(flows.flows) == 301 and flows.flows[-1].mac == "" and flows.flows[-1].dir == "out"
    assert flows.flows[7].bytes_in == 9007 and flows.flows[7].remote_port == 443
    heartbeat = decoded["heartbeat"][0]
    assert isinstance(heartbeat, Heartbeat) and heartbeat.uptime_s == 12.5
    assert heartbeat.temp_c is None
    devices = decoded["devices"][0]
    assert isinstance(devices, DeviceBatch) and devices.devices[0].hostname == "受付PC"
    assert devices.devices[1].ips == [] and devices.devices[1].vendor == ""
    alerts = decoded["alerts"][0]
    assert isinstance(alerts, AlertBatch) and alerts.alerts[0].category == "bruteforce"
    assert alerts.alerts[0].evidence == {"attempts": 120, "window_s": 300}


def test_numbering_continues_after_a_restart_and_survives_lost_state(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox.db"
    first = ThirdPartyGateway(tenant="acme", gateway="gw", host="127.0.0.1", port=1,
                              outbox=outbox, clock=lambda: 1000.0)  # fmt: skip
    used = [first.submit("heartbeat", heartbeat_body(1.0)) for _ in range(3)]
    first.stop()
    # Same disk, clock not moved (or moved back): continue after the last number used.
    again = ThirdPartyGateway(tenant="acme", gateway="gw", host="127.0.0.1", port=1,
                              outbox=outbox, clock=lambda: 999.0)  # fmt: skip
    assert again.submit("heartbeat", heartbeat_body(1.0)) == used[-1] + 1
    again.stop()
    # New disk one second later: the time floor is above everything used before.
    fresh = ThirdPartyGateway(tenant="acme", gateway="gw", host="127.0.0.1", port=1,
                              outbox=tmp_path / "new.db", clock=lambda: 1001.0)  # fmt: skip
    assert fresh.submit("heartbeat", heartbeat_body(1.0)) > used[-1] + 1
    fresh.stop()


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


class StandInCloud:
    """The harness's cloud for broker-level tests: decodes with mimamori, acks per §10.

    It acknowledges each message after "storing" it in memory, and drops (does not ack)
    the first copy of the kinds in ``drop_first``, as a crashed ingester would.
    """

    def __init__(self, *, host: str, port: int, tenant: str, drop_first: set[str]) -> None:
        from mimamori.protocol import codec, topics

        self._codec, self._topics = codec, topics
        self.tenant = tenant
        self.drop_first = set(drop_first)
        self.received: list[tuple[str, Any, bytes]] = []  # (kind, message, payload)
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"standin-{tenant}",
                                  protocol=mqtt.MQTTv5)  # fmt: skip
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.subscribe(f"mimamori/v1/up/{tenant}/#", qos=1)
        self.client.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        from mimamori.protocol import Ack

        message = self._codec.decode_up(msg.payload, msg.topic)
        kind = self._codec.kind_of(message)
        self.received.append((kind, message, bytes(msg.payload)))
        if kind in self.drop_first:
            self.drop_first.discard(kind)
            return
        ack = Ack(gateway=message.gateway, ranges=[(message.seq, message.seq)],
                  committed_at=time.time())  # fmt: skip
        client.publish(self._topics.ack(self.tenant, message.gateway), self._codec.encode(ack),
                       qos=1)  # fmt: skip

    def kinds(self) -> list[str]:
        return [kind for kind, _, _ in self.received]

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_gateway_drains_its_outbox_resends_the_unacked_and_leaves_a_will(
    broker: Any, topic_prefix: str, tmp_path: Path
) -> None:
    cloud = StandInCloud(host=broker.host, port=broker.port, tenant=topic_prefix,
                         drop_first={"flows"})  # fmt: skip
    gw = ThirdPartyGateway(tenant=topic_prefix, gateway=f"gw-{topic_prefix}", host=broker.host,
                           port=broker.port, outbox=tmp_path / "outbox.db", ack_timeout_s=1.0)  # fmt: skip
    try:
        gw.start()
        _wait(gw.connected.is_set, 10, "the gateway to connect")
        seqs = _fill(gw, time.time())
        _wait(lambda: gw.pending() == [], 15, "the outbox to drain")
        assert sorted(cloud.kinds()) == sorted(["status", "heartbeat", "flows", "flows",
                                                "devices", "alerts"])  # fmt: skip
        # The unacknowledged flow batch came back byte for byte, same seq (§10 rule 4).
        first, again = [(m, p) for k, m, p in cloud.received if k == "flows"]
        assert first[0].seq == again[0].seq == seqs["flows"] and first[1] == again[1]

        # Cut the connection without DISCONNECT: the broker publishes the will (§7.2).
        will_seq = gw.will_seqs[-1]
        sock = gw.client.socket()
        assert isinstance(sock, socket.socket)
        sock.shutdown(socket.SHUT_RDWR)
        _wait(lambda: any(m.seq == will_seq for k, m, _ in cloud.received if k == "status"),
              10, "the will")  # fmt: skip
        offline = next(m for k, m, _ in cloud.received if k == "status" and m.seq == will_seq)
        assert offline.state == "offline"
        # paho reconnects; the new connection announces itself and has a new will.
        _wait(lambda: cloud.kinds().count("status") == 3, 15, "the second online status")
        assert gw.will_seqs[-1] != will_seq
        _wait(lambda: gw.pending() == [], 10, "the second online status to be acked")
    finally:
        gw.stop()
        cloud.stop()


def _query(dsn: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(dsn) as conn:
        return conn.execute(sql, params).fetchall()


def test_third_party_gateway_against_the_real_ingester_rows_stored_exactly_once(
    broker: Any, plain_db: Any, topic_prefix: str, tmp_path: Path
) -> None:
    from mimamori.cloud.settings import Settings
    from mimamori.cloud.testing import IngesterThread, prepare_database, tenant_subscription

    gateway = f"gw-{topic_prefix}"  # unique: the broker keeps sessions by client id
    prepare_database(plain_db.dsn, tenant=topic_prefix, gateways=[gateway])
    settings = Settings(dsn=plain_db.dsn, mqtt_port=broker.port, batch_delay_s=0.05,
                        mqtt_client_id=f"ing-{topic_prefix}")  # fmt: skip
    gw = ThirdPartyGateway(tenant=topic_prefix, gateway=gateway, host=broker.host,
                           port=broker.port, outbox=tmp_path / "outbox.db", ack_timeout_s=1.0)  # fmt: skip
    now = time.time()
    # Stored while offline, published on connect (§3 "After every connection").
    seqs = _fill(gw, now)
    sent = gw.payloads()
    with IngesterThread(settings=settings, subscription=tenant_subscription(topic_prefix)):
        try:
            gw.start()
            _wait(lambda: gw.pending() == [], 30, "the cloud to acknowledge every message")
            acked_once = len(gw.acks)
            # Acks lost: the same payloads again (§10). The cloud must ack, not store, them.
            for topic, payload in sent:
                gw.client.publish(topic, payload, qos=1)
            covered = lambda: {  # noqa: E731
                s for a in gw.acks[acked_once:] for lo, hi in a["ranges"] for s in seqs.values()
                if lo <= s <= hi
            }  # fmt: skip
            _wait(lambda: covered() == set(seqs.values()), 30, "acks of the re-sent copies")
            # A message the cloud must refuse (a count written as a float, §5.1): its header
            # names us, so it is quarantined once and acknowledged (§11), and the good
            # traffic around it flows.
            bad = gw.submit("heartbeat", {**heartbeat_body(20.0), "packets_seen": 1.5})
            good = gw.submit("heartbeat", heartbeat_body(21.0))
            _wait(lambda: gw.pending() == [], 30, "acks of the bad and the good heartbeat")
        finally:
            gw.stop()

    dsn = plain_db.dsn
    receipts = dict(_query(dsn, "SELECT seq, kind FROM receipts WHERE gateway = %s", gateway))
    for kind, seq in seqs.items():
        assert receipts.get(seq) == kind
    assert receipts.get(good) == "heartbeat" and receipts.get(bad) == "quarantine"
    assert _query(dsn, "SELECT count(*) FROM flows WHERE gateway = %s", gateway) == [(301,)]
    assert _query(dsn, "SELECT sum(bytes_in) FROM flows WHERE gateway = %s AND mac IS NOT NULL",
                  gateway) == [(sum(9000 + i for i in range(300)),)]  # fmt: skip
    heartbeats = _query(dsn, "SELECT seq, uptime_s FROM heartbeats WHERE gateway = %s ORDER BY seq",
                        gateway)  # fmt: skip
    assert heartbeats == [(seqs["heartbeat"], 12.5), (good, 21.0)]
    devices = _query(dsn, "SELECT mac::text, hostname FROM devices WHERE tenant = %s ORDER BY mac",
                     topic_prefix)  # fmt: skip
    assert devices == [("02:00:00:00:00:01", "受付PC"), ("02:00:00:00:00:02", "")]
    alerts = _query(dsn, "SELECT alert_id, category, severity, evidence FROM alerts"
                         " WHERE gateway = %s", gateway)  # fmt: skip
    assert alerts == [("acme-0001", "bruteforce", "medium", {"attempts": 120, "window_s": 300})]
    quarantine = _query(dsn, "SELECT reason, count(*) FROM quarantine WHERE gateway = %s"
                             " GROUP BY reason", gateway)  # fmt: skip
    assert quarantine == [("schema", 1)]
    assert _query(dsn, "SELECT state FROM gateways WHERE id = %s", gateway) == [("online",)]


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _documented_acl(tenant: str, gateway: str) -> str:
    """The ACL of docs/protocol.md section 14, for ``gateway`` of ``tenant``."""
    doc = (Path(__file__).resolve().parent.parent / "docs" / "protocol.md").read_text("utf-8")
    match = re.search(r"<!-- broker-acl -->\s*```text\n(.*?)```", doc, re.S)
    assert match, "docs/protocol.md lost its broker ACL example"
    return match.group(1).replace("gw-osaka-01", gateway).replace("/acme/", f"/{tenant}/")


@contextlib.contextmanager
def _acl_broker(tenant: str, gateway: str, passwords: dict[str, str]) -> Iterator[Any]:
    """A broker with the documented ACL, passwords, and a TLS listener for 127.0.0.1.

    Yields (broker, directory with ca.pem, TLS port). The plain listener of the
    ``Mosquitto`` helper stays for the ingester; the ACL applies to both.
    """
    from mimamori.simulators.services import Mosquitto, free_port, wait_port

    # Mosquitto started as root reads its files after dropping privileges: keep them out
    # of pytest's private temporary tree.
    d = Path(tempfile.mkdtemp(prefix="mimamori-acl-"))
    d.chmod(0o755)
    try:
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                 "-subj", "/CN=test-ca", "-keyout", "ca.key", "-out", "ca.pem", cwd=d)  # fmt: skip
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
                 "-keyout", "server.key", "-out", "server.csr", cwd=d)  # fmt: skip
        (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
        _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.pem",
                 cwd=d)  # fmt: skip
        for i, (user, password) in enumerate(passwords.items()):
            create = ["-c"] if i == 0 else []
            subprocess.run(["mosquitto_passwd", "-b", *create, str(d / "passwd"), user, password],
                           check=True, capture_output=True)  # fmt: skip
        (d / "acl").write_text(_documented_acl(tenant, gateway))
        for f in d.iterdir():
            f.chmod(0o644)
        tls_port = free_port()
        extra = "\n".join([
            f"listener {tls_port} 127.0.0.1", f"certfile {d / 'server.pem'}",
            f"keyfile {d / 'server.key'}", "tls_version tlsv1.2",
            f"password_file {d / 'passwd'}", f"acl_file {d / 'acl'}",
        ])  # fmt: skip
        with Mosquitto(extra_config=extra) as broker:
            wait_port(tls_port)
            yield broker, d, tls_port
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_third_party_gateway_over_tls_is_confined_by_the_documented_acl(
    plain_db: Any, topic_prefix: str, tmp_path: Path
) -> None:
    from mimamori.cloud.settings import Settings
    from mimamori.cloud.testing import IngesterThread, prepare_database, tenant_subscription

    tenant, gateway = topic_prefix, f"gw-{topic_prefix}"
    passwords = {gateway: "gw-secret-1", "mimamori-ingest": "ingest-secret-2"}
    prepare_database(plain_db.dsn, tenant=tenant, gateways=[gateway])
    with _acl_broker(tenant, gateway, passwords) as (broker, certs, tls_port):
        settings = Settings(dsn=plain_db.dsn, mqtt_port=broker.port, batch_delay_s=0.05,
                            mqtt_username="mimamori-ingest",
                            mqtt_password=passwords["mimamori-ingest"],
                            mqtt_client_id=f"ing-{tenant}")  # fmt: skip
        gw = ThirdPartyGateway(tenant=tenant, gateway=gateway, host="127.0.0.1", port=tls_port,
                               outbox=tmp_path / "outbox.db", password=passwords[gateway],
                               ca_file=str(certs / "ca.pem"), ack_timeout_s=1.0)  # fmt: skip
        pubacks: dict[int, int] = {}
        subacks: dict[int, list[int]] = {}
        gw.client.on_publish = lambda c, u, mid, rc, p: pubacks.__setitem__(mid, rc.value)
        gw.client.on_subscribe = lambda c, u, mid, rcs, p: subacks.__setitem__(
            mid, [rc.value for rc in rcs]
        )
        with IngesterThread(settings=settings, subscription=tenant_subscription(tenant)):
            try:
                gw.start()
                _wait(gw.connected.is_set, 10, "the gateway to connect over TLS")
                seq = gw.submit("heartbeat", heartbeat_body(uptime_s=3.0))
                # Stored and acknowledged: the ACL lets it publish and read its own acks.
                _wait(lambda: gw.pending() == [], 20, "the heartbeat's ack")
                # Speaking for another gateway: refused by the broker (§3, §14).
                other = json.dumps({"kind": "heartbeat", "v": 1, "gateway": "other-gw",
                                    "seq": 1, "sent_at": time.time(), "uptime_s": 1.0})  # fmt: skip
                info = gw.client.publish(f"mimamori/v1/up/{tenant}/other-gw/heartbeat",
                                         other.encode(), qos=1)  # fmt: skip
                _wait(lambda: info.mid in pubacks, 10, "the PUBACK of the forbidden publish")
                assert pubacks[info.mid] == 0x87
                # Reading another gateway's acks: Mosquitto 2.0 may grant the subscription
                # but checks read access on delivery, so nothing ever arrives on it.
                foreign = f"mimamori/v1/down/{tenant}/other-gw/ack"
                leaked: list[str] = []
                gw.client.message_callback_add(foreign, lambda c, u, m: leaked.append(m.topic))
                _, mid = gw.client.subscribe(foreign, qos=1)
                _wait(lambda: mid in subacks, 10, "the SUBACK of the foreign subscription")
                cloud = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"cloud-{tenant}",
                                    protocol=mqtt.MQTTv5)  # fmt: skip
                cloud.username_pw_set("mimamori-ingest", passwords["mimamori-ingest"])
                cloud.connect(broker.host, broker.port)
                cloud.loop_start()
                sent = cloud.publish(foreign, b'{"kind":"ack"}', qos=1)
                sent.wait_for_publish(5)
                cloud.disconnect()
                cloud.loop_stop()
                # A wrong password is refused at CONNECT.
                refusals: list[bool] = []
                intruder = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="intruder",
                                       protocol=mqtt.MQTTv5)  # fmt: skip
                intruder.username_pw_set(gateway, "guess")
                intruder.tls_set(ca_certs=str(certs / "ca.pem"))
                intruder.on_connect = lambda c, u, f, rc, p: refusals.append(rc.is_failure)
                intruder.connect("127.0.0.1", tls_port)
                for _ in range(50):
                    if refusals:
                        break
                    intruder.loop(timeout=0.1)
                assert refusals == [True] and not intruder.is_connected()
                time.sleep(0.5)  # anything let through would have reached its reader by now
                assert leaked == []
            finally:
                gw.stop()
    rows = _query(plain_db.dsn, "SELECT gateway, seq FROM receipts WHERE kind = 'heartbeat'")
    assert rows == [(gateway, seq)]
    assert _query(plain_db.dsn, "SELECT count(*) FROM quarantine") == [(0,)]
