"""The three messages a node sends, JSON on ``site/sensors/{sensor_id}/{kind}``.

Every message carries ``v`` (format version, 1), ``sensor`` (the node's id, equal to the
topic's) and ``seq`` (counts up from 0 at each boot; a gap means lost messages). Then:

``heartbeat``  ``uptime_s``, ``free_mem`` (bytes of free heap), ``rssi`` (dBm of the Wi-Fi
               link), ``fw`` (firmware version), ``canary_total`` (connections recorded since
               boot), ``canary_dropped`` (of those, lost to a full ring), ``reconnects``.
``canary``     ``port`` (the local port touched), ``src_ip``, ``src_port``, ``age_ms``
               (milliseconds between the attempt and sending; the gateway turns it into
               wall time), ``dropped``.
``self_report``  the node's security settings: ``fw``, ``mpy`` (MicroPython version),
               ``platform``, ``tls``, ``unique_credential``, ``network_repl``, ``wifi_ap``,
               ``canary_ports``, ``canary_failed_ports``, ``config_counter``,
               ``heartbeat_s``.

Heartbeats and canary events are written into one preallocated :class:`JsonBuf`; the
self-report (sent once per connection) is built with ``json.dumps``.
"""

import json

from mimamori_sensor import VERSION
from mimamori_sensor.jsonbuf import JsonBuf

FORMAT = 1
#: Largest message the node builds; the gateway's relay refuses anything over 2 KiB.
BUF_SIZE = 384
KINDS = ("heartbeat", "canary", "self_report")


class Reporter:
    """Builds messages for one node into a buffer allocated once."""

    def __init__(self, *, sensor_id: str) -> None:
        self.sensor_id = sensor_id
        self.out = JsonBuf(BUF_SIZE)
        self.seq = 0
        prefix = b"site/sensors/" + sensor_id.encode() + b"/"
        # Topics are built once: the loop publishes with these same objects.
        self.topic_heartbeat = prefix + b"heartbeat"
        self.topic_canary = prefix + b"canary"
        self.topic_self_report = prefix + b"self_report"
        self.topic_config = prefix + b"config"

    def _header(self) -> None:
        out = self.out
        out.start()
        out.key_int(b"v", FORMAT)
        out.key_str(b"sensor", self.sensor_id)
        out.key_int(b"seq", self.seq)
        self.seq += 1

    def heartbeat(self, *, uptime_s: int, free_mem: int, rssi: int, canary_total: int,
                  canary_dropped: int, reconnects: int) -> int:
        """Write a heartbeat into ``out.buf``; return its length."""
        out = self.out
        self._header()
        out.key_int(b"uptime_s", uptime_s)
        out.key_int(b"free_mem", free_mem)
        out.key_int(b"rssi", rssi)
        out.key_str(b"fw", VERSION)
        out.key_int(b"canary_total", canary_total)
        out.key_int(b"canary_dropped", canary_dropped)
        out.key_int(b"reconnects", reconnects)
        return out.finish()

    def canary(self, *, port: int, src_ip: str, src_port: int, age_ms: int,
               dropped: int) -> int:
        """Write a canary event into ``out.buf``; return its length."""
        out = self.out
        self._header()
        out.key_int(b"port", port)
        out.key_str(b"src_ip", src_ip)
        out.key_int(b"src_port", src_port)
        out.key_int(b"age_ms", age_ms)
        out.key_int(b"dropped", dropped)
        return out.finish()

    def self_report(self, facts: dict) -> bytes:
        """The self-report document (``facts`` from :func:`mimamori_sensor.posture.facts`)."""
        doc = {"v": FORMAT, "sensor": self.sensor_id, "seq": self.seq}
        self.seq += 1
        doc.update(facts)
        return json.dumps(doc).encode()
