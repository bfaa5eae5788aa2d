"""The incident state machine, free of I/O.

::

    open --acknowledge--> acknowledged --dispatch--> dispatched --resolve--> resolved
                               └──────────────resolve──────────────┘          │
    open <──────────────────────────reopen (admin)─────────────────────────────┘

``assign``, ``escalate`` and notes change no state but are refused on a resolved incident
(reopen it first). ``assigned`` is a status of rows written before migration 0005; it is
treated as ``acknowledged``.
"""

from __future__ import annotations

from typing import Literal

Action = Literal["acknowledge", "assign", "escalate", "dispatch", "resolve", "reopen", "note"]

_LIVE = ("open", "acknowledged", "assigned", "dispatched")
_TARGETS: dict[str, dict[str, str]] = {
    "acknowledge": {"open": "acknowledged"},
    # A second visit to the same site is a second dispatch row, not an error.
    "dispatch": {
        "acknowledged": "dispatched",
        "assigned": "dispatched",
        "dispatched": "dispatched",
    },
    "resolve": {"acknowledged": "resolved", "assigned": "resolved", "dispatched": "resolved"},
    "reopen": {"resolved": "open"},
    "assign": {s: s for s in _LIVE},
    "escalate": {s: s for s in _LIVE},
    "note": {s: s for s in (*_LIVE, "resolved")},
}
#: Actions only an admin may take.
ADMIN_ONLY: frozenset[str] = frozenset({"reopen"})


class TransitionError(Exception):
    """An action is not allowed in the incident's current status (HTTP 409)."""


def next_status(status: str, action: Action) -> str:
    """The status after ``action``, or :class:`TransitionError` saying why it is refused."""
    targets = _TARGETS[action]
    if status in targets:
        return targets[status]
    allowed = ", ".join(sorted(targets)) or "none"
    hint = {
        "acknowledge": "it is already acknowledged or closed",
        "resolve": "acknowledge it first" if status == "open" else "it is already resolved",
        "dispatch": "acknowledge it first" if status == "open" else "reopen it first",
        "reopen": "only a resolved incident can be reopened",
    }.get(action, "reopen it first")
    raise TransitionError(
        f"cannot {action} an incident that is {status} ({hint}; allowed from: {allowed})"
    )
