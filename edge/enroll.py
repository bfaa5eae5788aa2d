"""``mimamori edge enroll``: trade the box's one-time token for its broker credential.

The gateway calls the cloud's enrollment API over HTTPS, verifying the API's certificate
against the CA given (``--ca``; the system's CAs otherwise), and receives its gateway id,
tenant, MQTT username and password and the broker's CA certificate. It writes into its
state directory, each file created with mode 0600:

- ``credential.toml``: username and password (``mqtt.credential_file``);
- ``broker-ca.pem``: the CA the broker's certificate must chain to (``mqtt.ca_file``);
- the agent's configuration (``--config-out``, default ``<state>/edge.toml``), pointing at
  both, so ``mimamori edge run --config <that file>`` works at once.

A token works once: if the answer is lost, an operator issues a new one. Re-enrolling
replaces the credential; the cloud disconnects anything still using the old one.
"""

from __future__ import annotations

import json
import os
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mimamori.edge import config as config_mod
from mimamori.edge.errors import EdgeError
from mimamori.protocol import topics

ENROLL_PATH = "/v1/enroll"
#: The answer is a few kilobytes (mostly the CA certificate); anything larger is not ours.
MAX_RESPONSE_BYTES = 256 * 1024


class EnrollError(EdgeError):
    """Enrollment failed; the message says why and what to do."""


@dataclass(frozen=True, kw_only=True)
class Enrollment:
    """What the cloud returned."""

    tenant: str
    gateway: str
    host: str
    port: int
    username: str
    password: str = field(repr=False)
    client_id: str
    ca_pem: str


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _toml_str(value: str) -> str:
    # json's string escaping is valid TOML basic-string escaping for these values.
    return json.dumps(value)


def _parse(doc: Any) -> Enrollment:
    try:
        mqtt = doc["mqtt"]
        result = Enrollment(
            tenant=str(doc["tenant"]),
            gateway=str(doc["gateway"]),
            host=str(mqtt["host"]),
            port=int(mqtt["port"]),
            username=str(mqtt["username"]),
            password=str(mqtt["password"]),
            client_id=str(mqtt["client_id"]),
            ca_pem=str(mqtt["ca_pem"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise EnrollError(f"the enrollment service sent an unexpected answer ({exc})") from exc
    if not (topics.valid_id(result.tenant) and topics.valid_id(result.gateway)):
        raise EnrollError("the enrollment service sent an invalid tenant or gateway id")
    if "BEGIN CERTIFICATE" not in result.ca_pem or not result.password:
        raise EnrollError("the enrollment service sent no CA certificate or no password")
    return result


def request_enrollment(
    *, url: str, token: str, ssl_context: ssl.SSLContext, timeout: float = 30.0
) -> Enrollment:
    """POST the token to ``url`` + ``/v1/enroll`` over HTTPS and parse the answer."""
    if not url.startswith("https://"):
        raise EnrollError(f"{url}: enrollment needs an https:// URL (the answer is a secret)")
    req = urllib.request.Request(
        url.rstrip("/") + ENROLL_PATH,
        data=json.dumps({"token": token.strip()}).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=ssl_context) as resp:
            body = resp.read(MAX_RESPONSE_BYTES + 1)
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            raise EnrollError(
                "the token was refused: it is unknown, expired or already used. Ask the "
                "operator for a new one."
            ) from exc
        raise EnrollError(f"the enrollment service answered HTTP {exc.code}; retry later") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise EnrollError(f"cannot reach {url}: {exc}") from exc
    if len(body) > MAX_RESPONSE_BYTES:
        raise EnrollError("the enrollment service's answer is too large")
    try:
        return _parse(json.loads(body))
    except ValueError as exc:
        raise EnrollError(f"the enrollment service's answer is not JSON ({exc})") from exc


def write_state(result: Enrollment, *, state_dir: Path, config_out: Path | None = None) -> Path:
    """Write credential, broker CA and configuration; return the configuration's path."""
    state_dir = state_dir.resolve()
    cred = state_dir / "credential.toml"
    ca = state_dir / "broker-ca.pem"
    out = config_out or state_dir / "edge.toml"
    _write_private(ca, result.ca_pem)
    _write_private(
        cred,
        f"username = {_toml_str(result.username)}\npassword = {_toml_str(result.password)}\n",
    )
    _write_private(
        out,
        "# Written by 'mimamori edge enroll'; see edge/example.toml for every setting.\n"
        "[gateway]\n"
        f"id = {_toml_str(result.gateway)}\n"
        f"tenant = {_toml_str(result.tenant)}\n\n"
        "[mqtt]\n"
        f"host = {_toml_str(result.host)}\n"
        f"port = {result.port}\n"
        f"ca_file = {_toml_str(str(ca))}\n"
        f"credential_file = {_toml_str(str(cred))}\n"
        f"client_id = {_toml_str(result.client_id)}\n\n"
        "[outbox]\n"
        f"path = {_toml_str(str(state_dir / 'outbox.db'))}\n",
    )
    config_mod.load(out)  # what we wrote must be a configuration the agent accepts
    return out


def enroll(
    *,
    url: str,
    token: str,
    state_dir: Path,
    ca_file: Path | None = None,
    config_out: Path | None = None,
) -> tuple[Enrollment, Path]:
    """Enroll this gateway: request the credential, then write it and a configuration."""
    try:
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise EnrollError(f"--ca {ca_file}: not a readable PEM CA certificate ({exc})") from exc
    result = request_enrollment(url=url, token=token, ssl_context=context)
    try:
        return result, write_state(result, state_dir=state_dir, config_out=config_out)
    except OSError as exc:
        raise EnrollError(f"cannot write the credential into {state_dir}: {exc}") from exc
