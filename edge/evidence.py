"""Per-device label evidence at the edge, from FlowRecords and DiscoveryEvents.

:class:`EvidenceCollector` feeds the pure :class:`~mimamori.detect.labels.Observer` from
the records the gateway sees (richer than what it publishes: the HTTP User-Agent, the
exact initiator of every flow), and :func:`label_replay` is the labeller ``mimamori replay``
uses to print ``labels``. The cloud computes the same labels from published summaries
(``mimamori.cloud.labels``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from mimamori.detect.labels import Catalogue, Label, Observer, assess_all, load_catalogue
from mimamori.detect.labels.observe import Peer
from mimamori.edge.summaries import opened_by_src
from mimamori.protocol import Alert, Device, DiscoveryEvent, FlowRecord, FlowSummary

if TYPE_CHECKING:  # replay imports this module's caller side only at run time
    from mimamori.edge.replay import ReplayResult

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
#: Discovery facts that announce software (firmware versions, OS builds).
_BANNER_FACTS = ("server", "user_agent", "os_hint")


class EvidenceCollector:
    """Collects label evidence per MAC from the gateway's records (no I/O, no clock)."""

    def __init__(self, *, home_net: Iterable[Network], catalogue: Catalogue | None = None) -> None:
        self.home_net = tuple(home_net)
        self.catalogue = catalogue or load_catalogue()
        self.observer = Observer(catalogue=self.catalogue)
        self.bad_records = 0

    def _local(self, ip: str) -> bool | None:
        """True on the LAN, False on the internet, None for multicast/broadcast/garbage."""
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return None
        if addr.is_multicast or addr.is_unspecified or str(addr) == "255.255.255.255":
            return None
        return any(addr in net for net in self.home_net if net.version == addr.version)

    def _kind(self, ip: str) -> int:
        """0 the internet, 1 the LAN, 2 multicast/broadcast (:func:`opened_by_src`)."""
        local = self._local(ip)
        return 2 if local is None else int(local)

    def on_flow(self, rec: FlowRecord) -> None:
        """One metered flow: the side that opened it is the client, the other the server.

        nfstream's ``src`` sent the first packet seen, which is the server when a timeout
        cut a long connection; the summaries' rule (:func:`opened_by_src`) decides, so a
        device's own connection is never read as the internet reaching it.
        """
        src_local, dst_local = self._local(rec.src_ip), self._local(rec.dst_ip)
        if src_local is None and dst_local is None:
            self.bad_records += 1
            return
        ts, name = rec.last_seen, rec.sni or rec.dns_query
        if opened_by_src(rec, self._kind):
            c_mac, c_local, s_ip, s_mac, s_local, port = (
                rec.src_mac, src_local, rec.dst_ip, rec.dst_mac, dst_local, rec.dst_port
            )  # fmt: skip
            answered = rec.pkts_dst2src > 0 and (
                rec.proto != 6 or rec.synack > 0 or rec.bytes_dst2src > 0
            )
        else:  # the server's packet came first: it has spoken
            c_mac, c_local, s_ip, s_mac, s_local, port = (
                rec.dst_mac, dst_local, rec.src_ip, rec.src_mac, src_local, rec.src_port
            )  # fmt: skip
            answered = True
        if c_local and c_mac:
            peer: Peer = "lan" if s_local in (True, None) else "internet"
            self.observer.flow(
                c_mac, role="client", peer=peer, app=rec.app, port=port, ts=ts, name=name
            )
            if rec.user_agent:
                self.observer.banner(c_mac, source="user_agent", text=rec.user_agent, ts=ts)
            if rec.client_fingerprint:
                self.observer.tls_hello(
                    c_mac, fingerprint=rec.client_fingerprint, ts=ts, name=rec.sni or s_ip,
                    port=port,
                )  # fmt: skip
        if s_local and s_mac and answered:
            self.observer.flow(
                s_mac, role="server", peer="lan" if c_local else "internet", app=rec.app,
                port=port, ts=ts,
            )  # fmt: skip

    def on_discovery(self, event: DiscoveryEvent) -> None:
        """Announced software in DHCP/mDNS/SSDP answers (SSDP SERVER, mDNS TXT, ...)."""
        for fact in _BANNER_FACTS:
            if value := event.facts.get(fact):
                source = f"{event.source}_{fact}"
                self.observer.banner(event.mac, source=source, text=value, ts=event.ts)

    def on_login(
        self, *, server_mac: str, protocol: str, user: str, password: str, accepted: bool,
        ts: float,
    ) -> bool:  # fmt: skip
        """A cleartext login read off the wire (Telnet, FTP, HTTP basic) to ``server_mac``.

        For a caller that holds the login itself (the opt-in active check). The passive
        readers, edge/logins.py (FTP, Telnet) and edge/http_logins.py (HTTP Basic and
        Digest), hand on only their verdict, as the device facts ``default_login`` and
        ``cleartext_login`` (inventory extras). True when it was a factory credential.
        """
        return self.observer.login(
            server_mac, protocol=protocol, user=user, password=password, accepted=accepted,
            ts=ts,
        )  # fmt: skip

    def on_device(self, device: Device) -> None:
        """An inventory row (identity, services, extras)."""
        self.observer.device(device)

    def on_summary(self, row: FlowSummary) -> None:
        """A flow summary (when raw records were not kept)."""
        self.observer.summary(row)

    def on_alert(self, alert: Alert) -> None:
        """A detection: exposure and old-OS findings are label evidence too."""
        mac = alert.mac or self.observer.mac_of(alert.actor)
        self.observer.alert(mac, category=alert.category, ts=alert.detected_at,
                            detail=alert.summary_en)  # fmt: skip

    def labels(self, *, now: float, macs: Iterable[str] | None = None) -> list[Label]:
        """Labels of the devices seen (or of ``macs``), most urgent first."""
        wanted = set(macs) if macs is not None else None
        evidence = {
            mac: ev for mac, ev in self.observer.devices.items() if wanted is None or mac in wanted
        }
        return assess_all(evidence, catalogue=self.catalogue, now=now)


def label_replay(result: ReplayResult, *, home_net: Iterable[Network] = ()) -> list[dict[str, Any]]:
    """The ``labels`` of a replay: one per inventoried device (see docs/labels.md)."""
    from mimamori.edge.summaries import DEFAULT_HOME_NET

    collector = EvidenceCollector(home_net=tuple(home_net) or DEFAULT_HOME_NET)
    for device in result.devices:  # first: LAN servers are found by their addresses
        collector.on_device(device)
    if result.records:
        for rec in result.records:
            collector.on_flow(rec)
    else:
        for row in result.summaries:
            collector.on_summary(row)
    for alert in result.alerts:
        collector.on_alert(alert)
    last = result.stats.get("last_ts")
    now = float(last) if last else max((d.last_seen for d in result.devices), default=0.0)
    macs = [d.mac for d in result.devices]
    return [label.to_dict() for label in collector.labels(now=now, macs=macs)]
