"""Well-known factory credentials (``default_credentials.toml``) and the check against them.

Pure and side-effect free: :meth:`DefaultCredentials.match` says whether a username and
password pair is a known factory default and, if so, where it is one. Callers record the
finding, never the password (see :meth:`~mimamori.detect.labels.Observer.login`).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from typing import Any

from mimamori.detect.errors import ConfigError


@dataclass(frozen=True)
class Credential:
    """One factory credential: ``password`` is ignored when ``any_password``."""

    user: str
    password: str
    seen_on: str
    any_password: bool = False


class DefaultCredentials:
    """The factory-credential list, indexed by lower-case username."""

    def __init__(self, credentials: tuple[Credential, ...]) -> None:
        self.credentials = credentials
        self._by_user: dict[str, list[Credential]] = {}
        for cred in credentials:
            self._by_user.setdefault(cred.user.lower(), []).append(cred)

    def match(self, user: str, password: str) -> Credential | None:
        """The factory credential that ``user``/``password`` is, or None."""
        for cred in self._by_user.get(user.lower(), ()):
            if cred.any_password or cred.password == password:
                return cred
        return None

    def __len__(self) -> int:
        return len(self.credentials)


def parse_credentials(doc: dict[str, Any]) -> DefaultCredentials:
    """Build the list from a parsed TOML document; :class:`ConfigError` names the entry."""
    creds: list[Credential] = []
    for n, entry in enumerate(doc.get("credential", []), start=1):
        try:
            any_password = bool(entry.get("any_password", False))
            if not any_password and "password" not in entry:
                raise KeyError("password (or any_password = true)")
            creds.append(
                Credential(
                    user=str(entry["user"]),
                    password=str(entry.get("password", "")),
                    seen_on=str(entry["seen_on"]),
                    any_password=any_password,
                )
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(
                f"default_credentials.toml: credential #{n} lacks {exc}; "
                "each needs user, password (or any_password = true) and seen_on"
            ) from exc
    if not creds:
        raise ConfigError("default_credentials.toml: no [[credential]] entries")
    return DefaultCredentials(tuple(creds))


_CACHE: list[DefaultCredentials] = []


def load_credentials() -> DefaultCredentials:
    """The packaged list (parsed once per process)."""
    if not _CACHE:
        text = (
            resources.files("mimamori.detect.labels")
            .joinpath("default_credentials.toml")
            .read_text("utf-8")
        )
        _CACHE.append(parse_credentials(tomllib.loads(text)))
    return _CACHE[0]
