"""The ingester: MQTT (shared subscription) → validate → batched COPY → commit → ack.

Two tasks share a bounded queue:

* the **reader** takes messages from the broker, decodes and validates them
  (``protocol.decode_up`` with the topic) and maps them to rows (:mod:`.rows`) right away,
  then puts them in the queue. It acknowledges a message to the broker (MQTT PUBACK, sent
  by hand) only once the queue has taken it, and announces an MQTT 5 receive maximum, so
  a full queue stops the broker from sending more: memory stays bounded and the backlog
  waits in the broker and in the gateways' outboxes.
* the **writer** takes up to ``batch_rows`` rows (or what arrived within
  ``batch_delay_s``), writes them in one transaction (:mod:`.batch`) and, after the
  commit, publishes to each gateway an ``Ack`` of the committed sequence ranges.

Nothing is acknowledged to a gateway before its rows are committed, so a crash or a
database restart loses nothing: the writer keeps the batch and reconnects with a capped,
jittered backoff; anything lost from memory is re-sent by the gateways. Bad input goes to
the quarantine table in the same batches and never stops good traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from typing import Any

import aiomqtt
import msgspec
import psycopg
import structlog
from mimamori.cloud import batch as batch_mod
from mimamori.cloud import rows
from mimamori.cloud._backoff import Backoff
from mimamori.cloud.batch import Item, Outcome
from mimamori.cloud.errors import RowError
from mimamori.cloud.metrics import IngestMetrics
from mimamori.cloud.settings import Settings
from mimamori.protocol import Ack, ProtocolError, TopicMismatch, decode_up, encode, topics
from mimamori.protocol.codec import MAX_PAYLOAD, unwrap
from mimamori.protocol.sequence import ranges
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

#: Errors that mean "this data cannot be stored" rather than "the database is unwell":
#: a batch failing with one of these is retried message by message to find the culprit.
_DATA_ERRORS = (psycopg.DataError, psycopg.IntegrityError)
#: On shutdown, how long the writer keeps retrying an unreachable database before giving
#: up (unacknowledged messages are re-sent by the gateways, so nothing is lost).
SHUTDOWN_GRACE_S = 10.0


class _Header(msgspec.Struct):
    gateway: str = ""
    seq: int = -1


_header_decoder = msgspec.json.Decoder(_Header)


def _peek_seq(payload: bytes, gateway: str) -> int | None:
    """The sequence number of a refused message, if its header names ``gateway``.

    Lets the batch acknowledge a quarantined message so it cannot stall its gateway
    (see :mod:`mimamori.cloud.batch`). Anything unreadable gives None: not acknowledged.
    """
    if len(payload) > MAX_PAYLOAD:
        return None
    try:
        header = _header_decoder.decode(unwrap(payload))
    except (ProtocolError, msgspec.DecodeError, msgspec.ValidationError):
        return None
    if header.gateway == gateway and 0 <= header.seq <= 2**63 - 1:
        return header.seq
    return None


class Ingester:
    """One ingester process's worth of work; run several to share the subscription."""

    def __init__(
        self,
        *,
        settings: Settings,
        metrics: IngestMetrics | None = None,
        log: Any = None,
        subscription: str = topics.INGEST_SUBSCRIPTION,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.settings = settings
        self.dsn = settings.require_dsn()
        self.metrics = metrics if metrics is not None else IngestMetrics()
        self.log = log if log is not None else structlog.get_logger("mimamori.cloud.ingest")
        self.subscription = subscription
        self._tls = tls_context if tls_context is not None else settings.tls_context()
        self._queue: asyncio.Queue[Item] = asyncio.Queue(maxsize=settings.queue_messages)
        self._stopping = asyncio.Event()
        self._client: aiomqtt.Client | None = None
        self._conn: psycopg.AsyncConnection[Any] | None = None
        #: Set while subscribed to the broker (tests and the demo wait for it).
        self.ready = asyncio.Event()
        #: Totals since start (also in the metrics), handy for tests and the bench.
        self.stored = 0
        self.duplicates = 0
        self.quarantined = 0

    # --- lifecycle -------------------------------------------------------------------

    def stop(self) -> None:
        """Ask for a graceful stop: stop reading, flush and commit what was read, ack it."""
        self._stopping.set()

    async def run(self) -> None:
        """Run until :meth:`stop`; returns after the final flush."""
        writer = asyncio.create_task(self._write_loop(), name="ingest-writer")
        try:
            await self._mqtt_loop(writer)
            await writer
        finally:
            if not writer.done():
                writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await writer
            if self._conn is not None:
                await self._conn.close()
                self._conn = None

    async def _sleep_or_stop(self, delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=delay)

    # --- MQTT side -------------------------------------------------------------------

    def _new_client(self) -> aiomqtt.Client:
        s = self.settings
        props = Properties(PacketTypes.CONNECT)
        # Flow control: the broker sends at most this many unacknowledged QoS 1 messages.
        props.ReceiveMaximum = max(16, min(s.queue_messages, 65535))
        client = aiomqtt.Client(
            s.mqtt_host,
            s.port,
            username=s.mqtt_username,
            password=s.mqtt_password,
            identifier=s.mqtt_client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            properties=props,
            tls_context=self._tls,
            keepalive=30,
        )
        # aiomqtt has no switch for manual acknowledgements; its paho client does. We PUBACK
        # only after the queue has taken a message (backpressure, see module docstring).
        client._client.manual_ack_set(True)
        return client

    async def _mqtt_loop(self, writer: asyncio.Task[None]) -> None:
        backoff = Backoff()
        while not self._stopping.is_set() and not writer.done():
            try:
                async with self._new_client() as client:
                    await client.subscribe(self.subscription, qos=1)
                    self._client = client
                    backoff.reset()
                    self.ready.set()
                    self.log.info("subscribed", subscription=self.subscription)
                    reader = asyncio.create_task(self._read(client), name="ingest-reader")
                    stop = asyncio.create_task(self._stopping.wait(), name="ingest-stop")
                    await asyncio.wait({reader, stop, writer}, return_when="FIRST_COMPLETED")
                    stop.cancel()
                    if not reader.done():
                        reader.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await reader  # re-raises the reader's MqttError, if any
                    # Graceful stop: keep the connection until the writer has flushed and
                    # sent the last acks.
                    await asyncio.shield(writer)
                    return
            except aiomqtt.MqttError as exc:
                self.ready.clear()
                self._client = None
                self.metrics.reconnects.labels("broker").inc()
                delay = backoff.next_delay()
                self.log.warning("broker connection lost", error=str(exc), retry_in=delay)
                await self._sleep_or_stop(delay)
            finally:
                self._client = None
                self.ready.clear()

    async def _read(self, client: aiomqtt.Client) -> None:
        paho = client._client
        async for message in client.messages:
            payload = message.payload
            if not isinstance(payload, bytes):  # paho delivers bytes; be safe anyway
                payload = (
                    str(payload or "").encode()
                    if not isinstance(payload, bytearray)
                    else bytes(payload)
                )
            item = self.classify(message.topic.value, payload)
            await self._queue.put(item)
            self.metrics.queue_depth.set(self._queue.qsize())
            if message.qos > 0:
                paho.ack(message.mid, message.qos)

    def classify(self, topic: str, payload: bytes, received_at: float | None = None) -> Item:
        """Decode, validate and map one message; a refused one carries its reason."""
        item = Item(topic=topic, payload=payload, received_at=received_at or time.time())
        try:
            parsed = topics.parse_up(topic)
        except ProtocolError as exc:
            parts = topic.split("/")
            item.gateway = parts[4][:63] if len(parts) > 4 else None
            item.tenant = parts[3][:63] if len(parts) > 3 else None
            item.reject(exc.reason, str(exc))
            self.metrics.messages.labels("invalid").inc()
            return item
        item.tenant, item.gateway = parsed.tenant, parsed.gateway
        self.metrics.messages.labels(parsed.kind).inc()
        message = None
        try:
            message = decode_up(payload, topic)
            item.prepared = rows.prepare(message, parsed.tenant)
        except (ProtocolError, RowError) as exc:
            item.reject(exc.reason, str(exc)[:2000])
            if message is not None and message.gateway == parsed.gateway:
                item.ack_seq = message.seq
            elif not isinstance(exc, TopicMismatch):
                item.ack_seq = _peek_seq(payload, parsed.gateway)
        except Exception as exc:  # a bug of ours must not stop good traffic either
            self.log.exception("cannot classify message", topic=topic[:200])
            item.reject("internal_error", f"{type(exc).__name__}: {exc}"[:2000])
        return item

    # --- database side ---------------------------------------------------------------

    async def _get(self, timeout: float | None) -> Item | None:
        """The next queued item; None on timeout, or when stopping and the queue is empty."""
        if not self._queue.empty():
            return self._queue.get_nowait()
        if self._stopping.is_set():
            return None
        get = asyncio.ensure_future(self._queue.get())
        stop = asyncio.ensure_future(self._stopping.wait())
        await asyncio.wait({get, stop}, timeout=timeout, return_when="FIRST_COMPLETED")
        stop.cancel()
        if get.done():
            return get.result()
        get.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await get
        # Stopping: whatever is still queued is flushed by the following calls.
        return self._queue.get_nowait() if not self._queue.empty() else None

    async def _collect(self) -> list[Item] | None:
        """The next batch, or None when stopping and nothing is left."""
        first = await self._get(None)
        while first is None and not self._stopping.is_set():
            first = await self._get(None)
        if first is None:
            return None
        items = [first]
        count = first.prepared.rows if first.prepared else 1
        deadline = time.monotonic() + self.settings.batch_delay_s
        limit = self.settings.batch_rows
        while count < limit:
            timeout = deadline - time.monotonic()
            if timeout <= 0 and self._queue.empty():
                break
            item = await self._get(max(timeout, 0.0))
            if item is None:
                break
            items.append(item)
            count += item.prepared.rows if item.prepared else 1
        self.metrics.queue_depth.set(self._queue.qsize())
        return items

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(
                self.dsn, autocommit=True, application_name="mimamori-ingest"
            )
        return self._conn

    async def _drop_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
        self._conn = None

    async def _write_loop(self) -> None:
        while True:
            items = await self._collect()
            if items is None:
                return
            started = time.perf_counter()
            outcome = await self._commit(items)
            if outcome is None:
                continue  # gave up on shutdown; the gateways will re-send
            elapsed = time.perf_counter() - started
            self._account(outcome, elapsed)
            await self._send_acks(outcome)

    async def _commit(self, items: list[Item]) -> Outcome | None:
        backoff = Backoff()
        give_up_at: float | None = None
        while True:
            try:
                conn = await self._connection()
                return await batch_mod.write_batch(
                    conn, items, quarantine_bytes=self.settings.quarantine_bytes
                )
            except _DATA_ERRORS as exc:
                self.log.warning("batch refused, retrying message by message", error=str(exc))
                return await self._commit_one_by_one(items)
            except psycopg.errors.TransactionRollback as exc:
                self.log.info("batch rolled back (deadlock or serialization), retrying",
                              error=str(exc))  # fmt: skip
                continue
            except Exception as exc:
                if not isinstance(exc, psycopg.Error):
                    # A bug of ours on some message: find it, quarantine it, go on.
                    self.log.exception("unexpected error writing a batch")
                    if len(items) == 1 and items[0].prepared is None:
                        return Outcome()  # its quarantine row fails too: give up on it
                    return await self._commit_one_by_one(items)
                # Connection lost, server restarting, schema missing...: keep the batch,
                # reconnect later. Nothing was acknowledged.
                await self._drop_connection()
                self.metrics.reconnects.labels("database").inc()
                if self._stopping.is_set():
                    give_up_at = give_up_at or time.monotonic() + SHUTDOWN_GRACE_S
                    if time.monotonic() > give_up_at:
                        self.log.error("database unavailable at shutdown; dropping batch",
                                       messages=len(items))  # fmt: skip
                        return None
                delay = backoff.next_delay()
                self.log.warning("database error, retrying batch", error=str(exc),
                                 retry_in=round(delay, 2))  # fmt: skip
                await asyncio.sleep(delay)

    async def _commit_one_by_one(self, items: list[Item]) -> Outcome | None:
        total = Outcome()
        for item in items:
            outcome = await self._commit_single(item)
            if outcome is None:
                return None
            for key, seqs in outcome.acks.items():
                total.acks.setdefault(key, []).extend(seqs)
            total.stored += outcome.stored
            total.duplicates += outcome.duplicates
            total.rows.update(outcome.rows)
            total.quarantined.update(outcome.quarantined)
            total.sent_at.extend(outcome.sent_at)
        return total

    async def _commit_single(self, item: Item) -> Outcome | None:
        try:
            conn = await self._connection()
            return await batch_mod.write_batch(
                conn, [item], quarantine_bytes=self.settings.quarantine_bytes
            )
        except psycopg.Error as exc:
            if not isinstance(exc, _DATA_ERRORS):
                return await self._commit([item])  # not this message's fault: retry
            reason = "store_rejected"
            detail = f"{type(exc).__name__}: {exc}"
        except Exception as exc:
            reason = "internal_error"
            detail = f"{type(exc).__name__}: {exc}"
        if item.prepared is None:
            # Even its quarantine row cannot be written: log it and let it go (unacked,
            # so the gateway keeps it) rather than loop.
            self.log.error("cannot quarantine message", topic=item.topic[:200], error=detail)
            return Outcome()
        item.reject(reason, detail[:2000])
        return await self._commit([item])

    def _account(self, outcome: Outcome, elapsed: float) -> None:
        m = self.metrics
        for table, n in outcome.rows.items():
            m.rows.labels(table).inc(n)
        for reason, n in outcome.quarantined.items():
            m.quarantined.labels(reason).inc(n)
            self.log.info("quarantined", reason=reason, messages=n)
        if outcome.duplicates:
            m.duplicates.inc(outcome.duplicates)
        m.batch_rows.observe(sum(outcome.rows.values()))
        m.batch_seconds.observe(elapsed)
        self.stored += outcome.stored
        self.duplicates += outcome.duplicates
        self.quarantined += sum(outcome.quarantined.values())

    async def _send_acks(self, outcome: Outcome) -> None:
        client = self._client
        if client is None or not outcome.acks:
            return  # not connected: the gateways re-send, and get acked then
        committed_at = time.time()

        async def one(tenant: str, gateway: str, seqs: list[int]) -> None:
            ack = Ack(gateway=gateway, ranges=ranges(seqs), committed_at=committed_at)
            await client.publish(topics.ack(tenant, gateway), encode(ack), qos=1)

        results = await asyncio.gather(
            *(one(t, g, s) for (t, g), s in outcome.acks.items()), return_exceptions=True
        )
        failed = [r for r in results if isinstance(r, BaseException)]
        self.metrics.acks.inc(len(results) - len(failed))
        if failed:
            self.log.warning("acks not sent", count=len(failed), error=str(failed[0]))
