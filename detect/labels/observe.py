"""Per-device evidence from what the gateway sees: flows, inventory facts, alerts.

An :class:`Observer` turns observations into :class:`Evidence` items keyed by MAC. It is
fed either from raw records at the edge (``mimamori.edge.evidence``) or from the stored
devices and flow summaries in the cloud (``mimamori.cloud.labels``); both call the same
:meth:`Observer.flow`, so a label means the same wherever it was computed.

Evidence kinds (what :mod:`.assess` maps to criteria):

- ``cleartext_service`` / ``cleartext_client``: Telnet, FTP, ... served / used
- ``legacy_service`` (SMBv1) and ``legacy_tls`` (SSL 2/3 named by nDPI, a TLS client
  whose best offer in its ClientHello is SSL, TLS 1.0 or 1.1: the JA4 fingerprint, or a
  session the device served or negotiated with a weak version or cipher: its ServerHello)
- ``tls_modern``: the device's weakest session seen was TLS 1.3 or TLS 1.2 with AEAD
- ``cleartext_login``: the device took an HTTP Basic login (a password sent in clear)
- ``http_admin`` (the device serves plain HTTP on an admin port on the LAN)
- ``http_cloud`` / ``tls_cloud``: unencrypted / encrypted traffic to the internet
- ``exposure`` / ``exposure_mgmt``: the device accepted a connection from the internet
- ``vendor_contact``, ``update_tls``, ``update_http``: the maker's update/cloud names
- ``banner``, ``outdated``: announced software, and software out of support
- ``upnp``: the device announces itself over SSDP
- ``default_credential``: a login with a well-known factory credential was accepted
  (seen in clear by a login extractor, or by the opt-in active check)
- ``open_port``, ``default_rejected``: opt-in active checks
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from mimamori.detect.labels import tls
from mimamori.detect.labels.catalogue import Catalogue
from mimamori.detect.labels.credentials import DefaultCredentials, load_credentials
from mimamori.protocol import Device, FlowSummary

#: Evidence items kept per device (a noisy device must not grow memory without bound).
MAX_ITEMS = 64
Role = Literal["client", "server"]
Peer = Literal["lan", "internet"]


@dataclass
class Evidence:
    """One finding about a device: what, the detail, when last seen, how often."""

    kind: str
    detail: str
    ts: float
    count: int = 1

    def to_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "detail": self.detail, "ts": self.ts, "count": self.count}


@dataclass
class DeviceEvidence:
    """Everything known about one device for labelling."""

    mac: str
    vendor: str = ""
    model: str = ""
    hostname: str = ""
    os_hint: str = ""
    services: tuple[str, ...] = ()
    banners: dict[str, str] = field(default_factory=dict)
    #: Makers whose cloud or update names the device reached (catalogue [update_domains]
    #: keys): they name the product when the MAC prefix names only its Wi-Fi module.
    makers: set[str] = field(default_factory=set)
    connections: int = 0
    first_ts: float | None = None
    last_ts: float | None = None
    items: dict[tuple[str, str], Evidence] = field(default_factory=dict)

    def add(self, kind: str, detail: str, ts: float, count: int = 1) -> None:
        """Record (or reinforce) a finding."""
        self.seen(ts)
        key = (kind, detail)
        item = self.items.get(key)
        if item is not None:
            item.count += count
            item.ts = max(item.ts, ts)
        elif len(self.items) < MAX_ITEMS:
            self.items[key] = Evidence(kind, detail, ts, count)

    def seen(self, ts: float) -> None:
        self.first_ts = ts if self.first_ts is None else min(self.first_ts, ts)
        self.last_ts = ts if self.last_ts is None else max(self.last_ts, ts)

    def of(self, *kinds: str) -> list[Evidence]:
        """Findings of the given kinds, most recent first."""
        found = [e for e in self.items.values() if e.kind in kinds]
        return sorted(found, key=lambda e: (-e.ts, e.kind, e.detail))


#: JA4 client fingerprint, first part: transport (t TCP, q QUIC, d DTLS), best offered
#: version, d/i (SNI is a domain or absent), cipher and extension counts, ALPN.
_JA4 = re.compile(r"^[tqd](s[1-3]|1[0-3]|00)[di][0-9]{4}[0-9a-z]{2}(?:_|$)", re.IGNORECASE)
#: Device.extras key under which an inventory may publish the JA4 first part of the
#: weakest ClientHello it saw from the device (read here so the cloud can judge it too).
TLS_EXTRA = "tls_client_ja4"
#: Device.extras key of the edge's finding that the device accepted a factory credential
#: in a cleartext login (inventory key "<source>_<fact>": source login, fact default_login).
LOGIN_EXTRA = "login_default_login"
#: Device.extras key of the edge's finding that the device took an HTTP Basic login
#: (edge/http_logins.py): "http basic (port 80)".
CLEARTEXT_LOGIN_EXTRA = "login_cleartext_login"
#: Device.extras keys of the opt-in active check's findings (edge/active.py DeviceReport;
#: inventory key "active_<fact>"): extra -> (evidence kind, separator between findings).
ACTIVE_EXTRAS = {
    "active_default_login": ("default_credential", "\n"),
    "active_default_rejected": ("default_rejected", "\n"),
    "active_open_ports": ("open_port", ","),
}


def ja4_version(fingerprint: str) -> str:
    """The version code of a JA4 client fingerprint ("13", "10", "s3"...), "" if not JA4.

    nfstream puts other things in the same field for other protocols (the DHCP option
    list, for one), so anything that does not look like JA4 is ignored.
    """
    m = _JA4.match(fingerprint)
    return m.group(1).lower() if m else ""


#: JA4 version codes from weakest to strongest ("00", unknown, is not ranked).
_VERSION_RANK = {v: n for n, v in enumerate(("s1", "s2", "s3", "10", "11", "12", "13"))}


def weaker_hello(current: str, fingerprint: str) -> str:
    """The JA4 first part to keep for a device: ``current`` or ``fingerprint``'s, whichever
    offers the weaker best version ("" when neither is a ranked JA4).

    For the inventory (``Device.extras["tls_client_ja4"]``): fold every ClientHello of a
    device through this and publish the result when it changes.
    """
    new = ja4_version(fingerprint)
    if new not in _VERSION_RANK:
        return current
    old = ja4_version(current)
    if old in _VERSION_RANK and _VERSION_RANK[old] <= _VERSION_RANK[new]:
        return current
    return fingerprint.split("_", 1)[0]


#: UPnP device types that name a kind of device, not a product (UPnP Forum device specs).
_UPNP_GENERIC = frozenset(
    t.lower()
    for t in (
        "Basic", "InternetGatewayDevice", "WANDevice", "WANConnectionDevice", "LANDevice",
        "MediaServer", "MediaRenderer", "Printer", "Scanner", "WFADevice", "DimmableLight",
        "BinaryLight", "HVAC_System", "SensorManagement", "RemoteUIServerDevice",
        "RemoteUIClientDevice", "DigitalSecurityCamera", "WLANAccessPointDevice",
        "ManageableDevice", "SolarProtectionBlind", "Telephony", "HomeAutomationDevice",
    )
)  # fmt: skip
#: A model number: a short letter prefix, digits, an optional letter and region suffix
#: ("DCS-935L", "HS110(EU)", "BSB002", "DCH-S220", "DSP-W215"). Hostnames like
#: "android-1c13..." do not match.
_MODEL = re.compile(r"^[A-Za-z]{1,6}-?[A-Za-z]{0,3}\d{2,5}[A-Za-z]{0,2}(?:\([A-Z]{2}\))?$")
#: Model-shaped host names that name a kind of computer or a radio module, not a product.
_NOT_MODELS = ("pc", "laptop", "desktop", "host", "user", "win", "note", "esp", "wiz")
#: A product family followed by the serial or MAC tail that makes the name unique
#: ("Lightify-7B5F6B"); the family is the hint.
_FAMILY = re.compile(r"^([A-Za-z][A-Za-z]{3,19})[-_][0-9A-Fa-f]{6,12}$")
#: Vendor UPnP device types that name a product line without a number (Belkin WeMo's
#: device types, from their SSDP announcements).
_UPNP_PRODUCTS = {
    ("belkin", "controllee"): "WeMo Switch",
    ("belkin", "insight"): "WeMo Insight Switch",
    ("belkin", "bridge"): "WeMo Link",
    ("belkin", "lightswitch"): "WeMo Light Switch",
    ("belkin", "sensor"): "WeMo Motion",
    ("belkin", "dimmer"): "WeMo Dimmer",
}


def model_hint(device: Device) -> str:
    """A model name the device announces when the inventory has none ("" if none).

    In order: a vendor-specific UPnP device type (``urn:...:device:DCS-935L:1``), a
    product token of the SSDP SERVER header (``DCS-935L/1.0``), a hostname shaped like a
    model number (``HS110(EU)``, ``DCH-S220``), a vendor device type that names a product
    line (``urn:Belkin:device:insight:1``: "WeMo Insight Switch"), the family of a
    "family-serial" hostname (``Lightify-7B5F6B``: "Lightify"). Used for the label only;
    the inventory is unchanged.
    """
    product = ""
    for svc in device.services:
        parts = svc.split(":")
        if len(parts) >= 4 and parts[0] == "urn" and parts[2] == "device":
            name = parts[3]
            if name.lower() not in _UPNP_GENERIC and any(ch.isdigit() for ch in name):
                return name
            product = product or _UPNP_PRODUCTS.get((parts[1].lower(), name.lower()), "")
    for token in device.extras.get("ssdp_server", "").replace(",", " ").split():
        name = token.split("/", 1)[0]
        if "/" in token and _MODEL.match(name):
            return name
    host = device.hostname
    if _MODEL.match(host) and not host.lower().startswith(_NOT_MODELS):
        return host
    if product:
        return product
    family = _FAMILY.match(host)
    if family and not family.group(1).lower().startswith((*_NOT_MODELS, "android", "iphone")):
        return family.group(1)
    return ""


#: Words in a host name that mark a maker's update or download service (``fwupdate.``,
#: ``download.``, ``ota.``; Philips Hue fetches firmware from ``dcp.cpp.philips.com``).
_UPDATE_WORDS = ("update", "upgrade", "firmware", "download", "ota")
_UPDATE_LABELS = frozenset(("fw", "dl", "dcp", "swu", "fota"))


def _update_host(name: str) -> bool:
    """Does the host name look like an update or download service (not a cloud API)?

    Only such names say something about how updates travel (S1.1-08); a plain-HTTP call to
    the maker's API says that data is unprotected (S1.1-12), not how updates are checked.
    """
    labels = name.lower().replace("-", ".").split(".")
    return any(w in label for label in labels for w in _UPDATE_WORDS) or any(
        label in _UPDATE_LABELS for label in labels
    )


def _app_names(app: str) -> set[str]:
    """nDPI names as "Master.App" (e.g. "TLS.Google", "NetBIOS.SMBv1"): match each part."""
    low = app.lower()
    return {low, *low.split(".")} if low else set()


class Observer:
    """Accumulates evidence per MAC; pure (no I/O, no clock)."""

    def __init__(
        self, *, catalogue: Catalogue, credentials: DefaultCredentials | None = None
    ) -> None:
        self.catalogue = catalogue
        self.credentials = credentials or load_credentials()
        self.devices: dict[str, DeviceEvidence] = {}
        self._ip_to_mac: dict[str, str] = {}

    def get(self, mac: str) -> DeviceEvidence:
        """The evidence record of ``mac`` (created empty)."""
        entry = self.devices.get(mac)
        if entry is None:
            entry = self.devices[mac] = DeviceEvidence(mac=mac)
        return entry

    def mac_of(self, ip: str) -> str:
        """The MAC last reported with ``ip`` by the inventory ("" if unknown)."""
        return self._ip_to_mac.get(ip, "")

    def device(self, device: Device) -> None:
        """Inventory facts: identity, announced software, UPnP."""
        entry = self.get(device.mac)
        entry.seen(device.last_seen)
        for ip in device.ips:
            self._ip_to_mac[ip] = device.mac
        entry.vendor = device.vendor or entry.vendor
        entry.model = device.model or entry.model or model_hint(device)
        entry.hostname = device.hostname or entry.hostname
        entry.os_hint = device.os_hint or entry.os_hint
        entry.services = tuple(device.services) or entry.services
        banners = {k: v for k, v in device.extras.items() if k.endswith(("server", "user_agent"))}
        if device.os_hint:
            banners["os_hint"] = device.os_hint
        for key, text in banners.items():
            self.banner(device.mac, source=key, text=text, ts=device.last_seen)
        if hello := device.extras.get(TLS_EXTRA):
            self.tls_hello(device.mac, fingerprint=hello, ts=device.last_seen)
        if login := device.extras.get(LOGIN_EXTRA):
            # The edge's verdict on a cleartext login it read (edge/logins.py): the
            # device accepted a factory credential. The password never left the site.
            entry.add("default_credential", login, device.last_seen)
        for key, (kind, sep) in ACTIVE_EXTRAS.items():
            # The opt-in active check's findings (never a password).
            for detail in device.extras.get(key, "").split(sep):
                if detail.strip():
                    entry.add(kind, detail.strip(), device.last_seen)
        if basic := device.extras.get(CLEARTEXT_LOGIN_EXTRA):
            entry.add("cleartext_login", f"takes logins in clear: {basic}", device.last_seen)
        roles: tuple[tuple[str, Role], ...] = (
            (tls.SERVED_EXTRA, "server"),
            (tls.CLIENT_EXTRA, "client"),
        )
        for key, role in roles:
            if session := device.extras.get(key):
                self.tls_session(device.mac, summary=session, role=role, ts=device.last_seen)
        if any(s.startswith("urn:") for s in device.services) or "ssdp_location" in device.extras:
            entry.add("upnp", device.extras.get("ssdp_location", "SSDP"), device.last_seen)

    def banner(self, mac: str, *, source: str, text: str, ts: float) -> None:
        """A software banner (SSDP SERVER, HTTP User-Agent, mDNS TXT, OS hint)."""
        if not text:
            return
        entry = self.get(mac)
        entry.banners[source] = text
        entry.add("banner", f"{source}: {text}", ts)
        for rule in self.catalogue.outdated:
            if rule.pattern.search(text):
                entry.add("outdated", f"{text} ({rule.why})", ts)

    def flow(
        self,
        mac: str,
        *,
        role: Role,
        peer: Peer,
        app: str,
        port: int,
        ts: float,
        name: str = "",
        conns: int = 1,
    ) -> None:
        """One flow (or a summary of several) of device ``mac``.

        ``role`` is the device's side (``server`` when the other end opened the flow),
        ``peer`` where the other end is, ``port`` the server port, ``name`` the TLS SNI,
        HTTP host or DNS query.
        """
        if not mac:
            return
        cat = self.catalogue
        entry = self.get(mac)
        entry.connections += max(conns, 1)
        entry.seen(ts)
        names = _app_names(app)
        label = app or "port"
        unknown_app = not names or names <= {"unknown"}
        if names & cat.cleartext_apps or (unknown_app and port in cat.cleartext_ports):
            kind = "cleartext_service" if role == "server" else "cleartext_client"
            entry.add(kind, f"{label}/{port}", ts, conns)
        if names & cat.legacy_apps:
            kind = "legacy_tls" if names & {"ssl", "sslv2", "sslv3"} else "legacy_service"
            entry.add(kind, f"{label}/{port}", ts, conns)
        is_http = "http" in names and not names & cat.encrypted_apps
        if is_http and role == "server" and port in cat.http_admin_ports:
            entry.add("http_admin", f"{label}/{port}", ts, conns)
        if peer == "internet" and role == "client":
            if is_http:
                entry.add("http_cloud", name or f"{label}/{port}", ts, conns)
            elif names & cat.encrypted_apps:
                entry.add("tls_cloud", name or f"{label}/{port}", ts, conns)
        # Replies of infrastructure protocols (STUN, ICMP) look inbound but expose nothing.
        infrastructure = bool(names & cat.infrastructure_apps) or port == 0
        if peer == "internet" and role == "server" and not infrastructure:
            kind = "exposure_mgmt" if port in cat.management_ports else "exposure"
            entry.add(kind, f"{label}/{port}", ts, conns)
        if name:
            self._vendor_name(entry, name.lower().rstrip("."), names, ts, conns)

    def _vendor_name(
        self, entry: DeviceEvidence, name: str, names: set[str], ts: float, conns: int
    ) -> None:
        for vendor, suffixes in self.catalogue.update_domains.items():
            if any(name == s or name.endswith("." + s) for s in suffixes):
                entry.add("vendor_contact", f"{vendor}: {name}", ts, conns)
                entry.makers.add(vendor)
                if not _update_host(name):
                    return  # the maker's cloud API: S1.1-12 judges how it is reached
                if names & self.catalogue.encrypted_apps:
                    entry.add("update_tls", name, ts, conns)
                elif "http" in names:
                    entry.add("update_http", name, ts, conns)
                return

    def tls_hello(
        self, mac: str, *, fingerprint: str, ts: float, name: str = "", port: int = 0
    ) -> None:
        """The device sent a TLS/QUIC ClientHello with JA4 ``fingerprint``.

        A best offered version listed in the catalogue's ``[tls] weak_versions`` is
        ``legacy_tls`` evidence: the device cannot protect what it sends by today's rules.
        """
        version = ja4_version(fingerprint)
        weak = self.catalogue.weak_tls_versions.get(version)
        if not mac or not weak:
            return
        hello = fingerprint.split("_", 1)[0]
        target = f" to {name}" + (f" port {port}" if port else "") if name else ""
        self.get(mac).add("legacy_tls", f"offers {weak} at best{target} (JA4 {hello})", ts)

    def tls_session(self, mac: str, *, summary: str, role: Role, ts: float) -> None:
        """The weakest TLS session device ``mac`` served or negotiated (a ServerHello).

        ``summary`` is ``"VVVV:CCCC:port"`` (``detect/labels/tls.py``): a weak version or
        cipher is ``legacy_tls``, TLS 1.3 or 1.2 with AEAD is ``tls_modern``.
        """
        described = tls.describe(summary, role)
        if not mac or described is None:
            return
        strength, detail = described
        if strength == "weak":
            self.get(mac).add("legacy_tls", detail, ts)
        elif strength == "modern":
            self.get(mac).add("tls_modern", detail, ts)

    def login(
        self,
        mac: str,
        *,
        protocol: str,
        user: str,
        password: str,
        accepted: bool,
        ts: float,
    ) -> bool:
        """A login to device ``mac`` that was read in clear (or tried by the active check).

        Records ``default_credential`` when an accepted login used a well-known factory
        credential and returns True; the password is never kept, only where it is a
        default. Rejected or ordinary logins record nothing here (the flow itself is
        already ``cleartext_service`` evidence).
        """
        cred = self.credentials.match(user, password)
        if not mac or cred is None or not accepted:
            return False
        detail = f"{protocol} login as {user!r} with a factory password ({cred.seen_on})"
        self.get(mac).add("default_credential", detail, ts)
        return True

    def summary(self, row: FlowSummary) -> None:
        """A stored/published flow summary: the local side, and a LAN server's side."""
        ts = row.last_seen or row.ts
        role: Role = "server" if row.dir == "in" else "client"
        peer: Peer = "lan" if row.dir == "lan" else "internet"
        conns = max(row.conns, 1)
        self.flow(
            row.mac, role=role, peer=peer, app=row.app, port=row.remote_port, ts=ts,
            name=row.sni, conns=conns,
        )  # fmt: skip
        if row.dir == "lan":
            server = self.mac_of(row.remote_ip)
            if server and server != row.mac:
                self.flow(
                    server, role="server", peer="lan", app=row.app, port=row.remote_port,
                    ts=ts, conns=conns,
                )  # fmt: skip

    def alert(self, mac: str, *, category: str, ts: float, detail: str) -> None:
        """A detection about ``mac`` (posture findings double as evidence).

        Cleartext-login alerts are not mapped: the flows already say which side served.
        """
        kind = {
            "exposure": "exposure",
            "old_os": "outdated",
        }.get(category)
        if mac and kind:
            self.get(mac).add(kind, detail, ts)

    def active(self, mac: str, *, kind: str, detail: str, ts: float) -> None:
        """A result of an opt-in active check (``open_port``, ``default_credential``...)."""
        self.get(mac).add(kind, detail, ts)
