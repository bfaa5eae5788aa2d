"""mimamori (見守り): 24-hour network watch for small businesses.

Components are installed as subpackages: ``mimamori.protocol``, ``mimamori.detect``,
``mimamori.edge``, ``mimamori.cloud``, ``mimamori.dashboards``, ``mimamori.simulators``.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
