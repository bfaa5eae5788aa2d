"""systemd unit of the gateway agent, shipped inside the package.

``python -m mimamori.edge.systemd`` prints the unit, so an installation can do
``mimamori-python -m mimamori.edge.systemd > /etc/systemd/system/mimamori-edge.service``
without a source checkout (see docs/raspberry-pi.md).
"""

from __future__ import annotations

from importlib import resources

UNIT_NAME = "mimamori-edge.service"


def unit_text() -> str:
    """The text of ``mimamori-edge.service``."""
    return resources.files(__name__).joinpath(UNIT_NAME).read_text(encoding="utf-8")
