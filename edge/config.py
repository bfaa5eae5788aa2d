"""The gateway's configuration file: TOML, validated into typed structs.

Sections: ``[gateway]`` (who we are), ``[capture]`` (what we meter), ``[mqtt]`` (where
and how we deliver), ``[outbox]`` (where undelivered messages wait, and how much disk they
may take), ``[heartbeat]``, ``[detect]`` (the tenant's detection thresholds) and
``[sensors]`` (the relay from the site's sensor listener; off when absent) and
``[active]`` (the opt-in active checks of LAN devices; off unless switched on).
``edge/example.toml`` is the commented reference.

Every error names the field, what was expected, what was found and how to fix it, e.g.
``mqtt.port: expected an integer 1-65535, got 'abc'. Set mqtt.port to the broker's TLS
port, usually 8883.`` There are no default credentials: a missing password is an error.

The configuration hash (:func:`config_hash`) is the SHA-256 of the normalised
configuration (defaults filled in, keys sorted, JSON); heartbeats carry it so the SOC can
see which gateways run which settings. It covers paths to credential files, never their
contents.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import ssl
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import msgspec
from mimamori.detect.config import DetectConfig, load_config
from mimamori.detect.errors import ConfigError as DetectConfigError
from mimamori.edge.active import DEFAULT_PORTS, ActiveConfig
from mimamori.edge.errors import ConfigError
from mimamori.protocol import topics
from msgspec import Meta

_LOOPBACK_NAMES = {"localhost", "localhost.localdomain"}


class _Section(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pass


class GatewaySection(_Section):
    id: str
    tenant: str


class CaptureSection(_Section):
    # Empty: no capture (heartbeats only), e.g. while the box is being installed.
    interface: str = ""
    home_net: list[str] = []
    idle_timeout_s: Annotated[int, Meta(ge=1, le=3600)] = 15
    active_timeout_s: Annotated[int, Meta(ge=1, le=86400)] = 60
    summary_interval_s: Annotated[int, Meta(ge=1, le=3600)] = 60


class MqttSection(_Section):
    host: str
    port: Annotated[int, Meta(ge=1, le=65535)] = 8883
    ca_file: str = ""
    username: str = ""
    password_file: str = ""
    credential_file: str = ""
    insecure_plaintext: bool = False
    client_id: str = ""
    keepalive_s: Annotated[int, Meta(ge=5, le=3600)] = 60
    session_expiry_s: Annotated[int, Meta(ge=0, le=2**32 - 1)] = 86400
    connect_timeout_s: Annotated[float, Meta(gt=0, le=300)] = 10.0
    window: Annotated[int, Meta(ge=1, le=10000)] = 64
    ack_timeout_s: Annotated[float, Meta(gt=0, le=3600)] = 30.0
    backoff_initial_s: Annotated[float, Meta(gt=0, le=600)] = 1.0
    backoff_max_s: Annotated[float, Meta(gt=0, le=3600)] = 60.0


class OutboxSection(_Section):
    path: str = "/var/lib/mimamori/outbox.db"
    budget_mb: Annotated[int, Meta(ge=1, le=1_000_000)] = 512


class HeartbeatSection(_Section):
    interval_s: Annotated[float, Meta(gt=0, le=3600)] = 30.0


class DetectSection(_Section):
    # A TOML file of detection settings overriding detect/defaults.toml (the tenant's
    # thresholds); empty: the defaults.
    override: str = ""


class SensorsSection(_Section):
    # The site listener the sensors talk to (edge/sensors.py writes its configuration).
    host: str
    # Holds relay.password (the relay's login on the listener, mode 0600) and one
    # <sensor_id>.password per enrolled sensor; the relay accepts only those sensors.
    credentials_dir: str
    port: Annotated[int, Meta(ge=1, le=65535)] = 1883
    # CA of the listener's TLS certificate; empty: plain MQTT (the listener is on the LAN).
    ca_file: str = ""


class ActiveSection(_Section):
    # Opt-in active checks of LAN devices (edge/active.py); off unless switched on here
    # or by the tenant's set_config command (when allow_remote).
    enabled: bool = False
    # The factory-login tries (Telnet, FTP, HTTP Basic) need their own switch.
    credentials: bool = False
    # Whether the tenant's set_config command may switch the checks on (off always works).
    allow_remote: bool = True
    ports: list[int] = msgspec.field(default_factory=lambda: list(DEFAULT_PORTS))
    rate_per_s: Annotated[float, Meta(gt=0, le=50)] = 2.0
    burst: Annotated[int, Meta(ge=1, le=50)] = 4
    timeout_s: Annotated[float, Meta(gt=0, le=10)] = 1.0
    max_tries: Annotated[int, Meta(ge=1, le=10)] = 3
    interval_h: Annotated[float, Meta(gt=0, le=720)] = 24.0


class Config(_Section):
    """The whole configuration file, after validation."""

    gateway: GatewaySection
    mqtt: MqttSection
    capture: CaptureSection = msgspec.field(default_factory=CaptureSection)
    outbox: OutboxSection = msgspec.field(default_factory=OutboxSection)
    heartbeat: HeartbeatSection = msgspec.field(default_factory=HeartbeatSection)
    detect: DetectSection = msgspec.field(default_factory=DetectSection)
    sensors: SensorsSection | None = None
    active: ActiveSection = msgspec.field(default_factory=ActiveSection)


@dataclass(frozen=True)
class Credentials:
    """The gateway's own broker login (``None`` only for explicit plaintext test setups)."""

    username: str
    password: str = field(repr=False)


