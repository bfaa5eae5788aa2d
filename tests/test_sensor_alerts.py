"""cloud/sensors.py: canary_touch and sensor_offline alerts, signed config updates."""

from __future__ import annotations

import hashlib
import hmac
import json

import msgspec
import pytest
from mimamori.cloud.errors import ConfigError
from mimamori.cloud.rows import reported_heartbeat
from mimamori.cloud.sensors import (
    CONFIG_DOMAIN,
    DEFAULT,
    SensorAlertError,
    SensorsConfig,
    SensorSeen,
    canary_alert,
    interval_of,
    offline_alerts,
    sign_config,
)
from mimamori.cloud.settings import sensors_from_env
from mimamori.protocol import Alert, SensorMessage, codec

NOW = 1_790_000_000.0


def canary(body: dict, *, gateway: str = "gw1", seq: int = 41, kind: str = "canary",
           sensor: str = "s1") -> SensorMessage:  # fmt: skip
    return SensorMessage(
        gateway=gateway,
        seq=seq,
        sent_at=NOW,
        sensor_id=sensor,
        sensor_kind=kind,
        received_at=NOW,
        body=body,
    )  # type: ignore[arg-type]


def roundtrip(alert: Alert) -> Alert:
    """Through the wire format with validation: every field within the protocol's limits."""
    return msgspec.json.decode(codec.encode(alert, compress=False), type=Alert)


def test_canary_alert() -> None:
    body = {"sensor": "s1", "port": 445, "src_ip": "192.168.1.66", "src_port": 50123,
            "at": NOW - 2.5, "dropped": 0}  # fmt: skip
    alert = roundtrip(canary_alert(canary(body)))
    assert alert.category == "canary_touch"
    assert alert.severity == "high"
    assert alert.actor == "192.168.1.66"
    assert alert.target == "s1:445"
    assert alert.detected_at == NOW - 2.5  # when it happened, not when it arrived
    assert alert.id == "canary_touch:gw1:41"
    assert alert.dedup_key == "canary_touch:gw1:s1:192.168.1.66"
    assert "SMB" in alert.summary_en and "192.168.1.66" in alert.summary_en
    assert "SMB" in alert.summary_ja and "おとり" in alert.summary_ja
    assert alert.evidence == {"sensor_id": "s1", "gateway": "gw1", "port": 445,
                              "src_port": 50123, "seq": 41, "dropped": 0}  # fmt: skip


def test_same_scanner_same_incident_redelivery_same_alert() -> None:
    a = canary_alert(canary({"port": 23, "src_ip": "10.0.0.9", "src_port": 1}, seq=1))
    b = canary_alert(canary({"port": 3389, "src_ip": "10.0.0.9", "src_port": 2}, seq=2))
    c = canary_alert(canary({"port": 23, "src_ip": "10.0.0.10", "src_port": 1}, seq=3))
    again = canary_alert(canary({"port": 23, "src_ip": "10.0.0.9", "src_port": 1}, seq=1))
    assert a.dedup_key == b.dedup_key != c.dedup_key
    assert a.id != b.id and again.id == a.id
    assert "port 3389" not in a.summary_en and "RDP" in b.summary_en
    # Without "at" (an old relay), the arrival time is used.
    assert a.detected_at == NOW


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        ({"port": 23, "src_ip": "10.0.0.9"}, "heartbeat"),
        ({"port": 23}, "canary"),
        ({"src_ip": "10.0.0.9"}, "canary"),
        ({"port": "23", "src_ip": "10.0.0.9"}, "canary"),
        ({"port": 23, "src_ip": ""}, "canary"),
    ],
)
def test_canary_alert_refuses_bad_messages(body: dict, kind: str) -> None:
    with pytest.raises(SensorAlertError):
        canary_alert(canary(body, kind=kind))


