"""Site dashboard: one tenant's gateway(s): devices, who talks to whom, traffic, alerts.

Flow panels read the raw table or the rollups that suit the range (:mod:`.flowsql`).
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash
from mimamori.dashboards import labels, variables
from mimamori.dashboards.flowsql import flow_rows, flow_totals, per_second, time_bucket
from mimamori.dashboards.panels import (
    Tr,
    stat_panel,
    table_panel,
    timeseries_panel,
)

UID = "mimamori-site"

_SITE = "tenant = '$tenant' AND gateway IN ($gateway)"
#: The site's series over long ranges need neither device nor endpoint: the hourly rollup
#: per application has a tenth of the rows of flows_1h.
_APP_1H = "flows_app_1h"


def build(tr: Tr) -> dash.Dashboard:
    """The site dashboard in the language of ``tr``."""
    summary = "summary_ja" if tr.lang == "ja" else "summary_en"
    device_link = (
        "/d/mimamori-device/?var-tenant=$tenant&var-mac=${__value.raw}&${__url_time_range}"
    )
    d = (
        dash.Dashboard(tr("mimamori: site", "mimamori: 拠点"))
        .uid(UID)
        .tags(["mimamori", "site"])
        .description(
            tr(
                "Devices, traffic, top talkers and alerts of one customer's site(s).",
                "お客様の拠点ごとの機器・通信量・通信の多い機器・アラート。",
            )
        )
        .time("now-24h", "now")
        .refresh("5m")
        .with_variable(variables.tenant(tr, multi=False))
        .with_variable(variables.gateway(tr))
    )
    d = d.with_row(dash.Row(tr("Overview", "概要")))
    d = d.with_panel(
        stat_panel(
            tr("Devices", "機器数"),
            f"SELECT count(*) AS devices FROM devices WHERE {_SITE}",
        )
    )
    d = d.with_panel(
        stat_panel(
            tr("New devices in range", "期間中の新しい機器"),
            f"""
            SELECT count(*) AS devices FROM devices
            WHERE {_SITE} AND $__timeFilter(first_seen)
            """,
            steps=[(None, "green"), (1, "orange")],
        )
    )
    d = d.with_panel(
        stat_panel(
            tr("Traffic in range", "期間中の通信量"),
            f"""
            SELECT coalesce(sum(bytes_out + bytes_in), 0) AS bytes
            FROM ({flow_totals(["bytes_out", "bytes_in"], _SITE)}) f
            """,
            unit="bytes",
        )
    )
    d = d.with_panel(
        stat_panel(
            tr("Alerts in range (medium+)", "期間中のアラート（中以上）"),
            f"""
            SELECT count(*) AS alerts FROM alerts
            WHERE {_SITE} AND $__timeFilter(detected_at)
              AND severity IN ('medium', 'high', 'critical')
            """,
            steps=[(None, "green"), (1, "red")],
        )
    )
    d = d.with_row(dash.Row(tr("Traffic", "通信")))
    d = d.with_panel(
        timeseries_panel(
            tr("Traffic", "通信量"),
            f"""
            SELECT {time_bucket()} AS "time",
                   {per_second("bytes_out * 8")} AS "{tr("upload", "送信")}",
                   {per_second("bytes_in * 8")} AS "{tr("download", "受信")}"
            FROM ({flow_rows(["bytes_out", "bytes_in"], _SITE, hourly=_APP_1H)}) f
            GROUP BY 1 ORDER BY 1
            """,
            unit="bps",
        )
    )
    d = d.with_panel(
        timeseries_panel(
            tr("Traffic by application", "アプリケーション別の通信量"),
            f"""
            WITH f AS ({flow_rows(["app", "bytes_out", "bytes_in"], _SITE, hourly=_APP_1H)}),
            top AS (SELECT app FROM f GROUP BY app
                    ORDER BY sum(bytes_out + bytes_in) DESC LIMIT 8)
            SELECT {time_bucket()} AS "time",
                   CASE WHEN f.app IN (SELECT app FROM top) THEN coalesce(nullif(f.app, ''), '?')
                        ELSE '{tr("other", "その他")}' END AS metric,
                   {per_second("(bytes_out + bytes_in) * 8")} AS bps
            FROM f GROUP BY 1, 2 ORDER BY 1
            """,
            unit="bps",
            stacked=True,
        )
    )
    d = d.with_panel(
        table_panel(
            tr("Top talkers (devices)", "通信の多い機器"),
            f"""
            SELECT f.mac::text AS mac, host(f.local_ip) AS ip, dv.hostname, dv.vendor,
                   sum(f.bytes_out) AS bytes_out, sum(f.bytes_in) AS bytes_in,
                   sum(f.conns) AS connections, count(DISTINCT f.remote_ip) AS remotes
            FROM ({
                flow_totals(
                    ["mac", "local_ip", "remote_ip", "bytes_out", "bytes_in", "conns"], _SITE
                )
            }) f
            LEFT JOIN devices dv ON dv.tenant = '$tenant' AND dv.mac = f.mac
            GROUP BY 1, 2, 3, 4 ORDER BY sum(f.bytes_out + f.bytes_in) DESC LIMIT 20
            """,
            span=12,
            units={"bytes_out": "bytes", "bytes_in": "bytes"},
            links={"mac": (tr("Open the device", "機器を開く"), device_link)},
        )
    )
    d = d.with_panel(
        table_panel(
            tr("Top remote endpoints", "通信の多い接続先"),
            f"""
            SELECT host(remote_ip) AS remote, max(sni) AS server_name, max(app) AS app,
                   min(remote_port) AS port, sum(bytes_out) AS bytes_out,
                   sum(bytes_in) AS bytes_in, count(DISTINCT mac) AS devices
            FROM ({
                flow_totals(
                    ["mac", "remote_ip", "remote_port", "app", "sni", "bytes_out", "bytes_in"],
                    _SITE + " AND dir <> 'lan'",
                )
            }) f
            GROUP BY remote_ip ORDER BY sum(bytes_out + bytes_in) DESC LIMIT 20
            """,
            span=12,
            units={"bytes_out": "bytes", "bytes_in": "bytes"},
        )
    )
    d = d.with_panel(
        table_panel(
            tr("Inbound connections (exposure)", "外部からの接続（公開状態）"),
            f"""
            SELECT f.mac::text AS mac, host(f.local_ip) AS ip, f.remote_port AS port,
                   count(DISTINCT f.remote_ip) AS remotes, sum(f.conns) AS connections
            FROM ({
                flow_totals(
                    ["mac", "local_ip", "remote_ip", "remote_port", "conns"],
                    _SITE + " AND dir = 'in'",
                )
            }) f
            GROUP BY 1, 2, 3 ORDER BY 5 DESC LIMIT 20
            """,
            links={"mac": (tr("Open the device", "機器を開く"), device_link)},
        )
    )
    d = d.with_row(dash.Row(tr("Devices", "機器")))
    d = d.with_panel(
        table_panel(
            tr("Devices", "機器一覧"),
            f"""
            SELECT mac::text AS mac, array_to_string(ips, ', ') AS ips, hostname, vendor,
                   model, os_hint, array_to_string(services, ', ') AS services,
                   gateway, first_seen, last_seen
            FROM devices WHERE {_SITE}
            ORDER BY last_seen DESC LIMIT 1000
            """,
            links={"mac": (tr("Open the device", "機器を開く"), device_link)},
        )
    )
    d = d.with_panel(
        stat_panel(
            tr("Device labels", "機器のラベル"),
            f"""
            SELECT {labels.outcome_counts(tr)}
            FROM device_labels WHERE {_SITE}
            """,
            description=tr(
                "JC-STAR ★1 as far as the network shows, from the cloud's labelling job.",
                "クラウドのラベル判定による JC-STAR ★1 相当の状況（ネットワークから見える範囲）。",
            ),
            span=24,
        )
    )
    d = d.with_panel(
        table_panel(
            tr("Labels to act on", "対応が必要な機器（ラベル）"),
            f"""
            SELECT l.mac::text AS mac, dv.hostname, dv.vendor, l.kind,
                   {labels.outcome_text(tr)} AS outcome, l.impact, l.priority,
                   {labels.joined(tr, "l.reasons")} AS reasons,
                   {labels.joined(tr, "l.advice")} AS advice, l.changed_at
            FROM device_labels l
            LEFT JOIN devices dv ON dv.tenant = l.tenant AND dv.mac = l.mac
            WHERE l.tenant = '$tenant' AND l.gateway IN ($gateway)
            ORDER BY l.priority DESC, l.mac LIMIT 1000
            """,
            links={"mac": (tr("Open the device", "機器を開く"), device_link)},
        )
    )
    d = d.with_row(dash.Row(tr("Alerts", "アラート")))
    d = d.with_panel(
        table_panel(
            tr("Alerts", "アラート"),
            f"""
            SELECT detected_at, severity, category, actor, target, {summary} AS summary,
                   mac::text AS mac, gateway, incident_id
            FROM alerts
            WHERE {_SITE} AND $__timeFilter(detected_at)
            ORDER BY detected_at DESC LIMIT 500
            """,
            links={"mac": (tr("Open the device", "機器を開く"), device_link)},
        )
    )
    return d
