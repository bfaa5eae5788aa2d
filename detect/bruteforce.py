"""Bruteforce rule: many short login sessions from one source to one service of one host.

A login attempt is a flow to a login service (named by nDPI, else by port) that became a
session (at least ``min_packets``: it got past the handshake to authentication) and ended
within ``short_session_s``. ``min_sessions`` attempts within ``window_s`` on the same
(source, target, service) raise an alert. Flows that never connected are scan probes.
"""

from __future__ import annotations

from collections import deque

from mimamori.detect import _flowfacts as ff
from mimamori.detect._base import Bounded, Rule, make_alert
from mimamori.detect._net import HomeNet
from mimamori.detect.config import BruteforceConfig
from mimamori.protocol import Alert, FlowRecord


class BruteforceRule(Rule):
    name = "bruteforce"

    def __init__(self, *, home: HomeNet, config: BruteforceConfig, max_tracked: int) -> None:
        super().__init__(home=home)
        self.cfg = config
        self.by_port = {p: svc for svc, ports in config.ports.items() for p in ports}
        # (source, target, service) -> recent attempts as (end time, source port)
        self.attempts: Bounded[tuple[str, str, str], deque[tuple[float, int]]] = Bounded(
            max_tracked, lambda: deque(maxlen=4 * config.min_sessions)
        )

    def service(self, rec: FlowRecord) -> str:
        """The login service a flow speaks, or "" if none."""
        return (
            self.cfg.apps.get(rec.app)
            or self.cfg.apps.get(ff.app_base(rec))
            or (self.by_port.get(rec.dst_port, "") if rec.proto == ff.TCP else "")
        )

    def on_flow(self, rec: FlowRecord, now: float) -> list[Alert]:
        src_kind, dst_kind = self.home.kind(rec.src_ip), self.home.kind(rec.dst_ip)
        if "local" not in (src_kind, dst_kind) or "special" in (src_kind, dst_kind):
            return []
        if ff.looks_reversed(rec) or ff.failed(rec):
            return []
        if rec.pkts_src2dst + rec.pkts_dst2src < self.cfg.min_packets:
            return []
        if ff.duration(rec) > self.cfg.short_session_s:
            return []
        if rec.bytes_src2dst + rec.bytes_dst2src > self.cfg.max_session_bytes:
            return []
        svc = self.service(rec)
        if not svc:
            return []
        key = (rec.src_ip, rec.dst_ip, svc)
        times = self.attempts.get(key)
        if any(port == rec.src_port for _, port in times):
            # The same connection re-metered after an idle pause (an interactive session
            # typed in bursts): one login, not another attempt.
            return []
        times.append((rec.last_seen, rec.src_port))
        horizon = now - self.cfg.window_s
        recent = [t for t, _ in times if t >= horizon]
        if len(recent) < self.cfg.min_sessions:
            return []
        inbound = src_kind == "remote"
        return [
            make_alert(
                rule="bruteforce.sessions",
                category="bruteforce",
                severity=self.cfg.severity_inbound if inbound else self.cfg.severity,
                at=now,
                actor=rec.src_ip,
                target=f"{rec.dst_ip}:{rec.dst_port}",
                dedup_key=f"bruteforce:{rec.src_ip}:{rec.dst_ip}:{svc}",
                summary_en=(
                    f"{rec.src_ip} opened {len(recent)} short {svc} sessions to "
                    f"{rec.dst_ip} within {self.cfg.window_s:.0f} s (password guessing)"
                ),
                summary_ja=(
                    f"{rec.src_ip} が {rec.dst_ip} へ {self.cfg.window_s:.0f} 秒以内に "
                    f"{len(recent)} 回の短い {svc} 接続を行いました(パスワード総当たりの疑い)"
                ),
                evidence={
                    "service": svc,
                    "sessions": len(recent),
                    "port": rec.dst_port,
                    "first_seen": min(recent),
                    "last_seen": max(recent),
                    "direction": "inbound" if inbound else "lan_or_outbound",
                },
                mac=rec.src_mac if src_kind == "local" else rec.dst_mac,
            )
        ]

    def tick(self, now: float) -> list[Alert]:
        horizon = now - self.cfg.window_s
        for key, times in self.attempts.items():
            if not times or times[-1][0] < horizon:
                self.attempts.pop(key)
        return []
