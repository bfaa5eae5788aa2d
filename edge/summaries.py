"""Flow summaries: per interval, per local device and remote endpoint, what leaves the site.

Every flow record is added to the open interval's table under the key (local MAC, local
IP, remote IP, service port, protocol, direction, application, TLS server name). The
"local" side is the home-net end: the initiator for ``out`` and ``lan`` rows, the
responder for ``in`` rows. ``remote_port`` is always the responder's (service) port:
for ``in`` rows that is the local port the remote host reached, because the remote's
ephemeral source ports say nothing and would make one row per connection. Multicast and
broadcast destinations count as ``lan``.

Flows are assigned to the interval in which they are *received* (their expiry), as a
NetFlow collector does; ``first_seen``/``last_seen`` keep the real times. Packets and
bytes are conserved: the rows of an interval add up exactly to its flows.

Folding keeps the uplink small (the goal is at most 1% of the metered bytes): a local
device that talked to more than ``keep_rows`` endpoints in one (direction, protocol)
keeps its ``keep_rows`` largest rows; the rest are merged:

* when the small rows name few remote hosts (a vertical port scan, a P2P peer), one row
  per remote host with ``remote_port`` 0;
* else, when they use few ports (a sweep, a CDN fan-out), one row per port with the
  unspecified address (``0.0.0.0`` / ``::``) as ``remote_ip``;
* else one row with both unspecified.

``conns`` always counts the flow records merged into a row.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from mimamori.protocol import FlowRecord, FlowSummary

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Default monitored networks: RFC 1918, IPv4 link-local, IPv6 ULA and link-local.
DEFAULT_HOME_NET: tuple[Network, ...] = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "fc00::/7",
              "fe80::/10")
)  # fmt: skip
#: Rows per FlowBatch. The protocol allows 5,000, but 5,000 varied rows can compress to
#: more than the 256 KiB payload limit (321 KB measured), and the outbox would refuse the
#: whole batch; at 2,000 even varied rows stay near half the limit.
MAX_BATCH_ROWS = 2000

_Key = tuple[str, str, str, int, int, str, str, str]


def parse_home_net(cidrs: Sequence[str]) -> tuple[Network, ...]:
    """CIDR strings -> networks (raises ValueError with the bad one named)."""
    nets: list[Network] = []
    for cidr in cidrs:
        try:
            nets.append(ipaddress.ip_network(cidr.strip(), strict=False))
        except ValueError as exc:
            raise ValueError(f"not a network: {cidr!r}") from exc
    return tuple(nets)


@dataclass(slots=True)
class _Row:
    pkts_out: int = 0
    pkts_in: int = 0
    bytes_out: int = 0
    bytes_in: int = 0
    conns: int = 0
    first_seen: float = field(default=float("inf"))
    last_seen: float = 0.0

    def add(self, other: _Row) -> None:
        self.pkts_out += other.pkts_out
        self.pkts_in += other.pkts_in
        self.bytes_out += other.bytes_out
        self.bytes_in += other.bytes_in
        self.conns += other.conns
        self.first_seen = min(self.first_seen, other.first_seen)
        self.last_seen = max(self.last_seen, other.last_seen)

    @property
    def total_bytes(self) -> int:
        return self.bytes_out + self.bytes_in


class Summarizer:
    """Aggregates flow records into :class:`FlowSummary` rows, one table per interval.

    Call :meth:`add` for every flow record and :meth:`due` with the current time;
    :meth:`flush` closes the open interval and returns its rows. Memory is bounded by
    ``max_keys`` (beyond it, new keys of the interval are folded at once into per-device
    catch-all rows, and ``overflowed`` counts them). A key and its counters take about
    300 bytes, so the default 50,000 keys stay under 15 MB; a small office makes a few
    thousand keys per interval.
    """

    def __init__(
        self,
        *,
        home_net: Sequence[Network] = DEFAULT_HOME_NET,
        interval: int = 60,
        keep_rows: int = 20,
        max_keys: int = 50_000,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.home_net = tuple(home_net)
        self.interval = interval
        self.keep_rows = keep_rows
        self.max_keys = max_keys
        self._table: dict[_Key, _Row] = {}
        self._start: float | None = None
        self._kinds: dict[str, int] = {}
        self.overflowed = 0
        self.flows = 0

    # --- classification ----------------------------------------------------------------

    def _kind(self, ip: str) -> int:
        """0: remote, 1: in the home net, 2: multicast or broadcast (memoised)."""
        kind = self._kinds.get(ip)
        if kind is None:
            try:
                addr = ipaddress.ip_address(ip)
            except ValueError:
                return 0
            if any(addr in net for net in self.home_net):
                kind = 1
            elif addr.is_multicast or ip == "255.255.255.255":
                # (A subnet broadcast address is in the home net, so local already.)
                kind = 2
            else:
                kind = 0
            if len(self._kinds) > 65536:
                self._kinds.clear()
            self._kinds[ip] = kind
        return kind

    def is_local(self, ip: str) -> bool:
        """Is ``ip`` in the home net?"""
        return self._kind(ip) == 1

    # --- input -------------------------------------------------------------------------

    @property
    def interval_start(self) -> float | None:
        """Start of the open interval (None before the first flow)."""
        return self._start

    def align(self, now: float) -> float:
        """Start of the interval containing ``now`` (intervals are aligned to UTC)."""
        return float(int(now // self.interval) * self.interval)

    def due(self, now: float) -> bool:
        """Has the open interval ended by ``now``?"""
        return self._start is not None and now >= self._start + self.interval

    def add(self, record: FlowRecord, now: float) -> None:
        """Count one flow record in the interval open at ``now``."""
        if self._start is None:
            self._start = self.align(now)
        self.flows += 1
        r = record
        # (initiator, responder): nfstream's src sent the first packet it saw, which is the
        # responder when a timeout cut a long connection and the server spoke next.
        by_src = opened_by_src(r, self._kind)
        if by_src:
            a_mac, a_ip, b_mac, b_ip, service = r.src_mac, r.src_ip, r.dst_mac, r.dst_ip, r.dst_port
            ab = (r.pkts_src2dst, r.pkts_dst2src, r.bytes_src2dst, r.bytes_dst2src)
        else:
            a_mac, a_ip, b_mac, b_ip, service = r.dst_mac, r.dst_ip, r.src_mac, r.src_ip, r.src_port
            ab = (r.pkts_dst2src, r.pkts_src2dst, r.bytes_dst2src, r.bytes_src2dst)
        a_local = self._kind(a_ip) == 1
        b_kind = self._kind(b_ip)
        # The local end is the initiator unless only the responder is on the LAN.
        if a_local and b_kind:
            direction, outbound = "lan", True
        elif not a_local and b_kind == 1:
            direction, outbound = "in", False
        else:
            direction, outbound = "out", True
        if outbound:
            key: _Key = (a_mac, a_ip, b_ip, service, r.proto, direction, r.app, r.sni)
            row = _Row(ab[0], ab[1], ab[2], ab[3], 1, r.first_seen, r.last_seen)
        else:
            key = (b_mac, b_ip, a_ip, service, r.proto, direction, r.app, r.sni)
            row = _Row(ab[1], ab[0], ab[3], ab[2], 1, r.first_seen, r.last_seen)
        existing = self._table.get(key)
        if existing is not None:
            existing.add(row)
            return
        if len(self._table) >= self.max_keys:
            # Out of room this interval: fold into the device's catch-all row.
            self.overflowed += 1
            key = (key[0], key[1], _unspecified(key[2]), 0, key[4], key[5], "", "")
            existing = self._table.get(key)
            if existing is not None:
                existing.add(row)
                return
        self._table[key] = row

    # --- output ------------------------------------------------------------------------

    def flush(self) -> tuple[float, list[FlowSummary]]:
        """Close the open interval: its start time and folded rows (may be empty)."""
        start = self._start if self._start is not None else 0.0
        table, self._table = self._table, {}
        self._start = None
        return start, list(self._rows(start, table))

    def _rows(self, start: float, table: dict[_Key, _Row]) -> Iterator[FlowSummary]:
        groups: dict[tuple[str, str, int, str], list[tuple[_Key, _Row]]] = {}
        for key, row in table.items():
            groups.setdefault((key[0], key[1], key[4], key[5]), []).append((key, row))
        for items in groups.values():
            if len(items) > self.keep_rows:
                items = self._fold(items)
            for key, row in items:
                yield FlowSummary(
                    ts=start,
                    mac=key[0] if len(key[0]) == 17 else "",
                    local_ip=key[1],
                    remote_ip=key[2],
                    remote_port=key[3],
                    proto=key[4],
                    dir=key[5],  # type: ignore[arg-type]
                    app=key[6][:255],
                    sni=key[7][:255],
                    pkts_out=row.pkts_out,
                    pkts_in=row.pkts_in,
                    bytes_out=row.bytes_out,
                    bytes_in=row.bytes_in,
                    conns=row.conns,
                    first_seen=row.first_seen,
                    last_seen=row.last_seen,
                )

    def _fold(self, items: list[tuple[_Key, _Row]]) -> list[tuple[_Key, _Row]]:
        items.sort(key=lambda kr: kr[1].total_bytes, reverse=True)
        kept, tail = items[: self.keep_rows], items[self.keep_rows :]
        hosts = {key[2] for key, _ in tail}
        ports = {key[3] for key, _ in tail}
        # Kept rows take in folded rows that happen to get the same key.
        out: dict[_Key, _Row] = dict(kept)
        for key, row in tail:
            if len(hosts) <= self.keep_rows:
                new_key = (key[0], key[1], key[2], 0, key[4], key[5], "", "")
            elif len(ports) <= self.keep_rows:
                new_key = (key[0], key[1], _unspecified(key[2]), key[3], key[4], key[5], "", "")
            else:
                new_key = (key[0], key[1], _unspecified(key[2]), 0, key[4], key[5], "", "")
            into = out.get(new_key)
            if into is None:
                out[new_key] = row
            else:
                into.add(row)
        return list(out.items())


def handshake_seen(record: FlowRecord) -> bool:
    """A TCP flow whose ``src`` sent a SYN and whose ``dst`` answered with a SYN-ACK."""
    return record.proto == 6 and record.syn > 0 and record.synack > 0


def opened_by_src(record: FlowRecord, kind: Callable[[str], int]) -> bool:
    """:func:`initiated_by_src`, corrected by what the addresses rule out.

    ``kind`` tells an address apart: 0 the internet, 1 the home net, 2 multicast or
    broadcast. Without a TCP handshake seen, a multicast or broadcast address never
    opened the connection, and an internet host reaching a LAN device's non-service port
    (1024 and up) is the late part of the device's own connection (behind NAT nothing
    else gets in), not an exposure.
    """
    by_src = initiated_by_src(record)
    if handshake_seen(record):
        return by_src
    src_kind, dst_kind = kind(record.src_ip), kind(record.dst_ip)
    if by_src and src_kind == 2:
        return False
    if not by_src and dst_kind == 2:
        return True
    if by_src and src_kind == 0 and dst_kind == 1 and record.dst_port >= 1024:
        return False
    if not by_src and dst_kind == 0 and src_kind == 1 and record.src_port >= 1024:
        return True
    return by_src


def initiated_by_src(record: FlowRecord) -> bool:
    """Did the flow's ``src`` open the connection?

    A TCP handshake seen in the flow settles it, and so does a SYN that was not answered
    or was refused (a scan's probes). Without either (the flow is the continuation of a
    connection cut by the idle or active timeout, or the capture began mid-way, perhaps at
    the server's SYN-ACK), the side on the service-like port is taken as the responder: a
    port below 1024 facing a higher one, or a port below 32768 facing an ephemeral one
    (32768 and up, where Linux and Windows allocate client ports). :func:`opened_by_src`
    then corrects guesses that the addresses rule out.
    """
    if handshake_seen(record):
        return True
    if record.proto == 6 and record.syn and (record.pkts_dst2src == 0 or record.rst):
        return True
    sport, dport = record.src_port, record.dst_port
    if sport == 0 or dport == 0 or sport >= dport:
        return True
    return not (sport < 1024 or dport >= 32768)


def _unspecified(ip: str) -> str:
    return "::" if ":" in ip else "0.0.0.0"


def batches(rows: list[FlowSummary], size: int = MAX_BATCH_ROWS) -> Iterator[list[FlowSummary]]:
    """Split rows into FlowBatch-sized lists."""
    for i in range(0, len(rows), size):
        yield rows[i : i + size]
