"""docs/protocol.md must not drift from protocol/.

The examples in the document are the real output of :func:`mimamori.protocol.encode` for
the messages built in :func:`examples` (an ``<!-- example: NAME -->`` marker precedes each
one), every field of every schema has a row in its table, and the numbers a third party
needs (limits, topic names, enumerations) are stated with the values the code uses.

To refresh the examples after a deliberate schema change::

    .venv/bin/python tests/test_protocol_docs.py
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest
from mimamori.protocol import (
    Ack,
    Alert,
    AlertBatch,
    Command,
    Device,
    DeviceBatch,
    FlowBatch,
    FlowSummary,
    Heartbeat,
    IntelBundle,
    SensorMessage,
    Status,
    codec,
    messages,
    sequence,
    topics,
)

from mimamori import protocol

DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"

#: 2026-11-22 03:00:00 UTC; the gateway (re)started at this second.
T0 = 1795316400.0
SEQ0 = sequence.time_floor(T0)
GW = "gw-osaka-01"


def examples() -> dict[str, Any]:
    """The messages the document shows, by example name."""
    flows = [
        FlowSummary(
            ts=T0 + 60, mac="b8:27:eb:12:34:56", local_ip="192.168.10.23",
            remote_ip="203.0.113.80", remote_port=443, proto=6, dir="out", app="TLS.Google",
            sni="www.google.com", pkts_out=41, pkts_in=57, bytes_out=5210, bytes_in=61877,
            conns=3, first_seen=T0 + 61.25, last_seen=T0 + 117.5,
        ),
        FlowSummary(
            ts=T0 + 60, mac="b8:27:eb:12:34:56", local_ip="192.168.10.23",
            remote_ip="192.168.10.1", remote_port=53, proto=17, dir="lan", app="DNS",
            pkts_out=12, pkts_in=12, bytes_out=876, bytes_in=1540, conns=6,
        ),
        FlowSummary(
            ts=T0 + 60, mac="00:1b:21:aa:bb:cc", local_ip="192.168.10.5",
            remote_ip="198.51.100.7", remote_port=3389, proto=6, dir="in", app="RDP",
            pkts_out=3, pkts_in=5, bytes_out=180, bytes_in=300, conns=5,
        ),
    ]  # fmt: skip
    devices = [
        Device(
            mac="b8:27:eb:12:34:56", ips=["192.168.10.23", "fe80::ba27:ebff:fe12:3456"],
            vendor="Raspberry Pi Foundation", hostname="reception-pc",
            dhcp_fingerprint="1,3,6,15,31,33,43,44,46,47,119,121,249,252",
            dhcp_vendor_class="MSFT 5.0", os_hint="Windows 10/11", services=["_smb._tcp"],
            first_seen=T0 - 86400 * 3, last_seen=T0 + 110.0,
        ),
        Device(
            mac="00:1b:21:aa:bb:cc", ips=["192.168.10.5"], vendor="Intel Corporate",
            model="NAS-2000", services=["_http._tcp", "_smb._tcp"],
            first_seen=T0 + 30.0, last_seen=T0 + 115.0, extras={"ssdp_server": "Linux/5.10 UPnP/1.0"},
        ),
    ]  # fmt: skip
    alert = Alert(
        id="01JDX7Q6M4S0W8E2R5T9Y3U1I0", category="scan", severity="high",
        detected_at=T0 + 118.0, actor="192.168.10.23", target="192.168.10.0/24",
        summary_en="192.168.10.23 probed 212 ports on 31 hosts in 60 s",
        summary_ja="192.168.10.23 が60秒間に31台の212ポートを探索しました",
        dedup_key="scan:192.168.10.23", rule="scan.horizontal", mac="b8:27:eb:12:34:56",
        evidence={"hosts": 31, "ports": 212, "window_s": 60, "sample_ports": [22, 23, 445, 3389]},
    )  # fmt: skip
    return {
        "heartbeat": Heartbeat(
            gateway=GW,
            seq=SEQ0 + 2,
            sent_at=T0 + 30.0,
            interval_s=30.0,
            uptime_s=31.4,
            load1=0.42,
            mem_used_pct=37.5,
            disk_used_pct=12.0,
            temp_c=48.3,
            packets_seen=182734,
            packets_dropped=0,
            outbox_depth=3,
            outbox_bytes=20480,
            agent_version="0.1.0",
            config_hash="c0ffee12",
            intel_age_s=1800.0,
        ),
        "status-online": Status(
            gateway=GW, seq=SEQ0 + 1, sent_at=T0 + 0.5, state="online", reason="started"
        ),
        "status-offline": Status(
            gateway=GW, seq=SEQ0, sent_at=T0 + 0.5, state="offline", reason="connection lost"
        ),
        "flows": FlowBatch(gateway=GW, seq=SEQ0 + 3, sent_at=T0 + 120.2, flows=flows),
        "devices": DeviceBatch(gateway=GW, seq=SEQ0 + 4, sent_at=T0 + 120.3, devices=devices),
        "alerts": AlertBatch(gateway=GW, seq=SEQ0 + 5, sent_at=T0 + 120.4, alerts=[alert]),
        "sensor": SensorMessage(
            gateway=GW,
            seq=SEQ0 + 6,
            sent_at=T0 + 140.0,
            sensor_id="canary-printer",
            sensor_kind="canary",
            received_at=T0 + 139.9,
            body={
                "v": 1,
                "sensor": "canary-printer",
                "seq": 41,
                "port": 445,
                "src_ip": "192.168.10.23",
                "src_port": 51515,
                "age_ms": 100,
                "dropped": 0,
                "at": T0 + 139.8,
            },
        ),
        "ack": Ack(
            gateway=GW, ranges=[(SEQ0, SEQ0), (SEQ0 + 2, SEQ0 + 5)], committed_at=T0 + 121.0
        ),
        "command": Command(
            id="cmd-7f3a",
            command="resend_inventory",
            args={},
            issued_at=T0 + 200.0,
            expires_at=T0 + 200.0 + 3600,
        ),
        "intel": IntelBundle(
            version="2026-11-22T02:00Z",
            generated_at=T0 - 3600,
            ips=["198.51.100.7"],
            cidrs=["203.0.113.128/25"],
            domains=["bad.example"],
            sources=["abuse.ch feodo"],
        ),
    }


def _marked_blocks(text: str) -> dict[str, list[str]]:
    """Code blocks that follow an ``<!-- example: NAME -->`` marker, by name."""
    found: dict[str, list[str]] = {}
    pattern = re.compile(r"<!-- example: ([a-z-]+) -->\s*```(\w+)\n(.*?)```", re.S)
    for name, lang, body in pattern.findall(text):
        found.setdefault(name, []).append(f"{lang}\n{body}")
    return found


def _json_of(message: Any) -> str:
    """The JSON document inside the wire form, indented the way the document shows it."""
    doc = json.loads(codec.encode(message, compress=False))
    return json.dumps(doc, indent=2, ensure_ascii=False)


def _hex_head(message: Any) -> str:
    """The first 16 bytes of the wire form, as the document shows compressed examples."""
    return codec.encode(message)[:16].hex(" ")


def _render(name: str, message: Any) -> str:
    block = f"<!-- example: {name} -->\n```json\n{_json_of(message)}\n```\n"
    if codec.encode(message)[:4] == codec.ZSTD_MAGIC:
        block += (
            f"<!-- example: {name} -->\n```text\n{_hex_head(message)} ...  "
            f"({len(codec.encode(message))} bytes compressed, "
            f"{len(codec.encode(message, compress=False))} as JSON)\n```\n"
        )
    return block


@pytest.fixture(scope="module")
def doc() -> str:
    return DOC.read_text(encoding="utf-8")


@pytest.mark.parametrize("name", sorted(examples()))
def test_examples_are_real_encoder_output(doc: str, name: str) -> None:
    message = examples()[name]
    blocks = _marked_blocks(doc).get(name)
    assert blocks, f"docs/protocol.md has no example {name!r}"
    shown = json.loads(blocks[0].split("\n", 1)[1])
    # Same keys, same order, same values as the encoder writes.
    compact = json.dumps(shown, separators=(",", ":"), ensure_ascii=False).encode()
    assert compact == codec.encode(message, compress=False)
    decode = codec.decode_down if isinstance(message, protocol.DownMessage) else codec.decode_up
    assert decode(compact) == message
    wire = codec.encode(message)
    if wire[:4] == codec.ZSTD_MAGIC:
        assert len(blocks) == 2, f"compressed example {name!r} must show its first bytes"
        shown_head = bytes.fromhex(blocks[1].split("\n", 1)[1].split("...")[0])
        # Magic, frame header descriptor and content size are fixed by the content; the
        # block bytes after them may change with the zstd library, so they are not compared.
        header_len = _zstd_frame_header_len(wire)
        assert shown_head[:header_len] == wire[:header_len]


def _zstd_frame_header_len(frame: bytes) -> int:
    """Length of magic + frame header (RFC 8878, section 3.1.1.1)."""
    fhd = frame[4]
    fcs_flag, single_segment, dict_flag = fhd >> 6, (fhd >> 5) & 1, fhd & 3
    fcs_len = {0: 1 if single_segment else 0, 1: 2, 2: 4, 3: 8}[fcs_flag]
    return 4 + 1 + (0 if single_segment else 1) + {0: 0, 1: 1, 2: 2, 3: 4}[dict_flag] + fcs_len


def _fields(struct: type[msgspec.Struct]) -> tuple[str, ...]:
    return struct.__struct_fields__


def _section(doc: str, title: str) -> str:
    """The text of the section whose heading contains ``title`` (up to the next heading)."""
    match = re.search(
        rf"^(#+) [^\n]*{re.escape(title)}[^\n]*\n(.*?)(?=^#{{1,6}} )", doc, re.S | re.M
    )
    assert match, f"docs/protocol.md has no section about {title}"
    return match.group(2)


SCHEMAS = [
    Heartbeat, Status, FlowBatch, FlowSummary, DeviceBatch, Device, AlertBatch, Alert,
    SensorMessage, Ack, Command, IntelBundle,
]  # fmt: skip
HEADER = ("v", "gateway", "seq", "sent_at")


@pytest.mark.parametrize("struct", SCHEMAS, ids=lambda s: s.__name__)
def test_every_field_has_a_table_row(doc: str, struct: type[msgspec.Struct]) -> None:
    section = _section(doc, f"`{struct.__name__}`")
    fields = _fields(struct)
    if issubclass(struct, protocol.Message):
        fields = tuple(f for f in fields if f not in HEADER)  # described once, in the header
    missing = [f for f in fields if f"| `{f}` |" not in section]
    assert not missing, f"{struct.__name__} fields without a row in docs/protocol.md: {missing}"


def test_header_fields_are_described(doc: str) -> None:
    section = _section(doc, "Common header")
    for field in (*HEADER, "kind"):
        assert f"| `{field}` |" in section


def test_every_upstream_kind_and_topic_is_documented(doc: str) -> None:
    assert set(topics.UP_KINDS) == set(messages.UP_TYPES)
    for kind in topics.UP_KINDS:
        assert (
            f"`{topics.up('acme', 'gw1', kind)}`".replace("acme", "{tenant}").replace(
                "gw1", "{gateway}"
            )
            in doc
        ), kind
    for topic in (topics.ack("t", "g"), topics.command("t", "g"), topics.intel("t")):
        assert topic.replace("/t/", "/{tenant}/").replace("/g/", "/{gateway}/") in doc
    assert topics.INGEST_SUBSCRIPTION in doc


@pytest.mark.parametrize(
    "value",
    [
        f"{codec.MAX_PAYLOAD:,} bytes",
        f"{codec.MAX_DECOMPRESSED:,} bytes",
        f"{codec.COMPRESS_OVER:,} bytes",
        codec.ZSTD_MAGIC.hex(" "),
        f"level {codec.ZSTD_LEVEL}",
        f"{sequence.PER_MS:,}",
    ],
)
def test_limits_are_stated_with_the_codes_values(doc: str, value: str) -> None:
    assert value in doc


@pytest.mark.parametrize(
    ("struct", "field"), [(FlowBatch, "flows"), (DeviceBatch, "devices"), (AlertBatch, "alerts")]
)
def test_batch_sizes_are_stated_with_the_codes_values(
    doc: str, struct: type[msgspec.Struct], field: str
) -> None:
    info = msgspec.inspect.type_info(struct)
    assert isinstance(info, msgspec.inspect.StructType)
    (list_type,) = [f.type for f in info.fields if f.name == field]
    assert isinstance(list_type, msgspec.inspect.ListType) and list_type.max_length
    row = next(line for line in _section(doc, f"`{struct.__name__}`").splitlines()
               if line.startswith(f"| `{field}` |"))  # fmt: skip
    assert f"{list_type.max_length:,}" in row


def test_enumerations_are_listed_in_full(doc: str) -> None:
    for value in (*messages.CATEGORIES, *messages.SEVERITIES):
        assert f"`{value}`" in doc
    for value in ("refresh_intel", "set_config", "resend_inventory", "rotate_credential"):
        assert f"`{value}`" in _section(doc, "`Command`")
    for error in (protocol.TooLarge, protocol.MalformedPayload, protocol.SchemaError,
                  protocol.UnsupportedVersion, protocol.TopicMismatch):  # fmt: skip
        assert f"`{error.reason}`" in doc


if __name__ == "__main__":
    # Print the example blocks, to paste into docs/protocol.md after a schema change.
    for example_name, example in examples().items():
        sys.stdout.write(_render(example_name, example) + "\n")


# --- docs/architecture.md --------------------------------------------------------------

ARCHITECTURE = DOC.parent / "architecture.md"
REPO = DOC.parent.parent


def test_architecture_names_only_files_that_exist() -> None:
    text = ARCHITECTURE.read_text(encoding="utf-8")
    paths = set(
        re.findall(r"`((?:protocol|detect|edge|cloud|dashboards|simulators|tests)/[\w./]*)`", text)
    )
    assert paths, "architecture.md names no module"
    missing = sorted(p for p in paths if not (REPO / p).exists())
    assert not missing, f"architecture.md names files that do not exist: {missing}"
    links = set(re.findall(r"\]\(([\w-]+\.md)(?:#[\w-]*)?\)", text))
    assert links, "architecture.md links no other document"
    broken = sorted(link for link in links if not (DOC.parent / link).exists())
    assert not broken, f"architecture.md links documents that do not exist: {broken}"


def test_architecture_names_only_relations_the_schema_creates() -> None:
    text = ARCHITECTURE.read_text(encoding="utf-8")
    schema = "\n".join(
        p.read_text(encoding="utf-8") for p in (REPO / "cloud" / "migrations").glob("*.sql")
    )
    created = set(
        re.findall(r"CREATE (?:TABLE|MATERIALIZED VIEW) (?:IF NOT EXISTS )?(\w+)", schema)
    )
    named = set(re.findall(r"`(\w+)`", text)) & {
        "flows", "flows_5m", "flows_1h", "heartbeats", "sensor_messages", "receipts",
        "quarantine", "devices", "alerts", "gateways", "flow_invalidations", "incidents",
    }  # fmt: skip
    assert named, "architecture.md names no relation"
    assert named <= created, f"not created by any migration: {sorted(named - created)}"
