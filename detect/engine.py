"""The real-time detection engine the gateway (and ``mimamori replay``) feeds.

The edge calls ``on_flow`` for every expired flow, ``on_arp`` and ``on_discovery`` for
discovery traffic, and ``tick(now)`` at least once a second of traffic time (packet time
in replay, wall-clock time live) so window-based rules can fire; ``finish(now)`` at the
end of a capture. Every call returns the alerts raised by it. The engine holds no I/O and
takes the clock from its arguments only: ``now`` is the latest time seen in a record or
a tick, so a replay gives the same alerts as live traffic would.

An alert whose ``dedup_key`` was raised within ``engine.suppress_s`` (a day,
``suppress_posture_s``, for info and low findings) is dropped unless it is more severe
than the one raised before (an escalation is news).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mimamori.detect._base import Rule
from mimamori.detect._net import HomeNet
from mimamori.detect.beacon import BeaconRule
from mimamori.detect.bruteforce import BruteforceRule
from mimamori.detect.config import DetectConfig, load_config
from mimamori.detect.dns_tunnel import DnsTunnelRule
from mimamori.detect.intel import Intel
from mimamori.detect.intel_match import IntelMatchRule
from mimamori.detect.lateral import LateralMovementRule
from mimamori.detect.malware import MalwareTrafficRule
from mimamori.detect.new_device import NewDeviceRule
from mimamori.detect.posture import CleartextRule, ExposureRule, OldOsRule
from mimamori.detect.scan import ScanRule
from mimamori.protocol import (
    PAGING_SEVERITIES,
    SEVERITIES,
    Alert,
    ArpEvent,
    DiscoveryEvent,
    FlowRecord,
)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_RANK = {s: i for i, s in enumerate(SEVERITIES)}
#: A rule's per-item method: (record or event, engine clock) -> alerts.
Handler = Callable[[Any, float], list[Alert]]


@dataclass
class EngineStats:
    """Counters for the gateway's health reporting."""

    flows: int = 0
    arp: int = 0
    discovery: int = 0
    alerts: int = 0
    suppressed: int = 0
    rule_errors: int = 0
    last_error: str = ""
    by_category: dict[str, int] = field(default_factory=dict)