def test_long_ids_are_digested_within_the_protocol_limit() -> None:
    gw = "g" * 63
    alert = roundtrip(canary_alert(canary({"port": 80, "src_ip": "10.1.1.1"}, gateway=gw,
                                          seq=2**62)))  # fmt: skip
    assert len(alert.id) <= 64 and alert.id.startswith("canary_touch:")
    other = canary_alert(canary({"port": 80, "src_ip": "10.1.1.1"}, gateway=gw, seq=2**62 + 1))
    assert other.id != alert.id


# Hand-worked: default interval 60 s, offline after 3 intervals = 180 s of silence.
@pytest.mark.parametrize(
    ("silent_s", "heartbeat_s", "offline"),
    [
        (60, None, False),
        (180, None, False),   # exactly 3 intervals: not yet
        (181, None, True),
        (3600, None, True),
        (181, 120, False),    # a sensor configured for 120 s heartbeats: 360 s
        (361, 120, True),
        (31, 10, True),       # 10 s heartbeats: 30 s
        (181, 0, True),       # unknown (0) falls back to the default
    ],
)  # fmt: skip
def test_offline_threshold(silent_s: float, heartbeat_s: float | None, offline: bool) -> None:
    seen = SensorSeen("gw1", "s1", NOW - silent_s, heartbeat_s)
    alerts = offline_alerts([seen], now=NOW)
    assert bool(alerts) is offline


def test_offline_alert_content_and_stable_id() -> None:
    seen = [SensorSeen("gw1", "s1", NOW - 600), SensorSeen("gw1", "s2", NOW - 10)]
    [alert] = [roundtrip(a) for a in offline_alerts(seen, now=NOW)]
    assert alert.category == "sensor_offline" and alert.severity == "medium"
    assert alert.actor == "s1" and alert.target == "gw1"
    assert "10 min" in alert.summary_en and "10 分間" in alert.summary_ja
    assert alert.dedup_key == "sensor_offline:gw1:s1"
    assert alert.evidence["missed_intervals"] == 10
    # The job runs again a minute later, same outage: same id (the store keeps one).
    [later] = offline_alerts(seen, now=NOW + 60)
    assert later.id == alert.id
    # A new outage after the sensor came back: a new id, same incident key.
    [next_outage] = offline_alerts([SensorSeen("gw1", "s1", NOW + 500)], now=NOW + 1000)
    assert next_outage.id != alert.id and next_outage.dedup_key == alert.dedup_key


def test_config_is_validated() -> None:
    assert DEFAULT.offline_after_intervals == 3
    with pytest.raises(ValueError, match=r"^offline_severity must be one of"):
        SensorsConfig(offline_severity="urgent")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^offline_after_intervals must be more than 1"):
        SensorsConfig(offline_after_intervals=1)
    with pytest.raises(ValueError, match=r"^max_heartbeat_s must be a positive"):
        SensorsConfig(max_heartbeat_s=0)
    with pytest.raises(
        ValueError, match=r"^default_heartbeat_s .* must not exceed max_heartbeat_s"
    ):
        SensorsConfig(max_heartbeat_s=30)
    strict = SensorsConfig(offline_after_intervals=2)
    assert offline_alerts([SensorSeen("gw1", "s1", NOW - 121)], now=NOW, config=strict)


# Hand-worked: the sensor's own interval, else the default (60 s), capped at the maximum.
@pytest.mark.parametrize(
    ("own", "config", "expected"),
    [
        (None, DEFAULT, 60),
        (0, DEFAULT, 60),
        (-5, DEFAULT, 60),
        (600, DEFAULT, 600),
        (7200, DEFAULT, 3600),  # beyond what the firmware accepts: the maximum
        (600, SensorsConfig(max_heartbeat_s=120), 120),
        (None, SensorsConfig(default_heartbeat_s=1.5, max_heartbeat_s=1.5), 1.5),
    ],
)  # fmt: skip
def test_interval_of(own: float | None, config: SensorsConfig, expected: float) -> None:
    assert interval_of(SensorSeen("gw1", "s1", NOW, own), config) == expected


