"""The PostgreSQL data source and its raw-SQL query, as grafana-foundation-sdk objects.

The SDK has no builder for Grafana's PostgreSQL data source, so this module supplies the
query type (``rawSql`` in code mode) and a builder that panels accept as a target.
"""

from __future__ import annotations

from typing import Literal, Self

from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models.dashboard import DataSourceRef

#: Plugin id of Grafana's built-in PostgreSQL data source (Grafana 10.x and later).
DATASOURCE_TYPE = "grafana-postgresql-datasource"
#: Stable uid of the store's data source: provisioning creates it, every panel names it.
DATASOURCE_UID = "mimamori-store"

Format = Literal["time_series", "table"]


def datasource_ref() -> DataSourceRef:
    """Reference to the store's data source."""
    return DataSourceRef(type_val=DATASOURCE_TYPE, uid=DATASOURCE_UID)


class SqlQuery(cogvariants.Dataquery):
    """One raw-SQL target of a PostgreSQL panel."""

    def __init__(self, *, sql: str, fmt: Format, ref_id: str = "A") -> None:
        self.sql = sql
        self.fmt = fmt
        self.ref_id = ref_id

    def to_json(self) -> dict[str, object]:
        """The target as Grafana stores it in dashboard JSON."""
        return {
            "refId": self.ref_id,
            "datasource": datasource_ref(),
            "editorMode": "code",
            "rawQuery": True,
            "format": self.fmt,
            "rawSql": self.sql,
        }


class Sql(cogbuilder.Builder[SqlQuery]):
    """Builder for :class:`SqlQuery`: ``Sql(text).table()`` or ``.time_series()``."""

    def __init__(self, sql: str) -> None:
        self._query = SqlQuery(sql=_tidy(sql), fmt="table")

    def build(self) -> SqlQuery:
        return self._query

    def time_series(self) -> Self:
        """Grafana reads a ``time`` column and numeric columns (a text column names series)."""
        self._query.fmt = "time_series"
        return self

    def table(self) -> Self:
        """Grafana shows the rows as they are."""
        self._query.fmt = "table"
        return self


def _tidy(sql: str) -> str:
    """Strip the common indentation of a triple-quoted query, keep its line structure."""
    lines = sql.strip("\n").rstrip().splitlines()
    indent = min((len(s) - len(s.lstrip()) for s in lines if s.strip()), default=0)
    return "\n".join(s[indent:].rstrip() for s in lines)
