"""Build every dashboard to JSON, and write them with Grafana provisioning files.

Output of :func:`write` (``--out DIR``)::

    DIR/dashboards/<uid>.json                       one file per dashboard
    DIR/provisioning/datasources/mimamori.yaml      the store's PostgreSQL data source
    DIR/provisioning/dashboards/mimamori.yaml       a file provider reading DIR/dashboards

Point Grafana's ``paths.provisioning`` at ``DIR/provisioning``. The data source's password
is never written: the file references an environment variable that Grafana expands when
it reads the file.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from mimamori.dashboards import alerts, device, fleet, platform, site
from mimamori.dashboards.columns import label_columns
from mimamori.dashboards.errors import BuildError
from mimamori.dashboards.panels import Lang, Tr
from mimamori.dashboards.query import DATASOURCE_TYPE, DATASOURCE_UID

#: Folder (title and uid) every dashboard lives in.
FOLDER = "mimamori"

#: Dashboard builders, in the order the folder lists them.
DASHBOARDS: tuple[Callable[[Tr], dash.Dashboard], ...] = (
    fleet.build,
    alerts.build,
    site.build,
    device.build,
    platform.build,
)


def build_all(lang: Lang) -> list[dict[str, Any]]:
    """Every dashboard as the JSON object Grafana stores."""
    tr = Tr(lang)
    out = []
    for make in DASHBOARDS:
        model = json.loads(json.dumps(make(tr).build(), cls=JSONEncoder))
        _number_panels(model)
        for panel in iter_panels(model):
            label_columns(panel, lang)
        out.append(model)
    return out


def _number_panels(model: dict[str, Any]) -> None:
    # Grafana keys panel state (links, edits, repeats) by id; the SDK leaves it unset.
    for n, panel in enumerate(iter_panels(model), start=1):
        panel["id"] = n


def iter_panels(model: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel of a dashboard, rows' nested panels included."""
    for panel in model.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


@dataclass(frozen=True, kw_only=True)
class StoreSettings:
    """How Grafana reaches the store. Use a read-only role: dashboards only SELECT."""

    host: str
    port: int = 5432
    database: str = "mimamori"
    user: str = "grafana"
    #: Environment variable, in Grafana's environment, holding the password.
    password_env: str = "MIMAMORI_GRAFANA_DB_PASSWORD"
    sslmode: str = "require"
    timescaledb: bool = False


def datasource_provisioning(store: StoreSettings) -> dict[str, Any]:
    """Grafana's data source provisioning document for the store."""
    return {
        "apiVersion": 1,
        "datasources": [
            {
                "name": "mimamori store",
                "type": DATASOURCE_TYPE,
                "uid": DATASOURCE_UID,
                "access": "proxy",
                "url": f"{store.host}:{store.port}",
                "user": store.user,
                "editable": False,
                "jsonData": {
                    "database": store.database,
                    "sslmode": store.sslmode,
                    "postgresVersion": 1500,
                    # The panels' SQL is written for both storages and never relies on
                    # the TimescaleDB flavour of $__timeGroup (time_bucket).
                    "timescaledb": store.timescaledb,
                    "maxOpenConns": 10,
                    "connMaxLifetime": 14400,
                },
                "secureJsonData": {"password": "${" + store.password_env + "}"},
            }
        ],
    }


def dashboards_provisioning(path: str) -> dict[str, Any]:
    """Grafana's dashboard provider document: files under ``path`` into the folder."""
    return {
        "apiVersion": 1,
        "providers": [
            {
                "name": "mimamori",
                "orgId": 1,
                "folder": FOLDER,
                "folderUid": FOLDER,
                "type": "file",
                "disableDeletion": False,
                "allowUiUpdates": False,
                "updateIntervalSeconds": 60,
                "options": {"path": path, "foldersFromFilesStructure": False},
            }
        ],
    }


def to_yaml(value: Any, indent: int = 0) -> str:
    """A small YAML writer for provisioning documents (mappings, lists, scalars).

    Strings are written JSON-quoted, which is valid YAML and keeps ``${VAR}`` literal
    for Grafana's own expansion.
    """
    pad = "  " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, dict | list) and item:
                lines.append(f"{pad}{key}:")
                lines.append(to_yaml(item, indent + 1))
            else:
                lines.append(f"{pad}{key}: {_scalar(item)}")
    elif isinstance(value, list):
        for item in value:
            body = to_yaml(item, indent + 1).lstrip()
            lines.append(f"{pad}- {body}")
    else:
        lines.append(pad + _scalar(value))
    return "\n".join(lines)


def _scalar(value: Any) -> str:
    if isinstance(value, dict | list):
        return "{}" if isinstance(value, dict) else "[]"
    return json.dumps(value, ensure_ascii=False)


def write(
    out: Path, *, lang: Lang, store: StoreSettings, dashboards_path: str | None = None
) -> list[Path]:
    """Write the dashboards and provisioning files under ``out``; return the paths written.

    ``dashboards_path`` is where Grafana will find the JSON files (default: their absolute
    path here; give the mount point when Grafana runs elsewhere, e.g. in a container).
    """
    board_dir = out / "dashboards"
    ds_dir = out / "provisioning" / "datasources"
    prov_dir = out / "provisioning" / "dashboards"
    written: list[Path] = []
    try:
        for d in (board_dir, ds_dir, prov_dir):
            d.mkdir(parents=True, exist_ok=True)
        for model in build_all(lang):
            path = board_dir / f"{model['uid']}.json"
            path.write_text(json.dumps(model, indent=2, ensure_ascii=False) + "\n", "utf-8")
            written.append(path)
        ds = ds_dir / "mimamori.yaml"
        ds.write_text(to_yaml(datasource_provisioning(store)) + "\n", "utf-8")
        prov = prov_dir / "mimamori.yaml"
        target = dashboards_path or str(board_dir.resolve())
        prov.write_text(to_yaml(dashboards_provisioning(target)) + "\n", "utf-8")
    except OSError as exc:
        raise BuildError(f"cannot write under {out}: {exc}") from exc
    return [*written, ds, prov]
