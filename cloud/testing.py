"""Helpers to run the cloud in-process from synchronous code (tests, the demo, benches).

::

    prepare_database(dsn, tenant="acme", gateways=["gw1"])
    with IngesterThread(settings=Settings(dsn=dsn, mqtt_port=broker.port)) as ing:
        ...  # publish like a gateway; ing.ingester.stored counts committed messages
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable
from types import TracebackType

import psycopg
from mimamori.cloud import registry
from mimamori.cloud.ingest import Ingester
from mimamori.cloud.metrics import IngestMetrics
from mimamori.cloud.migrate import migrate
from mimamori.cloud.settings import Settings
from mimamori.protocol import topics
from prometheus_client import CollectorRegistry


def prepare_database(dsn: str, *, tenant: str, gateways: Iterable[str]) -> None:
    """Migrate the schema and register ``gateways`` of ``tenant``."""
    migrate(dsn)
    with psycopg.connect(dsn) as conn:
        for gw in gateways:
            registry.add_gateway(conn, tenant=tenant, gateway=gw)


def tenant_subscription(tenant: str, group: str = "mimamori-test") -> str:
    """A shared subscription covering one tenant only, so tests sharing a broker never
    take each other's messages."""
    return f"$share/{group}/{topics.UP}/{tenant}/#"


class IngesterThread:
    """An :class:`Ingester` running on its own event loop in a background thread."""

    def __init__(
        self,
        *,
        settings: Settings,
        subscription: str = topics.INGEST_SUBSCRIPTION,
        start_timeout: float = 15.0,
    ) -> None:
        self.settings = settings
        self.subscription = subscription
        self.start_timeout = start_timeout
        self.metrics = IngestMetrics(registry=CollectorRegistry())
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ingester: Ingester | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._main, name="ingester", daemon=True)
        self.error: BaseException | None = None

    @property
    def ingester(self) -> Ingester:
        assert self._ingester is not None, "not started"
        return self._ingester

    def _main(self) -> None:
        async def body() -> None:
            self._loop = asyncio.get_running_loop()
            self._ingester = Ingester(
                settings=self.settings, metrics=self.metrics, subscription=self.subscription
            )
            self._started.set()
            await self._ingester.run()

        try:
            asyncio.run(body())
        except BaseException as exc:  # reported to the test through .error
            self.error = exc
            self._started.set()

    def start(self) -> IngesterThread:
        self._thread.start()
        self._started.wait(self.start_timeout)
        if self.error is not None:
            raise self.error
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until the ingester is subscribed to the broker."""
        assert self._loop is not None and self._ingester is not None
        fut = asyncio.run_coroutine_threadsafe(self._ingester.ready.wait(), self._loop)
        fut.result(timeout or self.start_timeout)

    def stop(self, timeout: float = 30.0) -> None:
        """Graceful stop (like SIGTERM): flush, commit, ack, disconnect."""
        if self._loop is not None and self._ingester is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._ingester.stop)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError("ingester did not stop")
        if self.error is not None:
            raise self.error

    def __enter__(self) -> IngesterThread:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
