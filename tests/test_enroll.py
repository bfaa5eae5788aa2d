"""Enrollment end to end: the API served by uvicorn over TLS, a real dynsec Mosquitto,
``mimamori edge enroll`` writing the credential, and the gateway connecting with it.
"""

from __future__ import annotations

import ssl
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
import uvicorn
from conftest import Database
from mimamori.cloud import registry
from mimamori.cloud.api import auth
from mimamori.cloud.api.app import create_app
from mimamori.cloud.api.context import BrokerEndpoint
from mimamori.cloud.api.enroll import issue_token
from mimamori.cloud.migrate import migrate
from mimamori.cloud.pki import CertificateAuthority
from mimamori.edge import config as edge_config
from mimamori.edge.cli import main as edge_main
from mimamori.edge.enroll import EnrollError, enroll
from mimamori.protocol import topics
from mimamori.simulators.services import free_port
from test_isolation import Client, SecureBroker, secure  # noqa: F401 - a fixture

PEPPER = b"e" * 32


@dataclass
class Cloud:
    url: str
    ca: Path
    dsn: str
    broker: SecureBroker
    admin_headers: dict[str, str]

    def token(self, tenant: str, gateway: str) -> str:
        with psycopg.connect(self.dsn) as conn:
            return issue_token(conn, pepper=PEPPER, tenant=tenant, gateway=gateway)[0]


@pytest.fixture
def cloud(secure: SecureBroker, plain_db: Database, tmp_path: Path) -> Iterator[Cloud]:  # noqa: F811
    migrate(plain_db.dsn)
    directory = secure.files.directory
    if not (directory / "api.pem").exists():
        ca = CertificateAuthority.load(directory)
        ca.issue_server(common_name="localhost", hosts=["127.0.0.1", "localhost"]).write(
            directory, "api"
        )
    app = create_app(
        dsn=plain_db.dsn,
        pepper=PEPPER,
        broker=secure.admin,
        endpoint=BrokerEndpoint(
            host="127.0.0.1", port=secure.port, ca_pem=secure.files.ca.read_text()
        ),
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            ssl_certfile=str(directory / "api.pem"),
            ssl_keyfile=str(directory / "api.key"),
        ),
    )
    thread = threading.Thread(target=server.run, name="api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    with psycopg.connect(plain_db.dsn) as conn:
        auth.add_user(conn, user="root", role="admin", tenants=[])
        admin_token = auth.issue_api_token(conn, pepper=PEPPER, user="root")
    try:
        yield Cloud(
            f"https://127.0.0.1:{port}",
            secure.files.ca,
            plain_db.dsn,
            secure,
            {"authorization": f"Bearer {admin_token}"},
        )
    finally:
        server.should_exit = True
        thread.join(10)


def _connects(cloud: Cloud, config_path: Path) -> Client:
    cfg = edge_config.load(config_path)
    cred = edge_config.credentials(cfg)
    assert cred is not None and cfg.mqtt.port == cloud.broker.port
    c = Client(
        cloud.broker,
        username=cred.username,
        password=cred.password,
        client_id=cfg.mqtt.client_id,
        tls=False,
    )
    tls = edge_config.ssl_context(cfg)  # verifies the broker against the CA enrollment wrote
    assert tls is not None
    c.c.tls_set_context(tls)
    c.connect()
    return c


def test_edge_enroll_writes_private_state_and_the_gateway_connects(
    cloud: Cloud, tmp_path: Path
) -> None:
    tenant = "tenant-e"
    token = cloud.token(tenant, "gw-e1")
    state = tmp_path / "state"
    rc = edge_main(
        [
            "enroll",
            "--token",
            token,
            "--url",
            cloud.url,
            "--ca",
            str(cloud.ca),
            "--state-dir",
            str(state),
        ]
    )
    assert rc == 0
    for name in ("credential.toml", "broker-ca.pem", "edge.toml"):
        assert stat.S_IMODE((state / name).stat().st_mode) == 0o600, name
    c = _connects(cloud, state / "edge.toml")
    try:
        assert c.connected.is_set()
        assert c.subscribe(topics.ack(tenant, "gw-e1")) == [1]
    finally:
        c.close()
    # The token is spent: a second enrollment with it is refused.
    with pytest.raises(EnrollError, match="unknown, expired or already used"):
        enroll(url=cloud.url, token=token, state_dir=tmp_path / "again", ca_file=cloud.ca)


def test_enroll_refuses_an_api_it_cannot_verify(cloud: Cloud, tmp_path: Path) -> None:
    other = CertificateAuthority.create(common_name="someone else")
    other_ca = other.write(tmp_path / "other")
    token = cloud.token("tenant-e", "gw-e2")
    with pytest.raises(EnrollError, match="CERTIFICATE_VERIFY_FAILED"):
        enroll(url=cloud.url, token=token, state_dir=tmp_path / "s", ca_file=other_ca)
    with pytest.raises(EnrollError, match="https"):
        enroll(url=cloud.url.replace("https", "http"), token=token, state_dir=tmp_path / "s")
    # Nothing reached the API, so the token still works.
    enroll(url=cloud.url, token=token, state_dir=tmp_path / "s", ca_file=cloud.ca)


def test_reenrolling_revokes_the_old_credential(cloud: Cloud, tmp_path: Path) -> None:
    first_cfg = enroll(
        url=cloud.url,
        token=cloud.token("tenant-e", "gw-e3"),
        state_dir=tmp_path / "one",
        ca_file=cloud.ca,
    )[1]
    old = _connects(cloud, first_cfg)
    assert old.connected.is_set()
    second_cfg = enroll(
        url=cloud.url,
        token=cloud.token("tenant-e", "gw-e3"),
        state_dir=tmp_path / "two",
        ca_file=cloud.ca,
    )[1]
    assert old.disconnected.wait(5)  # the broker dropped the old session
    old.close()
    stale = _connects(cloud, first_cfg)
    assert not stale.connected.is_set()
    stale.close()
    new = _connects(cloud, second_cfg)
    assert new.connected.is_set()
    new.close()


def test_revoking_a_gateway_disconnects_it_and_spends_its_tokens(
    cloud: Cloud, tmp_path: Path
) -> None:
    cfg = enroll(
        url=cloud.url,
        token=cloud.token("tenant-e", "gw-e4"),
        state_dir=tmp_path / "s",
        ca_file=cloud.ca,
    )[1]
    spare = cloud.token("tenant-e", "gw-e4")  # e.g. printed on a replacement label
    c = _connects(cloud, cfg)
    with httpx.Client(verify=ssl.create_default_context(cafile=str(cloud.ca))) as http:
        r = http.post(f"{cloud.url}/v1/admin/gateways/gw-e4/revoke", headers=cloud.admin_headers)
    assert r.status_code == 200 and r.json()["tokens_spent"] == 1
    assert c.disconnected.wait(5)
    c.close()
    again = _connects(cloud, cfg)
    assert not again.connected.is_set()
    again.close()
    with psycopg.connect(cloud.dsn) as conn:
        assert registry.get_gateway(conn, "gw-e4").revoked
    with pytest.raises(EnrollError):
        enroll(url=cloud.url, token=spare, state_dir=tmp_path / "t", ca_file=cloud.ca)
