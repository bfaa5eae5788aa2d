"""The MQTT topic tree of protocol v1.

Upstream (gateway to cloud)::

    mimamori/v1/up/{tenant}/{gateway}/{kind}

Downstream (cloud to gateway)::

    mimamori/v1/down/{tenant}/{gateway}/ack       acknowledgements of committed sequences
    mimamori/v1/down/{tenant}/{gateway}/command   commands (QoS 1)
    mimamori/v1/down/{tenant}/intel               threat-intelligence bundle (retained)

Ids are lowercase ``[a-z0-9][a-z0-9_-]{0,62}`` so they never contain MQTT wildcards or
separators. Splitting up and down at the third level lets the ingester subscribe to
``mimamori/v1/up/#`` without seeing its own acknowledgements.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from mimamori.protocol.errors import TopicMismatch

PREFIX = "mimamori/v1"
UP = f"{PREFIX}/up"
DOWN = f"{PREFIX}/down"

#: Kinds a gateway publishes, each on its own topic.
UP_KINDS = ("heartbeat", "status", "flows", "devices", "alerts", "sensor")
#: The shared-subscription group all ingesters join, so the broker splits the load.
SHARE_GROUP = "mimamori-ingest"
#: What an ingester subscribes to.
INGEST_SUBSCRIPTION = f"$share/{SHARE_GROUP}/{UP}/#"

ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class UpTopic(NamedTuple):
    tenant: str
    gateway: str
    kind: str


def valid_id(value: str) -> bool:
    return bool(ID_RE.match(value))


def _check_id(what: str, value: str) -> str:
    if not valid_id(value):
        raise ValueError(f"{what} {value!r} is not a valid id (lowercase [a-z0-9_-], 1-63 chars)")
    return value


def up(tenant: str, gateway: str, kind: str) -> str:
    """Topic a gateway publishes messages of ``kind`` on."""
    if kind not in UP_KINDS:
        raise ValueError(f"unknown upstream kind {kind!r}")
    return f"{UP}/{_check_id('tenant', tenant)}/{_check_id('gateway', gateway)}/{kind}"


def up_subtree(tenant: str, gateway: str) -> str:
    """Topic filter covering everything one gateway may publish (for broker ACLs)."""
    return f"{UP}/{_check_id('tenant', tenant)}/{_check_id('gateway', gateway)}/#"


def ack(tenant: str, gateway: str) -> str:
    return f"{DOWN}/{_check_id('tenant', tenant)}/{_check_id('gateway', gateway)}/ack"


def command(tenant: str, gateway: str) -> str:
    return f"{DOWN}/{_check_id('tenant', tenant)}/{_check_id('gateway', gateway)}/command"


def intel(tenant: str) -> str:
    return f"{DOWN}/{_check_id('tenant', tenant)}/intel"


def parse_up(topic: str) -> UpTopic:
    """Split an upstream topic; raise :class:`TopicMismatch` if it is not one."""
    parts = topic.split("/")
    if len(parts) != 6 or "/".join(parts[:3]) != UP:
        raise TopicMismatch(f"not an upstream v1 topic: {topic[:200]!r}")
    tenant, gateway, kind = parts[3:]
    if not (valid_id(tenant) and valid_id(gateway)):
        raise TopicMismatch(f"invalid tenant or gateway id in topic {topic[:200]!r}")
    if kind not in UP_KINDS:
        raise TopicMismatch(f"unknown kind {kind!r} in topic")
    return UpTopic(tenant, gateway, kind)
