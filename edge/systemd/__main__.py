"""Print the agent's systemd unit (``python -m mimamori.edge.systemd``)."""

from __future__ import annotations

import sys

from mimamori.edge.systemd import unit_text

sys.stdout.write(unit_text())
