"""Assessment: one device's evidence -> a JC-STAR-style ★1 label, with an explicit ``now``.

Each criterion is ``pass``, ``fail`` or ``unknown`` with the evidence behind it. The
outcome is ``does_not_meet`` when any criterion fails, ``meets_star1_observed`` when every
decisive criterion (catalogue ``decisive = true``) passes, and ``insufficient_evidence``
otherwise: a device the gateway has barely seen never passes by default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from mimamori.detect.labels.catalogue import Catalogue, Criterion, Kind
from mimamori.detect.labels.observe import DeviceEvidence, Evidence

Status = Literal["pass", "fail", "unknown"]
Outcome = Literal["meets_star1_observed", "does_not_meet", "insufficient_evidence"]
OUTCOMES: tuple[Outcome, ...] = ("meets_star1_observed", "does_not_meet", "insufficient_evidence")

#: criterion -> (evidence kinds that refute it, kinds that support it, kinds shown as
#: context only). Which evidence bears on which requirement is the method itself, so it
#: lives next to the code; the lists the kinds are computed from live in catalogue.toml.
RULES: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "S1.1-01": (("exposure_mgmt",), (), ("exposure",)),
    "S1.1-02": (("default_credential",), ("default_rejected",), ()),
    "S1.1-04": ((), (), ()),
    "S1.1-06": (("outdated",), ("vendor_contact",), ("banner",)),
    "S1.1-08": (("update_http",), ("update_tls",), ()),
    "S1.1-12": (
        (
            "cleartext_service",
            "cleartext_client",
            "cleartext_login",
            "legacy_tls",
            "http_admin",
            "http_cloud",
        ),
        ("tls_cloud", "tls_modern"),
        (),
    ),
    "S1.1-13": (
        ("cleartext_service", "legacy_service", "exposure", "exposure_mgmt", "open_port"),
        (),
        ("upnp",),
    ),
}
#: The criterion that passes on "enough traffic and nothing risky in it" (unused
#: interfaces off): silence is evidence here only after ``min_connections``.
QUIET_PASS = "S1.1-13"
#: Order in which advice is given (most urgent first); kinds without advice are skipped.
ADVICE_ORDER = (
    "exposure_mgmt", "exposure", "default_credential", "cleartext_login", "cleartext_service",
    "legacy_service",
    "legacy_tls", "http_admin", "cleartext_client", "outdated", "http_cloud", "update_http",
    "open_port",
)  # fmt: skip


@dataclass
class CriterionResult:
    """One criterion's status with the evidence for it (or the reason it is unknown)."""

    id: str
    status: Status
    evidence: list[Evidence] = field(default_factory=list)
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "evidence": [e.to_dict() for e in self.evidence],
            "reason": self.reason,
        }


