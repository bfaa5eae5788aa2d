"""The mechanism: join Wi-Fi, hold one MQTT session. No retries here.

Like umqtt.simple next to umqtt.robust, this module only does one thing at a time and
raises :class:`LinkError` when it fails; deciding when to try again is the supervisor's
job (:mod:`.supervisor`). The MQTT client is micropython-lib's ``umqtt.simple``
(``mpremote mip install umqtt.simple``; frozen into the ESP32 firmware), passed in as its
class so that tests can substitute a transport.
"""

try:
    from typing import Any, Callable
except ImportError:  # MicroPython: annotations are never evaluated
    pass

from mimamori_sensor.settings import KEEPALIVE_S, Settings


class LinkError(Exception):
    """Wi-Fi or the MQTT session failed; the session must be reopened."""


class Wifi:
    """The station interface."""

    def __init__(self, *, network: Any, clock: Any) -> None:
        self._network = network
        self._clock = clock
        self.wlan = network.WLAN(network.STA_IF)

    def connected(self) -> bool:
        return bool(self.wlan.isconnected())

    def join(self, *, ssid: str, password: str, timeout_s: int, feed: Callable) -> None:
        """Associate and wait for an address, calling ``feed`` while waiting."""
        if self.connected():
            return
        self.wlan.active(True)
        try:
            self.wlan.connect(ssid, password)
        except OSError as exc:
            raise LinkError("wifi connect: " + str(exc))
        clock = self._clock
        start = clock.ticks_ms()
        while not self.wlan.isconnected():
            if clock.ticks_diff(clock.ticks_ms(), start) > timeout_s * 1000:
                self.wlan.disconnect()
                raise LinkError("wifi: no connection to " + ssid)
            feed()
            clock.sleep_ms(100)

    def rssi(self) -> int:
        """Signal strength in dBm, 0 when unknown."""
        try:
            return int(self.wlan.status("rssi"))
        except (OSError, ValueError, TypeError):
            return 0


def tls_context(settings: Settings, ssl: Any) -> Any:
    """An SSL context that trusts only the gateway's CA (None when TLS is off)."""
    if not settings.tls:
        return None
    try:
        with open(settings.ca_path, "rb") as f:
            ca = f.read()
    except OSError as exc:
        raise LinkError("TLS on but no CA certificate at " + settings.ca_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=ca)
    return ctx


class Session:
    """One MQTT session to the gateway's site listener, with the node's own credential."""

    def __init__(self, *, client_class: Any, settings: Settings, ssl_context: Any,
                 on_message: Callable, connect_timeout_s: int) -> None:
        self._client_class = client_class
        self._settings = settings
        self._ssl = ssl_context
        self._on_message = on_message
        self._timeout = connect_timeout_s
        self._client: Any = None

    @property
    def up(self) -> bool:
        return self._client is not None

    def open(self, *, subscribe: bytes) -> None:
        """Connect and subscribe to ``subscribe`` (the node's config topic)."""
        s = self._settings
        client = self._client_class(
            s.sensor_id, s.gateway_host, s.port, s.mqtt_user, s.mqtt_password,
            KEEPALIVE_S, self._ssl,
        )
        client.set_callback(self._on_message)
        try:
            client.connect(True, self._timeout)
            client.subscribe(subscribe, 1)
        except Exception as exc:
            # umqtt.simple raises OSError for the network, MQTTException for a refused
            # CONNECT (bad credential), IndexError/AssertionError on a short or odd reply.
            _close_quietly(client)
            raise LinkError("mqtt connect: " + repr(exc))
        self._client = client

    def publish(self, topic: bytes, view: memoryview, n: int, qos: int = 0) -> None:
        """Send ``view[:n]``; with ``qos=1`` return only once the broker acknowledged it.

        The slice is this call's one small allocation (umqtt needs an object of the
        message's length).
        """
        try:
            self._client.publish(topic, view[:n], False, qos)
        except (OSError, AttributeError) as exc:
            self.close()
            raise LinkError("mqtt publish: " + repr(exc))

    def publish_bytes(self, topic: bytes, data: bytes) -> None:
        self.publish(topic, memoryview(data), len(data))

    def poll(self) -> None:
        """Deliver a pending incoming message, if any, to ``on_message``."""
        try:
            self._client.check_msg()
        except (OSError, AttributeError, IndexError, AssertionError) as exc:
            self.close()
            raise LinkError("mqtt receive: " + repr(exc))

    def ping(self) -> None:
        try:
            self._client.ping()
        except (OSError, AttributeError) as exc:
            self.close()
            raise LinkError("mqtt ping: " + repr(exc))

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            _close_quietly(client)


def _close_quietly(client: Any) -> None:
    try:
        client.disconnect()
    except Exception:  # already broken; we only want the socket closed
        sock = getattr(client, "sock", None)
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass
