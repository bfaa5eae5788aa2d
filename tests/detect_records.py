"""Hand-built flow records and an Engine runner shared by the rule tests.

Thresholds come from the shipped defaults (``CFG``) unless a test overrides them.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from mimamori.detect import Engine, load_config
from mimamori.protocol import Alert, ArpEvent, FlowRecord

HOME = [ipaddress.ip_network("192.168.1.0/24")]
T0 = 1_700_000_000.0
CFG = load_config()


def flow(**kw: Any) -> FlowRecord:
    """A completed TCP flow from a LAN host to an internet server unless told otherwise."""
    base: dict[str, Any] = dict(
        first_seen=T0, last_seen=T0 + 0.5, src_ip="192.168.1.10", src_port=50000,
        dst_ip="203.0.113.5", dst_port=443, proto=6, src_mac="02:00:00:00:00:10",
        pkts_src2dst=10, pkts_dst2src=10, bytes_src2dst=1500, bytes_dst2src=5000,
        app="TLS", syn=1, synack=1, fin=2, expiry="end",
    )  # fmt: skip
    base.update(kw)
    if "last_seen" not in kw:
        base["last_seen"] = base["first_seen"] + 0.5
    return FlowRecord(**base)


def probe(**kw: Any) -> FlowRecord:
    """An unanswered SYN."""
    return flow(**{"pkts_dst2src": 0, "bytes_dst2src": 0, "synack": 0, "fin": 0, **kw})


def run(records: list[Any], config: dict[str, Any] | None = None, **engine: Any) -> list[Alert]:
    eng = Engine(home_net=HOME, config=config, **engine)
    out: list[Alert] = []
    for r in sorted(records, key=lambda r: getattr(r, "last_seen", getattr(r, "ts", 0))):
        if isinstance(r, FlowRecord):
            out += eng.on_flow(r)
        elif isinstance(r, ArpEvent):
            out += eng.on_arp(r)
        else:
            out += eng.on_discovery(r)
    last = max((getattr(r, "last_seen", getattr(r, "ts", 0)) for r in records), default=T0)
    return out + eng.finish(last)


def cats(alerts: list[Alert]) -> set[tuple[str, str, str]]:
    return {(a.category, a.actor, a.severity) for a in alerts}
