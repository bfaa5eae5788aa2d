"""Errors raised while decoding or validating protocol messages.

::

    ProtocolError
    ├── TooLarge          payload (or its decompressed form) is over the size limit
    ├── MalformedPayload  not decodable: bad compression, bad or truncated JSON, bad UTF-8
    ├── SchemaError       decodable but not an object, an unknown kind, or a field missing,
    │                     mistyped or out of range
    ├── UnsupportedVersion  version field names a protocol version we do not speak
    └── TopicMismatch     the topic does not agree with the message (wrong gateway, kind)

Every error carries a short machine-readable ``reason`` used as the quarantine reason and
as a metric label.
"""

from __future__ import annotations


class ProtocolError(ValueError):
    """Base of all protocol decoding and validation errors."""

    reason = "protocol_error"


class TooLarge(ProtocolError):
    reason = "too_large"


class MalformedPayload(ProtocolError):
    reason = "malformed"


class SchemaError(ProtocolError):
    reason = "schema"


class UnsupportedVersion(ProtocolError):
    reason = "unsupported_version"


class TopicMismatch(ProtocolError):
    reason = "topic_mismatch"
