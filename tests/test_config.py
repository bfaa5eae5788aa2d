"""The gateway configuration: the example parses, errors name the field and the fix."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from mimamori.edge import config as cfg
from mimamori.edge.errors import ConfigError

EXAMPLE = Path(cfg.__file__).with_name("example.toml")

MINIMAL = """
[gateway]
id = "gw1"
tenant = "acme"

[mqtt]
host = "127.0.0.1"
port = 1883
insecure_plaintext = true
"""


def secret(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    os.chmod(path, mode)
    return path


def example_with(tmp_path: Path, **replace: str) -> Path:
    """The shipped example, with its credential and CA paths pointed into ``tmp_path``."""
    text = EXAMPLE.read_text()
    cred = secret(tmp_path / "credential.toml", 'username = "gw-example-01"\npassword = "s3cret"\n')
    text = text.replace("/etc/mimamori/credential.toml", str(cred))
    text = text.replace('ca_file = "/etc/mimamori/broker-ca.pem"', 'ca_file = ""')
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / "edge.toml"
    path.write_text(text)
    return path


def test_example_config_is_valid(tmp_path: Path) -> None:
    config = cfg.load(example_with(tmp_path))
    assert config.gateway.id == "gw-example-01"
    assert config.mqtt.port == 8883 and not config.mqtt.insecure_plaintext
    assert config.outbox.budget_mb == 512
    assert config.heartbeat.interval_s == 30.0
    creds = cfg.credentials(config)
    assert creds is not None and creds.username == "gw-example-01"
    assert "s3cret" not in repr(creds)
    context = cfg.ssl_context(config)
    assert context is not None and context.check_hostname


def test_defaults_fill_missing_sections() -> None:
    config = cfg.parse(MINIMAL)
    assert config.capture.interface == ""
    assert config.outbox.budget_mb == 512
    assert config.mqtt.window == 64
    assert cfg.credentials(config) is None  # anonymous only with plaintext on loopback
    assert cfg.ssl_context(config) is None


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("port = 8883", 'port = "abc"',
         "mqtt.port: expected an integer 1-65535, got 'abc'. Set mqtt.port to the broker's "
         "TLS port, usually 8883."),
        ("port = 8883", "port = 70000", "mqtt.port: expected an integer 1-65535, got 70000."),
        ('host = "mqtt.example.net"', "hots = 1", "mqtt.hots: unknown setting."),
        ('id = "gw-example-01"', 'id = "GW 01"', "gateway.id: 'GW 01' is not a valid id."),
        ("budget_mb = 512", "budget_mb = 0", "outbox.budget_mb: expected an integer number"),
        ('home_net = ["192.168.1.0/24"]', 'home_net = ["192.168.1.300/24"]',
         "capture.home_net: '192.168.1.300/24' is not a network."),
        ("interval_s = 30", "interval_s = -1", "heartbeat.interval_s: expected a number"),
        ("insecure_plaintext = false", "insecure_plaintext = true",
         "mqtt.insecure_plaintext: allowed only for a broker on loopback"),
        ("backoff_max_s = 60", "backoff_max_s = 0.5", "mqtt.backoff_max_s: 0.5 is below"),
        ('tenant = "example-co"', "", "gateway.tenant: missing, expected a string."),
        ("[gateway]", "[gateway", "not valid TOML"),
    ],
)  # fmt: skip
def test_errors_name_field_and_fix(tmp_path: Path, old: str, new: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        cfg.load(example_with(tmp_path, **{old: new}))
    assert expected in str(err.value)


def test_missing_credential_is_an_error_with_a_fix(tmp_path: Path) -> None:
    path = example_with(tmp_path)
    text = path.read_text()
    text = "\n".join(line for line in text.splitlines() if not line.startswith("credential_file"))
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"no default\. Run 'mimamori edge enroll'"):
        cfg.load(path)


def test_credential_files_are_checked(tmp_path: Path) -> None:
    path = example_with(tmp_path)
    cred = tmp_path / "credential.toml"
    os.chmod(cred, 0o644)
    with pytest.raises(ConfigError, match=r"readable by everyone\. Run: chmod 600"):
        cfg.load(path)
    secret(cred, 'username = "gw-example-01"\n')
    with pytest.raises(ConfigError, match="lacks username or password"):
        cfg.load(path)
    cred.unlink()
    with pytest.raises(ConfigError, match="does not exist"):
        cfg.load(path)

    pw = secret(tmp_path / "pw", "hunter2\n")
    text = MINIMAL.replace("insecure_plaintext = true", f'password_file = "{pw}"\nca_file = ""')
    text = text.replace("127.0.0.1", "broker.example.net")
    creds = cfg.credentials(cfg.parse(text))
    assert creds == cfg.Credentials("gw1", "hunter2")  # username defaults to the gateway id


def test_missing_file_and_bad_ca(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        cfg.load(tmp_path / "nope.toml")
    bad_ca = tmp_path / "ca.pem"
    bad_ca.write_text("not a certificate")
    path = example_with(tmp_path, **{'ca_file = ""': f'ca_file = "{bad_ca}"'})
    with pytest.raises(ConfigError, match=r"mqtt\.ca_file: .* is not a PEM CA certificate"):
        cfg.load(path)


def test_config_hash_is_normalised() -> None:
    a = cfg.parse(MINIMAL)
    # Same settings, other order, comments and an explicit default: same hash.
    b = cfg.parse(
        "# comment\n[mqtt]\ninsecure_plaintext = true\nport = 1883\nhost = '127.0.0.1'\n"
        "window = 64\n[gateway]\ntenant = 'acme'\nid = 'gw1'\n"
    )
    assert cfg.config_hash(a) == cfg.config_hash(b)
    c = cfg.parse(MINIMAL.replace("port = 1883", "port = 1884"))
    assert cfg.config_hash(a) != cfg.config_hash(c)
    assert len(cfg.config_hash(a)) == 64
