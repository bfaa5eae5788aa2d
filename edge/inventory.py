"""Device inventory: what the gateway knows about each device on the LAN, keyed by MAC.

Observations come from ARP (MAC and IPv4 address), DHCP (hostname, option 55 parameter
list as the fingerprint, option 60 vendor class, assigned address), mDNS (hostname,
services, model from TXT records), SSDP (SERVER header, LOCATION, device types), NBNS
(NetBIOS name) and flow records (a local address seen behind a MAC). The vendor comes from
the MAC's OUI (IEEE MA-L list shipped by the ``mac-vendor-lookup`` package, read offline).

:meth:`Inventory.take_changes` returns :class:`~mimamori.protocol.Device` rows for devices
that are new or changed since they were last taken, and for devices still seen whose last
report is older than ``refresh_s`` (so the cloud's ``last_seen`` stays current). Memory is
bounded: at most ``max_devices`` devices (the least recently seen is forgotten first),
``MAX_IPS`` addresses each, and devices silent for ``expire_s`` are dropped.
"""

from __future__ import annotations

import importlib.metadata
import ipaddress
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path

from mimamori.detect.labels import tls
from mimamori.detect.labels.observe import TLS_EXTRA, weaker_hello
from mimamori.protocol import ArpEvent, Device, DiscoveryEvent, FlowRecord

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Addresses kept per device (most recent first out of the protocol's limit of 64): a
#: router's MAC fronts every routed address, so the list must be bounded.
MAX_IPS = 16
MAX_SERVICES = 32
MAX_EXTRAS = 32
#: Which source's hostname wins: DHCP's option 12 is what the device calls itself.
_HOSTNAME_RANK = {"dhcp": 3, "mdns": 2, "nbns": 1, "ssdp": 0, "arp": 0}
#: default_login: a cleartext login the device accepted with a factory credential
#: (edge/logins.py, edge/http_logins.py; the verdict only, never the password);
#: cleartext_login: the device took an HTTP Basic login, so a password crossed the LAN.
#: default_rejected, open_ports: the opt-in active check's findings (edge/active.py).
_EXTRA_FACTS = (
    "server", "location", "user_agent", "default_login", "cleartext_login",
    "default_rejected", "open_ports",
)  # fmt: skip
#: The weakest TLS session a device served / negotiated as a client (edge/tls_hello.py).
_TLS_FACTS = (tls.SERVED_EXTRA, tls.CLIENT_EXTRA)
#: Findings the readers attribute by address (a server's, or a TLS client's): only an
#: address on the monitored LAN names the device behind the frame's MAC.
_SERVER_SOURCES = frozenset(("login", "tls"))


class VendorLookup:
    """MAC address -> vendor name from the IEEE OUI (MA-L) list, offline.

    The list is the data file the ``mac-vendor-lookup`` package installs
    (``<prefix>/cache/mac-vendors.txt``, lines ``PREFIX:Vendor``); it is found through the
    package's metadata so that its network-update code (aiohttp) is never imported.
    """

    def __init__(self, *, path: Path | None = None) -> None:
        self.path = path or _packaged_oui_file()
        self._table: dict[str, str] | None = None

    @property
    def _vendors(self) -> dict[str, str]:
        # Read on the first lookup, not at start-up: the agent's meter process is forked
        # early and need not carry the table, and a replay without devices never reads it.
        if self._table is None:
            self._table = {}
            if self.path is not None and self.path.exists():
                intern: dict[str, str] = {}
                with self.path.open(encoding="utf-8", errors="replace") as fh:
                    for line in fh:
                        prefix, sep, vendor = line.partition(":")
                        if sep and len(prefix) == 6:
                            vendor = vendor.strip()
                            self._table[prefix.lower()] = intern.setdefault(vendor, vendor)
        return self._table

    def __len__(self) -> int:
        return len(self._vendors)

    def lookup(self, mac: str) -> str:
        """The vendor of ``mac`` ("" if unknown or locally administered)."""
        key = mac.replace(":", "").replace("-", "")[:6].lower()
        return self._vendors.get(key, "")


def _packaged_oui_file() -> Path | None:
    try:
        dist = importlib.metadata.distribution("mac-vendor-lookup")
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in dist.files or ():
        if str(file).endswith("mac-vendors.txt"):
            return Path(str(dist.locate_file(file))).resolve()
    return None


def is_unicast_mac(mac: str) -> bool:
    """A real station address: not group (multicast/broadcast), not all zeroes."""
    if len(mac) != 17 or mac == "00:00:00:00:00:00":
        return False
    try:
        return not int(mac[:2], 16) & 0x01
    except ValueError:
        return False


def is_randomized_mac(mac: str) -> bool:
    """Locally administered address: phones' per-network random MACs, VMs, containers."""
    return bool(int(mac[:2], 16) & 0x02)


class _Entry:
    """Mutable state of one device; ``version`` changes whenever a reported field does."""

    __slots__ = (
        "extras",
        "first_seen",
        "hostname",
        "hostname_rank",
        "ips",
        "last_seen",
        "mac",
        "reported_at",
        "reported_version",
        "row",
        "vendor",
        "version",
    )

    def __init__(self, mac: str, ts: float, vendor: str) -> None:
        self.mac = mac
        self.first_seen = ts
        self.last_seen = ts
        self.vendor = vendor
        self.ips: OrderedDict[str, None] = OrderedDict()
        self.hostname = ""
        self.hostname_rank = -1
        self.row: dict[str, str] = {}
        self.extras: dict[str, str] = {}
        self.version = 1
        self.reported_version = 0
        self.reported_at = 0.0

    def add_ip(self, ip: str) -> None:
        if ip in self.ips:
            self.ips.move_to_end(ip)
            return
        self.ips[ip] = None
        if len(self.ips) > MAX_IPS:
            self.ips.popitem(last=False)
        self.version += 1

    def set(self, field: str, value: str) -> None:
        if value and self.row.get(field) != value:
            self.row[field] = value
            self.version += 1

    def device(self) -> Device:
        services = self.row.get("services", "")
        return Device(
            mac=self.mac,
            ips=list(reversed(self.ips)),
            vendor=self.vendor,
            hostname=self.hostname,
            dhcp_fingerprint=self.row.get("dhcp_fingerprint", ""),
            dhcp_vendor_class=self.row.get("dhcp_vendor_class", ""),
            model=self.row.get("model", ""),
            os_hint=self.row.get("os_hint", ""),
            services=sorted(services.split("\n"))[:MAX_SERVICES] if services else [],
            first_seen=self.first_seen,
            last_seen=self.last_seen,
            extras=dict(self.extras),
        )


class Inventory:
    """Devices on the monitored LAN, from discovery events and flow records."""

    def __init__(
        self,
        *,
        home_net: Sequence[Network],
        vendors: VendorLookup,
        max_devices: int = 4096,
        expire_s: float = 7 * 86400.0,
        refresh_s: float = 3600.0,
    ) -> None:
        self.home_net = tuple(home_net)
        self.vendors = vendors
        self.max_devices = max_devices
        self.expire_s = expire_s
        self.refresh_s = refresh_s
        self._devices: OrderedDict[str, _Entry] = OrderedDict()
        self._local_cache: dict[str, bool] = {}
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._devices)

    def __contains__(self, mac: object) -> bool:
        return mac in self._devices

    def is_local(self, ip: str) -> bool:
        """Is ``ip`` on the monitored LAN (memoised: flows repeat the same addresses)?"""
        local = self._local_cache.get(ip)
        if local is None:
            try:
                addr = ipaddress.ip_address(ip)
            except ValueError:
                return False
            local = any(addr in net for net in self.home_net)
            if len(self._local_cache) > 65536:
                self._local_cache.clear()
            self._local_cache[ip] = local
        return local

    def _entry(self, mac: str, ts: float) -> _Entry | None:
        if not is_unicast_mac(mac):
            return None
        entry = self._devices.get(mac)
        if entry is None:
            vendor = "" if is_randomized_mac(mac) else self.vendors.lookup(mac)
            entry = _Entry(mac, ts, vendor)
            if is_randomized_mac(mac):
                entry.extras["mac_randomized"] = "true"
            self._devices[mac] = entry
            if len(self._devices) > self.max_devices:
                self._devices.popitem(last=False)
                self.evicted += 1
        else:
            self._devices.move_to_end(mac)
        if ts > entry.last_seen:
            entry.last_seen = ts
        return entry

    # --- observations ------------------------------------------------------------------

    def on_arp(self, event: ArpEvent) -> None:
        """The sender of any ARP packet owns its sender address (0.0.0.0 in probes)."""
        entry = self._entry(event.src_mac, event.ts)
        if entry is not None and event.src_ip != "0.0.0.0" and self.is_local(event.src_ip):
            entry.add_ip(event.src_ip)

    def on_discovery(self, event: DiscoveryEvent) -> None:
        """Merge the facts of one DHCP/mDNS/SSDP/NBNS observation."""
        if event.source in _SERVER_SOURCES and not self.is_local(event.ip):
            # A login or TLS finding about a server off the LAN: its MAC is the router's.
            return
        entry = self._entry(event.mac, event.ts)
        if entry is None:
            return
        facts = event.facts
        if event.ip and event.ip != "0.0.0.0" and self.is_local(event.ip):
            entry.add_ip(event.ip)
        for address in facts.get("addresses", "").split(","):
            if address and self.is_local(address):
                entry.add_ip(address)
        hostname = facts.get("hostname", "")
        rank = _HOSTNAME_RANK.get(event.source, 0)
        if hostname and rank >= entry.hostname_rank and hostname != entry.hostname:
            entry.hostname = hostname
            entry.hostname_rank = rank
            entry.version += 1
        for field in ("dhcp_fingerprint", "dhcp_vendor_class", "model", "os_hint"):
            if value := facts.get(field):
                entry.set(field, value)
        if service := facts.get("service"):
            known = set(entry.row.get("services", "").split("\n")) - {""}
            new = {s for s in service.split(",") if s} - known
            if new and len(known) < MAX_SERVICES:
                entry.set("services", "\n".join(sorted(known | new)))
        for fact in _EXTRA_FACTS:
            if (value := facts.get(fact)) and len(entry.extras) < MAX_EXTRAS:
                key = f"{event.source}_{fact}"
                if entry.extras.get(key) != value:
                    entry.extras[key] = value
                    entry.version += 1
        for fact in _TLS_FACTS:
            if value := facts.get(fact):
                kept = entry.extras.get(fact, "")
                weaker = tls.weaker(kept, value)
                if weaker != kept and (kept or len(entry.extras) < MAX_EXTRAS):
                    entry.extras[fact] = weaker
                    entry.version += 1

    def on_flow(self, record: FlowRecord) -> None:
        """A local source address behind a unicast MAC is that device's address.

        Only the source side is used: the destination MAC of a flow to the internet is the
        router's, and the first packet's source is the one that certainly sent from it.
        """
        if self.is_local(record.src_ip):
            entry = self._entry(record.src_mac, record.first_seen)
            if entry is not None:
                if record.last_seen > entry.last_seen:
                    entry.last_seen = record.last_seen
                entry.add_ip(record.src_ip)
                if record.client_fingerprint:
                    self._tls_hello(entry, record.client_fingerprint)
        if record.pkts_dst2src and self.is_local(record.dst_ip):
            entry = self._entry(record.dst_mac, record.first_seen)
            if entry is not None:
                if record.last_seen > entry.last_seen:
                    entry.last_seen = record.last_seen
                entry.add_ip(record.dst_ip)

    def _tls_hello(self, entry: _Entry, fingerprint: str) -> None:
        # The weakest TLS offer a device made (JA4's first part: protocol and best
        # version), for its label's secure-communication criterion in the cloud.
        kept = entry.extras.get(TLS_EXTRA, "")
        weaker = weaker_hello(kept, fingerprint)
        if weaker != kept and (kept or len(entry.extras) < MAX_EXTRAS):
            entry.extras[TLS_EXTRA] = weaker
            entry.version += 1

    # --- output ------------------------------------------------------------------------

    def take_changes(self, now: float, *, final: bool = False) -> list[Device]:
        """Devices new or changed since last taken, or due for a refresh; marks them taken.

        ``final`` (at shutdown or the end of a capture) also takes every device seen since
        its last report, so that the cloud gets the latest ``last_seen``. Forgets devices
        silent for longer than ``expire_s``.
        """
        out: list[Device] = []
        stale: list[str] = []
        for mac, entry in self._devices.items():
            if now - entry.last_seen > self.expire_s:
                stale.append(mac)
                continue
            changed = entry.version != entry.reported_version
            due = entry.last_seen > entry.reported_at and (
                final or now - entry.reported_at >= self.refresh_s
            )
            if changed or due:
                out.append(entry.device())
                entry.reported_version = entry.version
                entry.reported_at = now
        for mac in stale:
            del self._devices[mac]
        return out

    def snapshot(self) -> list[Device]:
        """Every known device (for a ``resend_inventory`` command or a replay's report)."""
        return [entry.device() for entry in self._devices.values()]

    def devices(self, macs: Iterable[str]) -> list[Device]:
        """The known devices among ``macs``."""
        return [self._devices[m].device() for m in macs if m in self._devices]
