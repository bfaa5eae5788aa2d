"""Capped, jittered exponential backoff for reconnect loops."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(kw_only=True)
class Backoff:
    """Delays of ``base * 2**n`` seconds, capped at ``cap``, each scaled by a random factor in
    [0.5, 1] so that many ingesters restarting together do not reconnect in lockstep.
    """

    base: float = 0.2
    cap: float = 15.0
    attempt: int = 0

    def next_delay(self) -> float:
        delay = min(self.cap, self.base * (2**self.attempt))
        self.attempt = min(self.attempt + 1, 30)
        return delay * random.uniform(0.5, 1.0)

    def reset(self) -> None:
        self.attempt = 0
