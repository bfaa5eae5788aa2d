"""Errors of the dashboards component.

::

    DashboardError
    ├── MacroError     a panel's SQL uses a macro or variable that cannot be expanded
    ├── BuildError     dashboards or provisioning files cannot be written
    └── PushError      Grafana refused or could not be reached (translated from grafana-client)
"""

from __future__ import annotations


class DashboardError(Exception):
    """Base of all errors raised by mimamori.dashboards."""


class MacroError(DashboardError):
    """A Grafana macro or template variable cannot be expanded."""


class BuildError(DashboardError):
    """Dashboard JSON or provisioning files cannot be produced."""


class PushError(DashboardError):
    """Uploading to Grafana failed."""
