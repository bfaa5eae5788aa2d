"""New-device rule: a MAC address the site has not seen before (info: inventory news)."""

from __future__ import annotations

from collections.abc import Iterable

from mimamori.detect._base import Bounded, Rule, clean_mac, make_alert
from mimamori.detect._net import HomeNet
from mimamori.detect.config import NewDeviceConfig
from mimamori.protocol import Alert, ArpEvent, DiscoveryEvent, FlowRecord


class NewDeviceRule(Rule):
    name = "new_device"

    def __init__(
        self,
        *,
        home: HomeNet,
        config: NewDeviceConfig,
        known_macs: Iterable[str],
        max_tracked: int,
    ) -> None:
        super().__init__(home=home)
        self.cfg = config
        # Four times the per-rule bound: MACs are cheap and forgetting one re-announces it.
        self.known: Bounded[str, bool] = Bounded(4 * max_tracked, bool)
        for mac in known_macs:
            if clean_mac(mac):
                self.known.get(clean_mac(mac))
        self.started: float | None = None

    def _seen(self, mac: str, ip: str, via: str, now: float) -> list[Alert]:
        if self.known.peek(mac) is not None:  # the usual case, for every flow: a known MAC
            self.known.get(mac)
            return []
        mac = clean_mac(mac)
        # Group bit set: broadcast or multicast, never one device.
        if not mac or int(mac[:2], 16) & 1 or mac == "00:00:00:00:00:00":
            return []
        if self.started is None:
            self.started = now
        if self.known.peek(mac) is not None:
            self.known.get(mac)
            return []
        self.known.get(mac)
        if now - self.started < self.cfg.learning_s:
            return []
        shown = ip or "(no address yet)"
        return [
            make_alert(
                rule="new_device",
                category="new_device",
                severity=self.cfg.severity,
                at=now,
                actor=ip or mac,
                target=mac,
                dedup_key=f"new_device:{mac}",
                summary_en=f"New device {mac} at {shown} appeared on the LAN (seen via {via})",
                summary_ja=f"新しい機器 {mac}({shown})が LAN に現れました({via} で検出)",
                evidence={"mac": mac, "ip": ip, "via": via},
                mac=mac,
            )
        ]

    def on_flow(self, rec: FlowRecord, now: float) -> list[Alert]:
        if rec.src_mac and self.home.is_local(rec.src_ip):
            return self._seen(rec.src_mac, rec.src_ip, "traffic", now)
        return []

    def on_arp(self, event: ArpEvent, now: float) -> list[Alert]:
        ip = event.src_ip if self.home.is_local(event.src_ip) else ""
        return self._seen(event.src_mac, ip, "arp", now)

    def on_discovery(self, event: DiscoveryEvent, now: float) -> list[Alert]:
        ip = event.ip if event.ip and self.home.is_local(event.ip) else ""
        return self._seen(event.mac, ip, event.source, now)
