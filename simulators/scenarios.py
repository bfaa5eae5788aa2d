"""Attack and fault scenarios the pilots asked for, injected into simulated sites.

Traffic scenarios produce :class:`~mimamori.protocol.FlowRecord` objects, the records the
edge's meter would have produced, which the fleet simulator feeds to the real detection
:class:`~mimamori.detect.engine.Engine` and to the edge's real
:class:`~mimamori.edge.summaries.Summarizer`, so the alerts and summary rows the cloud
receives come from the same code as a gateway's. :mod:`.pcapgen` writes the same
scenarios as packets.

========================  ================================================  ================
scenario                  what happens                                      expected alert
========================  ================================================  ================
``beacon``                an infected PC calls its C2 server back every      beacon
                          60 s over TLS (small, regular requests)
``intel_match``           a personal phone talks to a server on the tenant's intel_match
                          threat-intelligence list
``emotet``                a PC sends mail straight to many SMTP servers      malware_traffic
``rdp_bruteforce``        an internet host guesses RDP passwords on a PC     bruteforce,
                          whose port 3389 is forwarded by the router         exposure
``ransomware``            a PC opens SMB sessions on every host of the LAN   lateral_movement
``power_cut``             the gateway loses power (its process is killed);  (none: delivery)
                          its outbox survives and it resumes after reboot
``site_offline``          the site's internet link is down for minutes;     (none: delivery)
                          the outbox buffers, then drains
========================  ================================================  ================

Malicious addresses are in the RFC 5737 documentation ranges and malicious names under
the reserved ``.example`` top-level domain (RFC 2606): no real host is named a criminal.
When the detection engine is not able to raise a scenario's alert (a rule not written
yet), :func:`fallback_alert` builds one by hand, with ``rule="sim.<scenario>"`` so that
it is never mistaken for a detection.
"""

from __future__ import annotations

import hashlib
import inspect
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mimamori.protocol import Alert, FlowRecord
from mimamori.simulators.profiles import SimDevice, Site

#: Scenario name -> alert categories a gateway should raise for it.
EXPECTED: dict[str, tuple[str, ...]] = {
    "beacon": ("beacon",),
    "intel_match": ("intel_match",),
    "emotet": ("malware_traffic",),
    "rdp_bruteforce": ("bruteforce", "exposure"),
    "ransomware": ("lateral_movement",),
    "power_cut": (),
    "site_offline": (),
}
TRAFFIC = ("beacon", "intel_match", "emotet", "rdp_bruteforce", "ransomware")
FAULTS = ("power_cut", "site_offline")
NAMES = TRAFFIC + FAULTS

C2_IP = "203.0.113.66"
C2_NAME = "cdn-static-update.example"
BAD_IP = "198.51.100.23"
BAD_NAME = "line-present-campaign.example"
ATTACKER_IP = "203.0.113.200"
#: The indicators a tenant's intel bundle lists for these scenarios.
INTEL_IPS = (BAD_IP,)
INTEL_DOMAINS = (BAD_NAME,)
MAIL_SERVERS = tuple(f"198.51.100.{i}" for i in range(100, 140))


@dataclass(frozen=True)
class Cast:
    """Who plays which part at a site."""

    victim: SimDevice  # the infected or attacked device
    router_mac: str
    lan: tuple[SimDevice, ...]


def cast(site: Site, scenario: str) -> Cast:
    """Pick the devices of ``site`` that play in ``scenario`` (deterministic)."""
    kind = "phone" if scenario == "intel_match" else "pc"
    candidates = site.of_kind(kind) or list(site.devices)
    return Cast(victim=candidates[0], router_mac=site.router_mac, lan=site.devices)


def _record(
    *,
    t: float,
    duration: float,
    src: tuple[str, int, str],
    dst: tuple[str, int, str],
    proto: int = 6,
    pkts: tuple[int, int],
    nbytes: tuple[int, int],
    app: str,
    sni: str = "",
    dns_query: str = "",
) -> FlowRecord:
    tcp = proto == 6
    return FlowRecord(
        first_seen=t, last_seen=t + duration,
        src_ip=src[0], src_port=src[1], src_mac=src[2],
        dst_ip=dst[0], dst_port=dst[1], dst_mac=dst[2], proto=proto,
        pkts_src2dst=pkts[0], pkts_dst2src=pkts[1],
        bytes_src2dst=nbytes[0], bytes_dst2src=nbytes[1],
        app=app, sni=sni, dns_query=dns_query,
        syn=1 if tcp else 0, synack=1 if tcp else 0, fin=2 if tcp else 0,
        expiry="idle",
    )  # fmt: skip


