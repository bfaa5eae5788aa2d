"""``mimamori bench ingest``: raw binary COPY versus the MQTT-to-database pipeline.

On one machine, with a private broker and database (:mod:`mimamori.simulators.services`):

1. **raw**: N prepared flow-summary rows (already in binary COPY form) are copied
   straight into ``flows`` in one transaction: the database's own ceiling.
2. **pipeline**: the same N rows, as protocol ``FlowBatch`` messages of
   ``--rows-per-message`` rows (encoded and compressed before the clock starts), are
   published at full speed by a separate publisher process (like a gateway with a full
   outbox) and committed by ``--ingesters`` ingester processes (``mimamori cloud ingest``
   sharing the subscription). Rate = N / (last ack received − first publish).
3. **latency**: more messages at half the pipeline's measured rate for
   ``--latency-seconds``; the latency of a message is from its publish to the arrival of
   the Ack that covers it (the ingester acks only after the commit, so this bounds
   publish-to-commit from above).

Every row carries a unique id (``pkts_out``); at the end ``lost`` counts ids missing from
``flows`` and ``duplicated`` counts extra copies, over the pipeline and latency phases.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from mimamori.protocol import FlowBatch, FlowSummary, decode_down, encode, topics
from mimamori.protocol.sequence import time_floor
from mimamori.simulators.services import Mosquitto, Postgres

TENANT = "bench"
GATEWAY = "gw-bench"
#: Devices and remote endpoints of the synthetic site: enough variety that compression
#: and the encoder's caches see realistic data, not one repeated row.
DEVICES = 40
REMOTES = 5000
APPS = ("TLS.Google", "TLS.Microsoft", "DNS", "HTTP", "QUIC.YouTube", "TLS.AmazonAWS", "NTP")
PORTS = (443, 443, 443, 80, 53, 123, 8443, 993, 587)


def make_rows(first_id: int, n: int, *, now: float) -> list[FlowSummary]:
    """``n`` flow summaries with unique ids ``first_id ..`` in ``pkts_out`` (deterministic).

    Like a gateway's batches, the rows of one call share their interval start ``ts``; calls
    for successive id ranges cycle through the intervals of the hour before ``now``.
    """
    rnd = random.Random(first_id)
    interval = now - 3600 + 60 * ((first_id // max(n, 1)) % 60)
    rows = []
    for i in range(first_id, first_id + n):
        dev = rnd.randrange(DEVICES)
        remote = rnd.randrange(REMOTES)
        rows.append(
            FlowSummary(
                ts=interval, mac=f"02:00:00:00:{dev // 256:02x}:{dev % 256:02x}",
                local_ip=f"192.168.10.{dev + 10}",
                remote_ip=f"{198 + remote % 3}.{remote % 251}.{remote // 251}.{remote % 97 + 1}",
                remote_port=PORTS[remote % len(PORTS)], proto=17 if remote % 7 == 0 else 6,
                dir="out", app=APPS[remote % len(APPS)],
                sni=f"svc{remote % 300}.example.com" if remote % 2 else "",
                pkts_out=i, pkts_in=rnd.randrange(1, 5000), bytes_out=rnd.randrange(60, 10**6),
                bytes_in=rnd.randrange(60, 10**7), conns=rnd.randrange(1, 20),
                first_seen=interval + rnd.random() * 30, last_seen=interval + 30 + rnd.random() * 29,
            )
        )  # fmt: skip
    return rows


# --- publisher process ------------------------------------------------------------------


@dataclass
class PublishPlan:
    port: int
    first_id: int
    rows: int
    per_message: int
    first_seq: int
    #: messages per second; 0 = as fast as possible
    rate: float
    now: float
    timeout_s: float


def _publisher(plan: PublishPlan, out: Connection) -> None:
    """Publish a plan's messages like a gateway; report send and ack times per seq."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    payloads: list[tuple[int, bytes]] = []
    for k, offset in enumerate(range(0, plan.rows, plan.per_message)):
        n = min(plan.per_message, plan.rows - offset)
        rows = make_rows(plan.first_id + offset, n, now=plan.now)
        seq = plan.first_seq + k
        payloads.append((seq, encode(FlowBatch(gateway=GATEWAY, seq=seq, sent_at=plan.now,
                                               flows=rows))))  # fmt: skip
    sent: dict[int, float] = {}
    acked: dict[int, float] = {}
    done = threading.Event()
    lock = threading.Lock()

    def on_message(client: Any, userdata: Any, msg: Any) -> None:
        at = time.time()
        ack = decode_down(msg.payload)
        with lock:
            for lo, hi in getattr(ack, "ranges", []):
                for s in range(lo, hi + 1):
                    acked.setdefault(s, at)
            if len(acked) >= len(payloads):
                done.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{plan.first_seq}",
                         protocol=mqtt.MQTTv5)  # fmt: skip
    client.max_inflight_messages_set(0)  # no client-side window: measure the cloud side
    client.on_message = on_message
    client.connect("127.0.0.1", plan.port)
    client.loop_start()
    client.subscribe(topics.ack(TENANT, GATEWAY), qos=1)
    time.sleep(0.3)
    out.send(("ready", len(payloads), sum(len(p) for _, p in payloads)))
    out.recv()  # go
    topic = topics.up(TENANT, GATEWAY, "flows")
    start = time.time()
    for k, (seq, payload) in enumerate(payloads):
        if plan.rate:
            delay = start + k / plan.rate - time.time()
            if delay > 0:
                time.sleep(delay)
        sent[seq] = time.time()
        client.publish(topic, payload, qos=1)
    done.wait(plan.timeout_s)
    client.loop_stop()
    client.disconnect()
    with lock:
        out.send(("done", sent, dict(acked)))


