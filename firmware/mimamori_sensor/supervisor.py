"""The policy: keep the link up, feed the watchdog, run the canary, send what is due.

Everything here decides *when*; :mod:`.link` does *how*. The loop never blocks longer
than the watchdog allows: waiting (a tick, a reconnect backoff) happens in slices of
``TICK_MS`` that feed the watchdog and keep the canary listening, so a scan during an
outage is still recorded (up to the canary's ring) and reported after reconnecting.

The steady-state loop allocates nothing of its own: heartbeats and canary events are
written into the reporter's preallocated buffer, uptime is accumulated in small ints
(``ticks_ms`` wraps after 2**30 ms, about 12 days), and the canary polls with ``ipoll``.
"""

try:
    from typing import Any, Callable
except ImportError:  # MicroPython: annotations are never evaluated
    pass

from mimamori_sensor import posture
from mimamori_sensor.auth import Rejected, Verifier
from mimamori_sensor.backoff import Backoff
from mimamori_sensor.canary import Canary
from mimamori_sensor.link import LinkError
from mimamori_sensor.reports import Reporter
from mimamori_sensor.settings import WIFI_TIMEOUT_S, KEEPALIVE_S, Settings

#: Loop period: how quickly a canary touch or a config update is noticed.
TICK_MS = 200


class Supervisor:
    """Runs the node. Collaborators are ready objects; tests pass fakes at the seams."""

    def __init__(self, *, settings: Settings, wifi: Any, session: Any, canary: Canary,
                 reporter: Reporter, verifier: Verifier, backoff: Backoff, watchdog: Any,
                 clock: Any, mem_free: Callable, network: Any, log: Callable = print) -> None:
        self.settings = settings
        self.wifi = wifi
        self.session = session
        self.canary = canary
        self.reporter = reporter
        self.verifier = verifier
        self.backoff = backoff
        self.watchdog = watchdog
        self.clock = clock
        self.mem_free = mem_free
        self.network = network
        self.log = log
        self.reconnects = 0
        self.uptime_s = 0
        self._uptime_ms = 0
        self._last_tick = clock.ticks_ms()
        self._last_heartbeat_s = -1  # send one right after connecting
        self._last_tx_s = 0
        self._report_due = True

    # --- time ---------------------------------------------------------------------------

    def advance(self) -> int:
        """Account the time since the previous call; return ``ticks_ms()`` now."""
        now = self.clock.ticks_ms()
        self._uptime_ms += self.clock.ticks_diff(now, self._last_tick)
        self._last_tick = now
        while self._uptime_ms >= 1000:
            self._uptime_ms -= 1000
            self.uptime_s += 1
        return now

    def wait(self, ms: int) -> None:
        """Sleep ``ms`` in ticks, feeding the watchdog and keeping the canary listening."""
        while ms > 0:
            self.watchdog.feed()
            if self.settings.canary_enabled:
                self.canary.poll(self.advance())
            step = TICK_MS if ms > TICK_MS else ms
            self.clock.sleep_ms(step)
            ms -= step

    # --- the connection -------------------------------------------------------------------

    def connect(self) -> None:
        """Join Wi-Fi and open the MQTT session (one attempt each); raise LinkError."""
        s = self.settings
        self.wifi.join(ssid=s.wifi_ssid, password=s.wifi_password, timeout_s=WIFI_TIMEOUT_S,
                       feed=self.watchdog.feed)
        self.watchdog.feed()
        self.session.open(subscribe=self.reporter.topic_config)
        self.watchdog.feed()
        self._report_due = True
        self._last_heartbeat_s = -1
        self._last_tx_s = self.uptime_s

    def on_message(self, topic: bytes, msg: bytes) -> None:
        """umqtt callback: the only thing a node receives is its config topic."""
        if topic != self.reporter.topic_config:
            return
        try:
            changes = self.verifier.handle(msg)
        except Rejected as exc:
            self.log("config update rejected: " + exc.reason)
            return
        self.log("config update accepted: " + str(changes))
        if "canary_enabled" in changes:
            if self.settings.canary_enabled:
                self.canary.open()
            else:
                self.canary.close()
        self._report_due = True

    # --- one iteration while connected -------------------------------------------------

    def step(self) -> None:
        """Send what is due and take in what arrived. Raises LinkError if the link broke."""
        self.watchdog.feed()
        now = self.advance()
        canary = self.canary
        if self.settings.canary_enabled:
            canary.poll(now)
        while canary.pending():
            self.send_canary(now)
        if self._report_due:
            self.send_self_report()
        if self._last_heartbeat_s < 0 or (
            self.uptime_s - self._last_heartbeat_s >= self.settings.heartbeat_s
        ):
            self.send_heartbeat()
        elif self.uptime_s - self._last_tx_s >= KEEPALIVE_S // 2:
            self.session.ping()
            self._last_tx_s = self.uptime_s
        self.session.poll()

    def send_heartbeat(self) -> None:
        r = self.reporter
        n = r.heartbeat(
            uptime_s=self.uptime_s, free_mem=self.mem_free(), rssi=self.wifi.rssi(),
            canary_total=self.canary.total, canary_dropped=self.canary.dropped,
            reconnects=self.reconnects,
        )
        self.session.publish(r.topic_heartbeat, r.out.mv, n)
        self._last_heartbeat_s = self.uptime_s
        self._last_tx_s = self.uptime_s

    def send_canary(self, now: int) -> None:
        c = self.canary
        slot = c.oldest()
        r = self.reporter
        n = r.canary(
            port=c.ev_port[slot], src_ip=c.ev_src_ip[slot], src_port=c.ev_src_port[slot],
            age_ms=self.clock.ticks_diff(now, c.ev_ticks[slot]), dropped=c.dropped,
        )
        # QoS 1: a touch is the node's most important news, so it waits for the broker's
        # PUBACK and forgets the event only then (a failed publish keeps it for later).
        self.session.publish(r.topic_canary, r.out.mv, n, 1)
        c.pop()
        self._last_tx_s = self.uptime_s

    def send_self_report(self) -> None:
        facts = posture.facts(settings=self.settings, canary_ports=self.canary.listening(),
                              failed_ports=self.canary.failed_ports, network=self.network)
        self.session.publish_bytes(self.reporter.topic_self_report,
                                   self.reporter.self_report(facts))
        self._report_due = False
        self._last_tx_s = self.uptime_s

    # --- forever ------------------------------------------------------------------------

    def run(self, iterations: int = -1) -> None:
        """The main loop (``iterations`` < 0: forever; tests pass a bound)."""
        if self.settings.canary_enabled and not self.canary.listening():
            self.canary.open()
        while iterations != 0:
            if iterations > 0:
                iterations -= 1
            try:
                if not self.session.up:
                    self.connect()
                    self.backoff.reset()
                self.step()
            except LinkError as exc:
                self.session.close()
                self.reconnects += 1
                delay = self.backoff.next_ms()
                self.log("link down (" + str(exc) + "), retry in " + str(delay) + " ms")
                self.wait(delay)
                continue
            self.wait(TICK_MS)
