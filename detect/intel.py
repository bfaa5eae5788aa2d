"""Threat-intelligence indicators: parsing feeds into an :class:`Intel` and matching.

Pure parsing only: fetching feeds and refreshing them on a schedule belong to the cloud,
which ships the result to gateways as a :class:`~mimamori.protocol.IntelBundle`.
Supported inputs: plain lists (one IP, CIDR or domain per line; ``#``/``;`` comments;
extra columns such as ipsum's tab-separated counts ignored; hosts-file lines
``0.0.0.0 domain``) and CSV feeds (the indicator columns are found by header name, with
URL columns reduced to their host).
"""

from __future__ import annotations

import csv
import io
import ipaddress
import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from mimamori.detect.errors import IntelError
from mimamori.protocol import IntelBundle

_DOMAIN = re.compile(
    r"^(?=.{1,253}$)([a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\.)+[a-z][a-z0-9-]{0,62}$"
)
_SINKHOLES = {"0.0.0.0", "127.0.0.1", "::", "::1"}
_IP_COLUMNS = {"ip", "ip_address", "ipaddress", "dst_ip", "dstip", "address", "ioc", "indicator",
               "value", "cidr", "network", "ip_range"}  # fmt: skip
_DOMAIN_COLUMNS = {"domain", "host", "hostname", "fqdn", "dns", "sni", "server_name"}
_URL_COLUMNS = {"url", "uri", "link"}


class Intel:
    """A set of indicators: addresses, networks and domains (matched with subdomains)."""

    def __init__(
        self,
        *,
        ips: Iterable[str] = (),
        cidrs: Iterable[str] = (),
        domains: Iterable[str] = (),
        sources: Iterable[str] = (),
        rejected: int = 0,
    ) -> None:
        self.ips: set[str] = set()
        self.cidrs: set[str] = set()
        self.domains: set[str] = set()
        self.sources: list[str] = list(dict.fromkeys(sources))
        #: Lines or fields that were not an indicator (counted, never fatal).
        self.rejected = rejected
        # (version, prefix length) -> network addresses as ints: one lookup per length.
        self._nets: dict[tuple[int, int], set[int]] = {}
        for ip in ips:
            self._add_ip(ip)
        for cidr in cidrs:
            self._add_net(cidr)
        for domain in domains:
            self._add_domain(domain)

    # --- building ---------------------------------------------------------------------

    def _add_ip(self, text: str) -> bool:
        try:
            self.ips.add(ipaddress.ip_address(text.strip()).compressed)
            return True
        except ValueError:
            return False

    def _add_net(self, text: str) -> bool:
        try:
            net = ipaddress.ip_network(text.strip(), strict=False)
        except ValueError:
            return False
        if net.num_addresses == 1:
            self.ips.add(net.network_address.compressed)
            return True
        self.cidrs.add(net.compressed)
        key = (net.version, net.prefixlen)
        self._nets.setdefault(key, set()).add(int(net.network_address))
        return True

    def _add_domain(self, text: str) -> bool:
        name = text.strip().lower().rstrip(".")
        if name.startswith("*."):
            name = name[2:]
        if not _DOMAIN.match(name):
            return False
        self.domains.add(name)
        return True

    def add_indicator(self, text: str) -> bool:
        """Add one IP, CIDR or domain; False (and counted as rejected) if it is none."""
        text = text.strip().strip('"').strip()
        ok = bool(text) and (
            self._add_ip(text) or ("/" in text and self._add_net(text)) or self._add_domain(text)
        )
        if not ok:
            self.rejected += 1
        return ok

    def merged(self, other: Intel) -> Intel:
        """A new Intel holding the indicators of both."""
        return Intel(
            ips=self.ips | other.ips,
            cidrs=self.cidrs | other.cidrs,
            domains=self.domains | other.domains,
            sources=[*self.sources, *other.sources],
            rejected=self.rejected + other.rejected,
        )

    def __len__(self) -> int:
        return len(self.ips) + len(self.cidrs) + len(self.domains)

    # --- matching ---------------------------------------------------------------------

    def match_ip(self, ip: str) -> str:
        """The indicator (address or CIDR) that ``ip`` matches, or ""."""
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return ""
        if addr.compressed in self.ips:
            return addr.compressed
        width = 32 if addr.version == 4 else 128
        value = int(addr)
        for (version, plen), nets in self._nets.items():
            if version != addr.version:
                continue
            base = value >> (width - plen) << (width - plen)
            if base in nets:
                return f"{ipaddress.ip_address(base)}/{plen}"
        return ""

    def match_domain(self, name: str) -> str:
        """The listed domain that ``name`` is, or is a subdomain of, or ""."""
        labels = name.lower().rstrip(".").split(".")
        for i in range(len(labels) - 1):
            candidate = ".".join(labels[i:])
            if candidate in self.domains:
                return candidate
        return ""

    # --- the protocol's bundle ----------------------------------------------------------

    def to_bundle(self, *, version: str, generated_at: float) -> IntelBundle:
        """The indicators as the retained message the cloud publishes to gateways."""
        return IntelBundle(
            version=version,
            generated_at=generated_at,
            ips=sorted(self.ips),
            cidrs=sorted(self.cidrs),
            domains=sorted(self.domains),
            sources=[s[:255] for s in self.sources],
        )

    @classmethod
    def from_bundle(cls, bundle: IntelBundle) -> Intel:
        """Indicators received from the cloud (invalid entries are dropped and counted)."""
        intel = cls(sources=bundle.sources)
        for ip in bundle.ips:
            if not intel._add_ip(ip):
                intel.rejected += 1
        for cidr in bundle.cidrs:
            if not intel._add_net(cidr):
                intel.rejected += 1
        for domain in bundle.domains:
            if not intel._add_domain(domain):
                intel.rejected += 1
        return intel


