"""Long-window rules the cloud runs: pure functions over stored rows and last-seen times.

* :func:`beacon_alerts`: the beacon score over hours of :class:`FlowSummary` rows (each
  row with new connections is one call-back at its ``first_seen``), catching slow
  beacons (every 5-60 min) that the gateway's 24 h in-memory window scores too rarely;
* :func:`exfiltration_alerts`: a device's upload volume in the latest bucket against its
  own history (median, robust z-score, absolute floor);
* :func:`liveness` and :func:`offline_alerts`: gateway_offline and sensor_offline
  decisions from last-seen times.

The cloud's job runner selects the rows and calls these; nothing here does I/O.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from mimamori.detect._base import make_alert
from mimamori.detect.beacon import domain_allowed
from mimamori.detect.config import DetectConfig
from mimamori.detect.stats import beacon_score, median, regularity_gate, robust_z
from mimamori.protocol import Alert, FlowSummary


def _start(row: FlowSummary) -> float:
    return row.first_seen if row.first_seen is not None else row.ts


def beacon_alerts(rows: Iterable[FlowSummary], *, config: DetectConfig, now: float) -> list[Alert]:
    """Beacon alerts over flow summaries (outbound rows with new connections only)."""
    lw, rt = config.longwindow_beacon, config.beacon
    series: dict[tuple[str, str], list[tuple[float, float, int, str]]] = defaultdict(list)
    users: dict[str, set[str]] = defaultdict(set)
    devices: set[str] = set()
    ignore_apps = {a.upper() for a in rt.ignore_apps}
    protocols = frozenset(lw.protocols)
    allowed = frozenset(
        d.lower().rstrip(".") for d in (*rt.allow_domains, *rt.vendor_cloud_domains)
    )
    for row in rows:
        if row.dir != "out":
            continue
        devices.add(row.local_ip)
        if row.conns <= 0 or row.remote_port in rt.ignore_ports or row.proto not in protocols:
            continue
        if row.app.split(".", 1)[0].upper() in ignore_apps:
            continue
        dest = (row.sni or row.remote_ip).lower()
        if domain_allowed(dest, allowed):
            continue
        users[dest].add(row.local_ip)
        series[(row.local_ip, dest)].append(
            (_start(row), row.bytes_out / row.conns, row.remote_port, row.mac)
        )
    out: list[Alert] = []
    for (local, dest), points in series.items():
        if len(points) < lw.min_buckets:
            continue
        n_users = len(users[dest])
        if n_users >= rt.prevalence_min_devices and n_users >= rt.prevalence_fraction * len(
            devices
        ):
            continue
        points.sort()
        score = beacon_score(
            [p[0] for p in points],
            [p[1] for p in points],
            full_count=lw.full_count,
            size_reference_bytes=lw.size_reference_bytes,
            skew_tolerance=lw.skew_tolerance,
        )
        gate = regularity_gate(
            score.connections - 1,
            floor=lw.min_interval_madm,
            random_madm=lw.random_madm,
            k=lw.small_sample_k,
        )
        if score.score < lw.threshold or score.interval_madm < gate:
            continue
        if not lw.min_median_interval_s <= score.median_interval <= lw.max_median_interval_s:
            continue
        port, mac = points[-1][2], points[-1][3]
        minutes = score.median_interval / 60
        out.append(
            make_alert(
                rule="beacon.longwindow",
                category="beacon",
                severity=lw.severity,
                at=now,
                actor=local,
                target=f"{dest}:{port}",
                dedup_key=f"beacon:{local}:{dest}",
                summary_en=(
                    f"{local} called back to {dest}:{port} about every {minutes:.1f} min over "
                    f"{(points[-1][0] - points[0][0]) / 3600:.1f} h "
                    f"(beacon score {score.score:.2f})"
                ),
                summary_ja=(
                    f"{local} が {dest}:{port} へ約 {minutes:.1f} 分ごとに"
                    f"{(points[-1][0] - points[0][0]) / 3600:.1f} 時間にわたり定期通信しています"
                    f"(ビーコンスコア {score.score:.2f})"
                ),
                evidence={
                    "score": round(score.score, 3),
                    "timing": round(score.timing, 3),
                    "buckets": score.connections,
                    "median_interval_s": round(score.median_interval, 1),
                    "first_seen": points[0][0],
                    "last_seen": points[-1][0],
                },
                mac=mac,
            )
        )
    return out


def exfiltration_alerts(
    rows: Iterable[FlowSummary], *, config: DetectConfig, now: float
) -> list[Alert]:
    """Upload far above the device's own baseline in the bucket ``[now - bucket_s, now)``.

    Buckets are aligned on ``now``; a device's history starts at its first row (earlier
    empty buckets are not zeros, it did not exist yet), and buckets without rows after
    that count as zero upload.
    """
    cfg = config.exfiltration
    width = cfg.bucket_s
    horizon = now - cfg.baseline_s - width
    per_device: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    dests: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    ips: dict[str, str] = {}
    for row in rows:
        if row.dir != "out" or row.ts < horizon or row.ts >= now:
            continue
        device = row.mac or row.local_ip
        ips[device] = row.local_ip
        index = int((now - row.ts) // width)  # 0 = the bucket being judged
        per_device[device][index] += row.bytes_out
        if index == 0:
            dests[device][row.sni or row.remote_ip] += row.bytes_out
    out: list[Alert] = []
    for device, buckets in per_device.items():
        current = buckets.get(0, 0)
        if current < cfg.min_bytes:
            continue
        oldest = max(buckets)
        history = [float(buckets.get(i, 0)) for i in range(1, oldest + 1)]
        if len(history) < cfg.min_baseline_buckets:
            continue
        base = median(history)
        z = robust_z(float(current), history)
        if current < cfg.min_ratio * base or z < cfg.min_robust_z:
            continue
        ip = ips[device]
        top = sorted(dests[device].items(), key=lambda kv: -kv[1])[:5]
        mb, base_mb = current / 1e6, base / 1e6
        out.append(
            make_alert(
                rule="exfiltration.baseline",
                category="exfiltration",
                severity=cfg.severity,
                at=now,
                actor=ip,
                target=top[0][0] if top else "",
                dedup_key=f"exfiltration:{device}",
                summary_en=(
                    f"{ip} uploaded {mb:.0f} MB in {width / 3600:.0f} h, its usual is "
                    f"{base_mb:.1f} MB (mostly to {top[0][0] if top else '?'})"
                ),
                summary_ja=(
                    f"{ip} が {width / 3600:.0f} 時間で {mb:.0f} MB を送信しました。"
                    f"普段は {base_mb:.1f} MB です(主な送信先 {top[0][0] if top else '?'})"
                ),
                evidence={
                    "bytes_out": current,
                    "baseline_median": base,
                    "robust_z": round(z, 1),
                    "history_buckets": len(history),
                    "top_destinations": [{"dest": d, "bytes": b} for d, b in top],
                },
                mac=device if device != ip else "",
            )
        )
    return out


@dataclass(frozen=True)
class LivenessDecision:
    """Whether one gateway or sensor is offline at ``now``."""

    kind: Literal["gateway", "sensor"]
    subject: str
    last_seen: float
    silent_s: float
    offline: bool


def liveness(
    last_seen: Mapping[str, float],
    *,
    kind: Literal["gateway", "sensor"],
    now: float,
    config: DetectConfig,
) -> list[LivenessDecision]:
    """Decide for each subject whether it is offline (silent longer than allowed)."""
    cfg = config.liveness
    limit = (
        cfg.gateway_missed_heartbeats * cfg.gateway_heartbeat_s
        if kind == "gateway"
        else cfg.sensor_silence_s
    )
    return [
        LivenessDecision(
            kind=kind,
            subject=subject,
            last_seen=seen,
            silent_s=max(0.0, now - seen),
            offline=now - seen > limit,
        )
        for subject, seen in sorted(last_seen.items())
    ]


def offline_alerts(
    decisions: Iterable[LivenessDecision], *, now: float, config: DetectConfig
) -> list[Alert]:
    """One alert per offline subject; its dedup_key stays the same while it is down."""
    cfg = config.liveness
    out: list[Alert] = []
    for d in decisions:
        if not d.offline:
            continue
        minutes = d.silent_s / 60
        noun, noun_ja = (
            ("gateway", "ゲートウェイ") if d.kind == "gateway" else ("sensor", "センサー")
        )
        out.append(
            make_alert(
                rule=f"{d.kind}_offline",
                category=f"{d.kind}_offline",
                severity=cfg.severity_gateway if d.kind == "gateway" else cfg.severity_sensor,
                at=now,
                actor=d.subject,
                target="",
                dedup_key=f"{d.kind}_offline:{d.subject}:{d.last_seen:.0f}",
                summary_en=f"{noun} {d.subject} has been silent for {minutes:.0f} min",
                summary_ja=f"{noun_ja} {d.subject} から {minutes:.0f} 分間応答がありません",
                evidence={"last_seen": d.last_seen, "silent_s": round(d.silent_s, 1)},
            )
        )
    return out
