"""Panel constructors shared by the dashboards: one call per panel, in the store's style.

Every text a SOC operator reads is given in English and Japanese (:class:`Tr`); the
builder picks one by the language the dashboards are built in. Panels always query the
store's data source (:mod:`.query`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from grafana_foundation_sdk.builders import barchart, common, stat, table, text, timeseries
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.models.common import (
    BigValueColorMode,
    BigValueGraphMode,
    LegendDisplayMode,
    LegendPlacement,
    StackingMode,
    VizOrientation,
)
from grafana_foundation_sdk.models.dashboard import (
    DynamicConfigValue,
    Threshold,
    ThresholdsMode,
    VariableOption,
    VariableRefresh,
    VariableSort,
)
from grafana_foundation_sdk.models.text import TextMode
from mimamori.dashboards.query import Sql, datasource_ref

Lang = Literal["ja", "en"]
LANGS: tuple[Lang, ...] = ("ja", "en")


@dataclass(frozen=True)
class Tr:
    """Picks the English or Japanese form of each text: ``tr("Devices", "機器")``."""

    lang: Lang

    def __call__(self, en: str, ja: str) -> str:
        return ja if self.lang == "ja" else en


def _thresholds(steps: list[tuple[float | None, str]]) -> dash.ThresholdsConfig:
    return (
        dash.ThresholdsConfig()
        .mode(ThresholdsMode.ABSOLUTE)
        .steps([Threshold(value=v, color=c) for v, c in steps])
    )


#: Green below the first bound, then orange, then red: "look at this".
def warn_at(warn: float, alert: float) -> list[tuple[float | None, str]]:
    """Threshold steps green < ``warn`` <= orange < ``alert`` <= red."""
    return [(None, "green"), (warn, "orange"), (alert, "red")]


def stat_panel(
    title: str,
    sql: str,
    *,
    unit: str = "none",
    description: str = "",
    steps: list[tuple[float | None, str]] | None = None,
    span: int = 6,
    height: int = 4,
) -> stat.Panel:
    """A big number (one value per numeric column of the first row)."""
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(datasource_ref())
        .with_target(Sql(sql).table())
        .unit(unit)
        .span(span)
        .height(height)
        .graph_mode(BigValueGraphMode.NONE)
        .color_mode(BigValueColorMode.BACKGROUND if steps else BigValueColorMode.VALUE)
        .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .thresholds(_thresholds(steps or [(None, "blue")]))
    )


def timeseries_panel(
    title: str,
    sql: str,
    *,
    unit: str,
    description: str = "",
    stacked: bool = False,
    span: int = 12,
    height: int = 8,
    relative: str | None = None,
) -> timeseries.Panel:
    """A time series: the query returns ``time``, numbers, and optionally a ``metric`` text.

    ``relative`` (e.g. ``24h``) pins the panel to the last span regardless of the dashboard
    range, for live panels whose source has no rollup.
    """
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(datasource_ref())
        .with_target(Sql(sql).time_series())
        .unit(unit)
        .span(span)
        .height(height)
        .fill_opacity(15 if stacked else 5)
        .span_nulls(False)
        .legend(
            common.VizLegendOptions()
            .display_mode(LegendDisplayMode.LIST)
            .placement(LegendPlacement.BOTTOM)
            .show_legend(True)
        )
    )
    if stacked:
        panel = panel.stacking(common.StackingConfig().mode(StackingMode.NORMAL))
    if relative:
        panel = panel.time_from(relative)
    return panel


def table_panel(
    title: str,
    sql: str,
    *,
    description: str = "",
    span: int = 24,
    height: int = 10,
    links: dict[str, tuple[str, str]] | None = None,
    units: dict[str, str] | None = None,
) -> table.Panel:
    """A table of named columns; ``links`` maps a column to (tooltip, URL) data links."""
    panel = (
        table.Panel()
        .title(title)
        .description(description)
        .datasource(datasource_ref())
        .with_target(Sql(sql).table())
        .span(span)
        .height(height)
    )
    for column, (tip, url) in (links or {}).items():
        panel = panel.override_by_name(
            column, [DynamicConfigValue(id_val="links", value=[{"title": tip, "url": url}])]
        )
    for column, unit in (units or {}).items():
        panel = panel.override_by_name(column, [DynamicConfigValue(id_val="unit", value=unit)])
    return panel


def bar_panel(
    title: str,
    sql: str,
    *,
    x_field: str,
    description: str = "",
    stacked: bool = False,
    horizontal: bool = True,
    span: int = 8,
    height: int = 8,
) -> barchart.Panel:
    """Bars per category: the query returns one text column (``x_field``) and numbers."""
    return (
        barchart.Panel()
        .title(title)
        .description(description)
        .datasource(datasource_ref())
        .with_target(Sql(sql).table())
        .x_field(x_field)
        .orientation(VizOrientation.HORIZONTAL if horizontal else VizOrientation.VERTICAL)
        .stacking(StackingMode.NORMAL if stacked else StackingMode.NONE)
        .span(span)
        .height(height)
    )


def note_panel(title: str, markdown: str, *, span: int = 24, height: int = 4) -> text.Panel:
    """A text panel (no query): explanations and clearly marked places still to fill."""
    return (
        text.Panel()
        .title(title)
        .mode(TextMode.MARKDOWN)
        .content(markdown)
        .span(span)
        .height(height)
    )


def query_variable(
    name: str,
    label: str,
    sql: str,
    *,
    multi: bool = False,
    include_all: bool = False,
) -> dash.QueryVariable:
    """A variable filled by SQL returning ``__value`` (and optionally ``__text``)."""
    var = (
        dash.QueryVariable(name)
        .label(label)
        .datasource(datasource_ref())
        .query(Sql(sql).build().sql)
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(multi)
        .include_all(include_all)
    )
    if include_all:
        var = var.current(VariableOption(selected=True, text="All", value="$__all"))
    return var


def custom_variable(
    name: str, label: str, values: list[str], *, default: list[str]
) -> dash.CustomVariable:
    """A fixed multi-value list (e.g. severities) with ``default`` selected."""
    return (
        dash.CustomVariable(name)
        .label(label)
        .values(",".join(values))
        .multi(True)
        .include_all(True)
        .current(VariableOption(selected=True, text=" + ".join(default), value=list(default)))
        .options([VariableOption(selected=v in default, text=v, value=v) for v in values])
    )
