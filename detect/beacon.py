"""Beacon rule: one LAN host calling back to one internet destination like clockwork.

Call-backs are connection starts of answered outbound flows, keyed by (LAN host,
destination) where the destination is the TLS/HTTP server name when known, else the IP.
Starts closer than ``merge_s`` are one call-back. When a pair has ``min_connections``
call-backs its series is scored with :func:`mimamori.detect.stats.beacon_score` (at most
every ``evaluate_every_s``) and reported when the score reaches ``threshold`` and the
dispersion of the gaps alone passes ``min_interval_madm``. Destinations used by much of
the site's fleet (prevalence), allowlisted domains and periodic-by-design protocols are
not scored.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from mimamori.detect import _flowfacts as ff
from mimamori.detect._base import Bounded, Rule, make_alert
from mimamori.detect._net import HomeNet
from mimamori.detect.config import BeaconConfig
from mimamori.detect.stats import BeaconScore, beacon_score, regularity_gate
from mimamori.protocol import SEVERITIES, Alert, FlowRecord

_RANK = {s: i for i, s in enumerate(SEVERITIES)}
#: How many of the latest call-backs a record may merge into (records arrive a little out
#: of start order, since they come at expiry).
_MERGE_LOOKBACK = 8


@dataclass
class _Pair:
    starts: deque[float]
    sizes: deque[float]
    last_eval: float = float("-inf")
    dirty: bool = False
    port: int = 0
    mac: str = ""
    sports: set[int] = field(default_factory=set)
    sport_order: deque[int] = field(default_factory=deque)
    reported_at: float = float("-inf")
    reported: str = ""  # severity of the last report


@dataclass
class _Dest:
    devices: dict[str, float] = field(default_factory=dict)


def domain_allowed(name: str, suffixes: Collection[str]) -> bool:
    """True if ``name`` is one of ``suffixes`` or a subdomain of one.

    Pass a set when calling per record: the check then costs one lookup per label of
    ``name`` instead of one comparison per suffix."""
    name = name.lower().rstrip(".")
    if not isinstance(suffixes, (set, frozenset)):
        suffixes = frozenset(suffixes)
    while True:
        if name in suffixes:
            return True
        dot = name.find(".")
        if dot < 0:
            return False
        name = name[dot + 1 :]


class BeaconRule(Rule):
    name = "beacon"

    def __init__(
        self,
        *,
        home: HomeNet,
        config: BeaconConfig,
        max_tracked: int,
        vendor_of: Callable[[str], str] | None = None,
    ) -> None:
        super().__init__(home=home)
        self.cfg = config
        self.vendor_of = vendor_of
        self._quiet_vendors = [v.lower() for v in config.quiet_vendors]
        size = config.max_history
        self.pairs: Bounded[tuple[str, str], _Pair] = Bounded(
            max_tracked,
            lambda: _Pair(
                starts=deque(maxlen=size), sizes=deque(maxlen=size), sport_order=deque(maxlen=size)
            ),
        )
        self.dests: Bounded[str, _Dest] = Bounded(max_tracked, _Dest)
        self.devices: Bounded[str, float] = Bounded(max_tracked, float)
        # 5-tuples whose last record was cut by the meter's active timeout: the next
        # record is the same connection continuing, not a new call-back.
        self.continuing: Bounded[tuple[str, int, str, int, int], float] = Bounded(
            max_tracked, float
        )
        self._ignore_apps = {a.upper() for a in config.ignore_apps}
        self._allow_domains = frozenset(
            d.lower().rstrip(".") for d in (*config.allow_domains, *config.vendor_cloud_domains)
        )
        self._ignore_ports = set(config.ignore_ports)

    def on_flow(self, rec: FlowRecord, now: float) -> list[Alert]:
        if not self.home.is_local(rec.src_ip):
            return []
        self.devices.get(rec.src_ip)
        if not self.home.is_remote(rec.dst_ip) or rec.proto not in (ff.TCP, ff.UDP):
            return []
        if ff.app_base(rec).upper() in self._ignore_apps or ff.looks_reversed(rec):
            return []
        if rec.dst_port in self._ignore_ports or not ff.answered(rec):
            return []
        five = (rec.src_ip, rec.src_port, rec.dst_ip, rec.dst_port, rec.proto)
        was_cut = self.continuing.peek(five) is not None
        if rec.expiry == "active":
            self.continuing.get(five)
        else:
            self.continuing.pop(five)
        if was_cut:
            return []
        dest = (rec.sni or rec.dst_ip).lower()
        if domain_allowed(dest, self._allow_domains):
            return []
        self.dests.get(dest).devices[rec.src_ip] = now
        pair = self.pairs.get((rec.src_ip, dest))
        # A record from a source port this pair already used is a piece of a session
        # that was open before, re-metered after each idle expiry: a keep-alive on a
        # long-lived TCP connection, or a UDP heartbeat from the one socket a P2P camera,
        # VoIP phone or VPN client keeps open for NAT. The device kept talking, it did
        # not call back. Operating systems cycle through ~28,000 ephemeral ports, so a
        # new connection (or a new socket) reusing one within the history is rare.
        if rec.src_port in pair.sports:
            return []
        if len(pair.sport_order) == pair.sport_order.maxlen:
            pair.sports.discard(pair.sport_order[0])
        pair.sport_order.append(rec.src_port)
        pair.sports.add(rec.src_port)
        pair.port, pair.mac = rec.dst_port, rec.src_mac or pair.mac
        size = float(rec.bytes_src2dst)
        # Records arrive in expiry order, not start order: a call-back may start before
        # the last one seen. Merge with any recent start within merge_s, either side.
        for back in range(1, min(len(pair.starts), _MERGE_LOOKBACK) + 1):
            if abs(rec.first_seen - pair.starts[-back]) < self.cfg.merge_s:
                pair.sizes[-back] += size
                break
        else:
            pair.starts.append(rec.first_seen)
            pair.sizes.append(size)
        pair.dirty = True
        if len(pair.starts) >= self.cfg.min_connections and (
            now - pair.last_eval >= self.cfg.evaluate_every_s
        ):
            return self._evaluate(rec.src_ip, dest, pair, now)
        return []

    def _prevalent(self, dest: str, now: float) -> bool:
        entry = self.dests.peek(dest)
        if entry is None:
            return False
        horizon = now - self.cfg.history_s
        users = sum(1 for t in entry.devices.values() if t >= horizon)
        fleet = max(1, len(self.devices))
        return (
            users >= self.cfg.prevalence_min_devices
            and users >= self.cfg.prevalence_fraction * fleet
        )

    def _evaluate(self, src: str, dest: str, pair: _Pair, now: float) -> list[Alert]:
        pair.last_eval, pair.dirty = now, False
        horizon = now - self.cfg.history_s
        while pair.starts and pair.starts[0] < horizon:
            pair.starts.popleft()
            pair.sizes.popleft()
        if len(pair.starts) < self.cfg.min_connections or self._prevalent(dest, now):
            return []
        # Flows reach us at expiry, not in start order: score the sorted series.
        series = sorted(zip(pair.starts, pair.sizes, strict=True))
        score = beacon_score(
            [t for t, _ in series],
            [s for _, s in series],
            full_count=self.cfg.full_count,
            size_reference_bytes=self.cfg.size_reference_bytes,
            skew_tolerance=self.cfg.skew_tolerance,
        )
        gate = regularity_gate(
            score.connections - 1,
            floor=self.cfg.min_interval_madm,
            random_madm=self.cfg.random_madm,
            k=self.cfg.small_sample_k,
        )
        if score.score < self.cfg.threshold or score.interval_madm < gate:
            return []
        alert = self._alert(src, dest, pair, score, now, series[0][0], series[-1][0])
        # A periodic pair stays periodic: report it once per history window unless it
        # gets more severe, rather than every time the engine's suppression lapses.
        if now - pair.reported_at < self.cfg.history_s and _RANK[alert.severity] <= _RANK.get(
            pair.reported, -1
        ):
            return []
        pair.reported_at, pair.reported = now, alert.severity
        return [alert]

    def quiet_device(self, mac: str) -> str:
        """The vendor if ``mac`` belongs to a smart-home device that polls by design."""
        mac = mac.lower()
        hit = self.cfg.quiet_device_ouis.get(mac[:8], "")
        if hit or not (self.vendor_of and mac):
            return hit
        vendor = self.vendor_of(mac)
        low = vendor.lower()
        return vendor if any(v in low for v in self._quiet_vendors) else ""

    def _alert(
        self,
        src: str,
        dest: str,
        pair: _Pair,
        score: BeaconScore,
        now: float,
        first: float,
        last: float,
    ) -> Alert:
        strong = score.score >= self.cfg.strong_threshold
        period = score.median_interval
        quiet = self.quiet_device(pair.mac)
        if quiet:
            severity = self.cfg.severity_quiet_device
        else:
            severity = self.cfg.severity_strong if strong else self.cfg.severity
        return make_alert(
            rule="beacon.realtime",
            category="beacon",
            severity=severity,
            at=now,
            actor=src,
            target=f"{dest}:{pair.port}",
            dedup_key=f"beacon:{src}:{dest}",
            summary_en=(
                f"{src} calls back to {dest}:{pair.port} every {period:.1f} s "
                f"({score.connections} times, beacon score {score.score:.2f})"
            ),
            summary_ja=(
                f"{src} が {dest}:{pair.port} へ約 {period:.1f} 秒ごとに定期通信しています"
                f"({score.connections} 回、ビーコンスコア {score.score:.2f})"
            ),
            evidence={
                "score": round(score.score, 3),
                "timing": round(score.timing, 3),
                "interval_skew": round(score.interval_skew, 3),
                "interval_madm": round(score.interval_madm, 3),
                "count_score": round(score.count, 3),
                "size_skew": round(score.size_skew, 3),
                "size_madm": round(score.size_madm, 3),
                "size_smallness": round(score.size_smallness, 3),
                "connections": score.connections,
                "median_interval_s": round(period, 3),
                "median_bytes": score.median_size,
                "quiet_device": quiet,
                "first_seen": first,
                "last_seen": last,
            },
            mac=pair.mac,
        )

    def tick(self, now: float) -> list[Alert]:
        out: list[Alert] = []
        for (src, dest), pair in self.pairs.items():
            if pair.dirty and now - pair.last_eval >= self.cfg.evaluate_every_s:
                out += self._evaluate(src, dest, pair, now)
            elif pair.starts and pair.starts[-1] < now - self.cfg.history_s:
                self.pairs.pop((src, dest))
        return out

    def finish(self, now: float) -> list[Alert]:
        out: list[Alert] = []
        for (src, dest), pair in self.pairs.items():
            if pair.dirty and len(pair.starts) >= self.cfg.min_connections:
                out += self._evaluate(src, dest, pair, now)
        return out
