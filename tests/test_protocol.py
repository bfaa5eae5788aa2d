"""Protocol v1: round trips, hostile bytes, topic checks (hypothesis-driven where it pays)."""

from __future__ import annotations

import json

import msgspec
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mimamori.protocol import (
    Alert,
    AlertBatch,
    FlowBatch,
    FlowSummary,
    Heartbeat,
    ProtocolError,
    decode_up,
    encode,
    topics,
)
from mimamori.protocol.codec import MAX_DECOMPRESSED, MAX_PAYLOAD, ZSTD_MAGIC
from mimamori.protocol.sequence import next_start, ranges, time_floor

from mimamori import protocol

ids = st.from_regex(r"\A[a-z0-9][a-z0-9_-]{0,20}\Z")
seqs = st.integers(min_value=0, max_value=2**63 - 1)
times = st.floats(min_value=0, max_value=2**32, allow_nan=False)
counts = st.integers(min_value=0, max_value=2**40)
ips = st.ip_addresses().map(str)
macs = st.binary(min_size=6, max_size=6).map(lambda b: ":".join(f"{x:02x}" for x in b))

flow_rows = st.builds(
    FlowSummary,
    ts=times,
    mac=macs,
    local_ip=ips,
    remote_ip=ips,
    remote_port=st.integers(0, 65535),
    proto=st.sampled_from([1, 6, 17]),
    dir=st.sampled_from(["out", "in", "lan"]),
    app=st.text(max_size=30),
    sni=st.text(max_size=60),
    pkts_out=counts,
    pkts_in=counts,
    bytes_out=counts,
    bytes_in=counts,
    conns=counts,
)


@given(gateway=ids, seq=seqs, sent_at=times, flows=st.lists(flow_rows, max_size=30))
@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
def test_flow_batch_round_trip(gateway: str, seq: int, sent_at: float, flows: list) -> None:
    msg = FlowBatch(gateway=gateway, seq=seq, sent_at=sent_at, flows=flows)
    wire = encode(msg)
    assert wire[:4] == ZSTD_MAGIC, "flow batches are always compressed"
    assert decode_up(wire, topics.up("acme", gateway, "flows")) == msg


@given(gateway=ids, seq=seqs, uptime=times, temp=st.none() | st.floats(-40, 120))
def test_heartbeat_round_trip(gateway: str, seq: int, uptime: float, temp: float | None) -> None:
    msg = Heartbeat(gateway=gateway, seq=seq, sent_at=1.7e9, uptime_s=uptime, temp_c=temp)
    assert decode_up(encode(msg)) == msg


def test_alert_round_trip_keeps_japanese_text_and_evidence() -> None:
    alert = Alert(
        id="a1",
        category="scan",
        severity="high",
        detected_at=1.7e9,
        actor="192.168.1.10",
        target="192.168.1.0/24",
        summary_en="Port scan",
        summary_ja="ポートスキャン",
        dedup_key="scan:192.168.1.10",
        evidence={"ports": [22, 23, 80], "hosts": 12},
    )
    msg = AlertBatch(gateway="gw1", seq=7, sent_at=1.7e9, alerts=[alert])
    assert decode_up(encode(msg)) == msg


@given(payload=st.binary(max_size=2048))
@settings(max_examples=500)
def test_hostile_bytes_raise_protocol_errors_only(payload: bytes) -> None:
    try:
        decode_up(payload, "mimamori/v1/up/acme/gw1/flows")
    except ProtocolError as exc:
        assert exc.reason in {
            "too_large",
            "malformed",
            "schema",
            "unsupported_version",
            "topic_mismatch",
        }


@given(doc=st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
))  # fmt: skip
def test_hostile_json_documents_raise_protocol_errors_only(doc: object) -> None:
    if isinstance(doc, dict):
        doc.setdefault("kind", "flows")
    raw = json.dumps(doc).encode()
    for payload in (raw, zstandard.ZstdCompressor().compress(raw)):
        with pytest.raises(ProtocolError):
            decode_up(payload)


def test_oversized_payload_is_refused() -> None:
    with pytest.raises(protocol.TooLarge):
        decode_up(b"{" + b" " * MAX_PAYLOAD + b"}")


def test_zstd_bomb_is_refused_without_inflating_it() -> None:
    bomb = zstandard.ZstdCompressor(level=19).compress(b"{" + b" " * (MAX_DECOMPRESSED * 4) + b"}")
    assert len(bomb) < MAX_PAYLOAD
    with pytest.raises(protocol.TooLarge):
        decode_up(bomb)


def test_truncated_zstd_frame_is_malformed() -> None:
    wire = encode(FlowBatch(gateway="gw1", seq=1, sent_at=1.0, flows=[]))
    with pytest.raises(protocol.MalformedPayload):
        decode_up(wire[:-3] + b"\xff\xff\xff")


