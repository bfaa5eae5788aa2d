"""Intel-match rule: traffic to or from listed addresses, and listed names looked up or
contacted (TLS server name, HTTP host, DNS query)."""

from __future__ import annotations

from mimamori.detect import _flowfacts as ff
from mimamori.detect._base import Rule, make_alert
from mimamori.detect._net import HomeNet
from mimamori.detect.config import IntelConfig
from mimamori.detect.intel import Intel
from mimamori.protocol import Alert, FlowRecord


class IntelMatchRule(Rule):
    name = "intel_match"

    def __init__(self, *, home: HomeNet, config: IntelConfig, intel: Intel) -> None:
        super().__init__(home=home)
        self.cfg = config
        self.intel = intel

    def on_flow(self, rec: FlowRecord, now: float) -> list[Alert]:
        if not len(self.intel):
            return []
        src_local, dst_local = self.home.is_local(rec.src_ip), self.home.is_local(rec.dst_ip)
        out: list[Alert] = []
        name = rec.dns_query or rec.sni
        if src_local and name:
            hit = self.intel.match_domain(name)
            if hit:
                dns = bool(rec.dns_query)
                sev = self.cfg.severity_dns if dns else self._outbound(rec)
                what = "looked up" if dns else "connected to"
                what_ja = "名前解決しました" if dns else "接続しました"
                out.append(self._alert(rec, now, rec.src_ip, name, hit, sev, what, what_ja))
        if src_local and not dst_local:
            hit = self.intel.match_ip(rec.dst_ip)
            if hit:
                out.append(
                    self._alert(
                        rec, now, rec.src_ip, rec.dst_ip, hit, self._outbound(rec),
                        "talked to", "通信しました",
                    )
                )  # fmt: skip
        elif dst_local and not src_local:
            hit = self.intel.match_ip(rec.src_ip)
            if hit:
                sev = (
                    self.cfg.severity_inbound_accepted
                    if ff.completed(rec) and not ff.looks_reversed(rec)
                    else self.cfg.severity_inbound
                )
                out.append(
                    self._alert(
                        rec, now, rec.src_ip, rec.dst_ip, hit, sev,
                        "was contacted by", "から接続を受けました",
                    )
                )  # fmt: skip
        return out

    def _outbound(self, rec: FlowRecord) -> str:
        return (
            self.cfg.severity_outbound
            if ff.completed(rec)
            else self.cfg.severity_outbound_unanswered
        )

    def _alert(
        self,
        rec: FlowRecord,
        now: float,
        actor: str,
        target: str,
        indicator: str,
        severity: str,
        verb: str,
        verb_ja: str,
    ) -> Alert:
        local = rec.src_ip if self.home.is_local(rec.src_ip) else rec.dst_ip
        listed = target if actor == local else actor
        if verb == "was contacted by":
            en = f"{local} was contacted by {listed}, listed in threat intelligence ({indicator})"
            ja = f"{local} が脅威情報に載っている {listed} {verb_ja}({indicator})"
        else:
            en = f"{local} {verb} {listed}, listed in threat intelligence ({indicator})"
            ja = f"{local} が脅威情報に載っている {listed} に{verb_ja}({indicator})"
        return make_alert(
            rule="intel_match",
            category="intel_match",
            severity=severity,
            at=now,
            actor=actor,
            target=target,
            dedup_key=f"intel_match:{local}:{indicator}",
            summary_en=en,
            summary_ja=ja,
            evidence={
                "indicator": indicator,
                "flow": f"{rec.src_ip}:{rec.src_port}>{rec.dst_ip}:{rec.dst_port}/{rec.proto}",
                "answered": ff.answered(rec),
                "first_seen": rec.first_seen,
                "last_seen": rec.last_seen,
                "sources": self.intel.sources[:10],
            },
            mac=rec.src_mac if rec.src_ip == local else rec.dst_mac,
        )
