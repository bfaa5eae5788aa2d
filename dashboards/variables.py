"""Template variables shared by the dashboards: tenant, gateway, device (MAC), severity.

SQL data sources quote a multi-value or include-all variable as a list of literals
(``'a','b'``: use ``IN ($x)``) and a single-value one as its bare text (use ``'$x'``).
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash
from mimamori.dashboards.panels import Tr, custom_variable, query_variable

SEVERITIES = ["critical", "high", "medium", "low", "info"]
#: Severities that page the SOC (docs: medium and above); the default selection.
PAGING = ["critical", "high", "medium"]


def tenant(tr: Tr, *, multi: bool) -> dash.QueryVariable:
    """``$tenant``: customer companies, shown by name."""
    return query_variable(
        "tenant",
        tr("Tenant", "テナント"),
        """
        SELECT id AS __value,
               CASE WHEN name = '' THEN id ELSE name || ' (' || id || ')' END AS __text
        FROM tenants ORDER BY id
        """,
        multi=multi,
        include_all=multi,
    )


def gateway(tr: Tr) -> dash.QueryVariable:
    """``$gateway``: the single-value ``$tenant``'s gateways (sites); several may be chosen."""
    return query_variable(
        "gateway",
        tr("Gateway (site)", "ゲートウェイ（拠点）"),
        """
        SELECT id AS __value,
               CASE WHEN site = '' THEN id ELSE site || ' (' || id || ')' END AS __text
        FROM gateways WHERE tenant = '$tenant' AND revoked_at IS NULL ORDER BY id
        """,
        multi=True,
        include_all=True,
    )


def mac(tr: Tr) -> dash.QueryVariable:
    """``$mac``: one device of the single-value ``$tenant``, shown by hostname and vendor."""
    return query_variable(
        "mac",
        tr("Device (MAC)", "機器（MAC）"),
        """
        SELECT mac::text AS __value,
               concat_ws(' ', nullif(hostname, ''), nullif(vendor, ''), mac::text) AS __text
        FROM devices WHERE tenant = '$tenant' ORDER BY last_seen DESC LIMIT 1000
        """,
    )


def severity(tr: Tr) -> dash.CustomVariable:
    """``$severity``: severities to show; those that page the SOC by default."""
    return custom_variable("severity", tr("Severity", "緊急度"), SEVERITIES, default=PAGING)
