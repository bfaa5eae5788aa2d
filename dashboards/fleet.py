"""Fleet dashboard: is every gateway alive, capturing, delivering and up to date?

Current state comes from ``gateways`` and each gateway's newest heartbeats (two index
probes per gateway, whatever the range). Heartbeat counters are cumulative since the
agent started, so a drop rate is a difference between consecutive heartbeats; a counter
that went down means the agent restarted, and the new value is the whole difference.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash
from mimamori.dashboards import variables
from mimamori.dashboards.panels import (
    Tr,
    stat_panel,
    table_panel,
    timeseries_panel,
    warn_at,
)

UID = "mimamori-fleet"

#: Span of the over-time panels, whatever the dashboard's range. Heartbeats arrive every
#: 30 s from every gateway and have no rollup: one hour of a 100-site fleet is 12,000
#: rows, which reads in well under 200 ms; a month (8.6 million) does not. Longer trends
#: need a heartbeat rollup in the store (see docs/dashboards.md).
LIVE = "1h"

_GATEWAYS = "g.revoked_at IS NULL AND g.tenant IN ($tenant)"

#: Newest heartbeat of gateway g (h) and the one before it (p), within the day before the
#: range's end. The lower bound lets both storages skip older partitions or chunks while
#: planning (plain PostgreSQL would otherwise merge an index scan of every daily
#: partition for each probe); a gateway silent for longer shows only its state and age.
_LATEST = """
LEFT JOIN LATERAL (
    SELECT ts, received_at, packets_seen, packets_dropped, outbox_depth, outbox_bytes,
           intel_age_s, agent_version
    FROM heartbeats
    WHERE gateway = g.id AND ts <= $__timeTo()
      AND ts > $__timeTo()::timestamptz - interval '1 day'
    ORDER BY ts DESC LIMIT 1) h ON true
LEFT JOIN LATERAL (
    SELECT packets_seen, packets_dropped
    FROM heartbeats
    WHERE gateway = g.id AND ts < h.ts
      AND ts > $__timeTo()::timestamptz - interval '1 day'
    ORDER BY ts DESC LIMIT 1) p ON true
"""

#: Dropped / seen packets between two heartbeats, in percent (NULL when nothing was seen).
_DROP_PCT = """
round((100.0 * CASE WHEN h.packets_seen >= p.packets_seen
                    THEN h.packets_dropped - p.packets_dropped ELSE h.packets_dropped END
       / nullif(CASE WHEN h.packets_seen >= p.packets_seen
                     THEN h.packets_seen - p.packets_seen ELSE h.packets_seen END, 0)
      )::numeric, 3)
"""

#: Heartbeats of the range with the packet deltas since the gateway's previous heartbeat.
_DELTAS = """
WITH d AS (
    SELECT ts, gateway, received_at, outbox_depth,
           CASE WHEN packets_seen >= lag(packets_seen) OVER w
                THEN packets_seen - lag(packets_seen) OVER w ELSE packets_seen END AS seen,
           CASE WHEN packets_dropped >= lag(packets_dropped) OVER w
                THEN packets_dropped - lag(packets_dropped) OVER w ELSE packets_dropped END
               AS dropped
    FROM heartbeats
    WHERE $__timeFilter(ts) AND tenant IN ($tenant)
    WINDOW w AS (PARTITION BY gateway ORDER BY ts))