# field -> (what is expected, how to fix it). Fields not listed fall back to msgspec's text.
_HINTS: dict[str, tuple[str, str]] = {
    "gateway": ("a [gateway] table", "Add a [gateway] section with id and tenant."),
    "gateway.id": ("a string", "Set gateway.id to this box's id, e.g. 'gw-osaka-01'."),
    "gateway.tenant": ("a string", "Set gateway.tenant to the customer's tenant id."),
    "mqtt": ("an [mqtt] table", "Add an [mqtt] section naming the broker (host, port)."),
    "mqtt.host": ("a host name or address", "Set mqtt.host to the broker's host name."),
    "mqtt.port": (
        "an integer 1-65535",
        "Set mqtt.port to the broker's TLS port, usually 8883.",
    ),
    "mqtt.insecure_plaintext": (
        "true or false",
        "Leave mqtt.insecure_plaintext out (false) unless testing on loopback.",
    ),
    "mqtt.keepalive_s": ("an integer 5-3600", "Set mqtt.keepalive_s to about 60."),
    "mqtt.window": ("an integer 1-10000", "Set mqtt.window to about 64."),
    "mqtt.ack_timeout_s": ("a number of seconds > 0", "Set mqtt.ack_timeout_s to about 30."),
    "mqtt.backoff_initial_s": ("a number of seconds > 0", "Set it to about 1."),
    "mqtt.backoff_max_s": ("a number of seconds > 0", "Set it to about 60."),
    "outbox.path": ("a file path", "Set outbox.path, e.g. '/var/lib/mimamori/outbox.db'."),
    "outbox.budget_mb": (
        "an integer number of megabytes >= 1",
        "Set outbox.budget_mb to the disk space the outbox may use, e.g. 512.",
    ),
    "heartbeat.interval_s": (
        "a number of seconds, 0-3600",
        "Set heartbeat.interval_s to about 30.",
    ),
    "capture.interface": ("an interface name", "Set capture.interface, e.g. 'eth1'."),
    "capture.home_net": (
        "a list of CIDR strings",
        "Set capture.home_net to the LAN's networks, e.g. ['192.168.1.0/24'].",
    ),
    "capture.idle_timeout_s": ("an integer 1-3600", "Set it to about 15."),
    "capture.active_timeout_s": ("an integer 1-86400", "Set it to about 60."),
    "capture.summary_interval_s": ("an integer 1-3600", "Set it to about 60."),
    "detect.override": ("a file path", "Point detect.override at a detection TOML file."),
    "sensors.host": ("a host name or address", "Set sensors.host to the listener's address."),
    "sensors.port": ("an integer 1-65535", "Set sensors.port to the listener's port (1883)."),
    "sensors.credentials_dir": (
        "a directory path",
        "Set sensors.credentials_dir to the directory holding relay.password.",
    ),
    "active.enabled": ("true or false", "Set active.enabled = true to switch the checks on."),
    "active.credentials": (
        "true or false",
        "Set active.credentials = true to let the checks try factory logins.",
    ),
    "active.allow_remote": (
        "true or false",
        "Set active.allow_remote = false to keep the tenant's command from switching them on.",
    ),
    "active.ports": (
        "a list of TCP ports 1-65535",
        "Set active.ports to the ports to check, e.g. [23, 2323, 21, 80, 8080].",
    ),
    "active.rate_per_s": (
        "a number of connections per second, above 0 and at most 50",
        "Set active.rate_per_s to about 2.",
    ),
    "active.burst": ("an integer 1-50", "Set active.burst to about 4."),
    "active.timeout_s": (
        "a number of seconds, above 0 and at most 10",
        "Set active.timeout_s to about 1.",
    ),
    "active.max_tries": (
        "an integer 1-10",
        "Set active.max_tries to 3 or less: more tries risk locking a device's account.",
    ),
    "active.interval_h": (
        "a number of hours, above 0 and at most 720",
        "Set active.interval_h to about 24.",
    ),
}

_AT = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<path>[^`]*)`)?$")


