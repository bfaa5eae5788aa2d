"""``mimamori cloud broker init|revoke|add-ingester``, ``token issue``, ``user add|revoke``."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import pytest
from conftest import Database
from mimamori.cloud import broker, registry
from mimamori.cloud.api import auth
from mimamori.cloud.api.cli import read_pepper
from mimamori.cloud.api.enroll import spend_token
from mimamori.cloud.cli import main as cloud_main
from mimamori.cloud.migrate import migrate
from mimamori.simulators.services import Mosquitto, free_port
from paho.mqtt.enums import CallbackAPIVersion


def run(*argv: str) -> int:
    return cloud_main(list(argv))


def test_broker_init_writes_private_secrets_and_a_closed_config(tmp_path: Path) -> None:
    d = tmp_path / "cloud"
    assert run("broker", "init", "--dir", str(d), "--host", "localhost") == 0
    for name in ("ca.key", "broker.key", "api.key", "pepper", "dynamic-security.json",
                 "dynamic-security.json.admin"):  # fmt: skip
        assert stat.S_IMODE((d / name).stat().st_mode) == 0o600, name
    conf = (d / "mosquitto.conf").read_text()
    assert "allow_anonymous false" in conf and "certfile" in conf and "plugin " in conf
    assert "allow_anonymous true" not in conf
    assert len(read_pepper(d)) == 32
    # Running it again must not replace the broker's users (every gateway's credential).
    assert run("broker", "init", "--dir", str(d), "--host", "localhost") == 1


def test_token_user_ingester_and_revoke_commands(
    tmp_path: Path, plain_db: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    migrate(plain_db.dsn)
    d, port = tmp_path / "cloud", free_port()
    assert run("broker", "init", "--dir", str(d), "--host", "127.0.0.1", "--port", str(port)) == 0
    conf = d / "mosquitto.conf"
    if os.geteuid() == 0:  # Mosquitto drops root unless told to stay (the keys are 0600)
        conf.write_text(conf.read_text() + "user root\n")
    common = ("--dsn", plain_db.dsn, "--secrets", str(d))
    capsys.readouterr()
    assert run("token", "issue", *common, "--tenant", "tc", "--gateway", "gw-c") == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    assert run("user", "add", *common, "--user", "ana", "--role", "analyst", "--tenant", "tc") == 0
    api_token = capsys.readouterr().out.strip()
    pepper = read_pepper(d)
    with psycopg.connect(plain_db.dsn) as conn:
        who = auth.authenticate(conn, pepper=pepper, token=api_token)
        assert who is not None and who.role == "analyst" and who.tenants == {"tc"}
        assert spend_token(conn, pepper=pepper, token=token) == ("tc", "gw-c")
        conn.rollback()  # leave it unspent: revocation must spend it
    admin_port = ("--admin-port", str(port))
    # Not a `with`: Mosquitto's cleanup would delete the directory and its pepper.
    mosquitto = Mosquitto(port=port, workdir=d).start()
    try:
        revoke = ("broker", "revoke", "--dsn", plain_db.dsn, "--dir", str(d), "--gateway", "gw-c")
        assert run(*revoke, *admin_port) == 0
        assert "1 token(s) spent" in capsys.readouterr().out
        assert (
            run("broker", "add-ingester", "--dir", str(d), "--username", "ing-1", *admin_port) == 0
        )
        cred = d / "ingester-ing-1.toml"
        assert stat.S_IMODE(cred.stat().st_mode) == 0o600
        username, password = broker.read_credential(cred)
        ingest = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="ing-1")
        ingest.username_pw_set(username, password)
        ingest.tls_set(ca_certs=str(d / "ca.pem"))
        ingest.connect("127.0.0.1", port)
        ingest.loop_start()
        deadline = time.monotonic() + 5
        while not ingest.is_connected() and time.monotonic() < deadline:
            time.sleep(0.02)
        connected = ingest.is_connected()  # true only once the broker accepted the login
        ingest.disconnect()
        ingest.loop_stop()
        assert connected
    finally:
        mosquitto.stop()
    assert run("user", "revoke", *common, "--user", "ana") == 0
    assert "1 token(s) revoked" in capsys.readouterr().out
    with psycopg.connect(plain_db.dsn) as conn:
        assert registry.get_gateway(conn, "gw-c").revoked
        assert auth.authenticate(conn, pepper=pepper, token=api_token) is None
        actions = conn.execute("SELECT actor, action, result FROM audit_log ORDER BY id").fetchall()
    assert actions == [
        ("cli", "token.issue", "ok"),
        ("cli", "user.add", "ok"),
        ("cli", "gateway.revoke", "ok"),
        ("cli", "user.revoke", "ok"),
    ]
