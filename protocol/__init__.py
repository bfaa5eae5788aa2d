"""mimamori protocol v1: the contract between gateways and the cloud.

Topics (:mod:`.topics`), message schemas (:mod:`.messages`), wire encoding
(:mod:`.codec`), sequence numbering (:mod:`.sequence`), the records detection works on
(:mod:`.records`) and the error tree (:mod:`.errors`). Imports nothing else of mimamori.
"""

from mimamori.protocol import topics
from mimamori.protocol.codec import (
    MAX_DECOMPRESSED,
    MAX_PAYLOAD,
    decode_down,
    decode_up,
    encode,
    kind_of,
)
from mimamori.protocol.errors import (
    MalformedPayload,
    ProtocolError,
    SchemaError,
    TooLarge,
    TopicMismatch,
    UnsupportedVersion,
)
from mimamori.protocol.messages import (
    CATEGORIES,
    PAGING_SEVERITIES,
    SEVERITIES,
    VERSION,
    Ack,
    Alert,
    AlertBatch,
    Command,
    Device,
    DeviceBatch,
    DownMessage,
    FlowBatch,
    FlowSummary,
    Heartbeat,
    IntelBundle,
    Message,
    SensorMessage,
    Status,
    UpMessage,
)
from mimamori.protocol.records import ArpEvent, DiscoveryEvent, FlowRecord

__all__ = [
    "CATEGORIES",
    "MAX_DECOMPRESSED",
    "MAX_PAYLOAD",
    "PAGING_SEVERITIES",
    "SEVERITIES",
    "VERSION",
    "Ack",
    "Alert",
    "AlertBatch",
    "ArpEvent",
    "Command",
    "Device",
    "DeviceBatch",
    "DiscoveryEvent",
    "DownMessage",
    "FlowBatch",
    "FlowRecord",
    "FlowSummary",
    "Heartbeat",
    "IntelBundle",
    "MalformedPayload",
    "Message",
    "ProtocolError",
    "SchemaError",
    "SensorMessage",
    "Status",
    "TooLarge",
    "TopicMismatch",
    "UnsupportedVersion",
    "UpMessage",
    "decode_down",
    "decode_up",
    "encode",
    "kind_of",
    "topics",
]