def test_future_version_is_reported_as_such() -> None:
    raw = msgspec.json.encode({"v": 2, "kind": "heartbeat", "gateway": "gw1", "seq": 1,
                               "sent_at": 1.0, "uptime_s": 1.0})  # fmt: skip
    with pytest.raises(protocol.UnsupportedVersion):
        decode_up(raw)


def test_message_claiming_another_gateway_is_a_topic_mismatch() -> None:
    wire = encode(Heartbeat(gateway="gw-b", seq=1, sent_at=1.0, uptime_s=1.0))
    with pytest.raises(protocol.TopicMismatch):
        decode_up(wire, topics.up("acme", "gw-a", "heartbeat"))


def test_message_on_the_topic_of_another_kind_is_a_topic_mismatch() -> None:
    wire = encode(Heartbeat(gateway="gw-a", seq=1, sent_at=1.0, uptime_s=1.0))
    with pytest.raises(protocol.TopicMismatch):
        decode_up(wire, topics.up("acme", "gw-a", "alerts"))


@pytest.mark.parametrize(
    "topic",
    ["mimamori/v1/up/acme/gw1", "mimamori/v1/down/acme/gw1/ack", "mimamori/v1/up/ACME/gw1/flows",
     "mimamori/v1/up/acme/gw1/unknown", "mimamori/v2/up/acme/gw1/flows", "x/v1/up/a/b/flows"],
)  # fmt: skip
def test_parse_up_refuses_foreign_topics(topic: str) -> None:
    with pytest.raises(protocol.TopicMismatch):
        topics.parse_up(topic)


def test_topic_builders_refuse_wildcards() -> None:
    for bad in ("a/b", "+", "#", "", "A"):
        with pytest.raises(ValueError):
            topics.up(bad, "gw1", "flows")


def test_sequence_restart_never_reuses_numbers() -> None:
    # Persisted state survives: continue after the last number used.
    assert next_start(time_floor(1000.0) + 5, now=1000.0) == time_floor(1000.0) + 6
    # State lost (new SD card) at a later time: the time floor is above all earlier numbers
    # because a gateway sends far fewer than 1,000 messages per millisecond.
    used_before = time_floor(1000.0) + 50_000  # 50,000 messages in the first 50 s
    assert next_start(None, now=1050.001) > used_before


@given(st.sets(st.integers(0, 200), max_size=60))
def test_ranges_cover_exactly_the_numbers(numbers: set[int]) -> None:
    covered = {n for lo, hi in ranges(numbers) for n in range(lo, hi + 1)}
    assert covered == numbers
    spans = ranges(numbers)
    assert all(spans[i][1] + 1 < spans[i + 1][0] for i in range(len(spans) - 1))


def test_public_names_are_complete() -> None:
    public = {n for n in dir(protocol) if not n.startswith("_")}
    modules = {"codec", "errors", "messages", "records", "sequence", "topics"}
    assert set(protocol.__all__) >= public - modules


def _flow_doc(**row: object) -> dict[str, object]:
    base = {"ts": 1.0, "local_ip": "192.168.1.5", "remote_ip": "203.0.113.9", "proto": 6}
    return {"v": 1, "kind": "flows", "gateway": "gw1", "seq": 1, "sent_at": 1.0,
            "flows": [{**base, **row}]}  # fmt: skip


def test_explicit_empty_mac_is_accepted_as_unknown() -> None:
    # Our encoder omits defaults, but a third-party gateway may well write "mac": "".
    msg = decode_up(json.dumps(_flow_doc(mac="")).encode())
    assert isinstance(msg, FlowBatch) and msg.flows[0].mac == ""


@pytest.mark.parametrize("mac", ["AA:BB:CC:DD:EE:FF", "aa:bb:cc:dd:ee", "aa-bb-cc-dd-ee-ff", " "])
def test_malformed_mac_is_a_schema_error(mac: str) -> None:
    with pytest.raises(protocol.SchemaError):
        decode_up(json.dumps(_flow_doc(mac=mac)).encode())


@pytest.mark.parametrize(
    ("actor", "ok"), [("a", True), ("x" * 255, True), ("", False), ("x" * 256, False)]
)
def test_alert_actor_is_any_string_of_1_to_255_characters(actor: str, ok: bool) -> None:
    alert = {"id": "a1", "category": "scan", "severity": "low", "detected_at": 1.0,
             "actor": actor, "summary_en": "", "summary_ja": "", "dedup_key": "k", "mac": ""}  # fmt: skip
    raw = json.dumps({"v": 1, "kind": "alerts", "gateway": "gw1", "seq": 1, "sent_at": 1.0,
                      "alerts": [alert]}).encode()  # fmt: skip
    if ok:
        assert decode_up(raw).alerts[0].actor == actor  # type: ignore[union-attr]
    else:
        with pytest.raises(protocol.SchemaError):
            decode_up(raw)
