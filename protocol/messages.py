"""Message schemas of protocol v1 (msgspec structs).

Every upstream message carries the same header: ``v`` (protocol version, 1), ``kind``
(the tag that selects the schema), ``gateway`` (the sender's id, which must equal the
topic's), ``seq`` (a per-gateway sequence number that never repeats) and ``sent_at``
(UNIX seconds, UTC, when the message was first created). Times are UNIX seconds as floats.

See ``docs/protocol.md`` for the normative description; this module is its executable form.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

VERSION = 1

CATEGORIES = (
    "scan", "beacon", "bruteforce", "dns_tunnel", "lateral_movement", "intel_match",
    "malware_traffic", "exfiltration", "new_device", "exposure", "cleartext_credentials",
    "old_os", "gateway_offline", "sensor_offline", "canary_touch",
)  # fmt: skip
SEVERITIES = ("info", "low", "medium", "high", "critical")
#: Severities that page the SOC; info and low are posture findings.
PAGING_SEVERITIES = ("medium", "high", "critical")

Category = Literal[
    "scan", "beacon", "bruteforce", "dns_tunnel", "lateral_movement", "intel_match",
    "malware_traffic", "exfiltration", "new_device", "exposure", "cleartext_credentials",
    "old_os", "gateway_offline", "sensor_offline", "canary_touch",
]  # fmt: skip
Severity = Literal["info", "low", "medium", "high", "critical"]

Id = Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
#: 0 <= seq <= 2**63 - 1: fits PostgreSQL bigint.
Seq = Annotated[int, Meta(ge=0, le=2**63 - 1)]
Time = Annotated[float, Meta(ge=0, lt=2**33)]
Count = Annotated[int, Meta(ge=0, le=2**63 - 1)]
Port = Annotated[int, Meta(ge=0, le=65535)]
IpProto = Annotated[int, Meta(ge=0, le=255)]
Mac = Annotated[str, Meta(pattern=r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")]
#: A MAC address or "" (unknown). One pattern rather than ``Mac | Literal[""]``: msgspec
#: does not read a union of constrained strings as "either", so an explicit ``"mac": ""``
#: from a third-party gateway was refused although "" is the default.
OptMac = Annotated[str, Meta(pattern=r"^(([0-9a-f]{2}:){5}[0-9a-f]{2})?$")]
Ip = Annotated[str, Meta(min_length=2, max_length=45)]
Short = Annotated[str, Meta(max_length=255)]
Text = Annotated[str, Meta(max_length=2048)]
Pct = Annotated[float, Meta(ge=0, le=100)]
#: Who did it: usually an IP address, else a MAC or a name. (Was ``Ip | Short``, which
#: msgspec read as one string of 2-255 characters; this states the intent and accepts more.)
Actor = Annotated[str, Meta(min_length=1, max_length=255)]


class Message(msgspec.Struct, tag_field="kind", kw_only=True, forbid_unknown_fields=False):
    """Header shared by every upstream message. Unknown fields are ignored (forward compat)."""

    v: int = VERSION
    gateway: Id
    seq: Seq
    sent_at: Time


# --- heartbeat and status -------------------------------------------------------------


class Heartbeat(Message, tag="heartbeat", kw_only=True):
    """Gateway health, every ``interval_s`` seconds (30 by default)."""

    interval_s: Annotated[float, Meta(gt=0, le=3600)] = 30.0
    uptime_s: Annotated[float, Meta(ge=0)]
    load1: Annotated[float, Meta(ge=0)] = 0.0
    mem_used_pct: Pct = 0.0
    disk_used_pct: Pct = 0.0
    temp_c: float | None = None
    packets_seen: Count = 0
    packets_dropped: Count = 0
    outbox_depth: Count = 0
    outbox_bytes: Count = 0
    agent_version: Short = ""
    config_hash: Short = ""
    intel_age_s: float | None = None


class Status(Message, tag="status", kw_only=True):
    """Connection state. ``offline`` is the MQTT last will, set at connect time."""

    state: Literal["online", "offline"]
    reason: Short = ""


# --- flows ----------------------------------------------------------------------------


class FlowSummary(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Traffic between one local device and one remote endpoint during one interval.

    ``dir``: ``out`` when the local device opened the connections, ``in`` when the remote
    end did (exposure), ``lan`` when both ends are on the monitored LAN.
    """

    ts: Time
    mac: OptMac = ""
    local_ip: Ip
    remote_ip: Ip
    remote_port: Port = 0
    proto: IpProto
    dir: Literal["out", "in", "lan"] = "out"
    app: Short = ""
    sni: Short = ""
    pkts_out: Count = 0
    pkts_in: Count = 0
    bytes_out: Count = 0
    bytes_in: Count = 0
    conns: Count = 0
    first_seen: Time | None = None
    last_seen: Time | None = None


