"""Reconnect delays: capped exponential backoff with jitter.

After the n-th consecutive failure the node waits between half and all of
``min(cap, base * 2**n)`` milliseconds. The random half spreads the nodes of a site (and
the sites behind one gateway restart) so they do not all hit the gateway at once after a
power cut; the deterministic half keeps a broken node from retrying in a tight loop.
"""

try:
    from typing import Callable
except ImportError:  # MicroPython has no typing module; annotations are never evaluated
    pass


class Backoff:
    """Delay schedule; ``next_ms()`` after each failure, ``reset()`` after a success."""

    def __init__(self, *, base_ms: int, cap_ms: int, rand: Callable[[int], int]) -> None:
        # ``rand`` is a callable taking a bit count (``random.getrandbits``), injected so
        # tests can fix the jitter.
        self.base_ms = base_ms
        self.cap_ms = cap_ms
        self._rand = rand
        self.failures = 0

    def ceiling_ms(self, failures: int) -> int:
        """Upper bound of the delay after ``failures`` consecutive failures (0-based)."""
        delay = self.base_ms
        i = 0
        while i < failures and delay < self.cap_ms:
            delay *= 2
            i += 1
        return delay if delay < self.cap_ms else self.cap_ms

    def next_ms(self) -> int:
        """The delay to wait now; counts one more failure."""
        ceiling = self.ceiling_ms(self.failures)
        self.failures += 1
        half = ceiling // 2
        # 16 random bits scaled onto [0, half]: enough resolution, and small ints only.
        jitter = (self._rand(16) * half) >> 16
        return ceiling - half + jitter

    def reset(self) -> None:
        self.failures = 0
