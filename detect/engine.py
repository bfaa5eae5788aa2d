"""The real-time detection engine the gateway (and ``mimamori replay``) feeds.

The edge calls ``on_flow`` for every expired flow, ``on_arp`` and ``on_discovery`` for
discovery traffic, and ``tick(now)`` at least once a second of traffic time (packet time
in replay, wall-clock time live) so window-based rules can fire; ``finish(now)`` at the
end of a capture. Every call returns the alerts raised by it. The engine holds no I/O and
takes the clock from its arguments only.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from mimamori.protocol import Alert, ArpEvent, DiscoveryEvent, FlowRecord

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Engine:
    """Runs every real-time rule over the records of one site."""

    def __init__(self, *, home_net: Sequence[Network], config: object | None = None) -> None:
        self.home_net = tuple(home_net)
        self.config = config

    def on_flow(self, record: FlowRecord) -> list[Alert]:
        return []

    def on_arp(self, event: ArpEvent) -> list[Alert]:
        return []

    def on_discovery(self, event: DiscoveryEvent) -> list[Alert]:
        return []

    def tick(self, now: float) -> list[Alert]:
        return []

    def finish(self, now: float) -> list[Alert]:
        return self.tick(now)
