"""Errors of the gateway agent's delivery side (configuration, outbox, publisher).

::

    EdgeError
    ├── ConfigError       the configuration file is missing, unreadable or invalid; the
    │                     message names the field and how to fix it
    ├── OutboxError       the outbox database cannot be opened, read or written
    │   └── OutboxCorrupt the database fails SQLite's integrity check
    └── PublisherError    the publisher was built with unusable settings (e.g. no TLS
                          without an explicit opt-out)

Library errors (``sqlite3.Error``, ``OSError``, ``msgspec.ValidationError``) are translated
into these once, where they are raised, with ``raise ... from exc``. Network errors while
running are not exceptions: the publisher reconnects on its own.
"""

from __future__ import annotations


class EdgeError(Exception):
    """Base of every error raised by the gateway agent's delivery side."""


class ConfigError(EdgeError):
    """The configuration is invalid; ``str(err)`` says which field and how to fix it."""


class OutboxError(EdgeError):
    """The outbox database could not be opened, read or written."""


class OutboxCorrupt(OutboxError):
    """The outbox database failed SQLite's integrity check."""


class PublisherError(EdgeError):
    """The publisher cannot run with the settings it was given."""