def _strip_comment(line: str) -> str:
    for mark in ("#", ";"):
        if mark in line:
            line = line.split(mark, 1)[0]
    return line.strip()


def parse_list(text: str, *, source: str = "") -> Intel:
    """Parse a plain indicator list (one per line; the first token counts)."""
    intel = Intel(sources=[source] if source else [])
    for raw in text.splitlines():
        line = _strip_comment(raw)
        if not line:
            continue
        tokens = re.split(r"[\s,]+", line)
        if len(tokens) >= 2 and tokens[0] in _SINKHOLES:
            tokens = tokens[1:]  # hosts-file format: "0.0.0.0 bad.example"
        intel.add_indicator(tokens[0])
    return intel


def parse_csv(text: str, *, source: str = "") -> Intel:
    """Parse a CSV feed whose header (possibly a ``#`` comment line) names its columns."""
    header: list[str] = []
    body: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            cols = [c.strip().strip('"').lower() for c in stripped.lstrip("#").split(",")]
            if len(cols) > 1 and not body:
                header = cols  # abuse.ch style: the last comment line names the columns
            continue
        if stripped:
            body.append(line)
    try:
        rows = list(csv.reader(io.StringIO("\n".join(body))))
    except csv.Error as exc:
        raise IntelError(f"feed {source or '(unnamed)'} is not valid CSV: {exc}") from exc
    if not header and rows:
        first = [c.strip().lower() for c in rows[0]]
        if set(first) & (_IP_COLUMNS | _DOMAIN_COLUMNS | _URL_COLUMNS):
            header, rows = first, rows[1:]
    if not header:
        raise IntelError(f"feed {source or '(unnamed)'} has no header naming its columns")
    wanted = [
        (i, "url" if name in _URL_COLUMNS else "value")
        for i, name in enumerate(header)
        if name in _IP_COLUMNS | _DOMAIN_COLUMNS | _URL_COLUMNS
    ]
    if not wanted:
        raise IntelError(f"feed {source or '(unnamed)'}: no indicator column in {header}")
    intel = Intel(sources=[source] if source else [])
    for row in rows:
        for index, kind in wanted:
            if index >= len(row) or not row[index].strip():
                continue
            value = row[index].strip()
            if kind == "url":
                host = urlsplit(value if "//" in value else "//" + value).hostname or ""
                intel.add_indicator(host)
            else:
                intel.add_indicator(value)
    return intel


def parse_feed(text: str, *, source: str = "") -> Intel:
    """Parse a feed of either kind: CSV when its header names indicator columns."""
    try:
        return parse_csv(text, source=source)
    except IntelError:
        return parse_list(text, source=source)
