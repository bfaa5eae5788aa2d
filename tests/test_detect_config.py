"""The detection thresholds file: complete, commented, validated, overridable."""

from __future__ import annotations

from importlib import resources

import pytest
from mimamori.detect import ConfigError, DetectConfig, default_dict, load_config


def test_defaults_load_and_are_typed() -> None:
    cfg = load_config()
    assert isinstance(cfg, DetectConfig)
    assert cfg.scan.vertical_ports == 10
    assert cfg.bruteforce.ports["ssh"] == [22, 2222]
    assert cfg.old_os.user_agents[0].end_of_support.year == 2010


def test_every_setting_has_a_comment() -> None:
    """Each key of defaults.toml is preceded by a comment (in its run of lines)."""
    text = resources.files("mimamori.detect").joinpath("defaults.toml").read_text("utf-8")
    lines = text.splitlines()
    uncommented = []
    for i, line in enumerate(lines):
        if "=" not in line or line.startswith(("#", " ", "]", "[", "{")):
            continue
        j = i - 1
        while j >= 0 and lines[j].strip() and not lines[j].startswith(("#", "[")):
            j -= 1  # a run of related keys shares the comment above it
        if j < 0 or not lines[j].startswith("#"):
            uncommented.append(line.split("=")[0].strip())
    assert not uncommented, f"settings without a comment: {uncommented}"


@pytest.mark.parametrize(
    ("override", "check"),
    [
        ({"scan": {"vertical_ports": 25}}, lambda c: c.scan.vertical_ports == 25),
        # partial: the other keys of the section keep their defaults
        ({"scan": {"vertical_ports": 25}}, lambda c: c.scan.horizontal_hosts == 16),
        # maps below a section are replaced wholesale (a tenant can drop an entry)
        ({"bruteforce": {"ports": {"ssh": [22]}}}, lambda c: c.bruteforce.ports == {"ssh": [22]}),
        ("[beacon]\nthreshold = 0.9\n", lambda c: c.beacon.threshold == 0.9),
        (
            {"exposure": {"services": [{"name": "x", "ports": [1], "severity": "low"}]}},
            lambda c: [s.name for s in c.exposure.services] == ["x"],
        ),
    ],
)
def test_overrides(override: object, check: object) -> None:
    cfg = load_config(override)
    assert check(cfg)  # type: ignore[operator]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"scan": {"vertcal_ports": 3}}, "scan.vertcal_ports"),  # typo
        ({"scann": {}}, "scann"),
        ({"scan": {"vertical_ports": 0}}, "vertical_ports"),  # out of range
        ({"scan": {"completed_weight": 1.5}}, "completed_weight"),
        ({"beacon": {"severity": "urgent"}}, "severity"),
        ({"scan": {"window_s": "five minutes"}}, "window_s"),
        ("[scan\nx=1", "not valid TOML"),
        ({"scan": {"ignore_sources": ["10.0.0.0/8", "scanner.local"]}}, "scanner.local"),
    ],
)
def test_invalid_overrides_name_the_key(override: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(override)


def test_default_dict_is_a_fresh_copy() -> None:
    d = default_dict()
    d["scan"]["vertical_ports"] = 1
    assert default_dict()["scan"]["vertical_ports"] == 10


def test_public_surface_is_sorted_and_complete() -> None:
    import mimamori.detect as detect

    assert detect.__all__ == sorted(detect.__all__)
    for name in detect.__all__:
        assert hasattr(detect, name), name
