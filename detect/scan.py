"""Scan rule: vertical, horizontal, ICMP and ARP sweeps, from and towards the LAN.

Every TCP/UDP flow a source opens is a probe of (host, port), weighted 1 if it failed
(no answer, refused, half-open) and ``completed_weight`` if it became a conversation.
Per source, within ``window_s``: the weighted number of distinct ports on one host
(vertical) and of distinct hosts on one side, LAN or internet (horizontal), are compared
with thresholds, of which at least ``min_failed_share`` must be failed probes (completed
connections only top up: a busy client is not a scanner). Hosts pinged (ICMP) and
addresses asked for over ARP are counted the same way.

Counts are kept incrementally (weights in integer thousandths) and expired through a
per-source queue, so each probe costs O(1) amortised however large the sweep.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

from mimamori.detect import _flowfacts as ff
from mimamori.detect._base import Bounded, Rule, make_alert
from mimamori.detect._net import AddressSet, HomeNet
from mimamori.detect.config import ScanConfig
from mimamori.protocol import Alert, ArpEvent, FlowRecord

_SAMPLE = 20  # ports/hosts listed in an alert's evidence
_PER_SOURCE_LIMIT = 4096  # (host, port) pairs remembered per source: a full /20 sweep
_UNIT = 1000  # weights are counted in thousandths, exactly
_FAILED = _UNIT


@dataclass
class _Host:
    side: str
    ports: dict[int, list[float]] = field(default_factory=dict)  # port -> [last, weight]
    weight: int = 0  # the heaviest of its ports
    vsum: int = 0  # sum of its ports' weights (vertical)
    vfailed: int = 0
    answered: bool = False
    replied: bool = False  # sent anything back (a refusal counts)


@dataclass
class _Source:
    hosts: dict[str, _Host] = field(default_factory=dict)
    order: deque[tuple[float, str, int]] = field(default_factory=deque)
    pairs: int = 0
    side_sum: Counter[str] = field(default_factory=Counter)
    side_failed: Counter[str] = field(default_factory=Counter)
    side_answered: Counter[str] = field(default_factory=Counter)
    side_replied: Counter[str] = field(default_factory=Counter)
    pings: dict[str, float] = field(default_factory=dict)
    ping_order: deque[tuple[float, str]] = field(default_factory=deque)
    alerted: dict[str, tuple[float, str]] = field(default_factory=dict)
    mac: str = ""
    first: float = 0.0


@dataclass
class _ArpSource:
    targets: dict[str, float] = field(default_factory=dict)
    order: deque[tuple[float, str]] = field(default_factory=deque)
    alerted: float = float("-inf")
    mac: str = ""


class ScanRule(Rule):
    name = "scan"

    def __init__(self, *, home: HomeNet, config: ScanConfig, max_tracked: int) -> None:
        super().__init__(home=home)
        self.cfg = config
        self.ignored = AddressSet(config.ignore_sources)
        self.sources: Bounded[str, _Source] = Bounded(max_tracked, _Source)
        self.arp: Bounded[str, _ArpSource] = Bounded(max_tracked, _ArpSource)
        self._completed = round(config.completed_weight * _UNIT)
        self._answer_ports = frozenset(config.udp_answer_ports)

    # --- bookkeeping ------------------------------------------------------------------

    def _add(
        self, src: _Source, rec: FlowRecord, weight: int, answered: bool, replied: bool
    ) -> None:
        host = src.hosts.get(rec.dst_ip)
        if host is None:
            if src.pairs >= _PER_SOURCE_LIMIT:
                return
            host = src.hosts[rec.dst_ip] = _Host(side=self.home.kind(rec.dst_ip))
        entry = host.ports.get(rec.dst_port)
        if entry is None:
            if src.pairs >= _PER_SOURCE_LIMIT:
                return
            src.pairs += 1
            entry = host.ports[rec.dst_port] = [rec.last_seen, 0]
        old = int(entry[1])
        new = max(old, weight)
        entry[0], entry[1] = max(entry[0], rec.last_seen), new
        host.vsum += new - old
        host.vfailed += int(new >= _FAILED) - int(old >= _FAILED)
        if new > host.weight:
            src.side_sum[host.side] += new - host.weight
            src.side_failed[host.side] += int(new >= _FAILED) - int(host.weight >= _FAILED)
            host.weight = new
        if answered and not host.answered:
            host.answered = True
            src.side_answered[host.side] += 1
        if replied and not host.replied:
            host.replied = True
            src.side_replied[host.side] += 1
        src.order.append((entry[0], rec.dst_ip, rec.dst_port))

    def _expire(self, src: _Source, horizon: float) -> None:
        while src.order and src.order[0][0] < horizon:
            t, dst, port = src.order.popleft()
            host = src.hosts.get(dst)
            entry = host.ports.get(port) if host else None
            if host is None or entry is None or entry[0] != t:
                continue  # refreshed since: a later queue item covers it
            weight = int(entry[1])
            del host.ports[port]
            src.pairs -= 1
            host.vsum -= weight
            host.vfailed -= int(weight >= _FAILED)
            heaviest = max((int(e[1]) for e in host.ports.values()), default=0)
            if heaviest != host.weight:
                src.side_sum[host.side] += heaviest - host.weight
                src.side_failed[host.side] += int(heaviest >= _FAILED) - int(host.weight >= _FAILED)
                host.weight = heaviest
            if not host.ports:
                if host.answered:
                    src.side_answered[host.side] -= 1
                if host.replied:
                    src.side_replied[host.side] -= 1
                del src.hosts[dst]
        while src.ping_order and src.ping_order[0][0] < horizon:
            t, dst = src.ping_order.popleft()
            if src.pings.get(dst) == t:
                del src.pings[dst]

    def _due(self, src: _Source, key: str, severity: str, now: float) -> bool:
        """Report ``key`` again only after a window, or if it got more severe."""
        last = src.alerted.get(key)
        order = ("info", "low", "medium", "high", "critical")
        if (
            last
            and now - last[0] < self.cfg.window_s
            and order.index(severity) <= order.index(last[1])
        ):
            return False
        src.alerted[key] = (now, severity)
        return True

    # --- flows ------------------------------------------------------------------------

    def _direction(self, src: str, dst: str) -> str:
        s, d = self.home.kind(src), self.home.kind(dst)
        if s == "local":
            return {"local": "lan", "remote": "outbound"}.get(d, "")
        if s == "remote" and d == "local":
            return "inbound"
        return ""

    def _severity(self, direction: str, answered: bool) -> str:
        if direction == "inbound":
            return self.cfg.severity_inbound_answered if answered else self.cfg.severity_inbound
        return self.cfg.severity_outbound if direction == "outbound" else self.cfg.severity_lan

    def _enough(self, weighted: int, failed: int, threshold: int) -> bool:
        return weighted >= threshold * _UNIT and failed >= self.cfg.min_failed_share * threshold

    def on_flow(self, rec: FlowRecord, now: float) -> list[Alert]:
        direction = self._direction(rec.src_ip, rec.dst_ip)
        if not direction or rec.src_ip in self.ignored:
            return []
        src = self.sources.get(rec.src_ip)
        if not src.first:
            src.first = rec.first_seen
        if direction != "inbound" and rec.src_mac:
            src.mac = rec.src_mac
        self._expire(src, now - self.cfg.window_s)
        if rec.proto in (ff.ICMP, ff.ICMPV6):
            if rec.dst_ip in src.pings or len(src.pings) < _PER_SOURCE_LIMIT:
                src.pings[rec.dst_ip] = rec.last_seen
                src.ping_order.append((rec.last_seen, rec.dst_ip))
            return self._check_icmp(rec.src_ip, src, direction, now)
        if rec.proto not in (ff.TCP, ff.UDP) or ff.looks_reversed(rec):
            return []
        if rec.proto == ff.UDP and (rec.src_port < 1024 or rec.src_port in self._answer_ports):
            # Sent from a service port: a server answering or announcing (DHCP offers to
            # port 68, NetBIOS 137 to 137, SSDP answers to an M-SEARCH), which needs no
            # reply. Probes come from ephemeral ports.
            return []
        failed = ff.failed(rec)
        weight = _FAILED if failed else self._completed
        self._add(src, rec, weight, not failed, rec.pkts_dst2src > 0)
        out: list[Alert] = []
        host = src.hosts.get(rec.dst_ip)
        if host and self._enough(host.vsum, host.vfailed, self.cfg.vertical_ports):
            out += self._vertical(rec, src, host, direction, now)
        side = self.home.kind(rec.dst_ip)
        threshold = (
            self.cfg.horizontal_hosts_inbound
            if direction == "inbound"
            else self.cfg.horizontal_hosts
        )
        if self._enough(src.side_sum[side], src.side_failed[side], threshold):
            out += self._horizontal(rec, src, side, direction, now)
        return out

    def _vertical(
        self, rec: FlowRecord, src: _Source, host: _Host, direction: str, now: float
    ) -> list[Alert]:
        answered = host.vfailed < len(host.ports)
        severity = self._severity(direction, answered)
        if not self._due(src, f"v:{rec.dst_ip}", severity, now):
            return []
        ports = sorted(host.ports)
        return [
            make_alert(
                rule="scan.vertical",
                category="scan",
                severity=severity,
                at=now,
                actor=rec.src_ip,
                target=rec.dst_ip,
                dedup_key=f"scan:{rec.src_ip}:vertical:{rec.dst_ip}",
                summary_en=(
                    f"{rec.src_ip} probed {len(ports)} ports on {rec.dst_ip} "
                    f"({host.vfailed} unanswered or refused) within {self.cfg.window_s:.0f} s"
                ),
                summary_ja=(
                    f"{rec.src_ip} が {rec.dst_ip} の {len(ports)} 個のポートを"
                    f"{self.cfg.window_s:.0f} 秒以内に調べました"
                    f"(応答なし・拒否 {host.vfailed} 件)"
                ),
                evidence={
                    "direction": direction,
                    "ports": len(ports),
                    "failed": host.vfailed,
                    "weighted": host.vsum / _UNIT,
                    "sample_ports": ports[:_SAMPLE],
                    "first_seen": src.first,
                    "last_seen": rec.last_seen,
                },
                mac=src.mac,
            )
        ]

    def _horizontal(
        self, rec: FlowRecord, src: _Source, side: str, direction: str, now: float
    ) -> list[Alert]:
        answered = src.side_answered[side] > 0
        severity = self._severity(direction, answered)
        silent = direction == "outbound" and src.side_replied[side] == 0
        if silent:
            severity = self.cfg.severity_outbound_silent
        if not self._due(src, f"h:{side}", severity, now):
            return []
        hosts = sorted(d for d, h in src.hosts.items() if h.side == side)
        by_port = Counter(p for d in hosts for p in src.hosts[d].ports)
        ports = [p for p, _ in by_port.most_common(8)]
        failed = src.side_failed[side]
        where, where_ja = (
            ("the internet", "インターネット") if side == "remote" else ("the LAN", "LAN")
        )
        port_list = ",".join(map(str, ports))
        return [
            make_alert(
                rule="scan.horizontal",
                category="scan",
                severity=severity,
                at=now,
                actor=rec.src_ip,
                target=f"{len(hosts)} hosts",
                dedup_key=f"scan:{rec.src_ip}:horizontal:{direction}",
                summary_en=(
                    f"{rec.src_ip} probed {len(hosts)} hosts on {where} "
                    f"({failed} unanswered or refused), mostly on ports {port_list}, "
                    f"within {self.cfg.window_s:.0f} s"
                    + ("; none answered at all: the internet link may be down" if silent else "")
                ),
                summary_ja=(
                    f"{rec.src_ip} が{where_ja}上の {len(hosts)} 台のホストを"
                    f"{self.cfg.window_s:.0f} 秒以内に調べました"
                    f"(主なポート {port_list}、応答なし・拒否 {failed} 件)"
                    + (
                        "。どこからも応答がなく、インターネット回線の不通も考えられます"
                        if silent
                        else ""
                    )
                ),
                evidence={
                    "direction": direction,
                    "hosts": len(hosts),
                    "failed": failed,
                    "weighted": src.side_sum[side] / _UNIT,
                    "replied": src.side_replied[side],
                    "sample_hosts": hosts[:_SAMPLE],
                    "top_ports": ports,
                    "first_seen": src.first,
                    "last_seen": rec.last_seen,
                },
                mac=src.mac,
            )
        ]

    def _check_icmp(self, ip: str, src: _Source, direction: str, now: float) -> list[Alert]:
        if len(src.pings) < self.cfg.icmp_hosts:
            return []
        severity = self._severity(direction, False)
        if not self._due(src, "icmp", severity, now):
            return []
        hosts = sorted(src.pings)
        return [
            make_alert(
                rule="scan.icmp",
                category="scan",
                severity=severity,
                at=now,
                actor=ip,
                target=f"{len(hosts)} hosts",
                dedup_key=f"scan:{ip}:icmp",
                summary_en=f"{ip} pinged {len(hosts)} hosts within {self.cfg.window_s:.0f} s",
                summary_ja=(
                    f"{ip} が {self.cfg.window_s:.0f} 秒以内に {len(hosts)} 台のホストへ"
                    "ping を送りました"
                ),
                evidence={"direction": direction, "hosts": len(hosts), "sample": hosts[:_SAMPLE]},
                mac=src.mac,
            )
        ]

    # --- ARP --------------------------------------------------------------------------

    def on_arp(self, event: ArpEvent, now: float) -> list[Alert]:
        if event.op != "request" or event.src_ip in ("0.0.0.0", event.target_ip):
            return []  # probes (RFC 5227) and gratuitous announcements are not sweeps
        if event.src_ip in self.ignored:
            return []
        src = self.arp.get(event.src_ip)
        src.mac = event.src_mac
        if event.target_ip in src.targets or len(src.targets) < _PER_SOURCE_LIMIT:
            src.targets[event.target_ip] = event.ts
            src.order.append((event.ts, event.target_ip))
        horizon = now - self.cfg.arp_window_s
        while src.order and src.order[0][0] < horizon:
            t, target = src.order.popleft()
            if src.targets.get(target) == t:
                del src.targets[target]
        if len(src.targets) < self.cfg.arp_targets or now - src.alerted < self.cfg.arp_window_s:
            return []
        src.alerted = now
        targets = sorted(src.targets)
        return [
            make_alert(
                rule="scan.arp",
                category="scan",
                severity=self.cfg.severity_lan,
                at=now,
                actor=event.src_ip,
                target=f"{len(targets)} addresses",
                dedup_key=f"scan:{event.src_ip}:arp",
                summary_en=(
                    f"{event.src_ip} asked for {len(targets)} LAN addresses over ARP "
                    f"within {self.cfg.arp_window_s:.0f} s (ARP sweep)"
                ),
                summary_ja=(
                    f"{event.src_ip} が {self.cfg.arp_window_s:.0f} 秒以内に "
                    f"{len(targets)} 個の LAN アドレスを ARP で探索しました"
                ),
                evidence={"targets": len(targets), "sample": targets[:_SAMPLE]},
                mac=event.src_mac,
            )
        ]

    def tick(self, now: float) -> list[Alert]:
        horizon = now - self.cfg.window_s
        for ip, src in self.sources.items():
            self._expire(src, horizon)
            if not (src.hosts or src.pings):
                self.sources.pop(ip)
        arp_horizon = now - self.cfg.arp_window_s
        for ip, arp in self.arp.items():
            if not arp.order or arp.order[-1][0] < arp_horizon:
                self.arp.pop(ip)
        return []
