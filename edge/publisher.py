"""Deliver the outbox to the broker over MQTT 5, and act on what the cloud sends back.

One :class:`Publisher` per gateway. It publishes stored messages in sequence order, keeps
at most ``window`` of them unacknowledged, and publishes again any message the cloud has
not acknowledged within ``ack_timeout`` seconds. Only the cloud's :class:`~protocol.Ack`
(sent after the rows are committed) deletes a message from the outbox; the broker's
PUBACK means nothing more than "the broker has it", and a broker without persistence
forgets on restart. After every (re)connection everything still in the outbox is
published again from the oldest: the cloud drops what it already has by (gateway, seq).

Connection: MQTT 5 with ``clean_start=False`` and a session expiry, so the broker keeps our
subscriptions and queues the acks and commands addressed to us across short outages;
TLS from a ready :class:`ssl.SSLContext` (the broker's certificate is checked against
the gateway's CA) and the gateway's own username and password. Plain TCP only when the
caller says ``insecure_plaintext=True`` (tests and the demo, on loopback). The last will
is a :class:`~protocol.Status` ``offline`` message whose sequence number is reserved from
the outbox before connecting; after each successful connection a ``Status online`` goes
through the outbox, ahead of any backlog.

Reconnects wait a capped exponential backoff with jitter (:class:`Backoff`), our own
rather than paho's, because we drive paho's network loop ourselves.

Threads and scale. A publisher owns no thread. Its network I/O is driven from outside:
:meth:`Publisher.tick` (connect, keep-alive, publish, resend), :meth:`Publisher.socket`,
:meth:`Publisher.want_write`, :meth:`Publisher.on_readable` and
:meth:`Publisher.on_writable`. :func:`drive` runs any number of publishers in the calling
thread over one ``selectors`` loop, which is how the fleet simulator runs hundreds of
gateways in one process; :meth:`Publisher.run` is ``drive`` for a single gateway. Every
callback runs in the driving thread, so the publisher needs no locks of its own; the
outbox is the only object shared with other threads (the capture pipeline appends to it)
and it is thread-safe. Connecting is a blocking call bounded by ``connect_timeout``.
"""

from __future__ import annotations

import contextlib
import logging
import random
import selectors
import socket
import ssl
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from mimamori.edge.errors import OutboxError, PublisherError
from mimamori.edge.outbox import Outbox
from mimamori.protocol import (
    Ack,
    Command,
    IntelBundle,
    ProtocolError,
    Status,
    codec,
    decode_down,
    topics,
)
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

log = logging.getLogger(__name__)

#: Seconds the loop waits for socket events before the next tick: bounds the delay
#: between an append to the outbox and its publication.
POLL_S = 0.05
#: Seconds spent publishing the backlog on shutdown before disconnecting anyway; systemd
#: allows 90 s to stop, the pipeline's final flush needs part of that.
SHUTDOWN_DRAIN_S = 5.0
#: Seconds to wait for the DISCONNECT to go out on shutdown.
SHUTDOWN_CLOSE_S = 2.0
#: Command ids remembered to ignore QoS 1 redeliveries of the same command.
RECENT_COMMANDS = 256
#: A message the cloud keeps refusing (quarantined: never acknowledged) while it
#: acknowledges messages sent after it is set aside from the window and re-sent only every
#: this many ack timeouts, so a few bad messages never block the good ones behind them.
STUCK_RETRY_FACTOR = 10
#: MQTT 5 reason code asking the broker to publish our will although we disconnect
#: cleanly: the cloud learns at once that the gateway went offline on purpose.
DISCONNECT_WITH_WILL = 0x04

CommandHandler = Callable[[Command], None]


@dataclass
class Backoff:
    """Capped exponential backoff with "equal jitter".

    The n-th consecutive failure waits between half and all of
    ``min(maximum, initial * 2**n)``: never a tight retry loop, and a fleet that lost its
    broker at the same instant spreads its reconnects over the interval.
    """

    initial: float = 1.0
    maximum: float = 60.0
    rng: random.Random = field(default_factory=random.Random)
    failures: int = 0

    def next_delay(self) -> float:
        """Delay before the next attempt; counts one more failure."""
        ceiling = min(self.maximum, self.initial * (2 ** min(self.failures, 32)))
        self.failures += 1
        return ceiling / 2 + self.rng.uniform(0, ceiling / 2)

    def reset(self) -> None:
        self.failures = 0