def records(
    scenario: str, site: Site, start: float, end: float, rng: random.Random
) -> list[FlowRecord]:
    """The flow records ``scenario`` adds to ``site`` during ``[start, end)``, by time.

    Each scenario is a pure function of the time window: calling it for consecutive
    windows yields the same records as one call for their union (up to the random draws).
    """
    if scenario not in TRAFFIC:
        return []
    c = cast(site, scenario)
    v = c.victim
    out: list[FlowRecord] = []
    eph = 49152 + rng.randrange(8000)
    if scenario == "beacon":
        # Call-back every 60 s with +-2 % jitter; requests and replies of near-equal size.
        period = 60.0
        t = start - start % period + rng.uniform(0, 1.2)
        while t < end:
            if t >= start:
                eph += 1
                out.append(
                    _record(
                        t=t, duration=rng.uniform(0.2, 0.4), src=(v.ip, eph, v.mac),
                        dst=(C2_IP, 443, c.router_mac), pkts=(8, 7),
                        nbytes=(1_130 + rng.randrange(40), 2_470 + rng.randrange(60)),
                        app="TLS", sni=C2_NAME,
                    )
                )  # fmt: skip
            t += period * rng.uniform(0.98, 1.02)
    elif scenario == "intel_match":
        # The person opens the "campaign" app now and then (irregular, a few times an hour).
        t = start - start % 180 + 17
        while t < end:
            if t >= start:
                eph += 1
                out.append(
                    _record(
                        t=t - 0.05, duration=0.02, src=(v.ip, 50000 + eph % 10000, v.mac),
                        dst=(site.router_ip, 53, c.router_mac),
                        proto=17, pkts=(1, 1), nbytes=(90, 140), app="DNS",
                        dns_query=BAD_NAME,
                    )
                )  # fmt: skip
                out.append(
                    _record(
                        t=t, duration=rng.uniform(0.5, 2.0), src=(v.ip, eph, v.mac),
                        dst=(BAD_IP, 443, c.router_mac), pkts=(14, 16),
                        nbytes=(3_500 + rng.randrange(500), 18_000 + rng.randrange(4000)),
                        app="TLS", sni=BAD_NAME,
                    )
                )  # fmt: skip
            t += rng.expovariate(1 / 600)
    elif scenario == "emotet":
        # Spam run: a new SMTP server every ~40 s, messages of 20-60 kB.
        t = start - start % 40 + 3
        i = int(start // 40)
        while t < end:
            if t >= start:
                eph += 1
                server = MAIL_SERVERS[i % len(MAIL_SERVERS)]
                out.append(
                    _record(
                        t=t, duration=rng.uniform(1.5, 4.0), src=(v.ip, eph, v.mac),
                        dst=(server, 25, c.router_mac), pkts=(30, 18),
                        nbytes=(20_000 + rng.randrange(40_000), 1_600), app="SMTP",
                    )
                )  # fmt: skip
            t += 40
            i += 1
    elif scenario == "rdp_bruteforce":
        # One password guess every ~15 s from one internet host, each a short session.
        t = start - start % 15 + 5
        while t < end:
            if t >= start:
                eph += 1
                out.append(
                    _record(
                        t=t, duration=rng.uniform(1.0, 3.0),
                        src=(ATTACKER_IP, 30000 + eph % 30000, c.router_mac),
                        dst=(v.ip, 3389, v.mac), pkts=(14, 12), nbytes=(2_900, 4_700),
                        app="RDP",
                    )
                )  # fmt: skip
            t += 15
    elif scenario == "ransomware":
        # Every 20 s the next LAN host's shares are opened and rewritten.
        targets = [d for d in c.lan if d is not v] or [v]
        t = start - start % 20 + 7
        i = int(start // 20)
        while t < end:
            if t >= start:
                eph += 1
                dst = targets[i % len(targets)]
                out.append(
                    _record(
                        t=t, duration=rng.uniform(3.0, 12.0), src=(v.ip, eph, v.mac),
                        dst=(dst.ip, 445, dst.mac), pkts=(400, 380),
                        nbytes=(480_000, 460_000), app="SMBv23",
                    )
                )  # fmt: skip
            t += 20
            i += 1
    out.sort(key=lambda r: r.last_seen)
    return out


# --- detection --------------------------------------------------------------------------


def make_engine(home_net: Sequence[Any], *, intel: bool = True) -> Any:
    """The real detection engine for a site, with the scenarios' indicators loaded.

    The engine's constructor grows as rules land; an ``intel`` argument is passed only
    when the constructor takes one.
    """
    from mimamori.detect.engine import Engine

    params = inspect.signature(Engine).parameters
    kwargs: dict[str, Any] = {"home_net": tuple(home_net)}
    if intel and "intel" in params:
        from mimamori.detect.intel import Intel

        kwargs["intel"] = Intel(ips=INTEL_IPS, domains=INTEL_DOMAINS, sources=["simulator"])
    return Engine(**kwargs)


def fallback_alert(scenario: str, site: Site, at: float) -> Alert:
    """A hand-made alert of the scenario's first expected category (see module docs)."""
    category = EXPECTED[scenario][0]
    c = cast(site, scenario)
    actor, target = {
        "beacon": (c.victim.ip, C2_NAME),
        "intel_match": (c.victim.ip, BAD_IP),
        "emotet": (c.victim.ip, "smtp/25"),
        "rdp_bruteforce": (ATTACKER_IP, f"{c.victim.ip}:3389"),
        "ransomware": (c.victim.ip, "smb/445"),
    }[scenario]
    key = f"{category}:{actor}:{target}"
    return Alert(
        id=hashlib.sha256(f"sim|{site.gateway}|{key}|{at:.3f}".encode()).hexdigest()[:32],
        category=category,  # type: ignore[arg-type]
        severity="high",
        detected_at=at,
        actor=actor,
        target=target,
        summary_en=f"[simulated] {scenario} scenario: {actor} -> {target}",
        summary_ja=f"[シミュレーション] {scenario} シナリオ: {actor} -> {target}",
        dedup_key=key,
        rule=f"sim.{scenario}",
        mac=c.victim.mac if scenario != "rdp_bruteforce" else "",
    )
