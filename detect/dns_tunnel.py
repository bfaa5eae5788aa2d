"""DNS tunnel rule: data smuggled in query names.

Three signals, from what flow metering exposes (the first queried name of each DNS flow
and its packet and byte counts; record types are not available):

* shape: a label of ``long_label`` characters or more, or of ``random_label_len`` or
  more with a Shannon entropy of ``random_label_entropy`` bits per character;
* volume: one client socket sending ``flow_min_queries`` queries that carry at least
  ``flow_min_name_bytes`` of names (bytes minus ``query_overhead_bytes`` per query);
* spread: ``zone_unique_names`` distinct names under one zone within ``zone_window_s``
  whose subdomain parts have a median length of ``zone_min_median_len`` or more;
* beacon: lookups of fresh names under one zone (each a check-in of C2 over DNS) coming
  like clockwork: ``beacon_min_checkins`` check-ins within ``beacon_history_s`` whose gaps
  pass the beacon rule's dispersion gate (interval MAD part, raised for short series).

Volume, spread or beacon raise ``severity`` (``severity_strong`` when names also look
random; a beacon alone ``severity_beacon``); shape alone raises ``severity_shape_only``.
Records arrive in expiry order, not start order: check-ins are kept sorted by time.
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass, field

from mimamori.detect import _flowfacts as ff
from mimamori.detect._base import Bounded, Rule, make_alert
from mimamori.detect._net import HomeNet
from mimamori.detect.config import DnsTunnelConfig
from mimamori.detect.stats import mad, median, regularity_gate, shannon_entropy
from mimamori.protocol import Alert, FlowRecord

# Second-level labels under which registries sell names (example.co.jp, example.com.au):
# the zone is then three labels long. A heuristic stand-in for the public suffix list.
_SECOND_LEVEL = frozenset(
    [
        "co",
        "com",
        "net",
        "org",
        "ac",
        "ad",
        "ed",
        "go",
        "gr",
        "lg",
        "ne",
        "or",
        "gov",
        "edu",
        "mil",
        "ltd",
        "plc",
        "sch",
        "nic",
    ]
)


def split_zone(name: str) -> tuple[str, str]:
    """Split a query name into (subdomain part, registered zone)."""
    labels = [lb for lb in name.lower().rstrip(".").split(".") if lb]
    if len(labels) <= 2:
        return "", ".".join(labels)
    take = 3 if len(labels[-1]) == 2 and labels[-2] in _SECOND_LEVEL else 2
    if len(labels) <= take:
        return "", ".".join(labels)
    return ".".join(labels[:-take]), ".".join(labels[-take:])


#: Check-ins and fresh names remembered per (host, zone) for the beacon signal.
_CHECKINS = 256
_FRESH = 1024


@dataclass
class _Zone:
    names: dict[str, tuple[float, int]] = field(default_factory=dict)  # name -> (t, len)
    random: bool = False
    mac: str = ""
    fresh: dict[str, float] = field(default_factory=dict)  # names seen within the history
    checkins: list[float] = field(default_factory=list)  # sorted start times
    beacon_at: float = float("-inf")  # when the beacon signal last fired


class DnsTunnelRule(Rule):
    name = "dns_tunnel"

    def __init__(self, *, home: HomeNet, config: DnsTunnelConfig, max_tracked: int) -> None:
        super().__init__(home=home)
        self.cfg = config
        self.zones: Bounded[tuple[str, str], _Zone] = Bounded(max_tracked, _Zone)
        self._cap = 4 * config.zone_unique_names

    def random_looking(self, subdomain: str) -> str:
        """The first label of ``subdomain`` that looks like encoded data, or ""."""
        for label in subdomain.split("."):
            if len(label) >= self.cfg.long_label:
                return label
            if (
                len(label) >= self.cfg.random_label_len
                and shannon_entropy(label) >= self.cfg.random_label_entropy
            ):
                return label
        return ""

    def _allowed(self, zone: str) -> bool:
        return any(zone == z or zone.endswith("." + z) for z in self.cfg.allow_zones)

    def on_flow(self, rec: FlowRecord, now: float) -> list[Alert]:
        if rec.proto != ff.UDP or rec.dst_port not in self.cfg.dns_ports:
            return []
        if not self.home.is_local(rec.src_ip):
            return []
        name = rec.dns_query or (rec.sni if ff.app_base(rec) == "DNS" else "")
        if not name:
            return []
        sub, zone = split_zone(name)
        if not zone or self._allowed(zone):
            return []
        # The registered label itself may be the data (two-label names, DGA domains);
        # only the top-level label is left out.
        odd = self.random_looking(".".join(x for x in (sub, zone.rsplit(".", 1)[0]) if x))
        queries = rec.pkts_src2dst
        name_bytes = rec.bytes_src2dst - queries * self.cfg.query_overhead_bytes
        volume = queries >= self.cfg.flow_min_queries and name_bytes >= self.cfg.flow_min_name_bytes
        state = self.zones.get((rec.src_ip, zone))
        state.mac = rec.src_mac or state.mac
        state.random = state.random or bool(odd)
        if sub and (name in state.names or len(state.names) < self._cap):
            state.names[name] = (rec.last_seen, len(sub))
        horizon = now - self.cfg.zone_window_s
        for stale in [n for n, (t, _) in state.names.items() if t < horizon]:
            del state.names[stale]
        spread = len(state.names) >= self.cfg.zone_unique_names and (
            median([n for _, n in state.names.values()]) >= self.cfg.zone_min_median_len
        )
        beacon = self._checkin(state, name, sub, rec.first_seen, now)
        if volume or spread:
            severity = self.cfg.severity_strong if state.random else self.cfg.severity
        elif beacon:
            severity = self.cfg.severity_strong if state.random else self.cfg.severity_beacon
        elif odd:
            severity = self.cfg.severity_shape_only
        else:
            return []
        signals = [
            s
            for s, on in (
                ("volume", volume),
                ("spread", spread),
                ("beacon", beacon),
                ("shape", odd),
            )
            if on
        ]
        return [
            make_alert(
                rule="dns_tunnel." + "+".join(signals),
                category="dns_tunnel",
                severity=severity,
                at=now,
                actor=rec.src_ip,
                target=zone,
                dedup_key=f"dns_tunnel:{rec.src_ip}:{zone}",
                summary_en=(
                    f"{rec.src_ip} sends DNS queries under {zone} that look like a tunnel "
                    f"({', '.join(signals)}; e.g. {name[:80]})"
                ),
                summary_ja=(
                    f"{rec.src_ip} が {zone} 宛てに DNS トンネルの疑いがある問い合わせを"
                    f"送っています({', '.join(signals)}、例: {name[:80]})"
                ),
                evidence={
                    "signals": signals,
                    "example": name[:253],
                    "flow_queries": queries,
                    "flow_name_bytes": max(0, name_bytes),
                    "unique_names": len(state.names),
                    "random_label": odd[:63],
                    "resolver": rec.dst_ip,
                    "first_seen": rec.first_seen,
                    "last_seen": rec.last_seen,
                },
                mac=state.mac,
            )
        ]

    def _checkin(self, state: _Zone, name: str, sub: str, start: float, now: float) -> bool:
        """Record a lookup of a fresh name; True when the check-ins run like clockwork
        (and the signal has not fired within the history already)."""
        cfg = self.cfg
        horizon = now - cfg.beacon_history_s
        if len(sub) < cfg.beacon_min_sub_len or name in state.fresh:
            return False
        if len(state.fresh) >= _FRESH:  # forget the oldest (dicts keep insertion order)
            del state.fresh[next(iter(state.fresh))]
        state.fresh[name] = start
        times = state.checkins
        i = bisect.bisect_left(times, start)
        near = [times[j] for j in (i - 1, i) if 0 <= j < len(times)]
        if any(abs(start - t) < cfg.beacon_merge_s for t in near):
            return False  # part of a check-in already counted (a burst of lookups)
        times.insert(i, start)
        cut = bisect.bisect_left(times, horizon)
        del times[: max(cut, len(times) - _CHECKINS)]
        if len(times) < cfg.beacon_min_checkins or now - state.beacon_at < cfg.beacon_history_s:
            return False
        gaps = [b - a for a, b in itertools.pairwise(times)]
        period = median(gaps)
        if period <= 0:
            return False
        madm = 1.0 - mad(gaps) / period
        gate = regularity_gate(
            len(gaps),
            floor=cfg.beacon_min_interval_madm,
            random_madm=cfg.beacon_random_madm,
            k=cfg.beacon_small_sample_k,
        )
        if madm < gate:
            return False
        state.beacon_at = now
        return True

    def tick(self, now: float) -> list[Alert]:
        horizon = now - self.cfg.zone_window_s
        beacon_horizon = now - self.cfg.beacon_history_s
        for key, state in self.zones.items():
            if all(t < horizon for t, _ in state.names.values()) and (
                not state.checkins or state.checkins[-1] < beacon_horizon
            ):
                self.zones.pop(key)
        return []
