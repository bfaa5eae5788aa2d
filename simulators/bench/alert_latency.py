"""``mimamori bench alert-latency``: from the packet that completes an attack to the alert's
row in the database, on the live path.

The bench builds a small site on this machine:

* a veth pair; its far end lives in a network namespace the bench creates and plays the
  LAN's hosts, its near end is the gateway's capture interface (and the scan's target);
* a private Mosquitto and PostgreSQL (``simulators.services``), the schema, and the real
  ingester (``cloud.testing.IngesterThread``);
* a real ``mimamori edge run`` agent capturing on the near end, with default thresholds
  and timers (idle timeout 15 s, active timeout 60 s).

Each sample adds a fresh address to the far end (a new actor, so its alert has a new
dedup key and is never suppressed) and runs a TCP connect scan from it against closed
ports of the near end: every probe is refused by a reset, as ``scan.vertical`` expects.
The wall time at which the reset of the ``vertical_ports``-th probe arrived is the
packet that completes the pattern. The bench then polls the alerts table for that
actor's scan alert and reports ``received_at`` minus that time.

nfstream's meter advances its clock only with packets (nfstream issues #196 and #215): a
flow idle for ``idle_timeout`` is handed on when the next packet of any flow arrives. A
LAN always has some traffic, so the bench keeps a background host chatting
(``--background-pps``, default 2 datagrams a second); ``--background-pps 0`` measures a
silent link, where the alert waits for the next packet the kernels happen to send (ARP
re-validation, tens of seconds later).

Needs root (network namespaces and packet capture). Without ``ip netns`` it says so and
exits 2; there is no loopback fallback, because a capture on ``lo`` sees every other
service of the machine too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: The LAN of the bench site; the near end is the gateway's interface.
_NET = "10.231.9"
NEAR_IP = f"{_NET}.1"
#: Ports probed on the near end; none is listened on (the bench checks).
PORTS = tuple(range(20_100, 20_112))
#: The probe whose refusal completes scan.vertical (its default vertical_ports).
COMPLETING_PROBE = 10

# Run inside the namespace: connect from ``src`` to each port; print the wall time at
# which each refusal arrived, one per line.
_SCAN = r"""
import socket, sys, time
src, dst, ports = sys.argv[1], sys.argv[2], [int(p) for p in sys.argv[3:]]
for port in ports:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((src, 0))
    s.settimeout(3)
    try:
        s.connect((dst, port))
        print("open", port, flush=True)
    except ConnectionRefusedError:
        print(time.time(), flush=True)
    finally:
        s.close()
    time.sleep(0.05)
"""


# Run inside the namespace: a LAN host's background chatter, ``pps`` datagrams a second.
_CHATTER = r"""
import socket, sys, time
src, dst, pps = sys.argv[1], sys.argv[2], float(sys.argv[3])
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind((src, 40999))
while True:
    u.sendto(b"mimamori bench chatter", (dst, 9))
    time.sleep(1.0 / pps)
"""
#: The background host's address (the samples' actors start at .10).
CHATTER_IP = f"{_NET}.2"


class BenchError(RuntimeError):
    """The bench could not set up its site."""


class _NoAlert(BenchError):
    """A sample's alert did not reach the database within the timeout."""


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by linear interpolation between closest ranks."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _ip(*args: str) -> None:
    try:
        subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)
    except subprocess.CalledProcessError as exc:
        raise BenchError(f"ip {' '.join(args)}: {exc.stderr.strip()}") from exc


