"""Upload the dashboards to a running Grafana over its HTTP API (grafana-client).

Idempotent: the folder is created once (uid ``mimamori``), and every dashboard is saved
with its stable uid and ``overwrite: true``, so pushing again replaces it in place (Grafana
keeps the previous version in its history).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from grafana_client import GrafanaApi
from grafana_client.client import GrafanaClientError, GrafanaException
from mimamori.dashboards.build import FOLDER, build_all
from mimamori.dashboards.errors import PushError
from mimamori.dashboards.panels import Lang


@dataclass
class PushReport:
    """What the push did."""

    folder_created: bool = False
    dashboards: list[str] = field(default_factory=list)


def push(*, url: str, token: str, lang: Lang, timeout_s: float = 10.0) -> PushReport:
    """Create the folder if missing and save every dashboard into it."""
    api = GrafanaApi.from_url(url, credential=token, timeout=timeout_s)
    report = PushReport()
    try:
        report.folder_created = _ensure_folder(api)
        for model in build_all(lang):
            api.dashboard.update_dashboard(
                {
                    "dashboard": model,
                    "folderUid": FOLDER,
                    "overwrite": True,
                    "message": "mimamori dashboards push",
                }
            )
            report.dashboards.append(model["uid"])
    except GrafanaException as exc:
        raise PushError(f"Grafana at {url} refused the upload: {exc}") from exc
    except OSError as exc:
        # The HTTP library's connection errors and timeouts derive from OSError.
        raise PushError(f"cannot reach Grafana at {url}: {exc}") from exc
    return report


def _ensure_folder(api: Any) -> bool:
    try:
        api.folder.get_folder(FOLDER)
        return False
    except GrafanaClientError as exc:
        if getattr(exc, "status_code", None) != 404:
            raise
    api.folder.create_folder(FOLDER, uid=FOLDER)
    return True
