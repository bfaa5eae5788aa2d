"""HTML of the monthly report (charts as embedded PNG) and its PDF.

The HTML is self-contained (styles inline, images as data URLs) so it can be mailed as
one file; the PDF is WeasyPrint's print of the same HTML. Japanese needs a CJK font on
the machine (scripts/bootstrap.sh installs fonts-ipafont-gothic).
"""

from __future__ import annotations

import base64
import io
from datetime import datetime, timedelta
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from mimamori.cloud.report_templates.catalogue import (
    OUTCOME_TEXT,
    RULES,
    SEVERITY_TEXT,
    STATUS_TEXT,
    THREATS,
    Lang,
    guidance,
    pick,
)  # fmt: skip

if TYPE_CHECKING:
    from mimamori.cloud.report import MonthData

#: Fonts tried in order; the first installed one with Japanese glyphs draws the charts.
CJK_FONTS = ("IPAPGothic", "IPAGothic", "Noto Sans CJK JP", "Noto Sans JP", "TakaoGothic")
SEVERITY_COLOURS = {"critical": "#7b1fa2", "high": "#d32f2f", "medium": "#f57c00",
                    "low": "#fbc02d", "info": "#90a4ae"}  # fmt: skip

CSS = """
@page { size: A4; margin: 16mm 14mm; }
body { font-family: "IPAPGothic", "IPAGothic", "Noto Sans CJK JP", sans-serif;
       font-size: 10.5pt; color: #222; line-height: 1.5; }
h1 { font-size: 18pt; margin: 0 0 4pt; } h2 { font-size: 13pt; border-bottom: 2px solid #1565c0;
     margin-top: 16pt; } .lead { color: #555; }
table { border-collapse: collapse; width: 100%; margin: 6pt 0; font-size: 9.5pt; }
th, td { border: 1px solid #ccc; padding: 3pt 5pt; text-align: left; vertical-align: top; }
th { background: #e3f2fd; } .num { text-align: right; }
.big { font-size: 20pt; font-weight: bold; color: #1565c0; }
.box { border: 1px solid #90caf9; background: #f5faff; padding: 6pt 10pt; margin: 6pt 0; }
.note { font-size: 9pt; color: #555; } img { max-width: 100%; }
.hash { font-family: monospace; font-size: 8pt; }
"""

T: dict[str, tuple[str, str]] = {
    "title": ("月次セキュリティ見守りレポート", "Monthly security monitoring report"),
    "lead": ("ネットワークの見守り結果を、専門用語を使わずにまとめました。",
             "What we saw on your network this month, in plain words."),
    "s_watch": ("1. 見守りの状況", "1. How well we watched"),
    "hours": ("見守った時間", "Hours monitored"),
    "coverage": ("見守り率", "Coverage"),
    "cov_note": ("見守り装置（ゲートウェイ）は数分ごとに「動いています」という合図（ハートビート）を送ります。"
                 "合図が1時間まったく届かなかった時間を「見守れなかった時間」として数えています。",
                 "The monitoring box (gateway) sends an \"I am alive\" signal (heartbeat) every few "
                 "minutes. An hour with no signal at all counts as an hour not monitored."),
    "gaps": ("見守れなかった時間帯", "Times not monitored"),
    "no_gaps": ("見守れなかった時間はありませんでした。", "There was no time without monitoring."),
    "gap_start": ("開始", "From"), "gap_hours": ("時間数", "Hours"), "gateway": ("装置", "Box"),
    "s_found": ("2. 見つかったことと対応", "2. What we found and what was done"),
    "alerts_total": ("検知した件数", "Detections"),
    "alerts_note": ("「検知」は、いつもと違う・危ないかもしれない通信を見つけたことです。"
                    "同じ問題の検知はまとめて1つの「案件」として対応します。",
                    "A detection is traffic that looked unusual or risky. Detections about the same "
                    "problem are handled together as one case."),
    "category": ("内容", "What"), "count": ("件数", "Count"), "severity": ("重要度", "Severity"),
    "cases": ("案件と対応状況", "Cases and how they were handled"),
    "no_cases": ("今月、対応が必要な案件はありませんでした。", "No case needed handling this month."),
    "case": ("案件", "Case"), "status": ("状況", "Status"), "result": ("対応結果", "Outcome"),
    "period": ("期間", "When"),
    "s_devices": ("3. 社内の機器", "3. Devices on your network"),
    "dev_note": ("★1は、IoT機器のセキュリティ基準（JC-STAR）の最初の段階です。通信から分かる範囲で判定しています。",
                 "★1 is the first level of the JC-STAR security label for IoT devices, judged from "
                 "what the network shows."),
    "device": ("機器", "Device"), "address": ("アドレス", "Address"), "label": ("判定", "Label"),
    "no_devices": ("機器の情報はまだありません。", "No device seen yet."),
    "s_actions": ("4. おすすめの対策", "4. What to do next"),
    "act_note": ("対策は、IPAの「情報セキュリティ5か条」と「情報セキュリティ10大脅威」に対応しています。",
                 "Each action follows IPA's five basic security rules and names the major threat "
                 "(IPA's top 10) it protects against."),
    "rule": ("5か条", "Basic rule"), "threat": ("関係する脅威", "Threat"),
    "nothing": ("今月は特別な対策は必要ありません。今の使い方を続けてください。",
                "Nothing special is needed this month. Keep doing what you do."),
    "chart_alerts": ("日ごとの検知件数", "Detections per day"),
    "chart_cov": ("日ごとの見守り率 (%)", "Coverage per day (%)"),
    "generated": ("作成日時", "Generated"),
}


