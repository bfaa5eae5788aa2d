"""The cloud's long-window detection job over stored flows, on both storage flavours.

A slow beacon (a call-back every 30 minutes for most of a day) and an upload far above the
device's own week are seen only by the cloud: the gateway keeps neither that history nor
that many call-backs of a slow beacon. Stored rows in, alerts out, once.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from mimamori.cloud.jobs.runner import run_once
from mimamori.cloud.testing import prepare_database

TENANT, GATEWAY = "t-lw", "gw-lw"
BEACON, BROWSER, UPLOADER = "192.168.1.50", "192.168.1.51", "192.168.1.60"

_INSERT = """
INSERT INTO flows (ts, tenant, gateway, mac, local_ip, remote_ip, remote_port, proto, dir,
    app, sni, pkts_out, pkts_in, bytes_out, bytes_in, conns, first_seen, last_seen)
VALUES (%s, %s, %s, %s, %s, %s, 443, 6, 'out', 'TLS', %s, %s, %s, %s, %s, %s, %s, %s)
"""


def _row(ts: datetime, mac: str, local: str, remote: str, sni: str, up: int) -> tuple[Any, ...]:
    return (ts, TENANT, GATEWAY, mac, local, remote, sni, 10, 10, up, 4000, 1, ts, ts)


def _seed(dsn: str, end: datetime) -> None:
    rng = random.Random(7)
    rows = []
    for k in range(40):  # 20 h of call-backs every 30 min, a few seconds of jitter
        ts = end - timedelta(hours=20) + timedelta(minutes=30 * k, seconds=rng.uniform(-5, 5))
        rows.append(_row(ts, "02:00:00:00:00:50", BEACON, "203.0.113.9", "c2.example.net", 420))
    t = end - timedelta(hours=20)
    while t < end:  # a person browsing: irregular, to one site
        rows.append(_row(t, "02:00:00:00:00:51", BROWSER, "198.51.100.4", "news.example", 900))
        t += timedelta(minutes=rng.expovariate(1 / 25))
    for h in range(72, 1, -1):  # three days of ~1 MB an hour, then 600 MB in the last hour
        ts = end - timedelta(hours=h, minutes=-20)
        rows.append(_row(ts, "02:00:00:00:00:60", UPLOADER, "192.0.2.8", "files.example",
                         1_000_000 + 1000 * (h % 5)))  # fmt: skip
    rows.append(_row(end - timedelta(minutes=30), "02:00:00:00:00:60", UPLOADER, "192.0.2.99",
                     "drop.example", 600_000_000))  # fmt: skip
    with psycopg.connect(dsn) as conn:
        conn.cursor().executemany(_INSERT, rows)


def _alerts(dsn: str) -> list[tuple[str, str, str, str]]:
    with psycopg.connect(dsn) as conn:
        return [
            (c, a, t, s)
            for c, a, t, s in conn.execute(
                "SELECT category, actor, target, source FROM alerts ORDER BY category, actor"
            ).fetchall()
        ]


def test_slow_beacon_and_exfiltration_are_found_once(db: Any) -> None:
    dsn = db.dsn
    prepare_database(dsn, tenant=TENANT, gateways=[GATEWAY])
    now = datetime.now(UTC)
    end = now.replace(minute=0, second=0, microsecond=0)
    _seed(dsn, end)
    run_once(dsn, only=["rollups"], now=now)  # the exfiltration baseline reads flows_1h

    done = run_once(dsn, only=["longwindow"], now=now)["longwindow"]
    assert (done.gateways, done.beacon, done.exfiltration) == (1, 1, 1)
    assert _alerts(dsn) == [
        ("beacon", BEACON, "c2.example.net:443", "cloud"),
        ("exfiltration", UPLOADER, "drop.example", "cloud"),
    ]
    # Later in the same hour, and in the next hours: the same findings are not stored again.
    for later in (now + timedelta(minutes=20), end + timedelta(hours=1, minutes=5)):
        again = run_once(dsn, only=["longwindow"], now=later)["longwindow"]
        assert (again.beacon, again.exfiltration) == (0, 0)
    assert len(_alerts(dsn)) == 2
