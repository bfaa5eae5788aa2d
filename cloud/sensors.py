"""Alerts about sensor nodes, as pure functions over stored messages and an explicit clock.

* :func:`canary_alert`: a relayed ``canary`` message becomes a ``canary_touch`` alert.
  Nothing legitimate ever connects to a canary, so a touch is a strong sign of a scan, a
  worm or ransomware moving sideways: severity ``high``, the actor is the source address.
* :func:`offline_alerts`: sensors the cloud has not heard for a few of their heartbeat
  intervals (on the cloud's clock) become ``sensor_offline`` alerts, once per outage (the
  id names the outage).
* :func:`sign_config`: the signed configuration update a sensor accepts (HMAC-SHA256 with
  the sensor's own key, a counter against replays; see firmware/mimamori_sensor/auth.py).

The cloud's jobs call these and store the results; nothing here does I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mimamori.protocol import SEVERITIES
from mimamori.protocol.messages import Alert, SensorMessage, Severity


@dataclass(frozen=True, kw_only=True)
class SensorsConfig:
    """Thresholds of the sensor alerts; every field can be set from the environment as
    ``MIMAMORI_SENSORS_<FIELD>`` (see :func:`mimamori.cloud.settings.sensors_from_env`)."""

    #: A sensor is offline when the cloud has not heard it for more than this many of its
    #: heartbeat intervals: 3 tolerates one lost heartbeat and a Wi-Fi reconnect with
    #: backoff (the firmware's first retries take 0.5-8 s) without paging anyone.
    offline_after_intervals: float = 3.0
    #: Interval assumed when a sensor's own is unknown (no self-report with
    #: ``heartbeat_s`` stored yet): the firmware's default
    #: (firmware/mimamori_sensor/settings.py HEARTBEAT_S).
    default_heartbeat_s: float = 60.0
    #: Longest interval used, whatever a self-report announces: the firmware accepts at
    #: most 3600 s, so a longer one is a faulty report, which must not keep a dead sensor
    #: unnoticed for hours. Below a sensor's real interval it raises false alerts for it.
    max_heartbeat_s: float = 3600.0
    #: A dark sensor means part of the LAN is no longer watched, and unplugging a sensor is
    #: also what an intruder who found it would do: the SOC follows it up (medium pages).
    offline_severity: Severity = "medium"
    #: Any touch on a canary is a strong sign of an attack in progress on the LAN.
    canary_severity: Severity = "high"

    def __post_init__(self) -> None:
        for name in ("offline_severity", "canary_severity"):
            if getattr(self, name) not in SEVERITIES:
                raise ValueError(f"{name} must be one of {', '.join(SEVERITIES)}")
        if not self.offline_after_intervals > 1:
            raise ValueError("offline_after_intervals must be more than 1 (default 3)")
        for name in ("default_heartbeat_s", "max_heartbeat_s"):
            if not 0 < getattr(self, name) < float("inf"):
                raise ValueError(f"{name} must be a positive number of seconds")
        if self.default_heartbeat_s > self.max_heartbeat_s:
            raise ValueError(
                f"default_heartbeat_s ({self.default_heartbeat_s:g}) must not exceed "
                f"max_heartbeat_s ({self.max_heartbeat_s:g})"
            )


DEFAULT = SensorsConfig()

#: Well-known services of the ports the firmware listens on by default, for the summary.
SERVICES = {23: "Telnet", 80: "HTTP", 445: "SMB", 502: "Modbus/TCP", 3389: "RDP"}

#: Prefix of the text a config update's MAC covers (must equal the firmware's DOMAIN).
CONFIG_DOMAIN = b"mimamori-sensor-config-v1\n"


class SensorAlertError(ValueError):
    """A stored sensor message cannot become an alert (wrong kind, missing fields)."""


def _alert_id(prefix: str, *parts: object) -> str:
    """A readable id when it fits the protocol's 64 characters, a digest otherwise."""
    readable = ":".join([prefix, *(str(p) for p in parts)])
    if len(readable) <= 64:
        return readable
    digest = hashlib.sha256(readable.encode()).hexdigest()[: 63 - len(prefix)]
    return f"{prefix}:{digest}"


