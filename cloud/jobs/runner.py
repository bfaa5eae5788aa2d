"""Run the cloud jobs once or in a loop (``mimamori cloud jobs run-once|loop``)."""

from __future__ import annotations

import argparse
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import psycopg
import structlog
from mimamori.cloud import intel, labels, logs, notify
from mimamori.cloud._backoff import Backoff
from mimamori.cloud.errors import StoreError
from mimamori.cloud.jobs import incidents, liveness, longwindow, partitions, rollups, sensors
from mimamori.cloud.jobs.config import DEFAULT, JobsConfig
from mimamori.cloud.migrate import recorded_storage
from mimamori.cloud.settings import Settings, from_env, sensors_from_env

#: Jobs in the order they run: partitions first (so rollups find their tables), the alert
#: raising jobs before incidents (so their alerts get an incident in the same run); device
#: labels and the threat-intelligence refresh (a no-op until its feeds are due) last.
JOBS = (
    "partitions", "rollups", "liveness", "sensors", "longwindow", "incidents", "labels",
    "intel", "notify",
)  # fmt: skip


def run_once(
    dsn: str,
    *,
    only: Iterable[str] | None = None,
    now: datetime | None = None,
    config: JobsConfig = DEFAULT,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Run the selected jobs (all by default) once; return what each did.

    ``settings``: the broker the ``intel`` job publishes to (default: the environment).
    """
    selected = list(JOBS if only is None else only)
    unknown = set(selected) - set(JOBS)
    if unknown:
        raise StoreError(f"unknown job(s) {sorted(unknown)}; jobs are {', '.join(JOBS)}")
    when = now or datetime.now(UTC)
    out: dict[str, Any] = {}
    try:
        with psycopg.connect(dsn, autocommit=True, application_name="mimamori-jobs") as conn:
            storage = recorded_storage(conn)
            if storage is None:
                raise StoreError("the database is not migrated: run 'mimamori cloud migrate'")
            steps: dict[str, Callable[[], Any]] = {
                "partitions": lambda: partitions.maintain(
                    conn, storage=storage, now=when, config=config
                ),
                "rollups": lambda: rollups.refresh(conn, storage=storage, config=config),
                "liveness": lambda: liveness.check(conn, now=when, config=config),
                "sensors": lambda: sensors.check(conn, now=when, config=config.sensors),
                "longwindow": lambda: longwindow.run(conn, now=when),
                "incidents": lambda: incidents.group(conn, config=config),
                "labels": lambda: labels.refresh(conn, now=when),
                "intel": lambda: intel.run_job(conn, settings=settings or from_env(), now=when),
                # Last, so a new or escalated incident pages in the run that made it.
                "notify": lambda: notify.run(
                    conn,
                    transport=notify.Delivery(smtp=notify.SmtpRelay.from_env(os.environ)),
                    now=when,
                ),
            }
            for name in JOBS:
                if name in selected:
                    out[name] = steps[name]()
    except psycopg.Error as exc:
        raise StoreError(f"jobs failed: {exc}") from exc
    return out


def due(
    selected: Iterable[str], last_run: dict[str, float], now: float, config: JobsConfig = DEFAULT
) -> list[str]:
    """The jobs of ``selected`` to run in a loop pass at ``now`` (monotonic seconds), given
    when each last ran: those with a ``min_interval_s`` wait that long between runs."""
    spacing = dict(config.min_interval_s)
    return [
        name
        for name in selected
        if now - last_run.get(name, float("-inf")) >= spacing.get(name, 0.0)
    ]


def loop(
    dsn: str,
    *,
    interval: float,
    only: Iterable[str] | None,
    stop: threading.Event,
    config: JobsConfig = DEFAULT,
) -> None:
    """Run the jobs every ``interval`` seconds until ``stop``; errors are logged, retried."""
    log = structlog.get_logger("mimamori.cloud.jobs")
    backoff = Backoff(base=1.0, cap=60.0)
    selected = list(JOBS if only is None else only)
    last_run: dict[str, float] = {}
    while not stop.is_set():
        started = time.monotonic()
        names = due(selected, last_run, started, config)
        try:
            result = run_once(dsn, only=names, config=config)
            last_run.update((name, started) for name in names)
            backoff.reset()
            log.info("jobs done", seconds=round(time.monotonic() - started, 3),
                     **{k: repr(v) for k, v in result.items()})  # fmt: skip
            wait = max(0.0, interval - (time.monotonic() - started))
        except StoreError as exc:
            wait = backoff.next_delay()
            log.error("jobs failed", error=str(exc), retry_in=round(wait, 1))
        stop.wait(wait)


def run_cli(args: argparse.Namespace, settings: Settings) -> int:
    """``mimamori cloud jobs run-once|loop``; the sensors job's thresholds come from
    MIMAMORI_SENSORS_* (:func:`~mimamori.cloud.settings.sensors_from_env`)."""
    dsn = settings.require_dsn()
    config = replace(DEFAULT, sensors=sensors_from_env())
    if args.action == "run-once":
        for name, result in run_once(dsn, only=args.only, config=config).items():
            print(f"{name}: {result}")
        return 0
    logs.configure(fmt="json")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    loop(dsn, interval=args.interval, only=args.only, stop=stop, config=config)
    return 0
