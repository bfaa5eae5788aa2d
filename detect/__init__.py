"""mimamori.detect: detection rules as pure functions over protocol records.

The real-time :class:`Engine` runs on the gateway; :mod:`.longwindow` holds the rules the
cloud runs over hours of flow summaries and over last-seen times. Thresholds live in
``defaults.toml`` (:func:`load_config`); threat intelligence in :class:`Intel`.
"""

from mimamori.detect.config import DetectConfig, default_dict, load_config
from mimamori.detect.engine import Engine, EngineStats
from mimamori.detect.errors import ConfigError, DetectError, IntelError
from mimamori.detect.intel import Intel, parse_csv, parse_feed, parse_list

__all__ = [
    "ConfigError",
    "DetectConfig",
    "DetectError",
    "Engine",
    "EngineStats",
    "Intel",
    "IntelError",
    "default_dict",
    "load_config",
    "parse_csv",
    "parse_feed",
    "parse_list",
]