@dataclass
class PublisherStats:
    """Counters for logs, tests and benchmarks."""

    connects: int = 0
    connect_failures: int = 0
    disconnects: int = 0
    published: int = 0
    republished: int = 0
    set_aside: int = 0
    acks: int = 0
    acked_messages: int = 0
    commands: int = 0
    commands_ignored: int = 0
    bad_downstream: int = 0
    loop_errors: int = 0


class Publisher:
    """Publishes one gateway's outbox to the broker; see the module docstring."""

    def __init__(
        self,
        *,
        outbox: Outbox,
        tenant: str,
        gateway: str,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext | None,
        insecure_plaintext: bool = False,
        username: str | None = None,
        password: str | None = None,
        client_id: str | None = None,
        keepalive: int = 60,
        session_expiry: int = 86400,
        connect_timeout: float = 10.0,
        window: int = 64,
        ack_timeout: float = 30.0,
        backoff: Backoff | None = None,
        commands: Mapping[str, CommandHandler] | None = None,
        on_intel: Callable[[IntelBundle], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        logger: logging.Logger | None = None,
    ) -> None:
        if ssl_context is None and not insecure_plaintext:
            raise PublisherError(
                "no TLS context given: pass ssl_context, or insecure_plaintext=True for a "
                "test broker on loopback"
            )
        if window < 1:
            raise PublisherError(f"window must be at least 1, got {window}")
        self.outbox = outbox
        self.tenant = tenant
        self.gateway = gateway
        self.host = host
        self.port = port
        self.window = window
        self.ack_timeout = ack_timeout
        self.keepalive = keepalive
        self.session_expiry = session_expiry
        self.backoff = backoff or Backoff()
        self.stats = PublisherStats()
        self._commands = dict(commands or {})
        self._on_intel = on_intel
        self._clock = clock
        self._wall = wall_clock
        self._log = logger or log
        self._ack_topic = topics.ack(tenant, gateway)
        self._command_topic = topics.command(tenant, gateway)
        self._intel_topic = topics.intel(tenant)
        self._status_topic = topics.up(tenant, gateway, "status")

        self._client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            # The protocol's convention: client id = gateway id (unique across tenants).
            client_id=client_id or gateway,
            protocol=MQTTProtocolVersion.MQTTv5,
            reconnect_on_failure=False,
        )
        self._client.connect_timeout = connect_timeout
        # Our window bounds what is outstanding; paho must not hold messages back on its own.
        self._client.max_inflight_messages_set(window + 8)
        self._client.max_queued_messages_set(0)
        if ssl_context is not None:
            self._client.tls_set_context(ssl_context)
        if username is not None:
            self._client.username_pw_set(username, password)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message

        self._connected = False
        self._stopping = False
        self._connect_started = 0.0
        self._next_attempt = 0.0
        self._will_seq: int | None = None
        # seq -> monotonic time it was last published; insertion order = publication order,
        # so the oldest unacknowledged message is always first.
        self._inflight: OrderedDict[int, float] = OrderedDict()
        # Messages set aside from the window (see STUCK_RETRY_FACTOR), same layout.
        self._stuck: OrderedDict[int, float] = OrderedDict()
        self.stuck_retry = STUCK_RETRY_FACTOR * ack_timeout
        # Latest publication time of any message acknowledged on this connection.
        self._acked_sent_max = float("-inf")
        self._cursor = -1
        self._recent_commands: deque[str] = deque(maxlen=RECENT_COMMANDS)

    # --- state for drivers --------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True between a successful CONNACK and the next disconnection."""
        return self._connected

    def socket(self) -> socket.socket | None:
        """The broker connection's socket for a selector, or None when disconnected."""
        sock = self._client.socket()
        return sock if isinstance(sock, socket.socket) else None

    def want_write(self) -> bool:
        """True when paho has bytes queued for the socket."""
        return self._client.want_write()

    def on_readable(self) -> None:
        """Read and handle whatever the broker sent (call when the socket is readable)."""
        self._client.loop_read()

    def on_writable(self) -> None:
        """Write queued bytes (call when the socket is writable and :meth:`want_write`)."""
        self._client.loop_write()

    def idle(self) -> bool:
        """True when nothing is left to deliver right now (or no connection to do it)."""
        return not self._connected or (not self._inflight and self.outbox.depth() == 0)

    # --- the step -----------------------------------------------------------------------

    def tick(self) -> None:
        """Connect when due, keep the connection alive, publish and re-publish."""
        now = self._clock()
        sock = self._client.socket()
        if sock is None:
            if not self._stopping and now >= self._next_attempt:
                self._connect(now)
            return
        # TLS may hold decrypted bytes that select() cannot see.
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            self._client.loop_read()
        self._client.loop_misc()
        if not self._connected:
            if now - self._connect_started > self._client.connect_timeout + self.keepalive:
                self._log.warning("%s: no CONNACK from the broker; reconnecting", self.gateway)
                self._client.disconnect()
                self._schedule_reconnect(now)
            return
        try:
            self._resend_overdue(now)
            self._pump(now)
        except OutboxError:
            # The outbox is on local disk; if it fails, keep the connection and retry.
            self._log.exception("%s: outbox read failed; retrying on the next tick", self.gateway)

    def _connect(self, now: float) -> None:
        try:
            if self._will_seq is None:
                self._will_seq = self.outbox.reserve()
            will = Status(
                gateway=self.gateway, seq=self._will_seq, sent_at=self._wall(),
                # Also sent on a clean stop (disconnect with will): neutral wording.
                state="offline", reason="connection ended",
            )  # fmt: skip
            self._client.will_set(self._status_topic, codec.encode(will), qos=1, retain=False)
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = self.session_expiry
            self._connect_started = now
            self._client.connect(
                self.host, self.port, keepalive=self.keepalive, clean_start=False,
                properties=props,
            )  # fmt: skip
        except (OSError, OutboxError) as exc:
            self.stats.connect_failures += 1
            delay = self._schedule_reconnect(now)
            # The first failure of a series is a warning; the rest are routine retries.
            level = logging.WARNING if self.backoff.failures <= 1 else logging.DEBUG
            self._log.log(
                level, "%s: cannot connect to %s:%d (%s); retrying in %.1f s",
                self.gateway, self.host, self.port, exc, delay,
            )  # fmt: skip

    def _schedule_reconnect(self, now: float) -> float:
        delay = self.backoff.next_delay()
        self._next_attempt = now + delay
        return delay

    def _pump(self, now: float) -> None:
        room = self.window - len(self._inflight)
        if room <= 0:
            return
        # last_seq includes reserved numbers without a message; it is read before the query
        # so that a short answer proves everything up to it was seen.
        last = self.outbox.last_seq
        if last <= self._cursor:
            return
        batch = self.outbox.pending(after_seq=self._cursor, limit=room)
        for item in batch:
            if item.seq in self._inflight:
                continue
            if not self._publish(item.seq, item.kind, item.payload, now):
                return
            self._cursor = item.seq
        if len(batch) < room:
            self._cursor = max(self._cursor, last)

    def _resend_overdue(self, now: float) -> None:
        budget = self.window
        while self._inflight and budget > 0:
            seq, sent = next(iter(self._inflight.items()))
            if now - sent < self.ack_timeout:
                break
            budget -= 1
            del self._inflight[seq]
            item = self.outbox.get(seq)
            if item is None:  # acknowledged meanwhile, or dropped by the disk budget
                continue
            # The cloud acknowledged something published after this one: it is not slow,
            # it refuses this message (quarantine). Keep trying, but outside the window.
            stuck = self._acked_sent_max > sent
            if not self._publish(seq, item.kind, item.payload, now, window=not stuck):
                return
            self.stats.republished += 1
            if stuck:
                self.stats.set_aside += 1
                self._log.warning(
                    "%s: message %d (%s) is not acknowledged while later ones are; "
                    "retrying it every %.0f s outside the window",
                    self.gateway, seq, item.kind, self.stuck_retry,
                )  # fmt: skip
        while self._stuck and budget > 0:
            seq, sent = next(iter(self._stuck.items()))
            if now - sent < self.stuck_retry:
                return
            budget -= 1
            del self._stuck[seq]
            item = self.outbox.get(seq)
            if item is not None:
                if not self._publish(seq, item.kind, item.payload, now, window=False):
                    return
                self.stats.republished += 1

    def _publish(
        self, seq: int, kind: str, payload: bytes, now: float, *, window: bool = True
    ) -> bool:
        info = self._client.publish(topics.up(self.tenant, self.gateway, kind), payload, qos=1)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return False
        table = self._inflight if window else self._stuck
        table[seq] = now
        table.move_to_end(seq)
        self.stats.published += 1
        return True

    # --- paho callbacks (run inside on_readable / tick, in the driving thread) ------------

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        if reason.is_failure:
            self.stats.connect_failures += 1
            self._log.error(
                "%s: broker refused the connection: %s (check the gateway's credential)",
                self.gateway, reason,
            )  # fmt: skip
            return
        self._connected = True
        self.stats.connects += 1
        self.backoff.reset()
        self._will_seq = None  # the broker holds it now; the next connection needs a new one
        client.subscribe(
            [(self._ack_topic, 1), (self._command_topic, 1)]
            + ([(self._intel_topic, 1)] if self._on_intel else [])
        )
        self._log.info(
            "%s: connected to %s:%d (session present: %s)",
            self.gateway, self.host, self.port, getattr(flags, "session_present", "?"),
        )  # fmt: skip
        # Publish everything still stored again, from the oldest: a broker restart loses
        # what it had not passed on, and the cloud drops duplicates.
        self._inflight.clear()
        self._stuck.clear()
        self._acked_sent_max = float("-inf")
        self._cursor = -1
        now = self._clock()
        try:
            seq = self.outbox.append(
                Status(
                    gateway=self.gateway,
                    seq=0,
                    sent_at=self._wall(),
                    state="online",
                    reason="started" if self.stats.connects == 1 else "reconnected",
                )
            )
            # Ahead of any backlog: the cloud should learn at once that we are back.
            item = self.outbox.get(seq) if seq is not None else None
            if item is not None:
                self._publish(item.seq, item.kind, item.payload, now)
        except OutboxError:
            self._log.exception("%s: could not store the online status", self.gateway)

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        was_connected = self._connected
        self._connected = False
        if was_connected:
            self.stats.disconnects += 1
        if self._stopping:
            return
        delay = self._schedule_reconnect(self._clock())
        self._log.warning(
            "%s: disconnected from the broker (%s); reconnecting in %.1f s",
            self.gateway, reason, delay,
        )  # fmt: skip

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            message = decode_down(bytes(msg.payload))
        except ProtocolError as exc:
            self.stats.bad_downstream += 1
            self._log.warning("%s: bad message on %s: %s", self.gateway, msg.topic, exc)
            return
        if msg.topic == self._ack_topic and isinstance(message, Ack):
            self._handle_ack(message)
        elif msg.topic == self._command_topic and isinstance(message, Command):
            self._handle_command(message)
        elif msg.topic == self._intel_topic and isinstance(message, IntelBundle):
            self._call_hook("intel", self._on_intel, message)
        else:
            self.stats.bad_downstream += 1
            self._log.warning(
                "%s: unexpected %s message on %s", self.gateway, codec.kind_of(message), msg.topic
            )

    def _handle_ack(self, ack: Ack) -> None:
        if ack.gateway != self.gateway:
            self.stats.bad_downstream += 1
            self._log.warning("%s: ignoring an ack for gateway %r", self.gateway, ack.gateway)
            return
        self.stats.acks += 1
        try:
            self.stats.acked_messages += self.outbox.ack(ack.ranges)
        except OutboxError:
            # The messages stay stored and are published again later: safe, just wasteful.
            self._log.exception("%s: could not apply an ack", self.gateway)
            return
        for table in (self._inflight, self._stuck):
            for seq in [s for s in table if any(a <= s <= b for a, b in ack.ranges)]:
                self._acked_sent_max = max(self._acked_sent_max, table.pop(seq))

    def _handle_command(self, command: Command) -> None:
        if command.id in self._recent_commands:
            return  # a QoS 1 redelivery
        self._recent_commands.append(command.id)
        if command.expires_at < self._wall():
            self.stats.commands_ignored += 1
            self._log.info("%s: ignoring expired command %s", self.gateway, command.id)
            return
        handler = self._commands.get(command.command)
        if handler is None:
            self.stats.commands_ignored += 1
            self._log.info(
                "%s: no handler for command %r (%s)", self.gateway, command.command, command.id
            )
            return
        self.stats.commands += 1
        self._call_hook(command.command, handler, command)

    def _call_hook(self, name: str, hook: Callable[[Any], None] | None, arg: Any) -> None:
        if hook is None:
            return
        try:
            hook(arg)
        except Exception:
            # A failing hook must not take the delivery loop down with it.
            self._log.exception("%s: %s handler failed", self.gateway, name)

    def request_intel(self) -> None:
        """Subscribe to the intel topic again: the broker re-sends the retained bundle.

        For the ``refresh_intel`` command; call from the driving thread (a command hook).
        """
        if self._connected and self._on_intel is not None:
            self._client.subscribe(self._intel_topic, qos=1)

    # --- lifecycle ----------------------------------------------------------------------

    def disconnect(self) -> None:
        """Stop reconnecting and close the connection, asking the broker to send our will."""
        self._stopping = True
        if self._client.socket() is not None:
            self._client.disconnect(
                reasoncode=ReasonCode(PacketTypes.DISCONNECT, identifier=DISCONNECT_WITH_WILL)
            )

    def run(self, stop: threading.Event, *, drain: float = SHUTDOWN_DRAIN_S) -> None:
        """Deliver until ``stop`` is set, then drain up to ``drain`` seconds and disconnect."""
        drive([self], stop, drain=drain)