def _lookup(raw: Any, dotted: str) -> Any:
    node = raw
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _translate(exc: msgspec.ValidationError, raw: dict[str, Any]) -> ConfigError:
    """Turn msgspec's message into one that names the field, the value and the fix."""
    match = _AT.match(str(exc))
    what = match.group("what") if match else str(exc)
    path = (match.group("path") or "").lstrip(".") if match else ""
    missing = re.match(r"Object missing required field `([^`]+)`", what)
    unknown = re.match(r"Object contains unknown field `([^`]+)`", what)
    if missing:
        name = f"{path}.{missing.group(1)}" if path else missing.group(1)
        expected, fix = _HINTS.get(name, ("a value", f"Add {name} to the file."))
        return ConfigError(f"{name}: missing, expected {expected}. {fix}")
    if unknown:
        name = f"{path}.{unknown.group(1)}" if path else unknown.group(1)
        return ConfigError(
            f"{name}: unknown setting. Check its spelling against edge/example.toml or remove it."
        )
    key = re.sub(r"\[\d+\]", "", path)  # a list item: the list's hint, the whole list
    if key in _HINTS:
        expected, fix = _HINTS[key]
        return ConfigError(f"{key}: expected {expected}, got {_lookup(raw, key)!r}. {fix}")
    value = _lookup(raw, path)
    return ConfigError(f"{path or 'config'}: {what[0].lower() + what[1:]}, got {value!r}.")


def parse(text: str, *, source: str = "config") -> Config:
    """Parse and validate a configuration document (without touching credential files)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"{source}: not valid TOML ({exc}). Fix the syntax at that spot."
        ) from exc
    try:
        config = msgspec.convert(raw, Config)
    except msgspec.ValidationError as exc:
        raise _translate(exc, raw) from exc
    _check(config)
    return config


def _check(config: Config) -> None:
    """Checks that span fields or need more than a type."""
    for name, value in (
        ("gateway.id", config.gateway.id),
        ("gateway.tenant", config.gateway.tenant),
    ):
        if not topics.valid_id(value):
            raise ConfigError(
                f"{name}: {value!r} is not a valid id. Use 1-63 characters of lowercase "
                "letters, digits, '-' and '_', starting with a letter or digit."
            )
    if not config.mqtt.host.strip():
        raise ConfigError("mqtt.host: empty. Set mqtt.host to the broker's host name.")
    for cidr in config.capture.home_net:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError as exc:
            raise ConfigError(
                f"capture.home_net: {cidr!r} is not a network. Write it as CIDR, "
                "e.g. '192.168.1.0/24'."
            ) from exc
    m = config.mqtt
    if m.backoff_max_s < m.backoff_initial_s:
        raise ConfigError(
            f"mqtt.backoff_max_s: {m.backoff_max_s} is below mqtt.backoff_initial_s "
            f"({m.backoff_initial_s}). Raise backoff_max_s (e.g. 60)."
        )
    if m.insecure_plaintext and not _is_loopback(m.host):
        raise ConfigError(
            f"mqtt.insecure_plaintext: allowed only for a broker on loopback, not {m.host!r}. "
            "Remove insecure_plaintext and set mqtt.ca_file to the broker's CA."
        )
    if m.password_file and m.credential_file:
        raise ConfigError(
            "mqtt.password_file and mqtt.credential_file: both set. Keep one: "
            "credential_file (written by 'mimamori edge enroll') or password_file."
        )
    if not config.outbox.path:
        raise ConfigError("outbox.path: empty. Set outbox.path to a file on persistent storage.")
    _check_active(config.active)


def _check_active(a: ActiveSection) -> None:
    bad = [p for p in a.ports if not 0 < p < 65536]
    if bad or not a.ports:
        raise ConfigError(
            f"active.ports: expected a list of TCP ports 1-65535, got {a.ports!r}. "
            "Set active.ports to the ports to check, e.g. [23, 2323, 21, 80, 8080]."
        )
    if len(set(a.ports)) != len(a.ports):
        raise ConfigError(f"active.ports: {a.ports!r} lists a port twice. List each port once.")


def active_config(config: Config) -> ActiveConfig:
    """The ``[active]`` section as the guard's settings (the local switch only)."""
    a = config.active
    return ActiveConfig(
        enabled=a.enabled, ports=tuple(a.ports), rate_per_s=a.rate_per_s, burst=a.burst,
        timeout_s=a.timeout_s, credentials=a.credentials, max_tries=a.max_tries,
        interval_h=a.interval_h,
    )  # fmt: skip


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def detect_config(config: Config) -> DetectConfig:
    """The tenant's detection settings: defaults plus the override file, validated by
    ``mimamori.detect.config``; any problem is a ConfigError naming the file."""
    path = config.detect.override
    if not path:
        return load_config(None)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"detect.override: cannot read {path} ({exc}).") from exc
    try:
        return load_config(text)
    except DetectConfigError as exc:
        raise ConfigError(f"detect.override: {path}: {exc}. Fix that setting.") from exc


