"""Configuration updates accepted only when the cloud authenticated them.

An update arrives on ``site/sensors/{sensor_id}/config`` as JSON::

    {"body": "<JSON text>", "mac": "<hex HMAC-SHA256>"}

``body`` is itself JSON text, ``{"sensor": id, "counter": n, "settings": {...}}``, and the
MAC is HMAC-SHA256 with the node's own key (provisioned at flashing, known only to the
node and the cloud) over ``DOMAIN + body``. Signing the exact text avoids any question of
canonical JSON. The node accepts an update only when the MAC matches, the body names this
node, and the counter is larger than that of every update accepted before (persisted), so
an old update replayed later is refused. The gateway relays updates but cannot forge them:
it does not hold the key.
"""

import binascii
import hashlib
import json

from mimamori_sensor.settings import ConfigError, Settings, save_state

#: Prefix of the signed text, so a MAC made for something else with the same key can
#: never pass as a config update.
DOMAIN = b"mimamori-sensor-config-v1\n"
#: Largest update accepted; anything bigger is refused before hashing.
MAX_UPDATE = 1024
_BLOCK = 64  # SHA-256 block size


class Rejected(Exception):
    """An update was refused; ``reason`` says why (bad_mac, replay, ...)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    """HMAC-SHA256 (RFC 2104) from ``hashlib.sha256``, which every port has built in."""
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key + bytes(_BLOCK - len(key))
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
    inner.update(message)
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))
    outer.update(inner.digest())
    return outer.digest()


def equal(a: bytes, b: bytes) -> bool:
    """Compare in time independent of where the inputs differ."""
    if len(a) != len(b):
        return False
    diff = 0
    for i in range(len(a)):
        diff |= a[i] ^ b[i]
    return diff == 0


class Verifier:
    """Checks and applies updates for one node; ``accepted``/``rejected`` count outcomes."""

    def __init__(self, *, settings: Settings, state_path: str = "/state.json") -> None:
        self.settings = settings
        self.state_path = state_path
        self.accepted = 0
        self.rejected = 0
        self.last_reason = ""

    def handle(self, payload: bytes) -> dict:
        """Verify and apply one update; return the applied changes or raise :class:`Rejected`."""
        try:
            changes = self._check(payload)
        except Rejected as exc:
            self.rejected += 1
            self.last_reason = exc.reason
            raise
        self.accepted += 1
        self.last_reason = ""
        return changes

    def _check(self, payload: bytes) -> dict:
        if len(payload) > MAX_UPDATE:
            raise Rejected("too_large")
        try:
            envelope = json.loads(payload)
            body = envelope["body"]
            mac = binascii.unhexlify(envelope["mac"])
        except (ValueError, KeyError, TypeError):
            raise Rejected("malformed")
        if not isinstance(body, str):
            raise Rejected("malformed")
        raw = body.encode()
        # Authenticate before looking inside: nothing unauthenticated is parsed further.
        if not equal(hmac_sha256(self.settings.hmac_key, DOMAIN + raw), mac):
            raise Rejected("bad_mac")
        try:
            doc = json.loads(raw)
            sensor = doc["sensor"]
            counter = doc["counter"]
            changes = doc["settings"]
        except (ValueError, KeyError, TypeError):
            raise Rejected("malformed")
        if sensor != self.settings.sensor_id:
            raise Rejected("wrong_sensor")
        if not isinstance(counter, int) or counter <= self.settings.counter:
            raise Rejected("replay")
        if not isinstance(changes, dict):
            raise Rejected("malformed")
        try:
            self.settings.apply(changes)
        except ConfigError:
            raise Rejected("invalid_setting")
        self.settings.counter = counter
        save_state(self.settings, self.state_path)
        return changes
