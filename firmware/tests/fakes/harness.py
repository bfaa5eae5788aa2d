"""Builds a complete node from the firmware's real modules and the fake hardware.

Test scripts print facts as ``@@FACT {json}`` lines; pytest parses and checks them.
"""

import json
import random

import fakeclock
import machine
import network
import select
import socket
from umqtt import simple

from mimamori_sensor.auth import Verifier
from mimamori_sensor.backoff import Backoff
from mimamori_sensor.canary import Canary
from mimamori_sensor.link import Session, Wifi
from mimamori_sensor.reports import Reporter
from mimamori_sensor.settings import Settings
from mimamori_sensor.supervisor import Supervisor

KEY_HEX = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
CONFIG = {
    "sensor_id": "s-front-desk",
    "wifi_ssid": "office",
    "wifi_password": "wifi-secret-123",
    "gateway_host": "192.168.1.2",
    "tls": False,
    "mqtt_password": "Zq7u1oXv3r9Lw2Kp8Nc4Bd6Hy0Tm5Ej",
    "hmac_key": KEY_HEX,
    "canary_ports": [23, 80, 445, 502, 3389],
}


def fact(name: str, value) -> None:
    print("@@FACT " + json.dumps({"name": name, "value": value}))


class Node:
    def __init__(self, config: dict = CONFIG, state: dict = {}, rand_bits=None) -> None:
        socket.reset()
        network.reset()
        simple.broker.clear()
        self.broker = simple.broker
        self.clock = fakeclock.Clock(start_ms=1000)
        self.settings = Settings(config, state)
        self.watchdog = machine.WDT(timeout=8000)
        self.reporter = Reporter(sensor_id=self.settings.sensor_id)
        self.canary = Canary(ports=self.settings.canary_ports, sockets=socket,
                             select_mod=select)
        self.logs: list = []
        self.session = Session(client_class=simple.MQTTClient, settings=self.settings,
                               ssl_context=None, on_message=self._on_message,
                               connect_timeout_s=5)
        self.backoff = Backoff(base_ms=1000, cap_ms=300000,
                               rand=rand_bits or random.getrandbits)
        self.wifi = Wifi(network=network, clock=self.clock)
        self.supervisor = Supervisor(
            settings=self.settings, wifi=self.wifi, session=self.session, canary=self.canary,
            reporter=self.reporter, verifier=Verifier(settings=self.settings,
                                                      state_path="/flash/state.json"),
            backoff=self.backoff, watchdog=self.watchdog, clock=self.clock,
            mem_free=lambda: 123456, network=network, log=self.logs.append,
        )

    def _on_message(self, topic, msg) -> None:
        self.supervisor.on_message(topic, msg)

    def published(self, kind: str) -> list:
        suffix = b"/" + kind.encode()
        return [json.loads(p) for t, p in self.broker.published if t.endswith(suffix)]

    def topics(self) -> list:
        return [t.decode() for t, _ in self.broker.published]
