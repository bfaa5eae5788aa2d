"""Encoding of protocol messages on the wire.

A payload is a JSON document (UTF-8), optionally compressed with zstd. Decoders tell the
two apart by the first bytes: the zstd frame magic ``28 b5 2f fd`` versus JSON's ``{``.
Flow batches are always compressed; other kinds are compressed when larger than
``COMPRESS_OVER`` bytes.
"""

from __future__ import annotations

import io
from typing import Any

import msgspec
import zstandard
from mimamori.protocol import topics
from mimamori.protocol.errors import (
    MalformedPayload,
    SchemaError,
    TooLarge,
    TopicMismatch,
    UnsupportedVersion,
)
from mimamori.protocol.messages import VERSION, DownMessage, FlowBatch, Message, UpMessage

#: Largest payload on the wire. Mosquitto's default message_size_limit is far larger;
#: this keeps one gateway from hogging an ingester's batch.
MAX_PAYLOAD = 256 * 1024
#: Largest decompressed document: bounds memory against zstd "bombs".
MAX_DECOMPRESSED = 8 * 1024 * 1024
COMPRESS_OVER = 1024
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
ZSTD_LEVEL = 6

_encoder = msgspec.json.Encoder()
_up_decoder = msgspec.json.Decoder(UpMessage)
_down_decoder = msgspec.json.Decoder(DownMessage)


class _Version(msgspec.Struct):
    v: Any = None


_version_decoder = msgspec.json.Decoder(_Version)
_compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
_decompressor = zstandard.ZstdDecompressor()


def encode(message: Any, *, compress: bool | None = None) -> bytes:
    """Encode an upstream or downstream message to its wire form."""
    raw = _encoder.encode(message)
    if compress is None:
        compress = isinstance(message, FlowBatch) or len(raw) > COMPRESS_OVER
    if compress:
        # The frame records its content size so decoders can preallocate.
        return _compressor.compress(raw)
    return raw


def unwrap(payload: bytes) -> bytes:
    """Return the JSON document inside a payload, decompressing it if needed."""
    if len(payload) > MAX_PAYLOAD:
        raise TooLarge(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    if payload[:4] == ZSTD_MAGIC:
        try:
            with _decompressor.stream_reader(io.BytesIO(payload)) as reader:
                raw = reader.read(MAX_DECOMPRESSED + 1)
        except zstandard.ZstdError as exc:
            raise MalformedPayload(f"bad zstd frame: {exc}") from exc
        if len(raw) > MAX_DECOMPRESSED:
            raise TooLarge(f"decompressed payload exceeds {MAX_DECOMPRESSED} bytes")
        return raw
    return bytes(payload)


def _decode(raw: bytes, decoder: msgspec.json.Decoder[Any]) -> Any:
    try:
        message = decoder.decode(raw)
    except msgspec.ValidationError as exc:
        version = _peek_version(raw)
        if version is not None and version != VERSION:
            raise UnsupportedVersion(f"protocol version {version!r} is not supported") from exc
        raise SchemaError(str(exc)) from exc
    except msgspec.DecodeError as exc:
        raise MalformedPayload(str(exc)) from exc
    if message.v != VERSION:
        raise UnsupportedVersion(f"protocol version {message.v!r} is not supported")
    return message


def _peek_version(raw: bytes) -> Any:
    try:
        return _version_decoder.decode(raw).v
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def decode_up(payload: bytes, topic: str | None = None) -> UpMessage:
    """Decode and validate an upstream message.

    With ``topic``, also check that the topic names the message's gateway and kind, so a
    gateway cannot speak for another (the broker's ACLs enforce the topic itself).
    """
    message: Message = _decode(unwrap(payload), _up_decoder)
    if topic is not None:
        parsed = topics.parse_up(topic)
        if parsed.gateway != message.gateway:
            raise TopicMismatch(
                f"message claims gateway {message.gateway!r} on topic of {parsed.gateway!r}"
            )
        kind = type(message).__struct_config__.tag
        if parsed.kind != kind:
            raise TopicMismatch(f"message of kind {kind!r} on topic for {parsed.kind!r}")
    return message  # type: ignore[return-value]


def decode_down(payload: bytes) -> DownMessage:
    """Decode and validate a downstream message (ack, command, intel)."""
    result: DownMessage = _decode(unwrap(payload), _down_decoder)
    return result


def kind_of(message: Message | DownMessage) -> str:
    tag = type(message).__struct_config__.tag
    assert isinstance(tag, str)
    return tag
