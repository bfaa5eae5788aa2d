"""Errors of the cloud component.

::

    CloudError
    ├── ConfigError       a setting is missing or invalid
    ├── MigrationError    the schema cannot be brought up to date
    ├── StoreError        the database refused or lost a request (translated from psycopg)
    │   └── RegistryError a tenant or gateway registry request is invalid (unknown id, ...)
    └── RowError          a decoded message cannot be mapped to rows (e.g. an invalid IP);
                          the ingester quarantines the message

Library errors (psycopg, aiomqtt) are translated into these once, where they are caught.
"""

from __future__ import annotations


class CloudError(Exception):
    """Base of all errors raised by mimamori.cloud."""


class ConfigError(CloudError):
    """A setting is missing or invalid."""


class MigrationError(CloudError):
    """The schema cannot be brought up to date."""


class StoreError(CloudError):
    """A database request failed."""


class RegistryError(StoreError):
    """A registry request (tenants, gateways) is invalid."""


class RowError(CloudError):
    """A message passed protocol validation but cannot be stored (e.g. an invalid IP).

    ``reason`` is the quarantine reason and metric label.
    """

    reason = "invalid_value"
