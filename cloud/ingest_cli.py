"""``mimamori cloud ingest``: run one ingester until SIGTERM or SIGINT, then flush."""

from __future__ import annotations

import argparse
import asyncio
import signal

import structlog
from mimamori.cloud import logs
from mimamori.cloud.ingest import Ingester
from mimamori.cloud.metrics import IngestMetrics
from mimamori.cloud.settings import Settings
from prometheus_client import start_http_server


async def _serve(ingester: Ingester) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, ingester.stop)
    await ingester.run()


def run_ingest(args: argparse.Namespace, settings: Settings) -> int:
    """Run the ingester with ``settings`` overridden by the command line."""
    settings = settings.with_overrides(
        mqtt_host=args.mqtt_host,
        mqtt_port=args.mqtt_port,
        mqtt_username=args.mqtt_username,
        mqtt_tls_ca=args.mqtt_tls_ca,
        mqtt_client_id=args.mqtt_client_id,
        metrics_port=args.metrics_port,
        batch_rows=args.batch_rows,
        batch_delay_s=args.batch_delay_s,
    )
    settings.require_dsn()
    logs.configure(fmt=args.log_format)
    log = structlog.get_logger("mimamori.cloud.ingest")
    metrics = IngestMetrics()
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr="127.0.0.1", registry=metrics.registry)
        log.info("metrics", port=settings.metrics_port)

    async def main() -> None:
        ingester = Ingester(settings=settings, metrics=metrics, log=log)
        await _serve(ingester)
        log.info("stopped", stored=ingester.stored, duplicates=ingester.duplicates,
                 quarantined=ingester.quarantined)  # fmt: skip

    asyncio.run(main())
    return 0
