"""Facts about one flow record that several rules need, computed the same way everywhere."""

from __future__ import annotations

from mimamori.protocol import FlowRecord

TCP = 6
UDP = 17
ICMP = 1
ICMPV6 = 58

#: Largest size (link layer included) of a reply that carries no payload (a TCP RST).
_BARE_REPLY = 64

#: Below this a port is a well-known service port; clients use ephemeral ports above it.
_WELL_KNOWN = 1024


def flags_known(rec: FlowRecord) -> bool:
    """True if the meter reported TCP flag counts (a TCP flow always has a SYN or FIN)."""
    return bool(rec.syn or rec.synack or rec.rst or rec.fin)


def answered(rec: FlowRecord) -> bool:
    """The responder sent anything at all (a SYN-ACK, a RST, a UDP reply)."""
    return rec.pkts_dst2src > 0


def failed(rec: FlowRecord) -> bool:
    """An attempt that did not become a conversation: unanswered, refused or half-open.

    TCP: no packet back, or (with flag counts) no SYN-ACK, or a reset after at most a
    handshake's worth of packets. Without flag counts (or for a flow whose start the
    meter missed), one payload-less reply packet to at most two is taken as a refusal. UDP and others: no packet back.
    """
    if rec.pkts_dst2src == 0:
        return True
    if rec.proto != TCP:
        return False
    total = rec.pkts_src2dst + rec.pkts_dst2src
    if flags_known(rec):
        if rec.synack == 0 and rec.syn > 0:
            return True
        return rec.rst > 0 and total <= 4
    # A bare RST is 54-60 bytes on the wire; anything bigger carried data.
    return rec.pkts_dst2src <= 1 and rec.pkts_src2dst <= 2 and rec.bytes_dst2src <= _BARE_REPLY


def completed(rec: FlowRecord) -> bool:
    """A connection that exchanged data: the opposite of :func:`failed`."""
    return not failed(rec)


def looks_reversed(rec: FlowRecord) -> bool:
    """The meter probably saw the server's side first (capture started mid-connection,
    or a one-way tap): a well-known source port talking to an ephemeral one.

    Such records must not be read as the server probing the client's ephemeral port.
    """
    return rec.src_port < _WELL_KNOWN <= rec.dst_port and rec.proto in (TCP, UDP)


def duration(rec: FlowRecord) -> float:
    """Seconds from the flow's first to its last packet (never negative)."""
    return max(0.0, rec.last_seen - rec.first_seen)


def app_base(rec: FlowRecord) -> str:
    """nDPI's application name without a sub-protocol after the last dot
    (``DNS.Cybersec`` -> ``DNS``; ``NetBIOS.SMBv1`` is kept whole by callers that need it).
    """
    return rec.app.split(".", 1)[0] if rec.app else ""