def drive(
    publishers: Sequence[Publisher],
    stop: threading.Event,
    *,
    poll: float = POLL_S,
    drain: float = SHUTDOWN_DRAIN_S,
) -> None:
    """Run any number of publishers in the calling thread until ``stop`` is set.

    On stop: keep delivering for up to ``drain`` seconds while something is left, then
    disconnect every publisher (with its will) and wait briefly for the DISCONNECTs to go out.
    """
    loop = _Loop(publishers, poll)
    try:
        while not stop.is_set():
            loop.step()
        deadline = time.monotonic() + drain
        while time.monotonic() < deadline and not all(p.idle() for p in publishers):
            loop.step()
        for p in publishers:
            p.disconnect()
        deadline = time.monotonic() + SHUTDOWN_CLOSE_S
        while time.monotonic() < deadline and any(p.socket() is not None for p in publishers):
            loop.step()
    finally:
        loop.close()


class _Loop:
    """One ``selectors`` loop over the publishers' sockets."""

    def __init__(self, publishers: Sequence[Publisher], poll: float) -> None:
        self.publishers = publishers
        self.poll = poll
        self.selector = selectors.DefaultSelector()
        self.registered: dict[int, tuple[socket.socket, int]] = {}

    def step(self) -> None:
        for p in self.publishers:
            self._guard(p, p.tick)
        self._sync()
        if not self.registered:
            time.sleep(self.poll)
            return
        for key, events in self.selector.select(self.poll):
            owner: Publisher = key.data
            if events & selectors.EVENT_READ:
                self._guard(owner, owner.on_readable)
            if events & selectors.EVENT_WRITE and owner.want_write():
                self._guard(owner, owner.on_writable)

    @staticmethod
    def _guard(p: Publisher, call: Callable[[], None]) -> None:
        """Run one publisher's step; a bug there must not stop the others (or the agent)."""
        try:
            call()
        except Exception:
            p.stats.loop_errors += 1
            p._log.exception("%s: publisher step failed; continuing", p.gateway)

    def _sync(self) -> None:
        """Make the selector's registrations match the publishers' current sockets."""
        for p in self.publishers:
            key = id(p)
            sock = p.socket()
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if p.want_write() else 0)
            old = self.registered.get(key)
            if old is not None and (sock is None or old[0] is not sock):
                # Unregister before registering a successor that may reuse the descriptor.
                self._unregister(old[0])
                del self.registered[key]
                old = None
            if sock is None:
                continue
            if old is None:
                self.selector.register(sock, events, p)
                self.registered[key] = (sock, events)
            elif old[1] != events:
                self.selector.modify(sock, events, p)
                self.registered[key] = (sock, events)

    def _unregister(self, sock: socket.socket) -> None:
        with contextlib.suppress(KeyError, ValueError, OSError):
            self.selector.unregister(sock)

    def close(self) -> None:
        self.selector.close()
