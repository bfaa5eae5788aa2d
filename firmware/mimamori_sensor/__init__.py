"""mimamori sensor node: firmware for ESP32-class boards and the Raspberry Pi Pico W.

A node joins the site's Wi-Fi, speaks MQTT to the gateway's site-local listener with its
own credential, sends heartbeats and a report of its own security settings, and runs a
canary: listeners on commonly probed ports whose every connection attempt is reported.

Modules: ``settings`` (provisioned configuration), ``jsonbuf`` (JSON into a preallocated
buffer), ``reports`` (the three message kinds), ``canary`` (the listeners), ``auth``
(authenticated configuration updates), ``backoff`` (retry schedule), ``link`` (the
mechanism: Wi-Fi and one MQTT session) and ``supervisor`` (the policy: reconnects,
watchdog, the main loop). Nothing here imports from the rest of mimamori: it runs on the
device.

Errors are re-raised without ``from``: MicroPython does not chain exceptions (and warns
when asked to), so the cause goes into the message instead.
"""

VERSION = "0.1.0"