def _publish(plan: PublishPlan, progress: Any = None) -> tuple[dict[int, float], dict[int, float]]:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_publisher, args=(plan, child), daemon=True)
    proc.start()
    msg = parent.recv()
    assert msg[0] == "ready"
    parent.send("go")
    while not parent.poll(0.2):
        if progress is not None:
            progress()
        if not proc.is_alive():
            raise RuntimeError("publisher died")
    _, sent, acked = parent.recv()
    proc.join(10)
    return sent, acked


# --- the run ----------------------------------------------------------------------------


def _count(dsn: str) -> int:
    import psycopg

    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM flows").fetchone()
    return int(row[0]) if row else 0


def _raw(dsn: str, rows: int, now: float, per_message: int) -> tuple[float, float]:
    """Wall and database CPU seconds to COPY ``rows`` prepared rows into flows in one
    transaction (the table is emptied again afterwards)."""
    import psutil
    import psycopg
    from mimamori.cloud import _pgcopy

    encoder = _pgcopy.FlowEncoder()
    chunks = [
        encoder.encode(TENANT, GATEWAY, make_rows(start, min(per_message, rows - start), now=now))
        for start in range(0, rows, per_message)
    ]
    sql = f"COPY flows ({', '.join(_pgcopy.FLOW_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        backend = psutil.Process(int(row[0])) if row else None
        cpu0 = sum(backend.cpu_times()[:2]) if backend else 0.0
        t0 = time.perf_counter()
        with conn.cursor() as cur, cur.copy(sql) as copy:
            copy.write(_pgcopy.HEADER)
            for chunk in chunks:
                copy.write(chunk)
            copy.write(_pgcopy.TRAILER)
        conn.commit()
        elapsed = time.perf_counter() - t0
        cpu = sum(backend.cpu_times()[:2]) - cpu0 if backend else float("nan")
        conn.execute("TRUNCATE flows")
        if conn.execute("SELECT to_regclass('flow_invalidations')").fetchone() != (None,):
            conn.execute("TRUNCATE flow_invalidations")
        conn.commit()
    return elapsed, cpu


def _start_ingesters(n: int, *, dsn: str, port: int, workdir: Path, batch_rows: int) -> list[Any]:
    env = {**os.environ, "MIMAMORI_DSN": dsn}
    procs = []
    for k in range(n):
        log = open(workdir / f"ingester-{k}.log", "ab")  # noqa: SIM115 - owned by the process
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "mimamori", "cloud", "ingest", "--mqtt-port", str(port),
                 "--client-id", f"bench-ingest-{k}", "--batch-rows", str(batch_rows)],
                stdout=log, stderr=log, env=env,
            )
        )  # fmt: skip
    deadline = time.monotonic() + 30
    for k in range(n):
        while b"subscribed" not in (workdir / f"ingester-{k}.log").read_bytes():
            if time.monotonic() > deadline or procs[k].poll() is not None:
                raise RuntimeError(f"ingester {k} did not start; see {workdir}")
            time.sleep(0.1)
    return procs


