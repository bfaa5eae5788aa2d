"""Records the gateway derives from traffic, before summarising: the input of detection.

These never leave the site as such (only :class:`~mimamori.protocol.messages.FlowSummary`
rows do); they are part of the protocol package because both the edge (which produces them)
and the detectors (which read them) depend on their exact shape.
"""

from __future__ import annotations

from typing import Literal

import msgspec


class FlowRecord(msgspec.Struct, kw_only=True, frozen=True):
    """One bidirectional flow as metered by nfstream (times in UNIX seconds).

    ``src`` is the side that sent the first packet. ``dns_query`` holds the queried name
    for DNS flows (nDPI's requested server name), ``sni`` the TLS server name or HTTP host.
    TCP flag counts are those seen in either direction.
    """

    first_seen: float
    last_seen: float
    src_ip: str
    src_port: int
    dst_ip: str
    dst_port: int
    proto: int
    src_mac: str = ""
    dst_mac: str = ""
    pkts_src2dst: int = 0
    pkts_dst2src: int = 0
    bytes_src2dst: int = 0
    bytes_dst2src: int = 0
    app: str = ""
    category: str = ""
    sni: str = ""
    dns_query: str = ""
    client_fingerprint: str = ""
    server_fingerprint: str = ""
    user_agent: str = ""
    content_type: str = ""
    syn: int = 0
    synack: int = 0
    rst: int = 0
    fin: int = 0
    # "idle" or "active" timeout, "end" (FIN/RST seen), "flush" (end of capture)
    expiry: str = ""


class ArpEvent(msgspec.Struct, kw_only=True, frozen=True):
    """An ARP packet: ``request`` (who-has ``target_ip``) or ``reply``."""

    ts: float
    op: Literal["request", "reply"]
    src_mac: str
    src_ip: str
    target_ip: str
    target_mac: str = ""


class DiscoveryEvent(msgspec.Struct, kw_only=True, frozen=True):
    """A fact about a device learnt from DHCP, mDNS, SSDP or NBNS (or, ``login``, that it
    accepted a factory credential in a cleartext login: edge/logins.py; ``tls``, the
    weakest TLS session it served or negotiated: edge/tls_hello.py).

    ``source`` names the protocol; ``facts`` maps fact names (``hostname``,
    ``dhcp_fingerprint``, ``dhcp_vendor_class``, ``model``, ``service``, ``server``,
    ``os_hint``, ``requested_ip``) to values.
    """

    ts: float
    source: Literal["dhcp", "mdns", "ssdp", "nbns", "arp", "login", "tls", "active"]
    mac: str
    ip: str = ""
    facts: dict[str, str] = {}
