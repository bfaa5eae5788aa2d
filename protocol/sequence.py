"""Per-gateway sequence numbers that never repeat, even across restarts.

A gateway persists the last sequence number it used (the edge keeps it in its outbox
database). On start it continues from ``max(last_used + 1, time_floor(now))``. The time
floor is the current UNIX time in milliseconds times 1,000: if the persisted state is lost
(a new SD card), numbering still restarts above anything used before, because a gateway
never sends 1,000 messages per millisecond and so never runs ahead of the clock. The
floor needs a synchronised clock: the gateway starts after time synchronisation.

Sequence numbers fit in 2**53 (exact in JSON doubles) until the year 2255.
"""

from __future__ import annotations

import time

#: Sequence numbers per millisecond of wall-clock time in the floor.
PER_MS = 1000


def time_floor(now: float | None = None) -> int:
    """Lowest sequence number a (re)starting gateway may use at ``now``."""
    if now is None:
        now = time.time()
    return int(now * 1000) * PER_MS


def next_start(last_used: int | None, now: float | None = None) -> int:
    """First sequence number to use after a restart."""
    floor = time_floor(now)
    if last_used is None:
        return floor
    return max(last_used + 1, floor)


def ranges(seqs: list[int] | set[int]) -> list[tuple[int, int]]:
    """Collapse sequence numbers into sorted inclusive ``(first, last)`` ranges."""
    out: list[tuple[int, int]] = []
    for s in sorted(seqs):
        if out and s == out[-1][1] + 1:
            out[-1] = (out[-1][0], s)
        elif not out or s > out[-1][1]:
            out.append((s, s))
    return out
