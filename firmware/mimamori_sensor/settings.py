"""The node's provisioned configuration and the settings the cloud may change later.

Provisioning writes ``/config.json`` once, at flashing time (see docs/firmware.md). It holds
the secrets (Wi-Fi password, MQTT password, HMAC key) and the fixed identity. A few
operational *settings* may later be changed by an authenticated update from the cloud
(see :mod:`.auth`); those are kept in ``/state.json`` together with the update counter.

Defaults below are the values a node runs with when neither file says otherwise.
"""

import binascii
import json

#: Seconds between heartbeats. The cloud raises ``sensor_offline`` after a few missed ones
#: (cloud/sensors.py), so a shorter interval detects a dead node sooner at the cost of
#: radio time.
HEARTBEAT_S = 60
#: Ports the canary listens on: telnet, HTTP, SMB, Modbus/TCP and RDP are what worms,
#: ransomware operators and scanners probe first on a small office LAN.
CANARY_PORTS = (23, 80, 445, 502, 3389)
#: Most canary listeners: each takes a socket, and lwIP has few (ESP-IDF's default is 10).
MAX_CANARY_PORTS = 8
#: Seconds the hardware watchdog waits for a feed before resetting the board. 8 because
#: the rp2 (Pico W) watchdog cannot wait longer than 8.3 s; every blocking step must stay
#: under it (see CONNECT_TIMEOUT_S; Wi-Fi joins are polled and feed the watchdog).
WATCHDOG_S = 8
#: Seconds to wait for the broker's CONNACK (and the TCP/TLS connect before it). A TLS
#: handshake with a 2048-bit RSA certificate takes 1-3 s on an ESP32.
CONNECT_TIMEOUT_S = 5
#: Seconds to wait for the Wi-Fi association and DHCP lease.
WIFI_TIMEOUT_S = 20
#: MQTT keepalive; the broker drops us after 1.5x this without traffic.
KEEPALIVE_S = 120
#: Reconnect backoff: first delay, cap (milliseconds).
BACKOFF_BASE_MS = 1000
BACKOFF_CAP_MS = 300000
#: Plain MQTT port of the gateway's site listener and its TLS port.
PORT_PLAIN = 1883
PORT_TLS = 8883

#: Settings an authenticated update may change, with their allowed ranges.
MUTABLE = {
    "heartbeat_s": (10, 3600),
    "canary_enabled": (0, 1),
}

REQUIRED = ("sensor_id", "wifi_ssid", "wifi_password", "gateway_host", "mqtt_password",
            "hmac_key")


class ConfigError(Exception):
    """The provisioned configuration is missing, unreadable or invalid."""


class Settings:
    """Everything the node needs to run, validated once at start."""

    def __init__(self, doc: dict, state: dict) -> None:
        for name in REQUIRED:
            if not doc.get(name):
                raise ConfigError("config.json: missing " + name)
        self.sensor_id = _ident(doc["sensor_id"])
        self.wifi_ssid = str(doc["wifi_ssid"])
        self.wifi_password = str(doc["wifi_password"])
        self.gateway_host = str(doc["gateway_host"])
        self.tls = bool(doc.get("tls", True))
        self.port = int(doc.get("gateway_port", PORT_TLS if self.tls else PORT_PLAIN))
        # CA certificate (DER) that signed the gateway's site listener certificate.
        self.ca_path = str(doc.get("ca_path", "/gateway-ca.der"))
        # The MQTT user name is the sensor id: the gateway's ACL is written per user.
        self.mqtt_user = self.sensor_id
        self.mqtt_password = str(doc["mqtt_password"])
        try:
            self.hmac_key = binascii.unhexlify(doc["hmac_key"])
        except ValueError as exc:
            raise ConfigError("config.json: hmac_key is not hex")
        if len(self.hmac_key) < 16:
            raise ConfigError("config.json: hmac_key shorter than 16 bytes")
        ports = tuple(int(p) for p in doc.get("canary_ports", CANARY_PORTS))
        if len(ports) > MAX_CANARY_PORTS or any(p < 1 or p > 65535 for p in ports):
            raise ConfigError("canary_ports: at most 8 ports in 1-65535")
        self.canary_ports = ports
        self.watchdog_s = int(doc.get("watchdog_s", WATCHDOG_S))
        if not 2 <= self.watchdog_s <= WATCHDOG_S:
            raise ConfigError("watchdog_s must be 2-8 (the Pico W cannot wait longer)")
        # Mutable settings: provisioned value, then whatever an accepted update set.
        self.heartbeat_s = HEARTBEAT_S
        self.canary_enabled = 1
        self.apply({"heartbeat_s": int(doc.get("heartbeat_s", HEARTBEAT_S))})
        self.counter = int(state.get("counter", 0))
        self.apply(state.get("settings", {}))

    def apply(self, changes: dict) -> None:
        """Apply already authenticated changes; raise :class:`ConfigError` if one is invalid.

        All changes are checked before any is applied, so a bad update changes nothing.
        """
        for name in changes:
            if name not in MUTABLE:
                raise ConfigError("setting not changeable: " + str(name))
            value = changes[name]
            low, high = MUTABLE[name]
            if not isinstance(value, int) or value < low or value > high:
                raise ConfigError("setting out of range: " + str(name))
        for name in changes:
            setattr(self, name, changes[name])

    def mutable(self) -> dict:
        """The current values of the changeable settings (persisted in the state file)."""
        return {name: getattr(self, name) for name in MUTABLE}


def _ident(value: object) -> str:
    # Same rule as the gateway's ids: lowercase [a-z0-9][a-z0-9_-]{0,62}; it is also the
    # MQTT user name and a topic level, so it must not contain '/', '+' or '#'.
    text = str(value)
    if not text or len(text) > 63:
        raise ConfigError("sensor_id must be 1-63 characters")
    for i, ch in enumerate(text):
        ok = ("a" <= ch <= "z") or ("0" <= ch <= "9") or (i > 0 and ch in "_-")
        if not ok:
            raise ConfigError("sensor_id must be lowercase [a-z0-9_-]")
    return text


def load(config_path: str = "/config.json", state_path: str = "/state.json") -> Settings:
    """Read the provisioned configuration and the persisted state (which may be absent)."""
    try:
        with open(config_path) as f:
            doc = json.load(f)
    except (OSError, ValueError) as exc:
        raise ConfigError("cannot read " + config_path + ": " + str(exc))
    state = load_state(state_path)
    return Settings(doc, state)


def load_state(path: str) -> dict:
    """The persisted state, or an empty one if the file is missing or damaged."""
    try:
        with open(path) as f:
            state = json.load(f)
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def save_state(settings: Settings, path: str = "/state.json") -> None:
    """Persist the update counter and changed settings.

    Written to a temporary file and renamed over the old one: littlefs (the default
    filesystem on ESP32 and rp2) renames atomically, so a power cut leaves either the old
    or the new state, never a torn file that would reset the replay counter.
    """
    import os

    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"counter": settings.counter, "settings": settings.mutable()}, f)
    try:
        os.rename(tmp, path)
    except OSError:
        # FAT refuses to rename over an existing file.
        os.remove(path)
        os.rename(tmp, path)
