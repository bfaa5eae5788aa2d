"""Scan rule: vertical, horizontal, ICMP and ARP sweeps, from and towards the LAN.

Every TCP/UDP flow a source opens is a probe of (host, port), weighted 1 if it failed
(no answer, refused, half-open) and ``completed_weight`` if it became a conversation.
Per source, within ``window_s``: the weighted number of distinct ports on one host
(vertical) and of distinct hosts (horizontal, any port) are compared with thresholds;
hosts pinged (ICMP) and addresses asked for over ARP are counted the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mimamori.detect import _flowfacts as ff
from mimamori.detect._base import Bounded, Rule, make_alert
from mimamori.detect._net import HomeNet, matches_any
from mimamori.detect.config import ScanConfig
from mimamori.protocol import Alert, ArpEvent, FlowRecord

_SAMPLE = 20  # ports/hosts listed in an alert's evidence
_PER_SOURCE_LIMIT = 4096  # probes remembered per source: a full /20 sweep


@dataclass
class _Source:
    # (dst, port) -> (last time, weight); dst -> (last time, weight); icmp dst -> time
    ports: dict[tuple[str, int], tuple[float, float]] = field(default_factory=dict)
    hosts: dict[str, tuple[float, float, bool]] = field(default_factory=dict)
    pings: dict[str, float] = field(default_factory=dict)
    mac: str = ""
    first: float = 0.0


@dataclass
class _ArpSource:
    targets: dict[str, float] = field(default_factory=dict)
    mac: str = ""


def _expire(d: dict[Any, Any], horizon: float, key: int | None = 0) -> None:
    """Drop entries last seen before ``horizon`` (value[key], or the value itself)."""
    stale = [k for k, v in d.items() if (v if key is None else v[key]) < horizon]
    for k in stale:
        del d[k]


class ScanRule(Rule):
    name = "scan"

    def __init__(self, *, home: HomeNet, config: ScanConfig, max_tracked: int) -> None:
        super().__init__(home=home)
        self.cfg = config
        self.sources: Bounded[str, _Source] = Bounded(max_tracked, _Source)
        self.arp: Bounded[str, _ArpSource] = Bounded(max_tracked, _ArpSource)

    # --- flows ------------------------------------------------------------------------

    def _direction(self, src: str, dst: str) -> str:
        s, d = self.home.kind(src), self.home.kind(dst)
        if s == "local":
            return {"local": "lan", "remote": "outbound"}.get(d, "")
        if s == "remote" and d == "local":
            return "inbound"
        return ""

    def on_flow(self, rec: FlowRecord, now: float) -> list[Alert]:
        direction = self._direction(rec.src_ip, rec.dst_ip)
        if not direction or matches_any(rec.src_ip, self.cfg.ignore_sources):
            return []
        src = self.sources.get(rec.src_ip)
        if not src.first:
            src.first = rec.first_seen
        if direction != "inbound" and rec.src_mac:
            src.mac = rec.src_mac
        if rec.proto in (ff.ICMP, ff.ICMPV6):
            if len(src.pings) < _PER_SOURCE_LIMIT:
                src.pings[rec.dst_ip] = rec.last_seen
            return self._check_icmp(rec.src_ip, src, direction, now)
        if rec.proto not in (ff.TCP, ff.UDP) or ff.looks_reversed(rec):
            return []
        weight = 1.0 if ff.failed(rec) else self.cfg.completed_weight
        key = (rec.dst_ip, rec.dst_port)
        old = src.ports.get(key)
        if old is not None or len(src.ports) < _PER_SOURCE_LIMIT:
            src.ports[key] = (rec.last_seen, max(weight, old[1] if old else 0.0))
        host = src.hosts.get(rec.dst_ip)
        if host is not None or len(src.hosts) < _PER_SOURCE_LIMIT:
            answered = ff.completed(rec) or (host is not None and host[2])
            src.hosts[rec.dst_ip] = (
                rec.last_seen,
                max(weight, host[1] if host else 0.0),
                answered,
            )
        return self._check_tcp_udp(rec, src, direction, now)

    def _severity(self, direction: str, answered: bool) -> str:
        if direction == "inbound":
            return self.cfg.severity_inbound_answered if answered else self.cfg.severity_inbound
        return self.cfg.severity_outbound if direction == "outbound" else self.cfg.severity_lan

    def _check_tcp_udp(
        self, rec: FlowRecord, src: _Source, direction: str, now: float
    ) -> list[Alert]:
        horizon = now - self.cfg.window_s
        _expire(src.ports, horizon)
        _expire(src.hosts, horizon)
        out: list[Alert] = []
        on_host = {p: w for (d, p), (_, w) in src.ports.items() if d == rec.dst_ip}
        vertical = round(sum(on_host.values()), 6)  # 50 x 0.1 must be 5
        if vertical >= self.cfg.vertical_ports:
            failed = sum(1 for w in on_host.values() if w >= 1.0)
            answered = failed < len(on_host)
            ports = sorted(on_host)
            out.append(
                make_alert(
                    rule="scan.vertical",
                    category="scan",
                    severity=self._severity(direction, answered),
                    at=now,
                    actor=rec.src_ip,
                    target=rec.dst_ip,
                    dedup_key=f"scan:{rec.src_ip}:vertical:{rec.dst_ip}",
                    summary_en=(
                        f"{rec.src_ip} probed {len(ports)} ports on {rec.dst_ip} "
                        f"({failed} unanswered or refused) within {self.cfg.window_s:.0f} s"
                    ),
                    summary_ja=(
                        f"{rec.src_ip} が {rec.dst_ip} の {len(ports)} 個のポートを"
                        f"{self.cfg.window_s:.0f} 秒以内に調べました(応答なし・拒否 {failed} 件)"
                    ),
                    evidence={
                        "direction": direction,
                        "ports": len(ports),
                        "failed": failed,
                        "weighted": round(vertical, 2),
                        "sample_ports": ports[:_SAMPLE],
                        "first_seen": src.first,
                        "last_seen": rec.last_seen,
                    },
                    mac=src.mac,
                )
            )
        threshold = (
            self.cfg.horizontal_hosts_inbound
            if direction == "inbound"
            else self.cfg.horizontal_hosts
        )
        # Only hosts on the same side as this probe's target: a LAN host's internet
        # browsing does not add to its LAN sweep.
        same_side = {
            d: v for d, v in src.hosts.items() if self.home.kind(d) == self.home.kind(rec.dst_ip)
        }
        horizontal = round(sum(w for _, w, _ in same_side.values()), 6)
        if horizontal >= threshold:
            failed = sum(1 for _, w, _ in same_side.values() if w >= 1.0)
            answered = any(a for _, _, a in same_side.values())
            ports = sorted({p for (d, p) in src.ports if d in same_side})
            hosts = sorted(same_side)
            where = "the internet" if self.home.kind(rec.dst_ip) == "remote" else "the LAN"
            where_ja = "インターネット" if where == "the internet" else "LAN"
            out.append(
                make_alert(
                    rule="scan.horizontal",
                    category="scan",
                    severity=self._severity(direction, answered),
                    at=now,
                    actor=rec.src_ip,
                    target=f"{len(hosts)} hosts",
                    dedup_key=f"scan:{rec.src_ip}:horizontal:{direction}",
                    summary_en=(
                        f"{rec.src_ip} probed {len(hosts)} hosts on {where} "
                        f"({failed} unanswered or refused) on ports "
                        f"{','.join(map(str, ports[:8]))} within {self.cfg.window_s:.0f} s"
                    ),
                    summary_ja=(
                        f"{rec.src_ip} が{where_ja}上の {len(hosts)} 台のホストを"
                        f"{self.cfg.window_s:.0f} 秒以内に調べました"
                        f"(ポート {','.join(map(str, ports[:8]))}、応答なし・拒否 {failed} 件)"
                    ),
                    evidence={
                        "direction": direction,
                        "hosts": len(hosts),
                        "failed": failed,
                        "weighted": round(horizontal, 2),
                        "sample_hosts": hosts[:_SAMPLE],
                        "ports": ports[:_SAMPLE],
                        "first_seen": src.first,
                        "last_seen": rec.last_seen,
                    },
                    mac=src.mac,
                )
            )
        return out

    def _check_icmp(self, ip: str, src: _Source, direction: str, now: float) -> list[Alert]:
        _expire(src.pings, now - self.cfg.window_s, key=None)
        if len(src.pings) < self.cfg.icmp_hosts:
            return []
        hosts = sorted(src.pings)
        return [
            make_alert(
                rule="scan.icmp",
                category="scan",
                severity=self._severity(direction, False),
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
        if matches_any(event.src_ip, self.cfg.ignore_sources):
            return []
        src = self.arp.get(event.src_ip)
        src.mac = event.src_mac
        if len(src.targets) < _PER_SOURCE_LIMIT:
            src.targets[event.target_ip] = event.ts
        _expire(src.targets, now - self.cfg.arp_window_s, key=None)
        if len(src.targets) < self.cfg.arp_targets:
            return []
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
            _expire(src.ports, horizon)
            _expire(src.hosts, horizon)
            _expire(src.pings, horizon, key=None)
            if not (src.ports or src.pings):
                self.sources.pop(ip)
        for ip, arp in self.arp.items():
            _expire(arp.targets, now - self.cfg.arp_window_s, key=None)
            if not arp.targets:
                self.arp.pop(ip)
        return []
