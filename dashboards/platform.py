"""Platform health dashboard: ingest throughput, quarantine, storage.

Everything here runs unchanged on plain PostgreSQL and TimescaleDB. TimescaleDB's own
functions (compression statistics) are reached through ``query_to_xml``, which runs a
query given as text: the text is only parsed when the ``CASE`` finds TimescaleDB
installed, so plain PostgreSQL never sees a name it lacks and answers NULL.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash
from mimamori.dashboards.panels import (
    Tr,
    bar_panel,
    stat_panel,
    table_panel,
    timeseries_panel,
    warn_at,
)

UID = "mimamori-platform"

#: Span of the receipts panels, whatever the dashboard's range: receipts hold one row per
#: message (about 180 an hour per gateway), with no rollup; an hour of a 100-site fleet
#: reads fast, a month does not.
LIVE = "1h"

_STEP_S = "(greatest($__interval_ms, 1000) / 1000.0)"
_BUCKET = (
    "date_bin(greatest($__interval_ms, 1000) * interval '1 ms', {col},"
    " timestamptz '2000-01-01 00:00:00+00')"
)


def compression_ratio(relation: str) -> str:
    """Uncompressed / compressed bytes of a hypertable; NULL without TimescaleDB or before
    anything is compressed."""
    inner = (
        "SELECT sum(before_compression_total_bytes)::float8"
        " / nullif(sum(after_compression_total_bytes), 0) AS ratio"
        f" FROM hypertable_compression_stats(''{relation}'')"
    )
    return (
        "CASE WHEN to_regclass('timescaledb_information.hypertables') IS NULL THEN NULL\n"
        "     ELSE (xpath('/row/ratio/text()',\n"
        f"           query_to_xml('{inner}', false, true, '')))[1]::text::float8 END"
    )


def build(tr: Tr) -> dash.Dashboard:
    """The platform health dashboard in the language of ``tr``."""
    d = (
        dash.Dashboard(tr("mimamori: platform health", "mimamori: 基盤の状態"))
        .uid(UID)
        .tags(["mimamori", "platform"])
        .description(
            tr(
                "Ingest throughput from receipts, quarantined messages, database size and "
                "compression.",
                "受領記録から見た取り込み量、隔離メッセージ、データベース容量と圧縮率。",
            )
        )
        .time("now-6h", "now")
        .refresh("1m")
    )
    d = d.with_row(dash.Row(tr("Ingest", "取り込み")))
    d = d.with_panel(
        timeseries_panel(
            tr("Messages per second", "メッセージ数／秒"),
            f"""
            SELECT {_BUCKET.format(col="committed_at")} AS "time", kind AS metric,
                   count(*) / {_STEP_S} AS messages
            FROM receipts WHERE $__timeFilter(committed_at)
            GROUP BY 1, 2 ORDER BY 1
            """,
            unit="short",
            stacked=True,
            relative=LIVE,
        )
    )
    d = d.with_panel(
        timeseries_panel(
            tr("Rows per second", "行数／秒"),
            f"""
            SELECT {_BUCKET.format(col="committed_at")} AS "time", kind AS metric,
                   sum(rows) / {_STEP_S} AS rows
            FROM receipts WHERE $__timeFilter(committed_at)
            GROUP BY 1, 2 ORDER BY 1
            """,
            unit="short",
            stacked=True,
            relative=LIVE,
        )
    )
    d = d.with_row(dash.Row(tr("Quarantine", "隔離")))
    d = d.with_panel(
        stat_panel(
            tr("Quarantined in range", "期間中の隔離メッセージ"),
            "SELECT count(*) AS messages FROM quarantine WHERE $__timeFilter(received_at)",
            steps=[(None, "green"), (1, "orange")],
            span=4,
            height=8,
        )
    )
    d = d.with_panel(
        bar_panel(
            tr("Quarantined by reason", "理由別の隔離メッセージ"),
            """
            SELECT reason, count(*) AS messages
            FROM quarantine WHERE $__timeFilter(received_at)
            GROUP BY 1 ORDER BY 2 DESC
            """,
            x_field="reason",
        )
    )
    d = d.with_panel(
        timeseries_panel(
            tr("Quarantined over time", "隔離メッセージの推移"),
            """
            SELECT $__timeGroupAlias(received_at, $__interval), reason AS metric,
                   count(*) AS messages
            FROM quarantine WHERE $__timeFilter(received_at)
            GROUP BY 1, 2 ORDER BY 1
            """,
            unit="short",
            stacked=True,
        )
    )
    d = d.with_panel(
        table_panel(
            tr("Latest quarantined messages", "最近の隔離メッセージ"),
            """
            SELECT received_at, reason, tenant, gateway, topic, detail, payload_size
            FROM quarantine WHERE $__timeFilter(received_at)
            ORDER BY received_at DESC LIMIT 100
            """,
            units={"payload_size": "bytes"},
            height=8,
        )
    )
    d = d.with_row(dash.Row(tr("Storage", "ストレージ")))
    d = d.with_panel(
        stat_panel(
            tr("Database size", "データベース容量"),
            "SELECT pg_database_size(current_database()) AS bytes",
            unit="bytes",
        )
    )
    d = d.with_panel(
        stat_panel(
            tr("Compression ratio (TimescaleDB)", "圧縮率（TimescaleDB）"),
            f"""
            SELECT {compression_ratio("flows")} AS "flows",
                   {compression_ratio("heartbeats")} AS "heartbeats"
            """,
            unit="x",
            description=tr(
                "Uncompressed / compressed size of compressed chunks. Empty on plain "
                "PostgreSQL (no compression).",
                "圧縮済みチャンクの圧縮前／圧縮後サイズ。通常の PostgreSQL では空欄（圧縮なし）。",
            ),
        )
    )
    d = d.with_panel(
        stat_panel(
            tr("Rollup lag (flows_5m)", "集計の遅れ（flows_5m）"),
            """
            SELECT extract(epoch FROM
                     (SELECT committed_at FROM receipts WHERE kind = 'flows'
                      ORDER BY committed_at DESC LIMIT 1)
                   - (SELECT max(bucket) + interval '5 minutes' FROM flows_5m
                      WHERE bucket > now() - interval '1 day')) AS lag
            """,
            unit="s",
            steps=warn_at(900, 3600),
            description=tr(
                "Newest stored flow batch minus the end of the newest 5-minute bucket: how "
                "far the rollup trails the raw rows (negative: the bucket is still open).",
                "最新のフロー保存時刻と最新の5分集計の終わりの差。集計の遅れ（負の値は集計中）。",
            ),
        )
    )
    d = d.with_panel(
        table_panel(
            tr("Largest relations", "容量の大きいリレーション"),
            """
            WITH RECURSIVE tree AS (
                SELECT c.oid AS root, c.oid AS rel
                FROM pg_class c
                WHERE c.relkind IN ('r', 'p', 'm')
                  AND NOT EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid)
                UNION ALL
                SELECT t.root, i.inhrelid FROM tree t JOIN pg_inherits i ON i.inhparent = t.rel)
            SELECT root::regclass::text AS relation, count(*) - 1 AS parts,
                   sum(pg_total_relation_size(rel)) AS bytes
            FROM tree GROUP BY root ORDER BY bytes DESC LIMIT 15
            """,
            units={"bytes": "bytes"},
            description=tr(
                "Each table with its partitions or chunks. On TimescaleDB compressed data "
                "and rollups appear under _timescaledb_internal names.",
                "パーティション／チャンクを含むテーブルごとの容量。TimescaleDB では圧縮データと"
                "集計は _timescaledb_internal の名前で表示されます。",
            ),
            span=12,
            height=8,
        )
    )
    return d