@dataclass
class Label:
    """The label of one device at ``assessed_at``."""

    mac: str
    outcome: Outcome
    kind: str
    iot: bool
    impact: int
    priority: int
    criteria: list[CriterionResult]
    reasons: list[dict[str, str]]
    advice: list[dict[str, str]]
    assessed_at: float
    catalogue_version: str
    vendor: str = ""
    model: str = ""
    hostname: str = ""
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-ready), the form ``replay --json`` and the store use."""
        return {
            "mac": self.mac,
            "outcome": self.outcome,
            "kind": self.kind,
            "iot": self.iot,
            "impact": self.impact,
            "priority": self.priority,
            "vendor": self.vendor,
            "model": self.model,
            "hostname": self.hostname,
            "criteria": [c.to_dict() for c in self.criteria],
            "reasons": self.reasons,
            "advice": self.advice,
            "note": self.note,
            "assessed_at": self.assessed_at,
            "catalogue_version": self.catalogue_version,
        }


def classify(ev: DeviceEvidence, catalogue: Catalogue) -> Kind:
    """The device's kind: the first catalogue rule with a keyword in its facts.

    When its own facts match no rule, the makers whose services the device reached are
    tried: a scale built on a GainSpan Wi-Fi module that talks to fitbit.com is a Fitbit
    (health) device. (Only then: a PC that fetches a printer driver is still a PC.)
    """
    own = (ev.model, ev.hostname, ev.vendor, ev.os_hint, *ev.services, *ev.banners.values())
    for facts in (own, sorted(ev.makers)):
        text = " ".join(facts).lower()
        for kind in catalogue.kinds:
            if any(word in text for word in kind.keywords):
                return kind
    return catalogue.default_kind


def _judge(criterion: Criterion, ev: DeviceEvidence, catalogue: Catalogue) -> CriterionResult:
    rule = RULES.get(criterion.id)
    if criterion.network == "no" or rule is None:
        return CriterionResult(criterion.id, "unknown", reason=criterion.reason)
    refuting, supporting, context = rule
    bad = ev.of(*refuting)
    if bad:
        return CriterionResult(criterion.id, "fail", bad + ev.of(*context))
    good = ev.of(*supporting)
    if criterion.id == QUIET_PASS and ev.connections >= catalogue.min_connections:
        # Nothing risky in enough traffic is what "unneeded services off" looks like here.
        good = [
            Evidence("observed", f"{ev.connections} connections, no legacy or exposed service",
                     ev.last_ts or 0.0, ev.connections)
        ]  # fmt: skip
    if good:
        return CriterionResult(criterion.id, "pass", good + ev.of(*context))
    reason = criterion.reason or (
        f"too little traffic seen ({ev.connections} connections)"
        if criterion.id == QUIET_PASS
        else f"no supporting evidence yet: needs {criterion.supports or 'an opt-in check'}"
    )
    return CriterionResult(criterion.id, "unknown", ev.of(*context), reason)


def assess(ev: DeviceEvidence, *, catalogue: Catalogue, now: float) -> Label:
    """Label one device from its evidence, as of ``now`` (UNIX seconds)."""
    kind = classify(ev, catalogue)
    results = [_judge(c, ev, catalogue) for c in catalogue.criteria]
    failed = [r for r in results if r.status == "fail"]
    decisive = [r for r in results if catalogue.by_id[r.id].decisive]
    outcome: Outcome
    if failed:
        outcome = "does_not_meet"
    elif decisive and all(r.status == "pass" for r in decisive):
        outcome = "meets_star1_observed"
    else:
        outcome = "insufficient_evidence"
    reasons = [
        {
            "id": r.id,
            "ja": f"{catalogue.by_id[r.id].title_ja}: {r.evidence[0].detail}",
            "en": f"{catalogue.by_id[r.id].title_en}: {r.evidence[0].detail}",
        }
        for r in failed
    ]
    advice = _advice(failed, kind, catalogue)
    return Label(
        mac=ev.mac,
        outcome=outcome,
        kind=kind.name,
        iot=kind.iot,
        impact=kind.impact,
        # Fix high-impact devices with many failures first.
        priority=kind.impact * len(failed),
        criteria=results,
        reasons=reasons,
        advice=advice,
        assessed_at=now,
        catalogue_version=catalogue.version,
        vendor=ev.vendor,
        model=ev.model,
        hostname=ev.hostname,
        note="" if kind.iot else "not an IoT product: labelled for information only",
    )


def _advice(
    failed: list[CriterionResult], kind: Kind, catalogue: Catalogue
) -> list[dict[str, str]]:
    kinds = {e.kind for r in failed for e in r.evidence}
    out: list[dict[str, str]] = []
    for key in ADVICE_ORDER:
        if key in kinds and key in catalogue.advice:
            ja, en = catalogue.advice[key]
            out.append({
                "finding": key,
                "ja": ja.format(device=kind.name, device_ja=kind.name_ja),
                "en": en.format(device=kind.name, device_ja=kind.name_ja),
            })  # fmt: skip
    return out


def assess_all(
    evidence: dict[str, DeviceEvidence], *, catalogue: Catalogue, now: float
) -> list[Label]:
    """Labels for every device, most urgent first (priority, then MAC)."""
    labels = [assess(ev, catalogue=catalogue, now=now) for ev in evidence.values()]
    return sorted(labels, key=lambda label: (-label.priority, label.mac))
