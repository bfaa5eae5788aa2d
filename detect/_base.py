"""What every rule shares: the alert constructor, bounded state, the rule protocol."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from mimamori.detect._net import HomeNet
from mimamori.protocol import Alert, ArpEvent, DiscoveryEvent, FlowRecord

K = TypeVar("K")
V = TypeVar("V")

_MAC_OK = frozenset("0123456789abcdef:")


def clean_mac(mac: str) -> str:
    """A MAC as the protocol wants it (lower case, colons), or "" if it is not one."""
    mac = mac.lower()
    if len(mac) == 17 and set(mac) <= _MAC_OK and mac.count(":") == 5:
        return mac
    return ""


def make_alert(
    *,
    rule: str,
    category: str,
    severity: str,
    at: float,
    actor: str,
    target: str,
    dedup_key: str,
    summary_en: str,
    summary_ja: str,
    evidence: dict[str, Any],
    mac: str = "",
) -> Alert:
    """Build an :class:`Alert`. The id is a hash of what the alert says and when, so a
    replay of the same capture produces the same ids (idempotent upstream)."""
    digest = hashlib.sha256(f"{rule}|{dedup_key}|{at:.6f}".encode()).hexdigest()[:32]
    return Alert(
        id=digest,
        category=category,  # type: ignore[arg-type]
        severity=severity,  # type: ignore[arg-type]
        detected_at=at,
        actor=actor[:255],
        target=target[:255],
        summary_en=summary_en[:2048],
        summary_ja=summary_ja[:2048],
        dedup_key=dedup_key[:255],
        rule=rule,
        mac=clean_mac(mac),
        evidence=evidence,
    )


class Bounded(Generic[K, V]):
    """A dict that forgets its least recently touched entries beyond ``limit``."""

    def __init__(self, limit: int, factory: Callable[[], V]) -> None:
        self.limit = limit
        self.factory = factory
        self._data: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V:
        """The entry for ``key``, created if missing, marked most recently used."""
        value = self._data.get(key)
        if value is None:
            value = self.factory()
            self._data[key] = value
            if len(self._data) > self.limit:
                self._data.popitem(last=False)
        else:
            self._data.move_to_end(key)
        return value

    def peek(self, key: K) -> V | None:
        """The entry for ``key`` if present, without creating or touching it."""
        return self._data.get(key)

    def pop(self, key: K) -> None:
        """Forget ``key`` (no error if absent)."""
        self._data.pop(key, None)

    def items(self) -> Iterator[tuple[K, V]]:
        """A snapshot of the entries, oldest first (safe to pop while iterating)."""
        return iter(list(self._data.items()))

    def __len__(self) -> int:
        return len(self._data)


class Rule:
    """Base class of the real-time rules. Subclasses override what they need.

    ``now`` is traffic time (the engine's clock, from records and ticks): rules never
    read a wall clock.
    """

    name = "rule"

    def __init__(self, *, home: HomeNet) -> None:
        self.home = home

    def on_flow(self, rec: FlowRecord, now: float) -> list[Alert]:
        """Read one expired flow; return the alerts it completes."""
        return []

    def on_arp(self, event: ArpEvent, now: float) -> list[Alert]:
        """Read one ARP packet."""
        return []

    def on_discovery(self, event: DiscoveryEvent, now: float) -> list[Alert]:
        """Read one discovery fact."""
        return []

    def tick(self, now: float) -> list[Alert]:
        """Time passed: expire old state, run time-driven checks."""
        return []

    def finish(self, now: float) -> list[Alert]:
        """End of input: report what is still pending."""
        return self.tick(now)
