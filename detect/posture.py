"""Posture rules: exposure to the internet, cleartext logins, unsupported systems.

These describe how a site is set up rather than an attack in progress; most are low
severity findings for device labels and the monthly report. Exposure of a remote-access
service that the internet actually reaches is the exception and pages the SOC.
"""

from __future__ import annotations

import datetime

from mimamori.detect import _flowfacts as ff
from mimamori.detect._base import Bounded, Rule, make_alert
from mimamori.detect._net import HomeNet
from mimamori.detect.config import CleartextConfig, ExposureConfig, OldOsConfig
from mimamori.protocol import Alert, FlowRecord


class ExposureRule(Rule):
    """A connection from the internet accepted by a LAN host on a sensitive service."""

    name = "exposure"

    def __init__(self, *, home: HomeNet, config: ExposureConfig) -> None:
        super().__init__(home=home)
        self.by_port = {p: svc for svc in config.services for p in svc.ports}

    def on_flow(self, rec: FlowRecord, now: float) -> list[Alert]:
        svc = self.by_port.get(rec.dst_port)
        if svc is None or ff.looks_reversed(rec) or ff.failed(rec):
            return []
        if not (self.home.is_remote(rec.src_ip) and self.home.is_local(rec.dst_ip)):
            return []
        return [
            make_alert(
                rule="exposure.accepted",
                category="exposure",
                severity=svc.severity,
                at=now,
                actor=rec.dst_ip,
                target=f"{rec.dst_port}/{svc.name}",
                dedup_key=f"exposure:{rec.dst_ip}:{rec.dst_port}",
                summary_en=(
                    f"{rec.dst_ip} accepted a {svc.name} connection from the internet "
                    f"({rec.src_ip} to port {rec.dst_port})"
                ),
                summary_ja=(
                    f"{rec.dst_ip} がインターネットからの {svc.name} 接続を受け付けました"
                    f"({rec.src_ip} からポート {rec.dst_port})"
                ),
                evidence={
                    "service": svc.name,
                    "port": rec.dst_port,
                    "remote": rec.src_ip,
                    "first_seen": rec.first_seen,
                    "last_seen": rec.last_seen,
                },
                mac=rec.dst_mac,
            )
        ]


class CleartextRule(Rule):
    """A login protocol without encryption was used (the server offers it)."""

    name = "cleartext_credentials"

    def __init__(self, *, home: HomeNet, config: CleartextConfig) -> None:
        super().__init__(home=home)
        self.cfg = config

    def on_flow(self, rec: FlowRecord, now: float) -> list[Alert]:
        proto = self.cfg.apps.get(rec.app) or self.cfg.apps.get(ff.app_base(rec))
        if not proto or ff.looks_reversed(rec):
            return []
        n = self.cfg.min_packets_each_way
        if rec.pkts_src2dst < n or rec.pkts_dst2src < n:
            return []
        if not (self.home.is_local(rec.src_ip) or self.home.is_local(rec.dst_ip)):
            return []
        return [
            make_alert(
                rule="cleartext_credentials",
                category="cleartext_credentials",
                severity=self.cfg.severity,
                at=now,
                actor=rec.dst_ip,
                target=rec.src_ip,
                dedup_key=f"cleartext_credentials:{rec.dst_ip}:{proto}",
                summary_en=(
                    f"{rec.src_ip} logged in to {rec.dst_ip} over {proto}, which sends "
                    "passwords unencrypted"
                ),
                summary_ja=(
                    f"{rec.src_ip} が {rec.dst_ip} にパスワードを暗号化しない {proto} で"
                    "ログインしました"
                ),
                evidence={
                    "protocol": proto,
                    "client": rec.src_ip,
                    "port": rec.dst_port,
                    "first_seen": rec.first_seen,
                    "last_seen": rec.last_seen,
                },
                mac=rec.dst_mac if self.home.is_local(rec.dst_ip) else "",
            )
        ]


class OldOsRule(Rule):
    """Signs of unsupported systems: old Windows User-Agents, SMB version 1."""

    name = "old_os"

    def __init__(self, *, home: HomeNet, config: OldOsConfig, max_tracked: int) -> None:
        super().__init__(home=home)
        self.cfg = config
        self.online: Bounded[str, bool] = Bounded(max_tracked, bool)
        # End of support as UNIX time (UTC midnight), compared with traffic time.
        self._eos = {
            m.marker: datetime.datetime.combine(
                m.end_of_support, datetime.time(), tzinfo=datetime.UTC
            ).timestamp()
            for m in config.user_agents
        }

    def on_flow(self, rec: FlowRecord, now: float) -> list[Alert]:
        src_local = self.home.is_local(rec.src_ip)
        if src_local and self.home.is_remote(rec.dst_ip):
            self.online.get(rec.src_ip)
        if rec.user_agent and src_local:
            for m in self.cfg.user_agents:
                if m.marker in rec.user_agent and rec.first_seen >= self._eos[m.marker]:
                    name = m.name
                    return [self._alert(rec.src_ip, rec.src_mac, name, "user_agent", now,
                                        rec.user_agent[:255])]  # fmt: skip
        if (
            rec.app in self.cfg.smb1_apps
            and self.home.is_local(rec.dst_ip)
            and not (ff.looks_reversed(rec) or ff.failed(rec))
        ):
            return [self._alert(rec.dst_ip, rec.dst_mac, "SMB version 1", "smb1", now,
                                f"{rec.src_ip} > {rec.dst_ip}:{rec.dst_port}")]  # fmt: skip
        return []

    def _alert(self, ip: str, mac: str, what: str, via: str, now: float, seen: str) -> Alert:
        internet = self.online.peek(ip) is not None
        sev = self.cfg.severity_internet if internet else self.cfg.severity
        tail = " and talks to the internet" if internet else ""
        tail_ja = "(インターネットとも通信しています)" if internet else ""
        return make_alert(
            rule=f"old_os.{via}",
            category="old_os",
            severity=sev,
            at=now,
            actor=ip,
            target=what,
            dedup_key=f"old_os:{ip}:{via}",
            summary_en=f"{ip} shows signs of an unsupported system ({what}){tail}",
            summary_ja=f"{ip} にサポートの終了したシステム({what})の兆候があります{tail_ja}",
            evidence={"indicator": what, "via": via, "seen": seen, "internet": internet},
            mac=mac if self.home.is_local(ip) else "",
        )
