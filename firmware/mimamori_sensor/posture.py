"""The node's own security settings, for its label and the customer's report.

The same questions the gateway asks of every other device on the LAN (JC-STAR style),
answered by the node about itself. What the node cannot know it does not claim: it
cannot see whether its password is unique in the fleet, only that it is not empty, not a
known default and long enough, which is what ``unique_credential`` means here; the
gateway, which generated the credentials, can check the rest.
"""

import sys

from mimamori_sensor import VERSION
from mimamori_sensor.settings import Settings

try:
    from typing import Any
except ImportError:  # MicroPython: annotations are never evaluated
    pass

#: Passwords that ship with devices or tutorials; a node provisioned with one says so.
DEFAULT_PASSWORDS = ("", "password", "admin", "mimamori", "changeme", "micropython", "1234")
#: Shortest acceptable credential: generated ones are 32 characters.
MIN_PASSWORD = 16


def credential_ok(settings: Settings) -> bool:
    """True when the MQTT password is long, not a default, and not the node's own id."""
    pw = settings.mqtt_password
    return (len(pw) >= MIN_PASSWORD and pw not in DEFAULT_PASSWORDS
            and pw != settings.sensor_id)


def network_repl_on() -> bool:
    """True when WebREPL (the REPL over the network) is running."""
    webrepl = sys.modules.get("webrepl")
    if webrepl is None:
        return False
    return getattr(webrepl, "listen_s", None) is not None


def access_point_on(network: Any) -> bool:
    """True when the board's own Wi-Fi access point is up (some firmwares start it)."""
    try:
        return bool(network.WLAN(network.AP_IF).active())
    except (AttributeError, OSError):
        return False


def facts(*, settings: Settings, canary_ports: list, failed_ports: list,
          network: Any) -> dict:
    """Everything the self-report states, as a flat dict."""
    impl = sys.implementation
    return {
        "fw": VERSION,
        "mpy": ".".join(str(x) for x in impl.version[:3]),
        "platform": sys.platform,
        "tls": settings.tls,
        "unique_credential": credential_ok(settings),
        "network_repl": network_repl_on(),
        "wifi_ap": access_point_on(network),
        "canary_enabled": bool(settings.canary_enabled),
        "canary_ports": list(canary_ports),
        "canary_failed_ports": list(failed_ports),
        "config_counter": settings.counter,
        "heartbeat_s": settings.heartbeat_s,
    }
