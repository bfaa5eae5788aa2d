"""``mimamori soc`` against the real API served by uvicorn over HTTPS (private CA)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import uvicorn
from conftest import Database
from mimamori.cloud.pki import CertificateAuthority
from mimamori.simulators.services import free_port
from test_soc_api import make_app, seed, token

from mimamori.cli import main as mimamori_main


@dataclass
class Api:
    url: str
    ca: Path
    dsn: str
    ids: dict[str, int]


@pytest.fixture
def api(plain_db: Database, tmp_path: Path) -> Iterator[Api]:
    ids = seed(plain_db.dsn)
    ca = CertificateAuthority.create(common_name="soc test CA")
    cert, key = ca.issue_server(common_name="api", hosts=["127.0.0.1"]).write(tmp_path, "api")
    ca_file = ca.write(tmp_path / "ca")
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            make_app(plain_db.dsn),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            ssl_certfile=str(cert),
            ssl_keyfile=str(key),
        )
    )
    thread = threading.Thread(target=server.run, name="soc-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    yield Api(f"https://127.0.0.1:{port}", ca_file, plain_db.dsn, ids)
    server.should_exit = True
    thread.join(10)


def soc(
    api: Api, user: str, *args: str, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    bearer = token(api.dsn, user)["authorization"].split()[1]
    code = mimamori_main(["soc", "--url", api.url, f"--token={bearer}", "--ca", str(api.ca), *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_soc_cli_workflow(api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    i = str(api.ids["ta"])
    code, out, _ = soc(api, "ana", "incidents", "--min-severity", "high", capsys=capsys)
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split()[:4] == ["id", "tenant", "severity", "status"]
    assert [r.split()[:4] for r in rows] == [[i, "ta", "high", "open"]]
    code, out, _ = soc(api, "ana", "--json", "alerts", "--tenant", "ta", capsys=capsys)
    assert code == 0 and {a["tenant"] for a in json.loads(out)} == {"ta"}
    assert soc(api, "ana", "ack", i, capsys=capsys)[0] == 0
    assert soc(api, "ana", "assign", i, "root", capsys=capsys)[0] == 0
    esc = soc(
        api, "ana", "escalate", i, "--severity", "critical", "--reason", "暗号化", capsys=capsys
    )
    assert esc[0] == 0 and "critical" in esc[1]
    code, out, _ = soc(
        api,
        "ana",
        "--json",
        "dispatch",
        i,
        "--who",
        "田中",
        "--outcome",
        "fixed",
        "--note",
        "LAN ケーブルを抜いた",
        capsys=capsys,
    )
    assert code == 0 and json.loads(out)["status"] == "dispatched"
    assert soc(api, "ana", "note", i, "お客様に電話済み", capsys=capsys)[0] == 0
    assert soc(api, "ana", "resolve", i, "--note", "復旧", capsys=capsys)[0] == 0
    code, out, _ = soc(api, "ana", "show", i, capsys=capsys)
    assert code == 0 and "resolution: 復旧" in out
    kinds = [
        line.split()[1]
        for line in out.splitlines()
        if line.startswith("2026-") or line[:4].isdigit()
    ]
    assert {"alert", "action", "note", "dispatch"} <= set(kinds)
    code, out, _ = soc(api, "root", "--json", "audit", "--actor", "ana", capsys=capsys)
    actions = [e["action"] for e in json.loads(out)]
    assert actions[:3] == ["incident.show", "incident.resolve", "incident.note"]


def test_soc_cli_errors_are_clear(api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    i = str(api.ids["ta"])
    code, _, err = soc(api, "ana", "resolve", i, "--note", "x", capsys=capsys)
    assert code == 1 and "409" in err and "acknowledge it first" in err
    code, _, err = soc(api, "ana", "ack", str(api.ids["tb"]), capsys=capsys)
    assert code == 1 and "404" in err
    code, _, err = soc(api, "ana", "audit", capsys=capsys)
    assert code == 1 and "403" in err and "admin" in err
    plain = api.url.replace("https://", "http://")
    assert mimamori_main(["soc", "--url", plain, "--token", "t", "incidents"]) == 1
    assert "must be https://" in capsys.readouterr().err
    # Without the private CA the certificate is not trusted.
    assert mimamori_main(["soc", "--url", api.url, "--token", "t", "incidents"]) == 1
    assert "certificate" in capsys.readouterr().err.lower()
    with psycopg.connect(api.dsn) as conn:
        status = conn.execute("SELECT status FROM incidents WHERE id = %s", (int(i),)).fetchone()
    assert status == ("open",)


def test_soc_cli_reads_the_environment(
    api: Api, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MIMAMORI_API_URL", api.url)
    monkeypatch.setenv("MIMAMORI_API_TOKEN", token(api.dsn, "bob")["authorization"].split()[1])
    monkeypatch.setenv("MIMAMORI_API_CA", str(api.ca))
    assert mimamori_main(["soc", "--json", "incidents"]) == 0
    assert [i["id"] for i in json.loads(capsys.readouterr().out)] == [api.ids["tb"]]
    monkeypatch.delenv("MIMAMORI_API_TOKEN")
    token_file = api.ca.parent / "token"
    token_file.write_text(token(api.dsn, "ana")["authorization"].split()[1] + "\n")
    assert mimamori_main(["soc", "--json", "--token-file", str(token_file), "incidents"]) == 0
    assert {i["tenant"] for i in json.loads(capsys.readouterr().out)} == {"ta"}


def test_soc_cli_notify_settings(
    api: Api, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    secret = tmp_path / "hook.key"
    secret.write_text("0123456789abcdef-secret\n")
    args = [
        "notify-set",
        "ta",
        "--webhook",
        "https://hooks.example/ta",
        "--secret-file",
        str(secret),
        "--email",
        "soc@example.test",
        "--max-per-hour",
        "5",
    ]
    assert soc(api, "ana", *args, capsys=capsys)[0] == 1  # admin only
    code, out, _ = soc(api, "root", "--json", *args, capsys=capsys)
    assert code == 0
    assert json.loads(out) == {
        "tenant": "ta",
        "webhook_url": "https://hooks.example/ta",
        "has_webhook_secret": True,
        "email_to": ["soc@example.test"],
        "max_per_hour": 5,
        "enabled": True,
    }
    code, out, _ = soc(api, "root", "notify-show", "ta", capsys=capsys)
    assert code == 0 and "secret" not in out.split("\n")[1]
    with psycopg.connect(api.dsn) as conn:
        row = conn.execute("SELECT webhook_secret FROM notify_settings").fetchone()
    assert row == ("0123456789abcdef-secret",)
    code, _, err = soc(api, "root", "notify-show", "tb", capsys=capsys)
    assert code == 1 and "404" in err
    code, _, err = soc(api, "root", "notify-set", "nope", "--email", "a@b.c", capsys=capsys)
    assert code == 1 and "no tenant 'nope'" in err
    code, _, err = soc(api, "root", "notify-set", "ta", "--webhook", "ftp://x", capsys=capsys)
    assert code == 1 and "422" in err and "webhook_url" in err