@contextlib.contextmanager
def veth_site() -> Iterator[tuple[str, str, str]]:
    """(namespace, near interface, far interface); everything removed afterwards."""
    if shutil.which("ip") is None:
        raise BenchError("iproute2's ip command is not installed")
    tag = uuid.uuid4().hex[:6]
    ns, near, far = f"mmal{tag}", f"mmaln{tag}", f"mmalf{tag}"
    _ip("netns", "add", ns)
    try:
        _ip("link", "add", near, "type", "veth", "peer", "name", far)
        _ip("link", "set", far, "netns", ns)
        _ip("addr", "add", f"{NEAR_IP}/24", "dev", near)
        _ip("link", "set", near, "up")
        _ip("netns", "exec", ns, "ip", "link", "set", far, "up")
        _ip("netns", "exec", ns, "ip", "link", "set", "lo", "up")
        yield ns, near, far
    finally:
        with contextlib.suppress(BenchError):
            _ip("link", "del", near)  # takes the peer with it
        with contextlib.suppress(BenchError):
            _ip("netns", "del", ns)


def _agent_config(path: Path, *, iface: str, broker_port: int, tenant: str, gw: str) -> None:
    path.write_text(f"""
[gateway]
id = "{gw}"
tenant = "{tenant}"

[capture]
interface = "{iface}"
home_net = ["{_NET}.0/24"]

[mqtt]
host = "127.0.0.1"
port = {broker_port}
insecure_plaintext = true
ack_timeout_s = 5
backoff_initial_s = 0.2
backoff_max_s = 2

[outbox]
path = "{path.parent / "outbox.db"}"

[heartbeat]
interval_s = 5
""")


def _query(dsn: str, sql: str, *params: object) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(dsn) as conn:
        return conn.execute(sql, params).fetchall()


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")


def _sample(ns: str, far: str, actor: str, dsn: str, timeout: float) -> dict[str, Any]:
    """Scan from ``actor``; return the latency of its alert row."""
    _ip("netns", "exec", ns, "ip", "addr", "add", f"{actor}/24", "dev", far)
    out = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", _SCAN, actor, NEAR_IP,
         *map(str, PORTS)],
        check=True, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    lines = out.stdout.split()
    if any(line == "open" for line in lines):
        raise BenchError(f"a probed port is open on {NEAR_IP}: {out.stdout!r}")
    refusals = [float(x) for x in lines]
    completed_at = refusals[COMPLETING_PROBE - 1]
    sql = (
        "SELECT extract(epoch FROM received_at), extract(epoch FROM detected_at), rule "
        "FROM alerts WHERE category = 'scan' AND actor = %s ORDER BY received_at LIMIT 1"
    )
    rows: list[tuple[Any, ...]] = []

    def arrived() -> bool:
        rows[:] = _query(dsn, sql, actor)
        return bool(rows)

    try:
        _wait(arrived, timeout, f"the scan alert of {actor}")
    except BenchError as exc:
        raise _NoAlert(str(exc)) from exc
    received, detected, rule = rows[0]
    return {
        "actor": actor,
        "rule": rule,
        "latency_s": round(float(received) - completed_at, 3),
        "detect_s": round(float(detected) - completed_at, 3),
    }