def test_offline_alert_names_the_cloud_time_and_shows_the_gateway_stamp() -> None:
    # Heard by the cloud 200 s ago; the gateway stamped its last message an hour before.
    seen = SensorSeen("gw1", "s1", NOW - 200, 60, last_seen=NOW - 3800)
    [alert] = offline_alerts([seen], now=NOW)
    assert alert.id == f"sensor_offline:gw1:s1:{int(NOW) - 200}"
    assert alert.evidence == {"last_heard": NOW - 200, "last_seen": NOW - 3800,
                              "heartbeat_s": 60, "missed_intervals": 3}  # fmt: skip
    assert "3 min" in alert.summary_en  # 200 s of silence, rounded


def test_sensor_settings_from_the_environment() -> None:
    assert sensors_from_env({}) == DEFAULT
    env = {"MIMAMORI_SENSORS_OFFLINE_AFTER_INTERVALS": "4", "MIMAMORI_SENSORS_MAX_HEARTBEAT_S":
           "900", "MIMAMORI_SENSORS_CANARY_SEVERITY": "critical",
           "MIMAMORI_SENSORS_DEFAULT_HEARTBEAT_S": " "}  # fmt: skip
    assert sensors_from_env(env) == SensorsConfig(
        offline_after_intervals=4, max_heartbeat_s=900, canary_severity="critical"
    )


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"MIMAMORI_SENSORS_OFFLINE_AFTER_INTERVALS": "three"},
         ["MIMAMORI_SENSORS_OFFLINE_AFTER_INTERVALS='three' is not a number"]),
        ({"MIMAMORI_SENSORS_OFFLINE_AFTER_INTERVALS": "0.5"},
         ["MIMAMORI_SENSORS_OFFLINE_AFTER_INTERVALS='0.5'", "more than 1"]),
        ({"MIMAMORI_SENSORS_OFFLINE_SEVERITY": "urgent"},
         ["MIMAMORI_SENSORS_OFFLINE_SEVERITY='urgent'", "one of info, low"]),
        ({"MIMAMORI_SENSORS_DEFAULT_HEARTBEAT_S": "-1"},
         ["MIMAMORI_SENSORS_DEFAULT_HEARTBEAT_S='-1'", "positive"]),
        # The default interval (unset: 60) above a lowered maximum: both are named.
        ({"MIMAMORI_SENSORS_MAX_HEARTBEAT_S": "30"},
         ["MIMAMORI_SENSORS_DEFAULT_HEARTBEAT_S (unset: default 60",
          "MIMAMORI_SENSORS_MAX_HEARTBEAT_S='30'"]),
    ],
)  # fmt: skip
def test_bad_sensor_settings_name_the_variable(env: dict[str, str], names: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        sensors_from_env(env)
    for name in names:
        assert name in str(info.value)


@pytest.mark.parametrize(
    ("kind", "body", "expected"),
    [
        ("self_report", {"heartbeat_s": 60}, 60.0),
        ("self_report", {"heartbeat_s": 2.5}, 2.5),
        ("self_report", {}, None),
        ("self_report", {"heartbeat_s": "60"}, None),
        ("self_report", {"heartbeat_s": True}, None),
        ("self_report", {"heartbeat_s": 0}, None),
        ("self_report", {"heartbeat_s": 1e300}, None),
        ("heartbeat", {"heartbeat_s": 60}, None),  # only self-reports announce it
    ],
)  # fmt: skip
def test_reported_heartbeat(kind: str, body: dict, expected: float | None) -> None:
    assert reported_heartbeat(canary(body, kind=kind)) == expected


def test_sign_config() -> None:
    key = b"k" * 32
    update = json.loads(sign_config(sensor_id="s1", key=key, counter=3,
                                    settings={"heartbeat_s": 30}))  # fmt: skip
    assert json.loads(update["body"]) == {"sensor": "s1", "counter": 3,
                                          "settings": {"heartbeat_s": 30}}  # fmt: skip
    expected = hmac.new(key, CONFIG_DOMAIN + update["body"].encode(), hashlib.sha256)
    assert update["mac"] == expected.hexdigest()
    with pytest.raises(ValueError):
        sign_config(sensor_id="s1", key=key, counter=0, settings={})