def _tree_cpu(pids: list[int]) -> float:
    """CPU seconds (user + system) used so far by processes ``pids`` and their children."""
    import psutil

    total = 0.0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for proc in procs:
            try:
                t = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += t.user + t.system
    return total


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark; return the figures (the --json document)."""
    import psycopg
    from mimamori.cloud import registry
    from mimamori.cloud.migrate import migrate
    from tqdm import tqdm

    workdir = Path(tempfile.mkdtemp(prefix="mimamori-bench-ingest-"))
    storage = None if args.storage == "auto" else args.storage == "timescaledb"
    now = time.time()
    with Mosquitto() as broker, Postgres(timescaledb=storage) as pg:
        result_storage = migrate(pg.dsn, storage=args.storage).storage
        with psycopg.connect(pg.dsn) as conn:
            registry.add_gateway(conn, tenant=TENANT, gateway=GATEWAY)
        db_pids = [pg.proc.pid] if pg.proc else []
        raw_s, raw_db_cpu = _raw(pg.dsn, args.rows, now, args.rows_per_message)
        procs = _start_ingesters(args.ingesters, dsn=pg.dsn, port=broker.port, workdir=workdir,
                                 batch_rows=args.batch_rows)  # fmt: skip
        try:
            bar = tqdm(total=args.rows, unit="row", unit_scale=True, file=sys.stderr,
                       desc="pipeline", disable=args.no_progress)  # fmt: skip

            def progress() -> None:
                bar.n = _count(pg.dsn)
                bar.refresh()

            seq0 = time_floor()
            roles = {"ingesters": [p.pid for p in procs], "database": db_pids,
                     "broker": [broker.proc.pid] if broker.proc else []}  # fmt: skip
            cpu0 = {role: _tree_cpu(pids) for role, pids in roles.items()}
            sent, acked = _publish(
                PublishPlan(port=broker.port, first_id=0, rows=args.rows,
                            per_message=args.rows_per_message, first_seq=seq0, rate=0, now=now,
                            timeout_s=args.timeout),
                progress,
            )  # fmt: skip
            cpu = {role: round(_tree_cpu(pids) - cpu0[role], 2) for role, pids in roles.items()}
            progress()
            bar.close()
            if len(acked) < len(sent):
                raise RuntimeError(f"pipeline: {len(sent) - len(acked)} messages never acked")
            pipeline_s = max(acked.values()) - min(sent.values())
            pipeline_rate = args.rows / pipeline_s

            # Latency at half the maximum rate.
            msg_rate = pipeline_rate / 2 / args.rows_per_message
            lat_msgs = max(10, int(msg_rate * args.latency_seconds))
            lat_rows = lat_msgs * args.rows_per_message
            sent2, acked2 = _publish(
                PublishPlan(port=broker.port, first_id=args.rows, rows=lat_rows,
                            per_message=args.rows_per_message, first_seq=seq0 + len(sent),
                            rate=msg_rate, now=now, timeout_s=args.timeout),
            )  # fmt: skip
            latencies = [acked2[s] - sent2[s] for s in sent2 if s in acked2]
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(30)
        total = args.rows + lat_rows
        with psycopg.connect(pg.dsn) as conn:
            row = conn.execute(
                "SELECT count(*), count(DISTINCT pkts_out),"
                " count(DISTINCT pkts_out) FILTER (WHERE pkts_out < %s) FROM flows",
                (total,),
            ).fetchone()
        assert row is not None
        stored, distinct, expected_ids = row
    return {
        "storage": result_storage,
        "rows": args.rows,
        "rows_per_message": args.rows_per_message,
        "ingesters": args.ingesters,
        "raw_rows_per_s": round(args.rows / raw_s),
        "pipeline_rows_per_s": round(pipeline_rate),
        "ratio": round(pipeline_rate / (args.rows / raw_s), 3),
        "latency_rate_rows_per_s": round(msg_rate * args.rows_per_message),
        "latency_messages": len(sent2),
        "latency_p50_s": round(statistics.median(latencies), 4) if latencies else None,
        "latency_p99_s": round(_pct(latencies, 0.99), 4) if latencies else None,
        "lost": total - expected_ids,
        "duplicated": stored - distinct,
        "cpus": os.cpu_count(),
        # CPU seconds per role, for figures that do not depend on what else the machine ran:
        # the database's share of the raw COPY, and each role's share of the pipeline.
        "raw_database_cpu_s": round(raw_db_cpu, 2),
        "pipeline_cpu_s": cpu,
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mimamori bench ingest", description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000, help="rows per phase (default 1e6)")
    p.add_argument("--rows-per-message", type=int, default=1000)
    p.add_argument("--ingesters", type=int, default=2, help="ingester processes (default 2)")
    p.add_argument("--batch-rows", type=int, default=20000, help="ingester batch size")
    p.add_argument("--storage", choices=["auto", "postgresql", "timescaledb"], default="auto")
    p.add_argument("--latency-seconds", type=float, default=10.0)
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for acks")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return p


def main(argv: list[str]) -> int:
    """Entry point of ``mimamori bench ingest``."""
    args = _parser().parse_args(argv)
    if args.rows < args.rows_per_message or not 1 <= args.rows_per_message <= 5000:
        print("mimamori bench ingest: need 1 <= --rows-per-message <= min(--rows, 5000)",
              file=sys.stderr)  # fmt: skip
        return 2
    result = run(args)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"storage              {result['storage']}")
    print(f"rows                 {result['rows']:,} ({result['rows_per_message']} per message, "
          f"{result['ingesters']} ingester(s))")  # fmt: skip
    print(f"raw COPY             {result['raw_rows_per_s']:>10,} rows/s")
    print(f"pipeline             {result['pipeline_rows_per_s']:>10,} rows/s")
    print(f"ratio                {result['ratio']:.3f}")
    print(f"latency at {result['latency_rate_rows_per_s']:,} rows/s: "
          f"p50 {result['latency_p50_s']} s, p99 {result['latency_p99_s']} s")  # fmt: skip
    print(f"lost {result['lost']}, duplicated {result['duplicated']}")
    print(
        f"CPU seconds: raw COPY database {result['raw_database_cpu_s']}; pipeline "
        + ", ".join(f"{k} {v}" for k, v in result["pipeline_cpu_s"].items())
    )
    print(f"load average (1 min) at the end: {result['load_average_1m']}")
    return 0