"""


def _state_count(state: str) -> str:
    return f"SELECT count(*) AS gateways FROM gateways g WHERE {_GATEWAYS} AND g.state = '{state}'"


def build(tr: Tr) -> dash.Dashboard:
    """The fleet dashboard in the language of ``tr``."""
    d = (
        dash.Dashboard(tr("mimamori: fleet", "mimamori: フリート"))
        .uid(UID)
        .tags(["mimamori", "fleet"])
        .description(
            tr(
                "Liveness, capture health, delivery backlog and threat-intel freshness "
                "of every gateway.",
                "全ゲートウェイの稼働状況・キャプチャ状態・未送信データ・脅威情報の鮮度。",
            )
        )
        .time("now-24h", "now")
        .refresh("1m")
        .with_variable(variables.tenant(tr, multi=True))
    )
    d = d.with_row(dash.Row(tr("Now", "現在")))
    d = d.with_panel(
        stat_panel(tr("Online", "稼働中"), _state_count("online"), steps=[(None, "green")])
    )
    d = d.with_panel(
        stat_panel(
            tr("Offline", "停止中"),
            _state_count("offline"),
            steps=[(None, "green"), (1, "red")],
            description=tr(
                "Gateways that missed 3 heartbeat intervals.",
                "ハートビートが3回続けて届いていないゲートウェイ。",
            ),
        )
    )
    d = d.with_panel(
        stat_panel(
            tr("Never heard from", "未接続"),
            _state_count("unknown"),
            steps=[(None, "green"), (1, "orange")],
        )
    )
    d = d.with_panel(
        stat_panel(
            tr("Oldest heartbeat (online)", "最も古いハートビート（稼働中）"),
            f"""
            SELECT coalesce(max(extract(epoch FROM now() - g.last_seen)), 0) AS age
            FROM gateways g WHERE {_GATEWAYS} AND g.state = 'online'
            """,
            unit="s",
            steps=warn_at(90, 180),
        )
    )
    d = d.with_panel(
        table_panel(
            tr("Gateways", "ゲートウェイ一覧"),
            f"""
            SELECT g.tenant, g.site, g.id AS gateway, g.name, g.state,
                   extract(epoch FROM now() - g.last_seen)::bigint AS heartbeat_age_s,
                   {_DROP_PCT} AS drop_pct,
                   h.outbox_depth, h.outbox_bytes,
                   round(extract(epoch FROM h.received_at - h.ts)::numeric, 1) AS ingest_lag_s,
                   round((h.intel_age_s / 3600)::numeric, 1) AS intel_age_h,
                   h.agent_version
            FROM gateways g
            {_LATEST}
            WHERE {_GATEWAYS}
            ORDER BY g.state = 'online', heartbeat_age_s DESC NULLS FIRST, g.id
            """,
            description=tr(
                "Newest heartbeat of each gateway: drop rate since the previous one, "
                "messages waiting in its outbox, ingest lag (received - sent), age of its "
                "threat-intel bundle.",
                "各ゲートウェイの最新ハートビート：直前からの取りこぼし率、送信待ちメッセージ数、"
                "取り込み遅延（受信時刻−送信時刻）、使用中の脅威情報の経過時間。",
            ),
            units={
                "heartbeat_age_s": "s",
                "outbox_bytes": "bytes",
                "ingest_lag_s": "s",
                "intel_age_h": "h",
                "drop_pct": "percent",
            },
            links={
                "gateway": (
                    tr("Open the site", "拠点を開く"),
                    "/d/mimamori-site/?var-tenant=${__data.fields.tenant}"
                    "&var-gateway=${__value.raw}&${__url_time_range}",
                )
            },
        )
    )
    d = d.with_panel(
        stat_panel(
            tr("Oldest threat-intel bundle in use", "使用中の最も古い脅威情報"),
            f"""
            SELECT max(h.intel_age_s) / 3600 AS hours
            FROM gateways g
            {_LATEST}
            WHERE {_GATEWAYS} AND g.state = 'online'
            """,
            unit="h",
            steps=warn_at(24, 72),
        )
    )
    d = d.with_panel(
        stat_panel(
            tr("Messages waiting in outboxes", "送信待ちメッセージ（合計）"),
            f"""
            SELECT coalesce(sum(h.outbox_depth), 0) AS messages
            FROM gateways g
            {_LATEST}
            WHERE {_GATEWAYS}
            """,
            steps=warn_at(1000, 10000),
        )
    )
    d = d.with_panel(
        stat_panel(
            tr("Worst capture drop rate", "最大のキャプチャ取りこぼし率"),
            f"""
            SELECT coalesce(max({_DROP_PCT}), 0) AS drop_pct
            FROM gateways g
            {_LATEST}
            WHERE {_GATEWAYS} AND g.state = 'online'
            """,
            unit="percent",
            steps=warn_at(0.1, 1),
        )
    )
    d = d.with_row(dash.Row(tr("Over time", "推移")))
    d = d.with_panel(
        timeseries_panel(
            tr("Capture drop rate", "キャプチャ取りこぼし率"),
            f"""
            {_DELTAS}
            SELECT "time", 100.0 * sum(dropped) / nullif(sum(seen), 0) AS "fleet",
                   max(100.0 * dropped / nullif(seen, 0)) AS "worst gateway"
            FROM (SELECT $__timeGroup(ts, $__interval) AS "time", gateway,
                         sum(dropped) AS dropped, sum(seen) AS seen
                  FROM d GROUP BY 1, 2) per_gateway
            GROUP BY 1 ORDER BY 1
            """,
            unit="percent",
            relative=LIVE,
        )
    )
    d = d.with_panel(
        timeseries_panel(
            tr("Outbox backlog", "送信待ちメッセージ"),
            """
            SELECT "time", sum(depth) AS "messages", max(depth) AS "worst gateway"
            FROM (SELECT $__timeGroup(ts, $__interval) AS "time", gateway,
                         max(outbox_depth) AS depth
                  FROM heartbeats WHERE $__timeFilter(ts) AND tenant IN ($tenant)
                  GROUP BY 1, 2) per_gateway
            GROUP BY 1 ORDER BY 1
            """,
            unit="short",
            relative=LIVE,
        )
    )
    d = d.with_panel(
        timeseries_panel(
            tr("Ingest lag (heartbeat sent to stored)", "取り込み遅延（送信から保存まで）"),
            """
            SELECT $__timeGroupAlias(ts, $__interval),
                   avg(extract(epoch FROM received_at - ts)) AS "mean",
                   max(extract(epoch FROM received_at - ts)) AS "max"
            FROM heartbeats WHERE $__timeFilter(ts) AND tenant IN ($tenant)
            GROUP BY 1 ORDER BY 1
            """,
            unit="s",
            relative=LIVE,
        )
    )
    d = d.with_panel(
        timeseries_panel(
            tr("Gateways heard from", "ハートビートを送ったゲートウェイ数"),
            """
            SELECT $__timeGroupAlias(ts, $__interval), count(DISTINCT gateway) AS "gateways"
            FROM heartbeats WHERE $__timeFilter(ts) AND tenant IN ($tenant)
            GROUP BY 1 ORDER BY 1
            """,
            unit="short",
            relative=LIVE,
        )
    )
    return d
