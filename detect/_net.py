"""Where an address sits: the monitored LAN, the internet, or nowhere in particular."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

_CACHE_LIMIT = 65536


class HomeNet:
    """Classifies addresses against the site's home networks (with a bounded cache)."""

    def __init__(self, networks: Iterable[Network]) -> None:
        self.networks = tuple(networks)
        self._cache: dict[str, str] = {}

    def kind(self, ip: str) -> str:
        """``local``, ``remote`` (a unicast internet address) or ``special``.

        ``special`` covers multicast, broadcast, unspecified, loopback, link-local and
        unparseable strings: traffic to those is never a scan target or a C2.
        """
        hit = self._cache.get(ip)
        if hit is not None:
            return hit
        result = _classify(ip, self.networks)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[ip] = result
        return result

    def is_local(self, ip: str) -> bool:
        """``ip`` is on the monitored LAN."""
        # Called several times per record by the rules: the cache hit is inlined.
        return (self._cache.get(ip) or self.kind(ip)) == "local"

    def is_remote(self, ip: str) -> bool:
        """``ip`` is a unicast address outside the LAN."""
        return (self._cache.get(ip) or self.kind(ip)) == "remote"


def _classify(ip: str, networks: tuple[Network, ...]) -> str:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return "special"
    if addr.is_multicast or addr.is_unspecified or addr.is_loopback or addr.is_link_local:
        return "special"
    if isinstance(addr, ipaddress.IPv4Address) and (
        addr == ipaddress.IPv4Address("255.255.255.255") or ip.endswith(".255")
    ):
        # Directed broadcasts of the usual /24s; a host address ending in .255 in a
        # larger network is rare enough to lose.
        return "special"
    for net in networks:
        if addr.version == net.version and addr in net:
            return "local"
    return "remote"


def parse_networks(values: Iterable[str]) -> list[Network]:
    """CIDR strings to networks (host bits allowed), for configs and command lines."""
    return [ipaddress.ip_network(v, strict=False) for v in values]


class AddressSet:
    """Addresses and CIDRs from a config list (``ignore_sources``), parsed once.

    Entries that are neither are rejected at construction with ``ValueError``.
    """

    def __init__(self, entries: Iterable[str]) -> None:
        self.networks = tuple(ipaddress.ip_network(e, strict=False) for e in entries)

    def __contains__(self, ip: object) -> bool:
        if not self.networks or not isinstance(ip, str):
            return False
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr.version == n.version and addr in n for n in self.networks)