def run(*, samples: int, timeout: float = 120.0, background_pps: float = 2.0) -> dict[str, Any]:
    """Set up the site, take ``samples`` scans, and return the figures."""
    from mimamori.cloud import logs
    from mimamori.cloud.settings import Settings
    from mimamori.cloud.testing import IngesterThread, prepare_database
    from mimamori.simulators.services import private_services

    logs.configure(fmt="console", level=logging.WARNING)  # stdout is for the figures

    tenant, gw = "bench", "gw-latency"
    with (
        tempfile.TemporaryDirectory(prefix="mimamori-latency-") as tmp,
        veth_site() as (ns, near, far),
        private_services(timescaledb=False) as (broker, pg),
    ):
        prepare_database(pg.dsn, tenant=tenant, gateways=[gw])
        config = Path(tmp) / "edge.toml"
        _agent_config(config, iface=near, broker_port=broker.port, tenant=tenant, gw=gw)
        settings = Settings(dsn=pg.dsn, mqtt_port=broker.port, batch_delay_s=0.05)
        log = (Path(tmp) / "agent.log").open("wb")
        command = [sys.executable, "-m", "mimamori", "edge", "run", "--config", str(config)]
        agent = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        results: list[dict[str, Any]] = []
        missed: list[str] = []
        chatter: subprocess.Popen[bytes] | None = None
        try:
            if background_pps > 0:
                _ip("netns", "exec", ns, "ip", "addr", "add", f"{CHATTER_IP}/24", "dev", far)
                chatter = subprocess.Popen(
                    ["ip", "netns", "exec", ns, sys.executable, "-c", _CHATTER, CHATTER_IP,
                     NEAR_IP, str(background_pps)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
            with IngesterThread(settings=settings):
                _wait(lambda: bool(_query(pg.dsn, "SELECT 1 FROM heartbeats LIMIT 1")), 60,
                      "the agent's first heartbeat")  # fmt: skip
                time.sleep(3.0)  # the meter and listener attach after the publisher
                for i in range(samples):
                    if agent.poll() is not None:
                        raise BenchError(f"the agent exited with {agent.returncode}")
                    actor = f"{_NET}.{10 + i}"
                    try:
                        results.append(_sample(ns, far, actor, pg.dsn, timeout))
                    except _NoAlert:
                        missed.append(actor)  # counted; the next sample has a new actor
        except BenchError as exc:
            failure: BenchError | None = exc
        else:
            failure = None
        finally:
            if chatter is not None:
                chatter.kill()
                chatter.wait(10)
            agent.terminate()
            try:
                agent.wait(30)
            except subprocess.TimeoutExpired:
                agent.kill()
            log.close()
        if failure is not None:
            tail = (Path(tmp) / "agent.log").read_text(errors="replace")[-1500:]
            raise BenchError(f"{failure}; the agent's log ends:\n{tail}") from failure
    if not results:
        raise BenchError(f"no alert arrived within {timeout:.0f} s for any of {missed}")
    lat = [r["latency_s"] for r in results]
    return {
        "samples": len(results),
        "timed_out": len(missed),
        "timeout_s": timeout,
        "background_pps": background_pps,
        "p50_s": round(percentile(lat, 0.5), 3),
        "p95_s": round(percentile(lat, 0.95), 3),
        "max_s": round(max(lat), 3),
        "mean_s": round(statistics.fmean(lat), 3),
        "rules": sorted({r["rule"] for r in results}),
        "runs": results,
    }


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="mimamori bench alert-latency", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--samples", type=int, default=10, help="scans to time (default 10)")
    p.add_argument("--timeout", type=float, default=120.0,
                   help="seconds to wait for one alert row (default 120)")  # fmt: skip
    p.add_argument(
        "--background-pps",
        type=float,
        default=2.0,
        help="background LAN datagrams a second; 0: a silent link (default 2)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    if args.samples < 1 or args.samples > 200:
        p.error("--samples must be 1-200")
    if not 0 <= args.background_pps <= 1000:
        p.error("--background-pps must be 0-1000")
    if os.geteuid() != 0:
        print("mimamori bench alert-latency: needs root (network namespace, capture)",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        result = run(samples=args.samples, timeout=args.timeout,
                     background_pps=args.background_pps)  # fmt: skip
    except BenchError as exc:
        print(f"mimamori bench alert-latency: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
        return 0
    print(
        f"samples {result['samples']}  p50 {result['p50_s']:.2f} s  "
        f"p95 {result['p95_s']:.2f} s  max {result['max_s']:.2f} s  "
        f"rules {', '.join(result['rules'])}  background {result['background_pps']} pps"
    )
    if result["timed_out"]:
        print(f"  {result['timed_out']} sample(s) had no alert within {result['timeout_s']:.0f} s "
              "(not in the figures)")  # fmt: skip
    for r in result["runs"]:
        print(f"  {r['actor']:<14} {r['rule']:<16} alert row {r['latency_s']:7.2f} s "
              f"(detected {r['detect_s']:+.2f} s)")  # fmt: skip
    return 0