class FlowBatch(Message, tag="flows", kw_only=True):
    """All flow summaries of one interval (or part of one; batches are split at 5,000 rows)."""

    interval_s: Annotated[int, Meta(gt=0, le=3600)] = 60
    flows: Annotated[list[FlowSummary], Meta(max_length=5000)]


# --- devices --------------------------------------------------------------------------


class Device(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What the gateway knows about one device on the LAN, keyed by MAC."""

    mac: Mac
    ips: Annotated[list[Ip], Meta(max_length=64)] = []
    vendor: Short = ""
    hostname: Short = ""
    dhcp_fingerprint: Short = ""
    dhcp_vendor_class: Short = ""
    model: Short = ""
    os_hint: Short = ""
    services: Annotated[list[Short], Meta(max_length=64)] = []
    first_seen: Time
    last_seen: Time
    extras: Annotated[dict[Short, Text], Meta(max_length=64)] = {}


class DeviceBatch(Message, tag="devices", kw_only=True):
    """Devices that are new or changed since the previous batch."""

    devices: Annotated[list[Device], Meta(max_length=1000)]


# --- alerts ---------------------------------------------------------------------------


class Alert(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One detection. ``dedup_key`` is equal for alerts about the same problem."""

    id: Annotated[str, Meta(min_length=1, max_length=64)]
    category: Category
    severity: Severity
    detected_at: Time
    actor: Actor
    target: Short = ""
    summary_en: Text
    summary_ja: Text
    dedup_key: Short
    rule: Short = ""
    mac: OptMac = ""
    evidence: dict[str, Any] = {}


class AlertBatch(Message, tag="alerts", kw_only=True):
    alerts: Annotated[list[Alert], Meta(max_length=1000)]


# --- sensor relay ---------------------------------------------------------------------


class SensorMessage(Message, tag="sensor", kw_only=True):
    """A message from a sensor node on the site's LAN, relayed by the gateway.

    ``sensor_kind``: ``heartbeat`` (uptime_s, free_mem, rssi, fw), ``canary`` (port,
    src_ip, src_port, at), ``self_report`` (the node's own security settings).
    """

    sensor_id: Id
    sensor_kind: Literal["heartbeat", "canary", "self_report"]
    received_at: Time
    body: dict[str, Any] = {}


UpMessage = Heartbeat | Status | FlowBatch | DeviceBatch | AlertBatch | SensorMessage
UP_TYPES: dict[str, type[Message]] = {
    "heartbeat": Heartbeat,
    "status": Status,
    "flows": FlowBatch,
    "devices": DeviceBatch,
    "alerts": AlertBatch,
    "sensor": SensorMessage,
}


# --- downstream -----------------------------------------------------------------------


class Ack(msgspec.Struct, tag="ack", tag_field="kind", kw_only=True):
    """Sequence numbers the cloud has committed: inclusive ``[first, last]`` ranges.

    A gateway may delete every acknowledged message from its outbox. Acks are idempotent
    and may repeat or arrive out of order.
    """

    v: int = VERSION
    gateway: Id
    ranges: list[tuple[Seq, Seq]]
    committed_at: Time


class Command(msgspec.Struct, tag="command", tag_field="kind", kw_only=True):
    """An instruction from the cloud. Gateways ignore expired or unknown commands."""

    v: int = VERSION
    id: Annotated[str, Meta(min_length=1, max_length=64)]
    command: Literal["refresh_intel", "set_config", "resend_inventory", "rotate_credential"]
    args: dict[str, Any] = {}
    issued_at: Time
    expires_at: Time


class IntelBundle(msgspec.Struct, tag="intel", tag_field="kind", kw_only=True):
    """Threat-intelligence indicators for gateways, published retained per tenant."""

    v: int = VERSION
    version: Short
    generated_at: Time
    ips: list[str] = []
    cidrs: list[str] = []
    domains: list[str] = []
    sources: list[Short] = []


DownMessage = Ack | Command | IntelBundle