def canary_alert(message: SensorMessage, *, config: SensorsConfig = DEFAULT) -> Alert:
    """The ``canary_touch`` alert for one relayed canary event.

    The id names the message (gateway, sequence), so a redelivered message yields the same
    alert; the dedup key names the sensor and the source, so one scanner touching several
    ports, or coming back, lands in one incident.
    """
    if message.sensor_kind != "canary":
        raise SensorAlertError(f"not a canary message: {message.sensor_kind!r}")
    body = message.body
    src_ip, port = body.get("src_ip"), body.get("port")
    if not isinstance(src_ip, str) or not src_ip or not isinstance(port, int):
        raise SensorAlertError("canary message without src_ip and port")
    src_port = body.get("src_port")
    at = body.get("at")
    detected_at = float(at) if isinstance(at, int | float) and at > 0 else message.received_at
    service = SERVICES.get(port, f"port {port}")
    service_ja = SERVICES.get(port, f"ポート {port}")
    sensor = message.sensor_id
    return Alert(
        id=_alert_id("canary_touch", message.gateway, message.seq),
        category="canary_touch",
        severity=config.canary_severity,
        detected_at=detected_at,
        actor=src_ip,
        target=f"{sensor}:{port}",
        summary_en=(
            f"{src_ip} connected to the canary on sensor {sensor} ({service}, port {port}). "
            "Nothing legitimate connects there: this is likely a scan or an intruder "
            "moving across the network."
        ),
        summary_ja=(
            f"{src_ip} がセンサー {sensor} のおとり（{service_ja}、ポート {port}）に接続しました。"
            "正規の機器が接続することはないため、スキャンや侵入者によるネットワーク内の"
            "横展開の可能性があります。"
        ),
        dedup_key=f"canary_touch:{message.gateway}:{sensor}:{src_ip}",
        rule="sensor.canary",
        evidence={
            "sensor_id": sensor,
            "gateway": message.gateway,
            "port": port,
            "src_port": src_port,
            "seq": message.seq,
            "dropped": body.get("dropped", 0),
        },
    )


@dataclass(frozen=True)
class SensorSeen:
    """What the store knows about one sensor's liveness."""

    gateway: str
    sensor_id: str
    #: When the cloud last heard the sensor (UNIX seconds on the cloud's clock: when the
    #: ingester committed its newest message), which liveness is judged on.
    last_heard: float
    #: The sensor's heartbeat interval (from its self-report), None when unknown.
    heartbeat_s: float | None = None
    #: The gateway's stamp of the sensor's newest message, shown to staff only: the
    #: gateway's clock may be off, and a backlog after an outage arrives late.
    last_seen: float | None = None


def interval_of(sensor: SensorSeen, config: SensorsConfig = DEFAULT) -> float:
    """The heartbeat interval liveness assumes for ``sensor``: its own, else the default,
    at most ``config.max_heartbeat_s``."""
    own = sensor.heartbeat_s
    interval = own if own is not None and own > 0 else config.default_heartbeat_s
    return min(interval, config.max_heartbeat_s)


def offline_alerts(
    sensors: Iterable[SensorSeen], *, now: float, config: SensorsConfig = DEFAULT
) -> list[Alert]:
    """A ``sensor_offline`` alert for each sensor the cloud has not heard for too long.

    ``now`` and ``last_heard`` are both the cloud's clock. The alert id names the outage
    (when the sensor was last heard), so running the job again during the same outage
    yields the same id and the store keeps one alert.
    """
    alerts = []
    for s in sensors:
        interval = interval_of(s, config)
        silent = now - s.last_heard
        if silent <= config.offline_after_intervals * interval:
            continue
        minutes = max(1, round(silent / 60))
        evidence: dict[str, Any] = {
            "last_heard": s.last_heard,
            "heartbeat_s": interval,
            "missed_intervals": int(silent // interval),
        }
        if s.last_seen is not None:
            evidence["last_seen"] = s.last_seen
        alerts.append(
            Alert(
                id=_alert_id("sensor_offline", s.gateway, s.sensor_id, int(s.last_heard)),
                category="sensor_offline",
                severity=config.offline_severity,
                detected_at=now,
                actor=s.sensor_id,
                target=s.gateway,
                summary_en=(
                    f"Sensor {s.sensor_id} has sent nothing for {minutes} min: its part of "
                    "the network is not watched and its canary is not listening."
                ),
                summary_ja=(
                    f"センサー {s.sensor_id} から {minutes} 分間通信がありません。"
                    "この範囲のネットワークは監視されておらず、おとりも機能していません。"
                ),
                dedup_key=f"sensor_offline:{s.gateway}:{s.sensor_id}",
                rule="sensor.liveness",
                evidence=evidence,
            )
        )
    return alerts


def sign_config(*, sensor_id: str, key: bytes, counter: int, settings: Mapping[str, Any]) -> bytes:
    """A config update for one sensor, authenticated with that sensor's key.

    ``counter`` must be larger than that of every update the sensor accepted before (the
    sensor refuses replays); the cloud keeps it per sensor. The gateway relays the result
    unchanged to ``site/sensors/{sensor_id}/config``.
    """
    if counter <= 0:
        raise ValueError("counter must be positive")
    body = json.dumps(
        {"sensor": sensor_id, "counter": counter, "settings": dict(settings)},
        separators=(",", ":"),
    )
    mac = hmac.new(key, CONFIG_DOMAIN + body.encode(), hashlib.sha256).hexdigest()
    return json.dumps({"body": body, "mac": mac}, separators=(",", ":")).encode()
