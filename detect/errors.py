"""Errors of the detection component.

::

    DetectError
    ├── ConfigError   a threshold file or override is malformed or out of range
    └── IntelError    a threat-intelligence list cannot be parsed

Detection rules themselves never raise on odd records: they skip what they cannot read
and the engine counts it (``Engine.stats``).
"""

from __future__ import annotations


class DetectError(Exception):
    """Base of every error raised by :mod:`mimamori.detect`."""


class ConfigError(DetectError):
    """The detection configuration is malformed, incomplete or out of range."""


class IntelError(DetectError):
    """A threat-intelligence feed could not be parsed."""