def sensor_credentials(config: Config) -> tuple[str, set[str]]:
    """The relay's password and the enrolled sensor ids, from ``sensors.credentials_dir``."""
    if config.sensors is None:
        raise ConfigError("sensors: no [sensors] section.")
    folder = Path(config.sensors.credentials_dir)
    password = _read_secret_file("sensors.credentials_dir", str(folder / "relay.password"))
    try:
        known = {p.stem for p in folder.glob("*.password") if p.stem != "relay"}
    except OSError as exc:
        raise ConfigError(f"sensors.credentials_dir: cannot list {folder} ({exc}).") from exc
    return password.strip(), {k for k in known if topics.valid_id(k)}


def sensors_ssl_context(config: Config) -> ssl.SSLContext | None:
    """TLS to the site listener when ``sensors.ca_file`` is set, else None (plain, LAN)."""
    if config.sensors is None or not config.sensors.ca_file:
        return None
    try:
        context = ssl.create_default_context(cafile=config.sensors.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"sensors.ca_file: {config.sensors.ca_file} is not a readable PEM CA ({exc})."
        ) from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def load(path: str | Path) -> Config:
    """Read, parse and validate a configuration file, including its credential files."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(
            f"{path}: no such file. Pass the gateway's config (see edge/example.toml)."
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read it ({exc}).") from exc
    config = parse(text, source=str(path))
    credentials(config)
    ssl_context(config)
    detect_config(config)
    if config.sensors is not None:
        sensor_credentials(config)
        sensors_ssl_context(config)
    return config


def _read_secret_file(name: str, path_str: str) -> str:
    path = Path(path_str)
    try:
        st = path.stat()
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(
            f"{name}: {path} does not exist. Run 'mimamori edge enroll' or write the "
            "password there (mode 0600)."
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{name}: cannot read {path} ({exc}).") from exc
    if st.st_mode & stat.S_IROTH:
        raise ConfigError(f"{name}: {path} is readable by everyone. Run: chmod 600 {path}")
    return text


def credentials(config: Config) -> Credentials | None:
    """The broker login from the credential or password file.

    ``None`` only when ``insecure_plaintext`` is set and no credential is configured
    (an anonymous test broker on loopback). Otherwise a missing credential is an error.
    """
    m = config.mqtt
    if m.credential_file:
        text = _read_secret_file("mqtt.credential_file", m.credential_file)
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(
                f"mqtt.credential_file: {m.credential_file} is not valid TOML ({exc}). "
                "Enroll again with 'mimamori edge enroll'."
            ) from exc
        user, password = doc.get("username"), doc.get("password")
        if not isinstance(user, str) or not isinstance(password, str) or not password:
            raise ConfigError(
                f"mqtt.credential_file: {m.credential_file} lacks username or password. "
                "Enroll again with 'mimamori edge enroll'."
            )
        if m.username and m.username != user:
            raise ConfigError(
                f"mqtt.username: {m.username!r} differs from the credential file's {user!r}. "
                "Remove mqtt.username."
            )
        return Credentials(user, password)
    if m.password_file:
        password = _read_secret_file("mqtt.password_file", m.password_file).strip()
        if not password:
            raise ConfigError(
                f"mqtt.password_file: {m.password_file} is empty. Write the gateway's "
                "broker password into it."
            )
        return Credentials(m.username or config.gateway.id, password)
    if m.insecure_plaintext:
        return None
    raise ConfigError(
        "mqtt.credential_file: missing; the gateway needs its own broker credential and there "
        "is no default. Run 'mimamori edge enroll' or set mqtt.password_file."
    )


def ssl_context(config: Config) -> ssl.SSLContext | None:
    """A client TLS context that verifies the broker against ``ca_file`` (or system CAs).

    ``None`` when ``insecure_plaintext`` is set.
    """
    m = config.mqtt
    if m.insecure_plaintext:
        return None
    try:
        if m.ca_file:
            if not os.path.exists(m.ca_file):
                raise ConfigError(
                    f"mqtt.ca_file: {m.ca_file} does not exist. Point it at the broker's CA "
                    "certificate (PEM)."
                )
            context = ssl.create_default_context(cafile=m.ca_file)
        else:
            context = ssl.create_default_context()
    except ssl.SSLError as exc:
        raise ConfigError(
            f"mqtt.ca_file: {m.ca_file} is not a PEM CA certificate ({exc}). "
            "Point it at the broker's CA certificate."
        ) from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def config_hash(config: Config) -> str:
    """SHA-256 (hex) of the normalised configuration."""
    doc = msgspec.json.encode(msgspec.to_builtins(config), order="sorted")
    return hashlib.sha256(doc).hexdigest()
