"""Fill a store with N sites x D days of realistic synthetic data, for dashboards.

What a dashboard reads is generated: tenants and gateways (mostly online, a few offline or
never heard from), each site's device inventory, flow summaries with an office-hours
rhythm (JST), 30-second heartbeats with cumulative counters, receipts of every message,
alerts grouped into incidents, quarantined messages. Then the rollups are brought up to
date the way each storage does it (a refresh of the continuous aggregates on TimescaleDB,
the rollup tables day by day on plain PostgreSQL, ``flows_5m`` up to ``flows_1d``) and,
on TimescaleDB, chunks older than the compression policies' windows are compressed, as
the policies would have done.

Bulk rows (flows, heartbeats, receipts) are generated inside PostgreSQL with
``generate_series`` (one statement per day), so seeding millions of rows costs no Python
per row; the small relational tables are written with COPY from Python. Secondary
indexes of the bulk-filled tables are dropped first and built once at the end, before
compression. The seed is meant for a private, empty database: it changes session settings
only, so several seeds of different databases may run at once. Generation is
deterministic for a given ``seed`` (``setseed`` and ``random.Random``), except for ``end``,
which defaults to now so that "last 24 hours" shows data.

Volume: a small office's gateway produces a few thousand to tens of thousands of
one-minute flow summaries a day; ``flows_per_site_day`` sets it (default 4,000).
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from mimamori.cloud.jobs import rollups
from mimamori.cloud.migrate import migrate

#: Rollups and compression windows of the schema (cloud/migrations): chunks older than
#: these are compressed by TimescaleDB's policies in production.
_COMPRESS_AFTER = {"flows": "2 days", "heartbeats": "7 days"}

_VENDORS = [
    ("Apple", "MacBook", "macOS", "macbook"),
    ("Apple", "iPhone", "iOS", "iphone"),
    ("Dell", "OptiPlex", "Windows 11", "pc"),
    ("Lenovo", "ThinkPad", "Windows 10", "note"),
    ("HP", "LaserJet", "", "printer"),
    ("Brother", "MFC-L2750", "", "mfp"),
    ("Synology", "DS220+", "Linux", "nas"),
    ("Panasonic", "BB-ST165", "", "camera"),
    ("Buffalo", "WXR-5950", "", "router"),
    ("Raspberry Pi", "Pi 4", "Linux", "pi"),
    ("Sharp", "MX-2650", "", "copier"),
    ("Yamaha", "RTX1210", "", "vpn"),
]

# (remote ip, port, proto, app, sni, dir, weight): a shared catalog of remote endpoints.
_ENDPOINTS = [
    ("142.250.196.110", 443, 6, "TLS.Google", "www.google.com", "out"),
    ("52.96.165.18", 443, 6, "TLS.Microsoft365", "outlook.office365.com", "out"),
    ("13.107.42.14", 443, 6, "TLS.Teams", "teams.microsoft.com", "out"),
    ("17.253.144.10", 443, 6, "TLS.Apple", "gateway.icloud.com", "out"),
    ("104.18.32.7", 443, 6, "TLS.Cloudflare", "cdn.example.jp", "out"),
    ("202.32.115.5", 443, 6, "TLS", "www.yahoo.co.jp", "out"),
    ("157.240.0.35", 443, 6, "TLS.Facebook", "www.facebook.com", "out"),
    ("8.8.8.8", 53, 17, "DNS", "", "out"),
    ("1.1.1.1", 53, 17, "DNS", "", "out"),
    ("133.243.238.164", 123, 17, "NTP", "", "out"),
    ("54.230.10.20", 443, 6, "TLS.AmazonAWS", "s3.ap-northeast-1.amazonaws.com", "out"),
    ("203.0.113.77", 80, 6, "HTTP", "update.vendor.example", "out"),
    ("192.168.1.1", 53, 17, "DNS", "", "lan"),
    ("192.168.1.20", 445, 6, "SMBv23", "", "lan"),
    ("192.168.1.30", 9100, 6, "Unknown", "", "lan"),
    ("198.51.100.23", 3389, 6, "RDP", "", "in"),
    ("45.33.32.156", 22, 6, "SSH", "", "in"),
    ("23.45.67.89", 443, 6, "TLS.Zoom", "zoom.us", "out"),
    ("150.95.10.10", 443, 6, "TLS", "www.chatwork.com", "out"),
    ("210.140.92.183", 443, 6, "TLS", "www.freee.co.jp", "out"),
]

_ALERT_KINDS = [
    # category, severity, weight
    ("new_device", "info", 30),
    ("exposure", "medium", 10),
    ("scan", "medium", 12),
    ("old_os", "low", 10),
    ("cleartext_credentials", "medium", 6),
    ("bruteforce", "high", 5),
    ("beacon", "high", 4),
    ("intel_match", "high", 4),
    ("dns_tunnel", "high", 2),
    ("lateral_movement", "critical", 1),
    ("malware_traffic", "critical", 1),
    ("exfiltration", "critical", 1),
    ("gateway_offline", "medium", 3),
]

_QUARANTINE_REASONS = ["schema", "malformed", "unknown_gateway", "too_large", "invalid_value"]


@dataclass(frozen=True, kw_only=True)
class SeedPlan:
    """How much to generate. Defaults: a tiny fleet for tests."""

    sites: int = 3
    days: float = 2.0
    devices_per_site: int = 15
    flows_per_site_day: int = 4000
    heartbeat_interval_s: int = 30
    alerts_per_site_day: float = 3.0
    quarantined_per_day: int = 20
    sites_per_tenant: int = 2
    seed: int = 1
    end: datetime = field(
        default_factory=lambda: datetime.now(UTC).replace(second=0, microsecond=0)
    )

    @property
    def start(self) -> datetime:
        return self.end - timedelta(days=self.days)


@dataclass
class SeedReport:
    """Rows written per relation, the storage and the time taken per step."""

    storage: str
    rows: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def seed(dsn: str, plan: SeedPlan) -> SeedReport:
    """Migrate ``dsn`` if needed and fill it according to ``plan``."""
    result = migrate(dsn)
    report = SeedReport(storage=result.storage)
    rng = random.Random(plan.seed)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT setseed(%s)", (((plan.seed % 1000) / 1000.0),))
        # Bulk generation and rollups group millions of rows: hash them in memory.
        conn.execute("SET work_mem = '256MB'")
        # Session settings only (other sessions and seeds are unaffected). A lost seed is
        # simply run again, so commits need not wait for the disk; and JIT compiling the
        # generators costs about a second per statement for nothing (they run once).
        conn.execute("SET synchronous_commit = off")
        conn.execute("SET jit = off")
        step = _Steps(report)
        with step("registry"):
            gateways = _registry(conn, plan, rng, report)
        if result.storage == "postgresql":
            with step("partitions"):
                _partitions(conn, plan)
        with step("devices"):
            _devices(conn, plan, gateways, rng, report)
        with step("drop_indexes"):
            indexes = _drop_indexes(conn)
        with step("flows"):
            # The planner cannot estimate how many drawn rows the time filters keep and
            # guesses a few hundred, then joins them by nested loops: hash joins instead.
            conn.execute("SET enable_nestloop = off")
            _flows(conn, plan, gateways, report)
            conn.execute("RESET enable_nestloop")
        with step("heartbeats"):
            _heartbeats(conn, plan, gateways, report)
        with step("receipts"):
            _receipts(conn, plan, report)
        with step("alerts"):
            _alerts(conn, plan, gateways, rng, report)
        with step("quarantine"):
            _quarantine(conn, plan, rng, report)
        with step("labels"):
            _labels(conn, plan, rng, report)
        with step("rollups"):
            refresh_rollups(conn, result.storage, plan.start, plan.end + timedelta(hours=1))
        with step("create_indexes"):
            for definition in indexes:
                conn.execute(definition)
        if result.storage == "timescaledb":
            with step("compression"):
                _compress(conn)
        with step("analyze"):
            conn.execute("ANALYZE")
    return report


class _Steps:
    def __init__(self, report: SeedReport) -> None:
        self.report = report
        self.name = ""
        self.t0 = 0.0

    def __call__(self, name: str) -> _Steps:
        self.name = name
        return self

    def __enter__(self) -> None:
        self.t0 = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.report.seconds[self.name] = round(time.perf_counter() - self.t0, 2)


@dataclass(frozen=True)
class _Gateway:
    id: str
    tenant: str
    state: str  # online, offline, unknown
    #: When its data stops (offline gateways went quiet before the end).
    quiet_from: datetime | None


def _copy(conn: psycopg.Connection[Any], table: str, columns: list[str], rows: list[Any]) -> None:
    with conn.cursor().copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as cp:
        for row in rows:
            cp.write_row(row)


def _registry(
    conn: psycopg.Connection[Any], plan: SeedPlan, rng: random.Random, report: SeedReport
) -> list[_Gateway]:
    tenants: list[tuple[str, str]] = []
    gateways: list[_Gateway] = []
    rows = []
    for i in range(plan.sites):
        tenant = f"t{i // plan.sites_per_tenant:04d}"
        if not tenants or tenants[-1][0] != tenant:
            tenants.append((tenant, f"株式会社サンプル{i // plan.sites_per_tenant + 1}"))
        gid = f"gw{i:04d}"
        r = rng.random()
        # About 3 % offline (quiet for 1-12 hours), 1 % never heard from.
        if i > 0 and r < 0.01:
            state, quiet, last = "unknown", plan.start, None
        elif i > 0 and r < 0.04:
            quiet = plan.end - timedelta(hours=rng.uniform(1, 12))
            state, last = "offline", quiet
        else:
            state, quiet, last = "online", None, plan.end
        gateways.append(_Gateway(gid, tenant, state, quiet))
        rows.append(
            (gid, tenant, f"拠点{i + 1}", f"office-{i + 1}", state, last,
             plan.heartbeat_interval_s if last else None, plan.start - timedelta(days=1))
        )  # fmt: skip
    _copy(conn, "tenants", ["id", "name"], tenants)
    _copy(
        conn,
        "gateways",
        ["id", "tenant", "site", "name", "state", "last_seen", "heartbeat_interval_s",
         "created_at"],
        rows,
    )  # fmt: skip
    conn.execute("UPDATE gateways SET state_changed_at = coalesce(last_seen, created_at)")
    report.rows["tenants"] = len(tenants)
    report.rows["gateways"] = len(gateways)
    # Temp table of the gateways with data, for the server-side generators.
    conn.execute(
        "CREATE TEMP TABLE seed_gw (gateway text, tenant text, quiet_from timestamptz, n int)"
    )
    _copy(
        conn,
        "seed_gw",
        ["gateway", "tenant", "quiet_from", "n"],
        [(g.id, g.tenant, g.quiet_from, n) for n, g in enumerate(gateways)
         if g.state != "unknown"],
    )  # fmt: skip
    return gateways


#: Relations whose secondary indexes are dropped while they are bulk-filled and built
#: afterwards: one sort per index instead of millions of random insertions (the rollup
#: tables' three indexes made their refresh four times slower).
_BULK = ("flows", "heartbeats", "flows_5m", "flows_1h", "flows_app_1h", "flows_1d")


def _drop_indexes(conn: psycopg.Connection[Any]) -> list[str]:
    """Drop the indexes of the bulk-filled tables (not those of constraints, not those of
    continuous aggregates, which are views); return the statements that recreate them."""
    rows = conn.execute(
        """
        SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid)
        FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid
        WHERE t.relnamespace = 'public'::regnamespace AND t.relname = ANY(%s)
          AND t.relkind IN ('r', 'p')
          AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)
        """,
        (list(_BULK),),
    ).fetchall()
    for name, _ in rows:
        conn.execute(f"DROP INDEX {name}")
    # The definition of a partitioned table's index reads "ON ONLY parent": run as is, it
    # would make an invalid index on the parent alone, and no partition would have one.
    return [definition.replace(" ON ONLY ", " ON ", 1) for _, definition in rows]


def _partitions(conn: psycopg.Connection[Any], plan: SeedPlan) -> None:
    # Plain PostgreSQL: one partition per UTC day, or rows land in the DEFAULT partition.
    conn.execute(
        """
        SELECT mimamori_ensure_partition(t, d::date)
        FROM unnest(ARRAY['flows', 'heartbeats', 'sensor_messages']) AS t,
             generate_series(%s::timestamptz AT TIME ZONE 'UTC',
                             %s::timestamptz AT TIME ZONE 'UTC', interval '1 day') AS d
        """,
        (plan.start - timedelta(days=1), plan.end + timedelta(days=1)),
    )


def _devices(
    conn: psycopg.Connection[Any],
    plan: SeedPlan,
    gateways: list[_Gateway],
    rng: random.Random,
    report: SeedReport,
) -> None:
    rows = []
    seed_rows = []
    for n, g in enumerate(gateways):
        if g.state == "unknown":
            continue
        for k in range(plan.devices_per_site):
            vendor, model, os_hint, host = _VENDORS[(k + n) % len(_VENDORS)]
            mac = f"02:{n >> 8 & 0xFF:02x}:{n & 0xFF:02x}:00:{k >> 8 & 0xFF:02x}:{k & 0xFF:02x}"
            ip = f"192.168.1.{100 + k}"
            # A few devices appeared during the seeded range ("new device").
            first = plan.start - timedelta(days=30)
            if rng.random() < 0.1:
                first = plan.start + timedelta(seconds=rng.uniform(0, plan.days * 86400))
            extras = {"mdns_name": f"{host}-{k}.local", "ssdp_server": f"{vendor} UPnP/1.0"}
            services = ["http", "ipp"] if host in ("printer", "mfp", "copier") else []
            rows.append(
                (g.tenant, mac, g.id, [ip], vendor, f"{host}-{k:02d}", model, os_hint,
                 services, json.dumps(extras), "1,3,6,15,31,33", first, plan.end)
            )  # fmt: skip
            seed_rows.append((g.id, k, mac, ip))
    _copy(
        conn,
        "devices",
        ["tenant", "mac", "gateway", "ips", "vendor", "hostname", "model", "os_hint",
         "services", "extras", "dhcp_fingerprint", "first_seen", "last_seen"],
        rows,
    )  # fmt: skip
    conn.execute("CREATE TEMP TABLE seed_dev (gateway text, idx int, mac macaddr, ip inet)")
    _copy(conn, "seed_dev", ["gateway", "idx", "mac", "ip"], seed_rows)
    conn.execute("CREATE INDEX ON seed_dev (gateway, idx)")
    conn.execute(
        "CREATE TEMP TABLE seed_ep (idx int, ip inet, port int, proto smallint, app text,"
        " sni text, dir text)"
    )
    _copy(
        conn,
        "seed_ep",
        ["idx", "ip", "port", "proto", "app", "sni", "dir"],
        [(i, *e) for i, e in enumerate(_ENDPOINTS)],
    )
    # Temp tables are never analysed by autovacuum: without statistics the generators
    # join them by nested loops over every endpoint.
    conn.execute("ANALYZE seed_gw, seed_dev, seed_ep")
    report.rows["devices"] = len(rows)


def _days(plan: SeedPlan) -> list[tuple[datetime, datetime]]:
    spans, t = [], plan.start
    while t < plan.end:
        nxt = min(t + timedelta(days=1), plan.end)
        spans.append((t, nxt))
        t = nxt
    return spans


def _flows(
    conn: psycopg.Connection[Any], plan: SeedPlan, gateways: list[_Gateway], report: SeedReport
) -> None:
    total = 0
    for lo, hi in _days(plan):
        per_site = max(1, int(plan.flows_per_site_day * (hi - lo).total_seconds() / 86400))
        # Minute of the span: 70 % of the traffic in office hours 09:00-18:00 JST
        # (00:00-09:00 UTC) of the day, the rest spread over the span. Endpoint popularity
        # is skewed (random()^2), as in real offices a few services carry most of the
        # traffic. The draws happen once per row in the innermost subquery (volatile
        # functions keep it from being flattened), then devices and endpoints are joined
        # by hash: a lateral draw per gateway was re-run for each device, drawing 15
        # times the rows it kept. Rows are written in time order, as the ingester writes
        # them (each minute's batches of all sites together).
        cur = conn.execute(
            """
            INSERT INTO flows (ts, tenant, gateway, mac, local_ip, remote_ip, remote_port,
                               proto, dir, app, sni, pkts_out, pkts_in, bytes_out, bytes_in,
                               conns, first_seen, last_seen)
            SELECT x.ts, x.tenant, x.gateway, d.mac, d.ip, e.ip, e.port, e.proto, e.dir,
                   e.app, e.sni, x.pk, x.pk + 2, x.b_out, x.b_in, 1 + x.pk / 40,
                   x.ts + interval '1 second', x.ts + interval '50 seconds'
            FROM (
                SELECT u.tenant, u.gateway, u.quiet_from, u.dev, u.ep, u.pk, u.b_out, u.b_in,
                       date_bin(interval '1 minute',
                         CASE WHEN u.office < 0.7 AND u.t_o >= %(lo)s AND u.t_o < %(hi)s
                              THEN u.t_o ELSE u.t_u END,
                         timestamptz '2000-01-01') AS ts
                FROM (SELECT v.*, (date_trunc('day', v.t_u AT TIME ZONE 'UTC')
                                   AT TIME ZONE 'UTC') + v.r9 * interval '9 hours' AS t_o
                      FROM (SELECT g.tenant, g.gateway, g.quiet_from,
                                   %(lo)s::timestamptz
                                   + random() * (%(hi)s::timestamptz - %(lo)s::timestamptz)
                                     AS t_u,
                                   random() AS office, random() AS r9,
                                   (random() * %(ndev)s)::int %% %(ndev)s AS dev,
                                   (power(random(), 2) * %(nep)s)::int %% %(nep)s AS ep,
                                   (2 + random() * 200)::bigint AS pk,
                                   (200 + exp(random() * 12))::bigint AS b_out,
                                   (400 + exp(random() * 14))::bigint AS b_in
                            FROM seed_gw g CROSS JOIN generate_series(1, %(per_site)s) AS n
                            ) v) u) x
            JOIN seed_dev d ON d.gateway = x.gateway AND d.idx = x.dev
            JOIN seed_ep e ON e.idx = x.ep
            WHERE x.ts >= %(lo)s AND x.ts < %(hi)s
              AND (x.quiet_from IS NULL OR x.ts < x.quiet_from)
            ORDER BY x.ts
            """,
            {"lo": lo, "hi": hi, "per_site": per_site, "ndev": plan.devices_per_site,
             "nep": len(_ENDPOINTS)},
        )  # fmt: skip
        total += cur.rowcount
    report.rows["flows"] = total


def _heartbeats(
    conn: psycopg.Connection[Any], plan: SeedPlan, gateways: list[_Gateway], report: SeedReport
) -> None:
    total = 0
    step = plan.heartbeat_interval_s
    for lo, hi in _days(plan):
        # Counters are cumulative since the agent started (at plan.start): heartbeat k
        # has seen ~3,000 packets per second of interval and dropped a gateway-specific
        # small fraction (a few gateways with an overloaded capture).
        cur = conn.execute(
            """
            INSERT INTO heartbeats (ts, received_at, tenant, gateway, seq, interval_s,
                                    uptime_s, load1, mem_used_pct, disk_used_pct, temp_c,
                                    packets_seen, packets_dropped, outbox_depth,
                                    outbox_bytes, agent_version, config_hash, intel_age_s)
            SELECT t.ts, t.ts + (0.05 + random() * 0.4) * interval '1 second',
                   g.tenant, g.gateway, t.k, %(step)s, t.k * %(step)s,
                   0.2 + random(), 35 + random() * 20, 20 + g.n %% 30, 45 + random() * 10,
                   t.k * %(step)s * 3000,
                   (t.k * %(step)s * 3000 * CASE WHEN g.n %% 17 = 5 THEN 0.02
                                                 ELSE 0.0001 END)::bigint,
                   CASE WHEN random() < 0.02 THEN (random() * 300)::bigint ELSE 0 END,
                   0, '0.1.0', 'c0ffee', (t.k * %(step)s) %% 21600
            FROM seed_gw g
            CROSS JOIN LATERAL (
                SELECT %(start)s::timestamptz + k * %(step)s * interval '1 second' AS ts, k
                FROM generate_series(
                    ceil(extract(epoch FROM %(lo)s::timestamptz - %(start)s) / %(step)s)::bigint,
                    ceil(extract(epoch FROM %(hi)s::timestamptz - %(start)s) / %(step)s)::bigint
                        - 1) AS k) t
            WHERE g.quiet_from IS NULL OR t.ts < g.quiet_from
            """,
            {"lo": lo, "hi": hi, "start": plan.start, "step": step},
        )  # fmt: skip
        total += cur.rowcount
    conn.execute("UPDATE heartbeats SET outbox_bytes = outbox_depth * 1500 WHERE outbox_depth > 0")
    conn.execute(
        """
        UPDATE gateways g SET last_seen = h.ts FROM
            (SELECT gateway, max(ts) AS ts FROM heartbeats GROUP BY gateway) h
        WHERE h.gateway = g.id
        """
    )
    report.rows["heartbeats"] = total


def _receipts(conn: psycopg.Connection[Any], plan: SeedPlan, report: SeedReport) -> None:
    total = 0
    for lo, hi in _days(plan):
        # One receipt per heartbeat, one per flow batch (gateway, minute), in key order:
        # the primary key's index is then appended to at one place per gateway.
        cur = conn.execute(
            """
            INSERT INTO receipts (gateway, seq, kind, rows, committed_at)
            SELECT gateway, seq, 'heartbeat', 1, received_at + interval '5 ms'
            FROM heartbeats WHERE ts >= %(lo)s AND ts < %(hi)s
            ORDER BY gateway, seq
            """,
            {"lo": lo, "hi": hi},
        )
        total += cur.rowcount
        cur = conn.execute(
            """
            INSERT INTO receipts (gateway, seq, kind, rows, committed_at)
            SELECT gateway, 1000000000 + (extract(epoch FROM ts) / 60)::bigint, 'flows',
                   count(*), max(ts) + interval '61 seconds'
            FROM flows WHERE ts >= %(lo)s AND ts < %(hi)s
            GROUP BY gateway, ts ORDER BY gateway, ts
            """,
            {"lo": lo, "hi": hi},
        )
        total += cur.rowcount
    report.rows["receipts"] = total


def _alerts(
    conn: psycopg.Connection[Any],
    plan: SeedPlan,
    gateways: list[_Gateway],
    rng: random.Random,
    report: SeedReport,
) -> None:
    kinds = [(c, s) for c, s, _ in _ALERT_KINDS]
    weights = [w for _, _, w in _ALERT_KINDS]
    span_s = plan.days * 86400
    incidents: dict[tuple[str, str], dict[str, Any]] = {}
    alerts = []
    n_alerts = 0
    for n, g in enumerate(gateways):
        if g.state == "unknown":
            continue
        count = int(plan.alerts_per_site_day * plan.days * rng.uniform(0.5, 1.5))
        for _ in range(count):
            category, severity = rng.choices(kinds, weights)[0]
            k = rng.randrange(plan.devices_per_site)
            mac = f"02:{n >> 8 & 0xFF:02x}:{n & 0xFF:02x}:00:{k >> 8 & 0xFF:02x}:{k & 0xFF:02x}"
            at = plan.start + timedelta(seconds=rng.uniform(0, span_s))
            # Alerts about the same problem share a key: most repeat, so incidents group.
            key = f"{category}:{mac}:{rng.randrange(3)}"
            inc = incidents.setdefault(
                (g.tenant, key),
                {"id": len(incidents) + 1, "tenant": g.tenant, "gateway": g.id,
                 "category": category, "severity": severity, "count": 0,
                 "first": at, "last": at},
            )  # fmt: skip
            inc["count"] += 1
            inc["first"], inc["last"] = min(inc["first"], at), max(inc["last"], at)
            n_alerts += 1
            actor = f"203.0.113.{rng.randrange(1, 255)}" if severity != "info" else mac
            alerts.append(
                (g.tenant, g.id, f"a{n_alerts:08d}", category, severity, at,
                 at + timedelta(seconds=2), actor, f"192.168.1.{100 + k}",
                 f"{category} on device {k}", f"機器{k}で{category}を検知", key,
                 f"{category}.rule", mac, json.dumps({"count": rng.randrange(1, 500)}),
                 "cloud" if category == "gateway_offline" else "gateway", inc["id"])
            )  # fmt: skip
    status = ["open", "acknowledged", "assigned", "resolved"]
    inc_rows = []
    for inc in incidents.values():
        st = rng.choices(status, [3, 1, 1, 4])[0]
        inc_rows.append(
            (inc["id"], inc["tenant"], f"{inc['category']}:{inc['id']}", inc["category"],
             inc["severity"], st, f"{inc['category']} ({inc['gateway']})", inc["gateway"],
             inc["count"], inc["first"], inc["last"], inc["first"], inc["last"],
             inc["last"] + timedelta(hours=2) if st == "resolved" else None)
        )  # fmt: skip
    _copy(
        conn,
        "incidents",
        ["id", "tenant", "dedup_key", "category", "severity", "status", "title", "gateway",
         "alert_count", "first_alert_at", "last_alert_at", "opened_at", "updated_at",
         "resolved_at"],
        inc_rows,
    )  # fmt: skip
    conn.execute("SELECT setval('incidents_id_seq', (SELECT coalesce(max(id), 1) FROM incidents))")
    _copy(
        conn,
        "alerts",
        ["tenant", "gateway", "alert_id", "category", "severity", "detected_at", "received_at",
         "actor", "target", "summary_en", "summary_ja", "dedup_key", "rule", "mac", "evidence",
         "source", "incident_id"],
        alerts,
    )  # fmt: skip
    report.rows["incidents"] = len(inc_rows)
    report.rows["alerts"] = len(alerts)


def _quarantine(
    conn: psycopg.Connection[Any], plan: SeedPlan, rng: random.Random, report: SeedReport
) -> None:
    rows = []
    for _ in range(int(plan.quarantined_per_day * plan.days)):
        at = plan.start + timedelta(seconds=rng.uniform(0, plan.days * 86400))
        reason = rng.choice(_QUARANTINE_REASONS)
        rows.append(
            (at, f"mimamori/v1/t0000/gw{rng.randrange(999):04d}/flows", "t0000", "gw0000",
             reason, f"synthetic {reason}", b"\x00garbage", 8)
        )  # fmt: skip
    _copy(
        conn,
        "quarantine",
        ["received_at", "topic", "tenant", "gateway", "reason", "detail", "payload",
         "payload_size"],
        rows,
    )  # fmt: skip
    report.rows["quarantine"] = len(rows)


def _labels(
    conn: psycopg.Connection[Any], plan: SeedPlan, rng: random.Random, report: SeedReport
) -> None:
    # JC-STAR-style labels of every device (the cloud's labelling job writes these; the
    # seed writes rows of the same form). Skipped on a schema without the labels tables.
    exists = conn.execute("SELECT to_regclass('device_labels') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return
    devices = conn.execute(
        "SELECT tenant, mac::text, gateway, vendor, hostname FROM devices"
    ).fetchall()
    outcomes = ["meets_star1_observed", "does_not_meet", "insufficient_evidence"]
    rows, history = [], []
    for tenant, mac, gateway, vendor, hostname in devices:
        outcome = rng.choices(outcomes, [5, 2, 3])[0]
        failed = outcome == "does_not_meet"
        criteria: list[dict[str, Any]] = [
            {"id": f"S1.1-{i:02d}",
             "status": "fail" if failed and i == 1 else rng.choice(["pass", "unknown"]),
             "evidence": [{"kind": "service", "detail": f"{hostname}: telnet open",
                           "ts": plan.end.timestamp(), "count": 1}] if failed and i == 1 else [],
             "reason": ""}
            for i in range(1, 17)
        ]  # fmt: skip
        reasons = (
            [{"id": "S1.1-01", "ja": "初期パスワード: telnet が開いています",
              "en": "default password: telnet is open"}] if failed else []
        )  # fmt: skip
        advice = (
            [{"finding": "service", "ja": f"{vendor} の telnet を無効にしてください",
              "en": f"turn off telnet on the {vendor} device"}] if failed else []
        )  # fmt: skip
        fp = "".join(str(c["status"])[0] for c in criteria)
        impact = rng.randrange(1, 4)
        rows.append(
            (tenant, mac, gateway, outcome, hostname.split("-")[0], True, impact,
             impact * (1 if failed else 0), json.dumps(criteria), json.dumps(reasons),
             json.dumps(advice), fp, "2026.1", plan.end, plan.start)
        )  # fmt: skip
        history.append((tenant, mac, gateway, outcome, fp, json.dumps(reasons), "2026.1",
                        plan.start))  # fmt: skip
    _copy(
        conn,
        "device_labels",
        ["tenant", "mac", "gateway", "outcome", "kind", "iot", "impact", "priority",
         "criteria", "reasons", "advice", "fingerprint", "catalogue_version", "assessed_at",
         "changed_at"],
        rows,
    )  # fmt: skip
    _copy(
        conn,
        "device_label_history",
        ["tenant", "mac", "gateway", "outcome", "fingerprint", "reasons", "catalogue_version",
         "assessed_at"],
        history,
    )  # fmt: skip
    report.rows["device_labels"] = len(rows)


def refresh_rollups(
    conn: psycopg.Connection[Any], storage: str, start: datetime, end: datetime
) -> None:
    """Bring the flow rollups up to date for the UTC days overlapping ``[start, end)``.

    TimescaleDB: refresh the continuous aggregates, each after the one it is built on
    (needs autocommit). Plain PostgreSQL: recompute the rollup tables' rows of those days,
    as the rollup job would (cloud/jobs/rollups.py), and forget their invalidations.
    """
    lo = start.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    hi = end.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    hi += timedelta(days=1)
    if storage == "timescaledb":
        for view in rollups.VIEWS:
            _refresh_aggregate(conn, view, lo, hi)
        return
    groups = "tenant, gateway, mac, local_ip, remote_ip, remote_port, proto, dir, app, sni"
    sums = (
        "sum(pkts_out)::bigint, sum(pkts_in)::bigint, sum(bytes_out)::bigint,"
        " sum(bytes_in)::bigint, sum(conns)::bigint"
    )
    named = ", ".join(
        f"sum({c})::bigint AS {c}"
        for c in ("pkts_out", "pkts_in", "bytes_out", "bytes_in", "conns")
    )
    origin = rollups.ORIGIN
    tables = ("flows_5m", "flows_1h", "flows_app_1h", "flows_1d")
    with conn.transaction():
        for table in tables:
            conn.execute(f"DELETE FROM {table} WHERE bucket >= %s AND bucket < %s", (lo, hi))
        conn.execute("DELETE FROM flow_invalidations WHERE hour >= %s AND hour < %s", (lo, hi))
    # One day per transaction, rows written in the order of the (tenant, gateway, bucket)
    # index, as a periodic refresh would leave them: one site's buckets share pages. (A
    # single unordered GROUP BY over a month scatters a site's rows one per page and
    # makes month-long panels read ten times more pages.) Each level is computed from the
    # day's rows of the level below, kept in a temporary table, so that no step reads the
    # growing rollup tables (whose indexes are dropped during a bulk load).
    t = lo
    while t < hi:
        window = (t, t + timedelta(days=1))
        with conn.transaction():
            conn.execute(
                f"""
                CREATE TEMP TABLE seed_5m ON COMMIT DROP AS
                SELECT date_bin(interval '5 minutes', ts, {origin}) AS bucket, {groups},
                       {named}, count(*) AS summaries
                FROM flows WHERE ts >= %s AND ts < %s
                GROUP BY 1, {groups}
                """,
                window,
            )
            conn.execute(
                f"""
                CREATE TEMP TABLE seed_1h ON COMMIT DROP AS
                SELECT date_bin(interval '1 hour', bucket, {origin}) AS bucket, {groups},
                       {named}, sum(summaries)::bigint AS summaries
                FROM seed_5m GROUP BY 1, {groups}
                """
            )
            conn.execute("INSERT INTO flows_5m SELECT * FROM seed_5m ORDER BY tenant, gateway, 1")
            conn.execute("INSERT INTO flows_1h SELECT * FROM seed_1h ORDER BY tenant, gateway, 1")
            conn.execute(
                f"""
                INSERT INTO flows_app_1h
                SELECT bucket, tenant, gateway, app, {sums}, sum(summaries)::bigint
                FROM seed_1h GROUP BY bucket, tenant, gateway, app
                ORDER BY tenant, gateway, bucket
                """
            )
            conn.execute(
                f"""
                INSERT INTO flows_1d
                SELECT %s::timestamptz, {groups}, {sums}, sum(summaries)::bigint
                FROM seed_1h GROUP BY {groups} ORDER BY tenant, gateway
                """,
                (t,),
            )
        t = window[1]


def _refresh_aggregate(
    conn: psycopg.Connection[Any], view: str, lo: datetime, hi: datetime
) -> None:
    # The aggregate's own refresh policy may be running in the background: TimescaleDB
    # refuses a concurrent refresh of an overlapping window, so wait for it.
    for attempt in range(60):
        try:
            conn.execute("CALL refresh_continuous_aggregate(%s, %s, %s)", (view, lo, hi))
            return
        except psycopg.errors.LockNotAvailable:
            if attempt == 59:
                raise
            time.sleep(1.0)


def _compress(conn: psycopg.Connection[Any]) -> None:
    for relation, after in _COMPRESS_AFTER.items():
        conn.execute(
            f"SELECT compress_chunk(c, if_not_compressed => true)"
            f" FROM show_chunks('{relation}', older_than => interval '{after}') AS c"
        )
