"""The ★1 criteria catalogue (``catalogue.toml``): loaded once, validated, immutable."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from mimamori.detect.errors import ConfigError

_ID_RE = re.compile(r"^S1\.1-(0[1-9]|1[0-6])$")
_NETWORK = ("yes", "partly", "no")


@dataclass(frozen=True)
class Criterion:
    """One ★1 requirement as mimamori checks it (texts are our paraphrase)."""

    id: str
    etsi: str
    title_ja: str
    title_en: str
    summary_ja: str
    summary_en: str
    network: str
    supports: str = ""
    refutes: str = ""
    reason: str = ""
    advice_ja: str = ""
    advice_en: str = ""
    #: which public sources confirm the subject (catalogue.toml header); empty when unconfirmed
    source: str = ""
    #: what is uncertain about this entry (required when ``verify``)
    note: str = ""
    #: True when the subject or ID could not be confirmed against public sources
    verify: bool = False
    decisive: bool = False


@dataclass(frozen=True)
class Kind:
    """A device type with its impact (1 low .. 3 high) and whether it is an IoT product."""

    name: str
    name_ja: str
    impact: int
    iot: bool = True
    keywords: tuple[str, ...] = ()


@dataclass(frozen=True)
class Outdated:
    pattern: re.Pattern[str]
    why: str


@dataclass(frozen=True)
class Catalogue:
    """Criteria plus the lists the checks consult; see the comments in catalogue.toml."""

    version: str
    criteria: tuple[Criterion, ...]
    min_connections: int
    lookback_days: int
    cleartext_apps: frozenset[str]
    cleartext_ports: frozenset[int]
    http_admin_ports: frozenset[int]
    legacy_apps: frozenset[str]
    encrypted_apps: frozenset[str]
    infrastructure_apps: frozenset[str]
    management_ports: frozenset[int]
    #: JA4 version code (characters 2-3) -> name, for TLS versions that refute S1.1-12
    weak_tls_versions: dict[str, str]
    update_domains: dict[str, tuple[str, ...]]
    outdated: tuple[Outdated, ...]
    kinds: tuple[Kind, ...]
    default_kind: Kind
    advice: dict[str, tuple[str, str]]
    by_id: dict[str, Criterion] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.by_id.update((c.id, c) for c in self.criteria)


def _lower(values: Any) -> frozenset[str]:
    return frozenset(str(v).lower() for v in values)


def parse_catalogue(doc: dict[str, Any]) -> Catalogue:
    """Build a :class:`Catalogue` from a parsed TOML document; :class:`ConfigError` if bad."""
    try:
        criteria = tuple(Criterion(**c) for c in doc["criterion"])
        ids = [c.id for c in criteria]
        expected = [f"S1.1-{n:02d}" for n in range(1, 17)]
        if ids != expected:
            raise ConfigError(f"catalogue must list S1.1-01..S1.1-16 in order, got {ids}")
        for c in criteria:
            if not _ID_RE.match(c.id) or c.network not in _NETWORK:
                raise ConfigError(f"{c.id}: network must be one of {_NETWORK}")
            if c.network == "no" and not c.reason:
                raise ConfigError(
                    f"{c.id}: a criterion not judgeable from the network needs a reason"
                )
            if c.verify and not c.note:
                raise ConfigError(f"{c.id}: verify = true needs a note saying what is uncertain")
            if not c.verify and not c.source:
                raise ConfigError(f"{c.id}: name the source that confirms it, or set verify = true")
        assess = doc["assessment"]
        kinds = tuple(
            Kind(
                k["name"],
                k["name_ja"],
                int(k["impact"]),
                bool(k.get("iot", True)),
                tuple(k["keywords"]),
            )
            for k in doc["kind"]
        )
        default = doc["default_kind"]
        return Catalogue(
            version=str(doc["version"]),
            criteria=criteria,
            min_connections=int(assess["min_connections"]),
            lookback_days=int(assess["lookback_days"]),
            cleartext_apps=_lower(doc["cleartext"]["apps"]),
            cleartext_ports=frozenset(int(p) for p in doc["cleartext"]["ports"]),
            http_admin_ports=frozenset(int(p) for p in doc["cleartext"]["http_admin_ports"]),
            legacy_apps=_lower(doc["legacy"]["apps"]),
            encrypted_apps=_lower(doc["transport"]["encrypted"]),
            infrastructure_apps=_lower(doc["transport"]["infrastructure"]),
            management_ports=frozenset(int(p) for p in doc["management"]["ports"]),
            weak_tls_versions={str(k): str(v) for k, v in doc["tls"]["weak_versions"].items()},
            update_domains={k: tuple(v) for k, v in doc["update_domains"].items()},
            outdated=tuple(
                Outdated(re.compile(o["pattern"], re.IGNORECASE), o["why"]) for o in doc["outdated"]
            ),
            kinds=kinds,
            default_kind=Kind(default["name"], default["name_ja"], int(default["impact"])),
            advice={k: (str(v[0]), str(v[1])) for k, v in doc["advice"].items()},
        )
    except ConfigError:
        raise
    except (KeyError, TypeError, ValueError, re.error) as exc:
        raise ConfigError(f"bad label catalogue: {exc!r}") from exc


_CACHE: list[Catalogue] = []


def load_catalogue() -> Catalogue:
    """The packaged catalogue (parsed once per process)."""
    if not _CACHE:
        text = (
            resources.files("mimamori.detect.labels").joinpath("catalogue.toml").read_text("utf-8")
        )
        _CACHE.append(parse_catalogue(tomllib.loads(text)))
    return _CACHE[0]
