"""Lateral movement rule: one LAN host opening administration sessions on many LAN hosts.

SMB, RDP, WinRM and RPC are how intruders and worms move from a first machine to the
rest (PsExec, WMI, RDP hopping). A workstation uses them towards one file server and one
domain controller; ``min_targets`` distinct LAN hosts with sessions that were answered
within ``window_s`` is a spreading pattern. Failed attempts belong to the scan rule.
"""

from __future__ import annotations

from mimamori.detect import _flowfacts as ff
from mimamori.detect._base import Bounded, Rule, make_alert
from mimamori.detect._net import AddressSet, HomeNet
from mimamori.detect.config import LateralConfig
from mimamori.protocol import Alert, FlowRecord


class LateralMovementRule(Rule):
    name = "lateral_movement"

    def __init__(self, *, home: HomeNet, config: LateralConfig, max_tracked: int) -> None:
        super().__init__(home=home)
        self.cfg = config
        self.ignored = AddressSet(config.ignore_sources)
        self.by_port = {p: svc for svc, ports in config.ports.items() for p in ports}
        self._remote_exec = frozenset(config.remote_exec_services)
        self.sources: Bounded[str, dict[str, tuple[float, str]]] = Bounded(max_tracked, dict)

    def on_flow(self, rec: FlowRecord, now: float) -> list[Alert]:
        if rec.proto != ff.TCP or ff.looks_reversed(rec) or ff.failed(rec):
            return []
        if not (self.home.is_local(rec.src_ip) and self.home.is_local(rec.dst_ip)):
            return []
        svc = self.cfg.apps.get(rec.app) or self.by_port.get(rec.dst_port, "")
        if not svc or rec.src_ip in self.ignored:
            return []
        targets = self.sources.get(rec.src_ip)
        if rec.dst_ip in targets or len(targets) < 4 * self.cfg.min_targets:
            # A host once reached by remote execution stays so counted (PsExec and WMI
            # mix SMB and RPC on the same target).
            prev = targets.get(rec.dst_ip)
            kept = prev[1] if prev and prev[1] in self._remote_exec else svc
            targets[rec.dst_ip] = (max(rec.last_seen, prev[0] if prev else 0.0), kept)
        horizon = now - self.cfg.window_s
        for stale in [d for d, (t, _) in targets.items() if t < horizon]:
            del targets[stale]
        if len(targets) >= self.cfg.min_targets:
            severity, rule = self.cfg.severity, "lateral_movement.fanout"
        elif (
            svc in self._remote_exec
            and sum(s in self._remote_exec for _, s in targets.values())
            >= self.cfg.min_targets_remote_exec
        ):
            severity, rule = self.cfg.severity_remote_exec, "lateral_movement.remote_exec"
        else:
            return []
        services = sorted({s for _, s in targets.values()})
        hosts = sorted(targets)
        return [
            make_alert(
                rule=rule,
                category="lateral_movement",
                severity=severity,
                at=now,
                actor=rec.src_ip,
                target=f"{len(hosts)} hosts",
                dedup_key=f"lateral_movement:{rec.src_ip}",
                summary_en=(
                    f"{rec.src_ip} opened {'/'.join(services)} sessions on {len(hosts)} LAN "
                    f"hosts within {self.cfg.window_s:.0f} s"
                ),
                summary_ja=(
                    f"{rec.src_ip} が {self.cfg.window_s:.0f} 秒以内に LAN 内の {len(hosts)} 台へ "
                    f"{'/'.join(services)} で接続しました(横展開の疑い)"
                ),
                evidence={"hosts": hosts[:20], "services": services, "count": len(hosts)},
                mac=rec.src_mac,
            )
        ]

    def tick(self, now: float) -> list[Alert]:
        horizon = now - self.cfg.window_s
        for src, targets in self.sources.items():
            if all(t < horizon for t, _ in targets.values()):
                self.sources.pop(src)
        return []
