"""PostgreSQL binary COPY encoding of flow-summary rows, without psycopg's per-value
adaptation.

The flows table is the ingester's hot path: tens of thousands of rows per second, each with
three timestamps and two IP addresses. Adapting each value through Python objects
(datetime, ipaddress) costs several microseconds a row; packing the wire format directly
from the protocol's floats and strings costs about one. The format is the one documented
for ``COPY ... (FORMAT BINARY)``: a signature and header, then per tuple an int16 field
count and per field an int32 length (-1 for NULL) and the value in the type's binary
send format.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable

from mimamori.cloud.errors import RowError
from mimamori.protocol import FlowSummary

#: Signature, flags (no OIDs), header extension length.
HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
#: A tuple whose field count is -1 ends the data.
TRAILER = struct.pack(">h", -1)

#: PostgreSQL timestamps count microseconds from 2000-01-01 00:00 UTC.
PG_EPOCH = 946684800
NULL = struct.pack(">i", -1)

# PostgreSQL's own address family codes in inet's send format (not the OS's AF_INET6).
_PGSQL_AF_INET = 2
_PGSQL_AF_INET6 = 3

#: The columns encode_flows writes, in this order (COPY takes any column order): the
#: fixed-width fields first so that one struct.pack writes them, then the variable ones.
FLOW_COLUMNS = (
    "ts", "remote_port", "proto", "pkts_out", "pkts_in", "bytes_out", "bytes_in", "conns",
    "first_seen", "last_seen", "tenant", "gateway", "mac", "local_ip", "remote_ip", "dir",
    "app", "sni",
)  # fmt: skip
_FIELDS = len(FLOW_COLUMNS)

# field count, then (length, value) for ts, remote_port, proto, five counters, first_seen
# and last_seen: the common case of a row whose times are all known.
_fixed = struct.Struct(">hiqiiihiqiqiqiqiqiqiq")
_fixed_head = struct.Struct(">hiqiiihiqiqiqiqiq")
_tsf = struct.Struct(">iq")
_len = struct.Struct(">i")


def text(value: str) -> bytes:
    """A text field (length + UTF-8). PostgreSQL text cannot hold NUL characters."""
    if "\x00" in value:
        raise RowError(f"text value contains a NUL character: {value[:40]!r}")
    raw = value.encode()
    return _len.pack(len(raw)) + raw


def inet(value: str) -> bytes:
    """An inet field from an address string; RowError if it is not a valid address."""
    try:
        if ":" in value:
            addr = socket.inet_pton(socket.AF_INET6, value)
            return b"\x00\x00\x00\x14" + bytes((_PGSQL_AF_INET6, 128, 0, 16)) + addr
        addr = socket.inet_pton(socket.AF_INET, value)
    except (OSError, ValueError) as exc:
        raise RowError(f"invalid IP address {value[:60]!r}") from exc
    return b"\x00\x00\x00\x08" + bytes((_PGSQL_AF_INET, 32, 0, 4)) + addr


def macaddr(value: str) -> bytes:
    """A macaddr field, NULL for the protocol's empty MAC (pattern already validated)."""
    if not value:
        return NULL
    return b"\x00\x00\x00\x06" + bytes.fromhex(value.replace(":", ""))


def _time_or_null(t: float | None) -> bytes:
    return NULL if t is None else _tsf.pack(8, round((t - PG_EPOCH) * 1_000_000))


class FlowEncoder:
    """Encodes flow batches, remembering encoded values across batches.

    Devices, remote ends and names repeat within a batch and between batches of a gateway,
    so each distinct value is encoded once. The caches are cleared when they reach
    ``max_entries`` (a few tens of MB at most), which bounds memory on a busy ingester.
    """

    def __init__(self, *, max_entries: int = 200_000) -> None:
        self.max_entries = max_entries
        self._heads: dict[tuple[str, str], bytes] = {}
        self._locals: dict[tuple[bytes, str, str], bytes] = {}
        self._remotes: dict[str, bytes] = {}
        self._names: dict[tuple[str, str, str], bytes] = {}

    def _trim(self) -> None:
        for cache in (self._heads, self._locals, self._remotes, self._names):
            if len(cache) >= self.max_entries:
                cache.clear()

    def encode(self, tenant: str, gateway: str, flows: Iterable[FlowSummary]) -> bytes:
        """Binary COPY tuples (no header or trailer) of FLOW_COLUMNS for one flow batch.

        Raises RowError when a value is valid for the protocol but not for the database (an
        address string that is no IP address, a NUL in a name); the caller quarantines the
        whole message then, so a batch is stored entirely or not at all.
        """
        self._trim()
        head = self._heads.get((tenant, gateway))
        if head is None:
            head = self._heads[(tenant, gateway)] = text(tenant) + text(gateway)
        locals_, remotes, names = self._locals, self._remotes, self._names
        parts: list[bytes] = []
        add = parts.append
        pack, pack_head = _fixed.pack, _fixed_head.pack
        epoch = PG_EPOCH
        for f in flows:
            fs, ls = f.first_seen, f.last_seen
            if fs is not None and ls is not None:
                add(pack(_FIELDS, 8, round((f.ts - epoch) * 1e6), 4, f.remote_port, 2, f.proto,
                         8, f.pkts_out, 8, f.pkts_in, 8, f.bytes_out, 8, f.bytes_in, 8, f.conns,
                         8, round((fs - epoch) * 1e6), 8, round((ls - epoch) * 1e6)))  # fmt: skip
            else:
                head_fields = pack_head(_FIELDS, 8, round((f.ts - epoch) * 1e6), 4,
                                        f.remote_port, 2, f.proto, 8, f.pkts_out, 8, f.pkts_in,
                                        8, f.bytes_out, 8, f.bytes_in, 8, f.conns)  # fmt: skip
                add(head_fields + _time_or_null(fs) + _time_or_null(ls))
            key = (head, f.mac, f.local_ip)
            b = locals_.get(key)
            if b is None:
                b = locals_[key] = head + macaddr(f.mac) + inet(f.local_ip)
            add(b)
            b = remotes.get(f.remote_ip)
            if b is None:
                b = remotes[f.remote_ip] = inet(f.remote_ip)
            add(b)
            names_key = (f.dir, f.app, f.sni)
            b = names.get(names_key)
            if b is None:
                b = names[names_key] = text(f.dir) + text(f.app) + text(f.sni)
            add(b)
        return b"".join(parts)


def encode_flows(tenant: str, gateway: str, flows: Iterable[FlowSummary]) -> bytes:
    """Binary COPY tuples of one flow batch, with fresh caches (see :class:`FlowEncoder`)."""
    return FlowEncoder().encode(tenant, gateway, flows)