def t(key: str, lang: Lang) -> str:
    """The report text ``key`` in ``lang``."""
    return pick(T[key], lang)


def _font() -> str | None:
    from matplotlib import font_manager

    installed = {f.name for f in font_manager.fontManager.ttflist}
    return next((f for f in CJK_FONTS if f in installed), None)


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def charts(data: MonthData, lang: Lang) -> list[str]:
    """Detections per day (stacked by severity) and coverage per day, as PNG data URLs."""
    import matplotlib

    matplotlib.use("Agg")  # no display on a server
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    font = _font()
    if font:
        matplotlib.rcParams["font.family"] = [font, "DejaVu Sans"]
    zone = ZoneInfo(data.tz)
    first = data.start.astimezone(zone).date()
    last = (data.end - timedelta(seconds=1)).astimezone(zone).date()
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    out: list[str] = []
    fig = Figure(figsize=(7.2, 2.4))
    ax = fig.add_subplot()
    bottom = [0] * len(days)
    for sev in ("info", "low", "medium", "high", "critical"):
        values = [data.daily_alerts[d][sev] if d in data.daily_alerts else 0 for d in days]
        if any(values):
            ax.bar([d.day for d in days], values, bottom=bottom, color=SEVERITY_COLOURS[sev],
                   label=pick(SEVERITY_TEXT[sev], lang))  # fmt: skip
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts: no 0.5 alerts
    ax.set_title(t("chart_alerts", lang))
    if any(bottom):
        ax.legend(fontsize=7, loc="upper right")
    out.append(_png(fig))
    fig = Figure(figsize=(7.2, 2.0))
    ax = fig.add_subplot()
    cov = dict(data.daily_coverage)
    ax.plot([d.day for d in days], [100 * cov[d] if d in cov else float("nan") for d in days],
            marker="o", markersize=3, color="#1565c0")  # fmt: skip
    ax.set_ylim(0, 105)
    ax.set_title(t("chart_cov", lang))
    out.append(_png(fig))
    return out


def _when(value: datetime | None, data: MonthData) -> str:
    return value.astimezone(ZoneInfo(data.tz)).strftime("%Y-%m-%d %H:%M") if value else ""


def _table(head: list[str], rows: list[list[str]], numeric: tuple[int, ...] = ()) -> str:
    hs = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(
            f'<td class="num">{escape(c)}</td>' if i in numeric else f"<td>{escape(c)}</td>"
            for i, c in enumerate(r)
        ) + "</tr>"
        for r in rows
    )  # fmt: skip
    return f"<table><tr>{hs}</tr>{body}</table>"


