"""Detection thresholds: the typed, validated form of ``defaults.toml``.

Every number a rule compares against lives in ``defaults.toml`` with a comment saying why
it has that value. :func:`load_config` reads the defaults, deep-merges a tenant's partial
override (a dict or TOML text) over them and validates the result: unknown keys, wrong
types and out-of-range values raise :class:`~mimamori.detect.errors.ConfigError` naming
the offending key. The structs below declare no defaults on purpose, so a key missing
from ``defaults.toml`` is an error too.
"""

from __future__ import annotations

import copy
import datetime
import ipaddress
import tomllib
from importlib import resources
from typing import Annotated, Any, Literal

import msgspec
from mimamori.detect.errors import ConfigError
from msgspec import Meta

Severity = Literal["info", "low", "medium", "high", "critical"]
Seconds = Annotated[float, Meta(gt=0, le=90 * 86400)]
PosInt = Annotated[int, Meta(ge=1, le=2**53)]
Fraction = Annotated[float, Meta(ge=0, le=1)]
Port = Annotated[int, Meta(ge=0, le=65535)]


class _Section(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Base: every section rejects keys it does not know (typos in overrides)."""


class EngineConfig(_Section):
    suppress_s: Seconds
    suppress_posture_s: Seconds
    max_tracked: PosInt
    housekeeping_s: Seconds


class ScanConfig(_Section):
    window_s: Seconds
    completed_weight: Fraction
    min_failed_share: Fraction
    vertical_ports: PosInt
    horizontal_hosts: PosInt
    horizontal_hosts_inbound: PosInt
    icmp_hosts: PosInt
    arp_window_s: Seconds
    arp_targets: PosInt
    udp_answer_ports: list[Port]
    severity_lan: Severity
    severity_outbound: Severity
    severity_inbound: Severity
    severity_inbound_answered: Severity
    severity_outbound_silent: Severity
    ignore_sources: list[str]


class BeaconConfig(_Section):
    skew_tolerance: Fraction
    min_connections: PosInt
    max_history: PosInt
    merge_s: Annotated[float, Meta(ge=0, le=3600)]
    full_count: PosInt
    size_reference_bytes: PosInt
    threshold: Fraction
    min_interval_madm: Fraction
    random_madm: Fraction
    small_sample_k: Annotated[float, Meta(ge=0, le=10)]
    evaluate_every_s: Seconds
    history_s: Seconds
    prevalence_min_devices: PosInt
    prevalence_fraction: Fraction
    ignore_apps: list[str]
    ignore_ports: list[Port]
    allow_domains: list[str]
    vendor_cloud_domains: list[str]
    severity: Severity
    severity_strong: Severity
    strong_threshold: Fraction
    quiet_device_ouis: dict[str, str]
    quiet_vendors: list[str]
    severity_quiet_device: Severity


class BruteforceConfig(_Section):
    window_s: Seconds
    min_sessions: PosInt
    short_session_s: Seconds
    min_packets: PosInt
    max_session_bytes: PosInt
    apps: dict[str, str]
    ports: dict[str, list[Port]]
    severity: Severity
    severity_inbound: Severity


class DnsTunnelConfig(_Section):
    dns_ports: list[Port]
    long_label: PosInt
    random_label_len: PosInt
    random_label_entropy: Annotated[float, Meta(ge=0, le=8)]
    query_overhead_bytes: Annotated[int, Meta(ge=0, le=1500)]
    flow_min_queries: PosInt
    flow_min_name_bytes: PosInt
    zone_window_s: Seconds
    zone_unique_names: PosInt
    zone_min_median_len: PosInt
    beacon_history_s: Seconds
    beacon_merge_s: Seconds
    beacon_min_checkins: PosInt
    beacon_min_sub_len: PosInt
    beacon_min_interval_madm: Fraction
    beacon_random_madm: Fraction
    beacon_small_sample_k: Annotated[float, Meta(ge=0, le=10)]
    allow_zones: list[str]
    severity: Severity
    severity_strong: Severity
    severity_shape_only: Severity
    severity_beacon: Severity


class LateralConfig(_Section):
    window_s: Seconds
    min_targets: PosInt
    remote_exec_services: list[str]
    min_targets_remote_exec: PosInt
    severity_remote_exec: Severity
    apps: dict[str, str]
    ports: dict[str, list[Port]]
    severity: Severity
    ignore_sources: list[str]


class IntelConfig(_Section):
    severity_outbound: Severity
    severity_outbound_unanswered: Severity
    severity_inbound_accepted: Severity
    severity_inbound: Severity
    severity_dns: Severity


class MalwareConfig(_Section):
    exe_content_types: list[str]
    severity_exe: Severity
    severity_exe_odd_ua: Severity
    nonsense_ua_min_len: PosInt
    nonsense_ua_case_flips: Fraction
    severity_nonsense_ua: Severity
    smtp_ports: list[Port]
    smtp_apps: list[str]
    smtp_window_s: Seconds
    smtp_min_servers: PosInt
    severity_smtp: Severity
    http_apps: list[str]
    tls_apps: list[str]
    ordinary_http_ports: list[Port]
    ordinary_tls_ports: list[Port]
    severity_unusual_port: Severity
    unusual_port_repeat_s: Seconds
    bad_client_fingerprints: dict[str, str]
    severity_bad_fingerprint: Severity


class NewDeviceConfig(_Section):
    learning_s: Annotated[float, Meta(ge=0, le=90 * 86400)]
    severity: Severity


class ExposureService(_Section):
    name: str
    ports: list[Port]
    severity: Severity


class ExposureConfig(_Section):
    services: list[ExposureService]


class CleartextConfig(_Section):
    apps: dict[str, str]
    min_packets_each_way: PosInt
    severity: Severity


class OldOsMarker(_Section):
    marker: str
    name: str
    end_of_support: datetime.date


class OldOsConfig(_Section):
    user_agents: list[OldOsMarker]
    smb1_apps: list[str]
    severity: Severity
    severity_internet: Severity


class LongBeaconConfig(_Section):
    skew_tolerance: Fraction
    min_buckets: PosInt
    min_median_interval_s: Annotated[float, Meta(ge=0, le=86400)]
    max_median_interval_s: Annotated[float, Meta(gt=0, le=86400)]
    protocols: list[Annotated[int, Meta(ge=0, le=255)]]
    threshold: Fraction
    min_interval_madm: Fraction
    random_madm: Fraction
    small_sample_k: Annotated[float, Meta(ge=0, le=10)]
    full_count: PosInt
    size_reference_bytes: PosInt
    severity: Severity


class ExfiltrationConfig(_Section):
    bucket_s: Seconds
    baseline_s: Seconds
    min_baseline_buckets: PosInt
    min_bytes: PosInt
    min_ratio: Annotated[float, Meta(ge=1, le=1e6)]
    min_robust_z: Annotated[float, Meta(ge=0, le=1e3)]
    severity: Severity


class LivenessConfig(_Section):
    gateway_missed_heartbeats: PosInt
    gateway_heartbeat_s: Seconds
    sensor_silence_s: Seconds
    severity_gateway: Severity
    severity_sensor: Severity


class DetectConfig(_Section):
    """All detection thresholds of one tenant."""

    engine: EngineConfig
    scan: ScanConfig
    beacon: BeaconConfig
    bruteforce: BruteforceConfig
    dns_tunnel: DnsTunnelConfig
    lateral_movement: LateralConfig
    intel_match: IntelConfig
    malware_traffic: MalwareConfig
    new_device: NewDeviceConfig
    exposure: ExposureConfig
    cleartext_credentials: CleartextConfig
    old_os: OldOsConfig
    longwindow_beacon: LongBeaconConfig
    exfiltration: ExfiltrationConfig
    liveness: LivenessConfig


def default_dict() -> dict[str, Any]:
    """The shipped defaults as a plain dict (a fresh copy each call)."""
    text = resources.files("mimamori.detect").joinpath("defaults.toml").read_text("utf-8")
    return tomllib.loads(text)


def _merge(base: dict[str, Any], override: dict[str, Any], path: str) -> dict[str, Any]:
    """Deep-merge ``override`` into a copy of ``base``; tables merge, anything else replaces."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        here = f"{path}.{key}" if path else key
        if key not in out:
            raise ConfigError(f"unknown detection setting {here!r}")
        if isinstance(out[key], dict) and isinstance(value, dict) and here.count(".") == 0:
            # Top-level sections merge key by key; deeper tables (maps such as
            # bruteforce.ports) replace wholesale so a tenant can remove entries.
            out[key] = _merge(out[key], value, here)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_config(override: dict[str, Any] | str | None = None) -> DetectConfig:
    """Defaults merged with a tenant's partial override (dict or TOML text), validated."""
    data = default_dict()
    if override is not None:
        if isinstance(override, str):
            try:
                override = tomllib.loads(override)
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"detection override is not valid TOML: {exc}") from exc
        if not isinstance(override, dict):
            raise ConfigError("detection override must be a table")
        data = _merge(data, override, "")
    try:
        cfg = msgspec.convert(data, type=DetectConfig)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid detection setting: {exc}") from exc
    _check_addresses(cfg)
    return cfg


def _check_addresses(cfg: DetectConfig) -> None:
    """Address lists must hold addresses or CIDRs: say which entry is not one."""
    for key, entries in (
        ("scan.ignore_sources", cfg.scan.ignore_sources),
        ("lateral_movement.ignore_sources", cfg.lateral_movement.ignore_sources),
    ):
        for entry in entries:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError as exc:
                raise ConfigError(f"{key}: {entry!r} is not an address or CIDR") from exc
