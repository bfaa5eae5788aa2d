"""``mimamori edge factory-reset``: the site's data and the credentials go, nothing else."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from mimamori.edge.cli import main
from mimamori.edge.outbox import Outbox
from mimamori.protocol import Heartbeat


def _secret(path: Path, text: str) -> Path:
    path.write_text(text)
    os.chmod(path, 0o600)
    return path


@pytest.fixture
def site(tmp_path: Path) -> dict[str, Path]:
    """A gateway's files as enrollment, the agent and the sensor listener leave them."""
    state = tmp_path / "var-lib-mimamori"
    state.mkdir()
    etc = tmp_path / "etc-mimamori"
    etc.mkdir()
    sensors = state / "sensors"
    sensors.mkdir()
    cred = _secret(state / "credential.toml", 'username = "gw-1"\npassword = "s3cret"\n')
    (state / "broker-ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    (state / "edge.toml").write_text("# written by enrollment\n")
    _secret(sensors / "relay.password", "relay-secret\n")
    _secret(sensors / "s1.password", "sensor-secret\n")
    keep = state / "notes.txt"  # not the gateway's: must survive
    keep.write_text("the operator's own file\n")
    outbox = state / "queue.db"
    box = Outbox(path=outbox)
    box.append(Heartbeat(gateway="gw-1", seq=0, sent_at=1.0, uptime_s=1.0,
                         agent_version="t", config_hash="h"))  # fmt: skip
    box.close()
    config = etc / "edge.toml"
    config.write_text(
        f'[gateway]\nid = "gw-1"\ntenant = "acme"\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = 1883\ninsecure_plaintext = true\n'
        f'credential_file = "{cred}"\n'
        f'[outbox]\npath = "{outbox}"\n'
        f'[sensors]\nhost = "127.0.0.1"\ncredentials_dir = "{sensors}"\n'
    )
    return {"state": state, "config": config, "outbox": outbox, "keep": keep, "sensors": sensors}


def _gateway_files(site: dict[str, Path]) -> list[Path]:
    state = site["state"]
    return [
        state / "credential.toml", state / "broker-ca.pem", state / "edge.toml",
        site["sensors"] / "relay.password", site["sensors"] / "s1.password", site["outbox"],
    ]  # fmt: skip


def test_without_yes_it_lists_and_deletes_nothing(
    site: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["factory-reset", "--config", str(site["config"]), "--state-dir", str(site["state"])]
    assert main(args) == 0
    out = capsys.readouterr().out
    for path in _gateway_files(site):
        assert str(path) in out
        assert path.exists()
    assert str(site["keep"]) not in out
    assert "--yes" in out


def test_reset_erases_data_and_credentials_and_keeps_the_rest(
    site: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    wal_side = [p for p in site["state"].iterdir() if p.name.startswith("queue.db-")]
    args = ["factory-reset", "--config", str(site["config"]), "--state-dir", str(site["state"]),
            "--yes"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    for path in [*_gateway_files(site), *wal_side]:
        assert not path.exists(), path
    assert site["keep"].exists() and site["config"].exists()
    removed = len(_gateway_files(site)) + len(wal_side)
    assert f"removed {removed} files" in out and f"{removed} 個のファイルを削除しました" in out
    assert "mimamori cloud gateway revoke --gateway gw-1" in out
    # The secret itself is never printed.
    assert "s3cret" not in out and "sensor-secret" not in out
    # A second run finds nothing left.
    assert main(args) == 0
    assert "nothing to remove" in capsys.readouterr().out


def test_state_dir_alone_removes_what_enrollment_wrote(
    site: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["factory-reset", "--state-dir", str(site["state"]), "--yes"]) == 0
    assert not (site["state"] / "credential.toml").exists()
    assert not (site["state"] / "edge.toml").exists()
    # Without the configuration the outbox at a custom path is not known: it stays.
    assert site["outbox"].exists()
    assert "<gateway>" in capsys.readouterr().out
