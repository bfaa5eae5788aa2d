"""Display names of the SQL columns tables show, in both languages.

Queries keep short English column names (stable for links and tests); the built table
panels rename them for the reader with Grafana's ``displayName`` override.
"""

from __future__ import annotations

import re
from typing import Any

from mimamori.dashboards.panels import Lang

#: column -> (English, Japanese)
COLUMNS: dict[str, tuple[str, str]] = {
    "tenant": ("Tenant", "テナント"),
    "site": ("Site", "拠点"),
    "gateway": ("Gateway", "ゲートウェイ"),
    "name": ("Name", "名前"),
    "state": ("State", "状態"),
    "heartbeat_age_s": ("Last heartbeat", "最終ハートビート"),
    "drop_pct": ("Capture drops", "取りこぼし率"),
    "outbox_depth": ("Outbox (messages)", "送信待ち（件）"),
    "outbox_bytes": ("Outbox (bytes)", "送信待ち（容量）"),
    "ingest_lag_s": ("Ingest lag", "取り込み遅延"),
    "intel_age_h": ("Threat intel age", "脅威情報の経過時間"),
    "agent_version": ("Agent version", "エージェント版"),
    "id": ("Id", "ID"),
    "severity": ("Severity", "緊急度"),
    "category": ("Category", "カテゴリ"),
    "status": ("Status", "対応状況"),
    "title": ("Title", "件名"),
    "alert_count": ("Alerts", "アラート数"),
    "first_alert_at": ("First alert", "最初のアラート"),
    "last_alert_at": ("Last alert", "最新のアラート"),
    "open_for_s": ("Open for", "経過時間"),
    "detected_at": ("Detected", "検知日時"),
    "actor": ("Actor", "発信元"),
    "target": ("Target", "対象"),
    "summary": ("Summary", "概要"),
    "mac": ("MAC", "MAC"),
    "rule": ("Rule", "ルール"),
    "incident_id": ("Incident", "インシデント"),
    "ip": ("IP", "IP"),
    "ips": ("IPs", "IP"),
    "hostname": ("Host name", "ホスト名"),
    "vendor": ("Vendor", "ベンダー"),
    "model": ("Model", "型番"),
    "os_hint": ("OS", "OS"),
    "services": ("Services", "サービス"),
    "dhcp_vendor_class": ("DHCP vendor class", "DHCP ベンダークラス"),
    "first_seen": ("First seen", "初回確認"),
    "last_seen": ("Last seen", "最終確認"),
    "bytes_out": ("Sent", "送信量"),
    "bytes_in": ("Received", "受信量"),
    "connections": ("Connections", "接続数"),
    "remotes": ("Remote hosts", "接続先数"),
    "remote": ("Remote host", "接続先"),
    "server_name": ("Server name", "サーバー名"),
    "app": ("Application", "アプリケーション"),
    "port": ("Port", "ポート"),
    "proto": ("Protocol", "プロトコル"),
    "dir": ("Direction", "方向"),
    "devices": ("Devices", "機器数"),
    "first": ("First", "最初"),
    "last": ("Last", "最後"),
    "fact": ("Fact", "項目"),
    "value": ("Value", "値"),
    "evidence": ("Evidence", "根拠"),
    "received_at": ("Received", "受信日時"),
    "reason": ("Reason", "理由"),
    "topic": ("Topic", "トピック"),
    "detail": ("Detail", "詳細"),
    "payload_size": ("Payload size", "サイズ"),
    "relation": ("Relation", "リレーション"),
    "parts": ("Partitions / chunks", "パーティション／チャンク数"),
    "bytes": ("Size", "容量"),
    "kind": ("Kind", "種別"),
    "outcome": ("Label", "ラベル"),
    "impact": ("Impact", "影響度"),
    "priority": ("Priority", "優先度"),
    "reasons": ("Reasons", "理由"),
    "advice": ("Advice", "推奨対応"),
    "note": ("Note", "備考"),
    "catalogue_version": ("Catalogue", "基準版"),
    "assessed_at": ("Assessed", "判定日時"),
    "changed_at": ("Changed", "変化日時"),
    "criterion": ("Criterion", "基準"),
    "fingerprint": ("Statuses", "判定の並び"),
}


def label_columns(panel: dict[str, Any], lang: Lang) -> None:
    """Add a ``displayName`` override to a table panel for each known column its SQL names."""
    if panel.get("type") != "table":
        return
    sql = " ".join(t.get("rawSql", "") for t in panel.get("targets", []))
    overrides = panel.setdefault("fieldConfig", {}).setdefault("overrides", [])
    for column, (en, ja) in COLUMNS.items():
        if re.search(rf"\b{re.escape(column)}\b", sql):
            overrides.append(
                {
                    "matcher": {"id": "byName", "options": column},
                    "properties": [{"id": "displayName", "value": ja if lang == "ja" else en}],
                }
            )