class Engine:
    """Runs every real-time rule over the records of one site."""

    def __init__(
        self,
        *,
        home_net: Sequence[Network],
        config: DetectConfig | dict[str, Any] | str | None = None,
        intel: Intel | None = None,
        known_macs: Iterable[str] = (),
        vendor_of: Callable[[str], str] | None = None,
    ) -> None:
        """``intel``: indicators for intel_match (empty if None). ``known_macs``: devices
        the site already knows (no new_device alert). ``vendor_of``: MAC -> vendor name
        (the edge's OUI lookup), used to recognise smart-home devices whose cloud polling
        is expected."""
        self.home_net = tuple(home_net)
        self.config = config if isinstance(config, DetectConfig) else load_config(config)
        home = HomeNet(self.home_net)
        cfg = self.config
        limit = cfg.engine.max_tracked
        self.intel_rule = IntelMatchRule(home=home, config=cfg.intel_match, intel=intel or Intel())
        self.rules: list[Rule] = [
            ScanRule(home=home, config=cfg.scan, max_tracked=limit),
            BeaconRule(home=home, config=cfg.beacon, max_tracked=limit, vendor_of=vendor_of),
            BruteforceRule(home=home, config=cfg.bruteforce, max_tracked=limit),
            DnsTunnelRule(home=home, config=cfg.dns_tunnel, max_tracked=limit),
            LateralMovementRule(home=home, config=cfg.lateral_movement, max_tracked=limit),
            self.intel_rule,
            MalwareTrafficRule(home=home, config=cfg.malware_traffic, max_tracked=limit),
            NewDeviceRule(
                home=home, config=cfg.new_device, known_macs=known_macs, max_tracked=limit
            ),
            ExposureRule(home=home, config=cfg.exposure),
            CleartextRule(home=home, config=cfg.cleartext_credentials),
            OldOsRule(home=home, config=cfg.old_os, max_tracked=limit),
        ]
        # Each rule's bound per-item methods, by method name; rebuilt if ``rules`` changes.
        self._bound: dict[str, list[tuple[Rule, Handler]]] = {}
        self._bound_for: list[Rule] = []
        self.now = 0.0
        self.stats = EngineStats()
        self._raised: dict[str, tuple[float, int]] = {}  # dedup_key -> (time, severity rank)
        self._last_housekeeping = float("-inf")

    def set_intel(self, intel: Intel) -> None:
        """Swap in refreshed threat intelligence (from the cloud's bundle)."""
        self.intel_rule.intel = intel

    # --- input ------------------------------------------------------------------------

    def on_flow(self, record: FlowRecord) -> list[Alert]:
        """Feed one expired flow; returns the alerts it raised."""
        self.stats.flows += 1
        self._advance(record.last_seen)
        return self._run("on_flow", record)

    def on_arp(self, event: ArpEvent) -> list[Alert]:
        """Feed one ARP packet."""
        self.stats.arp += 1
        self._advance(event.ts)
        return self._run("on_arp", event)

    def on_discovery(self, event: DiscoveryEvent) -> list[Alert]:
        """Feed one DHCP/mDNS/SSDP/NBNS fact."""
        self.stats.discovery += 1
        self._advance(event.ts)
        return self._run("on_discovery", event)

    def tick(self, now: float) -> list[Alert]:
        """Advance the clock; rules with time-driven checks run (throttled)."""
        self._advance(now)
        if self.now - self._last_housekeeping < self.config.engine.housekeeping_s:
            return []
        self._last_housekeeping = self.now
        horizon = self.now - max(
            self.config.engine.suppress_s, self.config.engine.suppress_posture_s
        )
        for key in [k for k, (t, _) in self._raised.items() if t < horizon]:
            del self._raised[key]
        return self._run_clock(lambda rule: rule.tick(self.now))

    def finish(self, now: float) -> list[Alert]:
        """End of input (capture end or shutdown): rules report what they still hold."""
        self._advance(now)
        return self._run_clock(lambda rule: rule.finish(self.now))

    # --- internals --------------------------------------------------------------------

    def _advance(self, t: float) -> None:
        # Records arrive at expiry, slightly out of order: the clock never goes back.
        if t > self.now:
            self.now = t

    def _run(self, method: str, item: Any) -> list[Alert]:
        # The per-record path (tens of thousands of calls a minute on a busy LAN): bound
        # methods prepared once, and no work for the usual empty answer.
        if self.rules != self._bound_for:
            self._bound_for = list(self.rules)
            self._bound = {}
        handlers = self._bound.get(method)
        if handlers is None:
            handlers = self._bound[method] = [(r, getattr(r, method)) for r in self.rules]
        out: list[Alert] = []
        now = self.now
        for rule, handle in handlers:
            try:
                alerts = handle(item, now)
            except Exception as exc:  # a rule's bug or an odd record must not stop the rest
                self._failed(rule, exc)
                continue
            if alerts:
                out += [a for a in alerts if self._admit(a)]
        return out

    def _run_clock(self, call: Callable[[Rule], list[Alert]]) -> list[Alert]:
        out: list[Alert] = []
        for rule in self.rules:
            try:
                alerts = call(rule)
            except Exception as exc:  # a rule's bug must not stop the rest
                self._failed(rule, exc)
                continue
            out += [a for a in alerts if self._admit(a)]
        return out

    def _failed(self, rule: Rule, exc: Exception) -> None:
        self.stats.rule_errors += 1
        self.stats.last_error = f"{rule.name}: {type(exc).__name__}: {exc}"

    def _admit(self, alert: Alert) -> bool:
        rank = _RANK[alert.severity]
        window = (
            self.config.engine.suppress_s
            if alert.severity in PAGING_SEVERITIES
            else self.config.engine.suppress_posture_s
        )
        previous = self._raised.get(alert.dedup_key)
        if previous is not None:
            at, old_rank = previous
            if alert.detected_at - at < window and rank <= old_rank:
                self.stats.suppressed += 1
                return False
        self._raised[alert.dedup_key] = (alert.detected_at, rank)
        self.stats.alerts += 1
        self.stats.by_category[alert.category] = self.stats.by_category.get(alert.category, 0) + 1
        return True
