"""Alerts & incidents dashboard: what the SOC must work on, and what came in when.

Incidents (``status <> 'resolved'``) are the unit of work; alerts are the raw detections
behind them. Tables link to the site and device dashboards to drill in.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash
from mimamori.dashboards import variables
from mimamori.dashboards.panels import (
    Tr,
    bar_panel,
    stat_panel,
    table_panel,
    timeseries_panel,
)

UID = "mimamori-alerts"

_OPEN = "status <> 'resolved' AND tenant IN ($tenant) AND severity IN ($severity)"
#: Sort key: critical first.
_RANK = "array_position(ARRAY['critical','high','medium','low','info']::text[], severity)"


def _per_severity() -> str:
    return ", ".join(
        f"count(*) FILTER (WHERE severity = '{s}') AS \"{s}\"" for s in variables.SEVERITIES
    )


def build(tr: Tr) -> dash.Dashboard:
    """The alerts & incidents dashboard in the language of ``tr``."""
    summary = "summary_ja" if tr.lang == "ja" else "summary_en"
    site_link = (
        "/d/mimamori-site/?var-tenant=${__data.fields.tenant}"
        "&var-gateway=${__data.fields.gateway}&${__url_time_range}"
    )
    d = (
        dash.Dashboard(tr("mimamori: alerts & incidents", "mimamori: アラートとインシデント"))
        .uid(UID)
        .tags(["mimamori", "soc"])
        .description(
            tr(
                "Open incidents by severity, tenant and category; alerts over time.",
                "未解決インシデント（緊急度・テナント・カテゴリ別）とアラートの推移。",
            )
        )
        .time("now-7d", "now")
        .refresh("1m")
        .with_variable(variables.tenant(tr, multi=True))
        .with_variable(variables.severity(tr))
    )
    d = d.with_row(dash.Row(tr("Open incidents", "未解決インシデント")))
    d = d.with_panel(
        stat_panel(
            tr("Open incidents by severity", "緊急度別の未解決インシデント"),
            f"""
            SELECT {_per_severity()}
            FROM incidents WHERE status <> 'resolved' AND tenant IN ($tenant)
            """,
            span=24,
        )
    )
    d = d.with_panel(
        bar_panel(
            tr("By tenant", "テナント別"),
            f"""
            SELECT coalesce(nullif(t.name, ''), i.tenant) AS tenant, {_per_severity()}
            FROM incidents i LEFT JOIN tenants t ON t.id = i.tenant
            WHERE i.{_OPEN}
            GROUP BY 1 ORDER BY count(*) DESC LIMIT 20
            """,
            x_field="tenant",
            stacked=True,
        )
    )
    d = d.with_panel(
        bar_panel(
            tr("By category", "カテゴリ別"),
            f"""
            SELECT category, count(*) AS incidents
            FROM incidents WHERE {_OPEN}
            GROUP BY 1 ORDER BY 2 DESC
            """,
            x_field="category",
        )
    )
    d = d.with_panel(
        bar_panel(
            tr("By status", "対応状況別"),
            f"""
            SELECT status, count(*) AS incidents
            FROM incidents WHERE {_OPEN}
            GROUP BY 1 ORDER BY 2 DESC
            """,
            x_field="status",
        )
    )
    d = d.with_panel(
        table_panel(
            tr("Open incidents", "未解決インシデント一覧"),
            f"""
            SELECT id, tenant, gateway, severity, category, status, title, alert_count,
                   first_alert_at, last_alert_at,
                   extract(epoch FROM now() - opened_at)::bigint AS open_for_s
            FROM incidents WHERE {_OPEN}
            ORDER BY {_RANK}, last_alert_at DESC LIMIT 500
            """,
            units={"open_for_s": "s"},
            links={"gateway": (tr("Open the site", "拠点を開く"), site_link)},
        )
    )
    d = d.with_row(dash.Row(tr("Alerts", "アラート")))
    d = d.with_panel(
        timeseries_panel(
            tr("Alerts by severity", "緊急度別アラート数"),
            """
            SELECT $__timeGroupAlias(detected_at, $__interval), severity AS metric,
                   count(*) AS alerts
            FROM alerts
            WHERE $__timeFilter(detected_at) AND tenant IN ($tenant)
              AND severity IN ($severity)
            GROUP BY 1, 2 ORDER BY 1
            """,
            unit="short",
            stacked=True,
        )
    )
    d = d.with_panel(
        timeseries_panel(
            tr("Incidents opened", "新規インシデント数"),
            """
            SELECT $__timeGroupAlias(opened_at, $__interval), category AS metric,
                   count(*) AS incidents
            FROM incidents
            WHERE $__timeFilter(opened_at) AND tenant IN ($tenant)
              AND severity IN ($severity)
            GROUP BY 1, 2 ORDER BY 1
            """,
            unit="short",
            stacked=True,
        )
    )
    d = d.with_panel(
        table_panel(
            tr("Recent alerts", "最近のアラート"),
            f"""
            SELECT detected_at, tenant, gateway, severity, category, actor, target,
                   {summary} AS summary, mac::text AS mac, rule, incident_id
            FROM alerts
            WHERE $__timeFilter(detected_at) AND tenant IN ($tenant)
              AND severity IN ($severity)
            ORDER BY detected_at DESC LIMIT 500
            """,
            links={
                "gateway": (tr("Open the site", "拠点を開く"), site_link),
                "mac": (
                    tr("Open the device", "機器を開く"),
                    "/d/mimamori-device/?var-tenant=${__data.fields.tenant}"
                    "&var-mac=${__value.raw}&${__url_time_range}",
                ),
            },
        )
    )
    return d
