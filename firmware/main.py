"""Entry point on the board: MicroPython runs /main.py after boot.py.

Builds the node from the provisioned /config.json and runs it forever. A broken
configuration stops here with a message on the USB console instead of a reset loop, so
the node can be reprovisioned with mpremote.
"""

import gc
import random
import select
import socket
import ssl
import sys
import time

import machine
import network
from umqtt.simple import MQTTClient

from mimamori_sensor import VERSION, settings as settings_mod
from mimamori_sensor.auth import Verifier
from mimamori_sensor.backoff import Backoff
from mimamori_sensor.canary import Canary
from mimamori_sensor.link import LinkError, Session, Wifi, tls_context
from mimamori_sensor.reports import Reporter
from mimamori_sensor.supervisor import Supervisor


def main() -> None:
    """Build every part from the configuration and run the supervisor forever."""
    try:
        settings = settings_mod.load()
        ssl_context = tls_context(settings, ssl)
    except (settings_mod.ConfigError, LinkError) as exc:
        print("mimamori sensor", VERSION, "not started:", exc)
        return
    print("mimamori sensor", VERSION, "as", settings.sensor_id)
    watchdog = machine.WDT(timeout=settings.watchdog_s * 1000)
    reporter = Reporter(sensor_id=settings.sensor_id)
    canary = Canary(ports=settings.canary_ports, sockets=socket, select_mod=select)
    supervisor_ref: list = []

    def on_message(topic: bytes, msg: bytes) -> None:
        supervisor_ref[0].on_message(topic, msg)

    session = Session(
        client_class=MQTTClient, settings=settings, ssl_context=ssl_context,
        on_message=on_message, connect_timeout_s=settings_mod.CONNECT_TIMEOUT_S,
    )
    supervisor = Supervisor(
        settings=settings, wifi=Wifi(network=network, clock=time), session=session,
        canary=canary, reporter=reporter, verifier=Verifier(settings=settings),
        backoff=Backoff(base_ms=settings_mod.BACKOFF_BASE_MS,
                        cap_ms=settings_mod.BACKOFF_CAP_MS, rand=random.getrandbits),
        watchdog=watchdog, clock=time, mem_free=gc.mem_free, network=network,
    )
    supervisor_ref.append(supervisor)
    gc.collect()
    try:
        supervisor.run()
    except Exception as exc:  # anything unexpected: log it and let the board restart
        sys.print_exception(exc)
        time.sleep(1)
        machine.reset()


main()
