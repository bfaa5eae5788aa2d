"""Device dashboard: one device (``$mac`` of ``$tenant``): what it is, whom it talks to,
what was detected about it.
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

UID = "mimamori-device"

_DEVICE = "tenant = '$tenant' AND mac = '$mac'::macaddr"


def build(tr: Tr) -> dash.Dashboard:
    """The device dashboard in the language of ``tr``."""
    summary = "summary_ja" if tr.lang == "ja" else "summary_en"
    d = (
        dash.Dashboard(tr("mimamori: device", "mimamori: 機器"))
        .uid(UID)
        .tags(["mimamori", "device"])
        .description(
            tr(
                "One device: its inventory facts, traffic, peers and alerts.",
                "1台の機器：台帳情報・通信・通信先・アラート。",
            )
        )
        .time("now-24h", "now")
        .refresh("5m")
        .with_variable(variables.tenant(tr, multi=False))
        .with_variable(variables.mac(tr))
    )
    d = d.with_row(dash.Row(tr("What it is", "機器の情報")))
    d = d.with_panel(
        table_panel(
            tr("Inventory", "台帳"),
            f"""
            SELECT mac::text AS mac, hostname, vendor, model, os_hint,
                   array_to_string(ips, ', ') AS ips,
                   array_to_string(services, ', ') AS services,
                   dhcp_vendor_class, gateway, first_seen, last_seen
            FROM devices WHERE {_DEVICE}
            """,
            height=5,
        )
    )
    d = d.with_panel(
        table_panel(
            tr("Evidence (observed facts)", "根拠（観測された情報）"),
            f"""
            SELECT e.key AS fact, e.value
            FROM devices, jsonb_each_text(extras) AS e
            WHERE {_DEVICE}
            UNION ALL
            SELECT 'dhcp_fingerprint', dhcp_fingerprint FROM devices
            WHERE {_DEVICE} AND dhcp_fingerprint <> ''
            ORDER BY 1
            """,
            span=12,
            height=8,
        )
    )
    d = d.with_row(dash.Row(tr("Label (JC-STAR ★1)", "ラベル（JC-STAR ★1）")))
    d = d.with_panel(
        table_panel(
            tr("Label", "ラベル"),
            f"""
            SELECT {labels.outcome_text(tr)} AS outcome, l.kind, l.impact, l.priority,
                   {labels.joined(tr, "l.reasons")} AS reasons,
                   {labels.joined(tr, "l.advice")} AS advice,
                   l.note, l.catalogue_version, l.assessed_at, l.changed_at
            FROM device_labels l WHERE l.{_DEVICE}
            """,
            height=5,
        )
    )
    d = d.with_panel(
        table_panel(
            tr("Criteria and evidence", "基準ごとの判定と根拠"),
            f"""
            SELECT c->>'id' AS criterion, c->>'status' AS status,
                   (SELECT string_agg(e->>'detail', '; ')
                    FROM jsonb_array_elements(c->'evidence') AS e) AS evidence,
                   c->>'reason' AS reason
            FROM device_labels, jsonb_array_elements(criteria) AS c
            WHERE {_DEVICE}
            ORDER BY 1
            """,
            span=16,
        )
    )
    d = d.with_panel(
        table_panel(
            tr("Label history", "ラベルの変化"),
            f"""
            SELECT assessed_at, {labels.outcome_text(tr, "outcome")} AS outcome,
                   fingerprint, catalogue_version
            FROM device_label_history WHERE {_DEVICE}
            ORDER BY assessed_at DESC LIMIT 100
            """,
            span=8,
        )
    )
    d = d.with_row(dash.Row(tr("Traffic", "通信")))
    d = d.with_panel(
        stat_panel(
            tr("Traffic in range", "期間中の通信量"),
            f"""
            SELECT coalesce(sum(bytes_out), 0) AS "{tr("sent", "送信")}",
                   coalesce(sum(bytes_in), 0) AS "{tr("received", "受信")}"
            FROM ({flow_totals(["bytes_out", "bytes_in"], _DEVICE)}) f
            """,
            unit="bytes",
            span=8,
            height=8,
        )
    )
    d = d.with_panel(
        timeseries_panel(
            tr("Traffic", "通信量"),
            f"""
            SELECT {time_bucket()} AS "time",
                   {per_second("bytes_out * 8")} AS "{tr("upload", "送信")}",
                   {per_second("bytes_in * 8")} AS "{tr("download", "受信")}"
            FROM ({flow_rows(["bytes_out", "bytes_in"], _DEVICE)}) f
            GROUP BY 1 ORDER BY 1
            """,
            unit="bps",
            span=16,
        )
    )
    d = d.with_panel(
        table_panel(
            tr("Peers", "通信先"),
            f"""
            SELECT host(remote_ip) AS remote, remote_port AS port, proto, dir, app,
                   max(sni) AS server_name, sum(bytes_out) AS bytes_out,
                   sum(bytes_in) AS bytes_in, sum(conns) AS connections,
                   min(t) AS first, max(t) AS last
            FROM ({
                flow_totals(
                    [
                        "remote_ip",
                        "remote_port",
                        "proto",
                        "dir",
                        "app",
                        "sni",
                        "bytes_out",
                        "bytes_in",
                        "conns",
                    ],
                    _DEVICE,
                )
            }) f
            GROUP BY remote_ip, remote_port, proto, dir, app
            ORDER BY sum(bytes_out + bytes_in) DESC LIMIT 100
            """,
            units={"bytes_out": "bytes", "bytes_in": "bytes"},
        )
    )
    d = d.with_row(dash.Row(tr("Alerts", "アラート")))
    d = d.with_panel(
        table_panel(
            tr("Alerts about this device", "この機器のアラート"),
            f"""
            SELECT detected_at, severity, category, actor, target, {summary} AS summary,
                   rule, evidence::text AS evidence, incident_id
            FROM alerts
            WHERE {_DEVICE} AND $__timeFilter(detected_at)
            ORDER BY detected_at DESC LIMIT 500
            """,
        )
    )
    return d
