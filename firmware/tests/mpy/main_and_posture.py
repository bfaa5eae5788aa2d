# main.py's imports and its refusal to start without a configuration; the self-report's
# posture checks.
import sys
import network
from harness import CONFIG, Node, fact
from mimamori_sensor import posture
from mimamori_sensor.settings import ConfigError, Settings

sys.path.append("/firmware")
import main  # runs main(): no /config.json here, so it must print why and return
fact("main_returned", True)

node = Node()
facts = posture.facts(settings=node.settings, canary_ports=[23], failed_ports=[],
                      network=network)
fact("clean", [facts["unique_credential"], facts["network_repl"], facts["wifi_ap"]])


class FakeWebrepl:
    listen_s = object()


sys.modules["webrepl"] = FakeWebrepl
network.WLAN(network.AP_IF).active(True)
weak = []
for pw in ("password", "short-pass", "s-front-desk"):
    weak.append(posture.credential_ok(Settings(dict(CONFIG, mqtt_password=pw), {})))
facts = posture.facts(settings=node.settings, canary_ports=[23], failed_ports=[],
                      network=network)
fact("exposed", [facts["network_repl"], facts["wifi_ap"]])
fact("weak_passwords_ok", weak)
del sys.modules["webrepl"]

errors = []
for bad in ({"sensor_id": "Bad/Id"}, {"hmac_key": "zz"}, {"hmac_key": "00" * 8},
            {"mqtt_password": ""}, {"heartbeat_s": 5}, {"watchdog_s": 30},
            {"canary_ports": [23, 70000]}, {"canary_ports": list(range(1, 10))}):
    try:
        Settings(dict(CONFIG, **bad), {})
        errors.append("accepted")
    except ConfigError as exc:
        errors.append(str(exc))
fact("config_errors", errors)