def month_html(data: MonthData, *, lang: Lang) -> str:
    """The whole report as one self-contained HTML page."""
    e = escape
    month = f"{data.month:%Y年%m月}" if lang == "ja" else f"{data.month:%B %Y}"
    parts = [f"<h1>{e(t('title', lang))} — {e(month)}</h1>",
             f"<p class='lead'>{e(data.tenant_name)} · {e(t('lead', lang))}</p>"]  # fmt: skip
    img_alerts, img_cov = charts(data, lang)
    # 1. coverage
    parts.append(f"<h2>{e(t('s_watch', lang))}</h2>")
    parts.append(
        f"<div class='box'>{e(t('hours', lang))}: <span class='big'>{data.hours_monitored}</span>"
        f" / {data.hours_expected} h &nbsp; {e(t('coverage', lang))}: "
        f"<span class='big'>{100 * data.coverage:.1f}%</span></div>"
    )
    parts.append(f"<p class='note'>{e(t('cov_note', lang))}</p>")
    parts.append(f"<img src='{img_cov}' alt='{e(t('chart_cov', lang))}'>")
    parts.append(f"<h3>{e(t('gaps', lang))}</h3>")
    if data.gaps:
        parts.append(_table(
            [t("gateway", lang), t("gap_start", lang), t("gap_hours", lang)],
            [[g.gateway, _when(g.start, data), str(g.hours)] for g in data.gaps[:10]],
            numeric=(2,),
        ))  # fmt: skip
    else:
        parts.append(f"<p>{e(t('no_gaps', lang))}</p>")
    # 2. detections and cases
    total = sum(data.alerts_by_category.values())
    parts.append(f"<h2>{e(t('s_found', lang))}</h2>")
    parts.append(f"<div class='box'>{e(t('alerts_total', lang))}: "
                 f"<span class='big'>{total}</span></div>")  # fmt: skip
    parts.append(f"<p class='note'>{e(t('alerts_note', lang))}</p>")
    parts.append(f"<img src='{img_alerts}' alt='{e(t('chart_alerts', lang))}'>")
    if total:
        parts.append(_table(
            [t("category", lang), t("count", lang)],
            [[pick(guidance(c).name, lang), str(n)]
             for c, n in data.alerts_by_category.most_common()],
            numeric=(1,),
        ))  # fmt: skip
    parts.append(f"<h3>{e(t('cases', lang))}</h3>")
    if data.incidents:
        rows = []
        for inc in data.incidents:
            outcome = inc.get("resolution") or ""
            if not outcome and inc["resolved_at"]:
                outcome = _when(inc["resolved_at"], data)
            rows.append([
                f"#{inc['id']} " + pick(guidance(inc["category"]).name, lang),
                pick(SEVERITY_TEXT.get(inc["severity"], (inc["severity"],) * 2), lang),
                f"{_when(inc['first_alert_at'], data)} – {_when(inc['last_alert_at'], data)}",
                pick(STATUS_TEXT.get(inc["status"], (inc["status"],) * 2), lang),
                outcome,
            ])  # fmt: skip
        parts.append(_table([t("case", lang), t("severity", lang), t("period", lang),
                             t("status", lang), t("result", lang)], rows))  # fmt: skip
    else:
        parts.append(f"<p>{e(t('no_cases', lang))}</p>")
    # 3. devices
    parts.append(f"<h2>{e(t('s_devices', lang))} ({len(data.devices)})</h2>")
    parts.append(f"<p class='note'>{e(t('dev_note', lang))}</p>")
    if data.devices:
        parts.append(_table(
            [t("device", lang), t("address", lang), t("label", lang)],
            [[" ".join(x for x in (d["hostname"], d["vendor"], d["model"]) if x) or d["mac"],
              " ".join((d["ips"] or [])[:2]) + f" ({d['mac']})",
              pick(OUTCOME_TEXT.get(d["outcome"], OUTCOME_TEXT[""]), lang)]
             for d in data.devices],
        ))  # fmt: skip
    else:
        parts.append(f"<p>{e(t('no_devices', lang))}</p>")
    # 4. actions
    parts.append(f"<h2>{e(t('s_actions', lang))}</h2>")
    parts.append(f"<p class='note'>{e(t('act_note', lang))}</p>")
    if data.actions:
        items = []
        for a in data.actions:
            g = guidance(a.category)
            items.append(
                f"<li><b>{e(pick(g.action, lang))}</b><br>"
                f"<span class='note'>{e(pick(g.name, lang))} · {e(t('rule', lang))} {a.rule}: "
                f"{e(pick(RULES[a.rule], lang))} · {e(t('threat', lang))}: "
                f"{e(pick(THREATS[a.threat], lang))}</span></li>"
            )
        parts.append("<ol>" + "".join(items) + "</ol>")
    else:
        parts.append(f"<p>{e(t('nothing', lang))}</p>")
    parts.append(f"<p class='note'>{e(t('generated', lang))}: "
                 f"{_when(datetime.now(ZoneInfo(data.tz)), data)} ({e(data.tz)})</p>")  # fmt: skip
    return page(t("title", lang), "\n".join(parts), lang)


def page(title: str, body: str, lang: Lang) -> str:
    """A complete HTML document with the report styles."""
    return (f"<!DOCTYPE html><html lang='{lang}'><head><meta charset='utf-8'>"
            f"<title>{escape(title)}</title><style>{CSS}</style></head>"
            f"<body>{body}</body></html>")  # fmt: skip


def pdf(html: str, path: Path) -> None:
    """Print ``html`` to a PDF file at ``path`` (ReportError when WeasyPrint cannot)."""
    from mimamori.cloud.report import ReportError

    try:
        import weasyprint

        weasyprint.HTML(string=html).write_pdf(str(path))
    except (ImportError, OSError) as exc:  # missing library or pango
        raise ReportError(f"cannot print the PDF: {exc}") from exc
