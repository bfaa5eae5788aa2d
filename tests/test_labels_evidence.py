"""Label evidence beyond flow names: TLS versions from JA4 client fingerprints and from
ServerHellos (negotiated version and cipher), cleartext logins with well-known factory
credentials, HTTP Basic logins, and devices the gateway knows nothing about.

Captures come from ../shared/data; the pure parts are table-driven with hand-made values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mimamori.detect.errors import ConfigError
from mimamori.detect.labels import (
    Observer,
    assess,
    ja4_version,
    load_catalogue,
    load_credentials,
    parse_credentials,
    weaker_hello,
)
from mimamori.edge.evidence import EvidenceCollector, label_replay
from mimamori.edge.inventory import Inventory, VendorLookup
from mimamori.edge.replay import replay
from mimamori.edge.summaries import DEFAULT_HOME_NET
from mimamori.protocol import Device, DiscoveryEvent, FlowRecord

CAT = load_catalogue()
NOW = 1_700_000_000.0
PLUG = "50:c7:bf:00:c7:03"  # TP-Link HS110 in the IoT Sentinel set-up capture


def _crit(label: dict[str, Any], cid: str) -> dict[str, Any]:
    return next(c for c in label["criteria"] if c["id"] == cid)


# --- TLS versions ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fingerprint", "version"),
    [
        ("t13d1516h2_8daaf6152771_02713d6af862", "13"),
        ("t10i460400_234845559c90_282f11336259", "10"),  # the HS110 plug, below
        ("q13d0312h3_55b375c5d22e_06cda9e17597", "13"),  # QUIC
        ("ts3i050000_000000000000_000000000000", "s3"),
        ("t11d0707h1", "11"),  # first part only, as an inventory may publish it
        ("1,3,6,12,15,28,42", ""),  # nfstream puts the DHCP option list in the same field
        ("b31c0b82752ea0e2c48b8ce46e9263e5", ""),  # a JA3-style hash
        ("", ""),
    ],
)
def test_ja4_version(fingerprint: str, version: str) -> None:
    assert ja4_version(fingerprint) == version


@pytest.mark.parametrize(
    ("fingerprint", "fails"),
    [
        ("t10i460400_234845559c90_282f11336259", True),
        ("t11d0707h1_aaaaaaaaaaaa_bbbbbbbbbbbb", True),
        ("ts3i050000_000000000000_000000000000", True),
        ("t12d1510h2_f0daf39aad75_e69ac49eb88f", False),
        ("t13d1516h2_8daaf6152771_02713d6af862", False),
    ],
)
def test_weak_tls_client_refutes_protected_communication(fingerprint: str, fails: bool) -> None:
    col = EvidenceCollector(home_net=DEFAULT_HOME_NET)
    mac = "02:00:00:00:01:01"
    col.on_flow(FlowRecord(first_seen=NOW, last_seen=NOW, src_ip="192.168.1.30", src_port=40000,
                           dst_ip="203.0.113.7", dst_port=443, proto=6, src_mac=mac,
                           pkts_src2dst=5, pkts_dst2src=5, app="TLS", sni="api.example.net",
                           client_fingerprint=fingerprint))  # fmt: skip
    label = col.labels(now=NOW)[0].to_dict()
    crit = _crit(label, "S1.1-12")
    assert (crit["status"] == "fail") is fails
    legacy = [e for e in crit["evidence"] if e["kind"] == "legacy_tls"]
    assert bool(legacy) is fails
    if fails:
        assert "api.example.net" in legacy[0]["detail"]
        assert fingerprint.split("_")[0] in legacy[0]["detail"]
        assert any(a["finding"] == "legacy_tls" and a["ja"] and a["en"] for a in label["advice"])


def test_an_old_client_of_the_device_is_not_the_device_s_fault() -> None:
    """Only the ClientHello's sender is judged: a LAN server answering it is not."""
    col = EvidenceCollector(home_net=DEFAULT_HOME_NET)
    col.on_flow(FlowRecord(first_seen=NOW, last_seen=NOW, src_ip="192.168.1.31", src_port=40000,
                           dst_ip="192.168.1.32", dst_port=443, proto=6,
                           src_mac="02:00:00:00:01:02", dst_mac="02:00:00:00:01:03",
                           pkts_src2dst=5, pkts_dst2src=5, synack=1, app="TLS",
                           client_fingerprint="t10i460400_234845559c90_282f11336259"))  # fmt: skip
    labels = {lab.mac: lab.to_dict() for lab in col.labels(now=NOW)}
    assert _crit(labels["02:00:00:00:01:02"], "S1.1-12")["status"] == "fail"
    assert _crit(labels["02:00:00:00:01:03"], "S1.1-12")["status"] != "fail"


@pytest.mark.parametrize(
    ("capture", "mac", "target"),
    [
        ("tplink_hs110.pcap", PLUG, "port 50443"),  # TP-Link HS110, no SNI
        ("wemo_switch.pcap", "94:10:3e:35:01:c1", "api.xbcs.net port 8443"),  # Belkin WeMo
    ],
)
def test_tls_1_0_smart_plugs_from_their_captures(
    shared_data: Path, capture: str, mac: str, target: str
) -> None:
    """Both plugs offer TLS 1.0 at best to their clouds: seen from the raw flow records."""
    path = str(shared_data / "pcap/benign/iot_setup" / capture)
    result = replay([path], labeler=label_replay, keep_records=True)
    label = next(lab for lab in result.labels if lab["mac"] == mac)
    crit = _crit(label, "S1.1-12")
    assert crit["status"] == "fail"
    assert any(
        e["kind"] == "legacy_tls" and "TLS 1.0" in e["detail"] and target in e["detail"]
        for e in crit["evidence"]
    )
    assert label["outcome"] == "does_not_meet"


@pytest.mark.parametrize(
    ("current", "fingerprint", "kept"),
    [
        ("", "t13d1516h2_8daaf6152771_02713d6af862", "t13d1516h2"),
        ("t13d1516h2", "t10i460400_234845559c90_282f11336259", "t10i460400"),
        ("t10i460400", "t13d1516h2_8daaf6152771_02713d6af862", "t10i460400"),
        ("t12d1510h2", "ts3i050000_000000000000_000000000000", "ts3i050000"),
        ("t12d1510h2", "t00i050000_000000000000_000000000000", "t12d1510h2"),  # unknown
        ("t12d1510h2", "1,3,6,12", "t12d1510h2"),  # a DHCP fingerprint
    ],
)
def test_weaker_hello_keeps_the_worst_offer(current: str, fingerprint: str, kept: str) -> None:
    assert weaker_hello(current, fingerprint) == kept


def test_inventory_extra_carries_the_tls_finding_to_the_cloud_path() -> None:
    """A Device row with ``tls_client_ja4`` judges the same as the raw records did."""
    obs = Observer(catalogue=CAT)
    obs.device(Device(mac=PLUG, model="HS110(EU)", first_seen=NOW, last_seen=NOW,
                      extras={"tls_client_ja4": "t10i460400"}))  # fmt: skip
    label = assess(obs.devices[PLUG], catalogue=CAT, now=NOW).to_dict()
    assert _crit(label, "S1.1-12")["status"] == "fail"


# --- factory credentials ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "password", "default"),
    [
        ("admin", "admin", True),
        ("Admin", "admin", True),  # usernames compare case-insensitively
        ("admin", "Admin", False),  # passwords exactly
        ("admin", "", True),
        ("root", "xc3511", True),
        ("anonymous", "me@example.com", True),  # anonymous FTP takes any password
        ("admin", "k3#Vq9!mZ", False),
        ("alice", "admin", False),
    ],
)
def test_default_credential_list(user: str, password: str, default: bool) -> None:
    creds = load_credentials()
    assert (creds.match(user, password) is not None) is default
    assert len(creds) >= 20


def test_a_cleartext_factory_login_fails_the_default_password_criterion() -> None:
    col = EvidenceCollector(home_net=DEFAULT_HOME_NET)
    cam = "02:00:00:00:02:01"
    assert col.on_login(server_mac=cam, protocol="Telnet", user="root", password="xc3511",
                        accepted=True, ts=NOW)  # fmt: skip
    label = col.labels(now=NOW)[0].to_dict()
    crit = _crit(label, "S1.1-02")
    assert crit["status"] == "fail"
    (item,) = crit["evidence"]
    assert item["kind"] == "default_credential" and "'root'" in item["detail"]
    assert "xc3511" not in item["detail"]  # the finding, never the password
    assert label["outcome"] == "does_not_meet"
    assert label["advice"][0]["finding"] == "default_credential"


@pytest.mark.parametrize(
    ("user", "password", "accepted"),
    [
        ("admin", "admin", False),  # the device refused its factory password: good
        ("admin", "k3#Vq9!mZ", True),  # a real password
    ],
)
def test_other_logins_record_no_default_credential(
    user: str, password: str, accepted: bool
) -> None:
    obs = Observer(catalogue=CAT)
    assert not obs.login("02:00:00:00:02:02", protocol="Telnet", user=user, password=password,
                         accepted=accepted, ts=NOW)  # fmt: skip
    assert "02:00:00:00:02:02" not in obs.devices


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"credential": [{"user": "admin", "seen_on": "x"}]}, "credential #1 lacks"),
        ({"credential": [{"password": "x", "seen_on": "x"}]}, "credential #1 lacks"),
        ({"credential": []}, "no \\[\\[credential\\]\\]"),
    ],
)
def test_credential_file_errors_name_the_entry(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_credentials(doc)


# --- no evidence -----------------------------------------------------------------------


def test_devices_seen_only_in_discovery_stay_insufficient(shared_data: Path) -> None:
    """DHCP alone names a device but says nothing about its security: no pass, no fail."""
    path = str(shared_data / "pcap/benign/discovery/dhcp.pcap")
    result = replay([path], labeler=label_replay)
    assert result.labels
    for label in result.labels:
        assert label["outcome"] == "insufficient_evidence", label["mac"]
        assert {c["status"] for c in label["criteria"]} == {"unknown"}
        assert all(c["reason"] for c in label["criteria"])
    assert any(label["vendor"] for label in result.labels)  # identified, yet not passed


# --- ServerHello sessions and HTTP Basic logins, through the inventory ------------------


@pytest.mark.parametrize(
    ("extras", "status", "kind", "words"),
    [
        ({"tls_served": "0301:0005:443"}, "fail", "legacy_tls",
         "serves TLS 1.0 with TLS_RSA_WITH_RC4_128_SHA on port 443"),
        ({"tls_negotiated": "0303:000a:8443"}, "fail", "legacy_tls",
         "negotiated TLS 1.2 with TLS_RSA_WITH_3DES_EDE_CBC_SHA with a server on port 8443"),
        ({"tls_negotiated": "0304:1301:443"}, "pass", "tls_modern", "negotiated TLS 1.3"),
        ({"tls_served": "0303:c02f:443"}, "pass", "tls_modern",
         "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"),
        ({"tls_served": "0303:002f:443"}, "unknown", "", ""),  # TLS 1.2 CBC: neither
        ({"tls_served": "garbage"}, "unknown", "", ""),
        ({"login_cleartext_login": "http basic (port 80)"}, "fail", "cleartext_login",
         "takes logins in clear: http basic (port 80)"),
    ],
)  # fmt: skip
def test_inventory_extras_judge_data_in_transit(
    extras: dict[str, str], status: str, kind: str, words: str
) -> None:
    """What the cloud reads (Device.extras) judges S1.1-12 as the edge's records did."""
    obs = Observer(catalogue=CAT)
    mac = "02:00:00:00:03:01"
    obs.device(Device(mac=mac, first_seen=NOW, last_seen=NOW, extras=extras))
    label = assess(obs.devices[mac], catalogue=CAT, now=NOW).to_dict()
    crit = _crit(label, "S1.1-12")
    assert crit["status"] == status
    if kind:
        assert any(e["kind"] == kind and words in e["detail"] for e in crit["evidence"])
    if kind == "cleartext_login":
        assert label["advice"][0]["finding"] == "cleartext_login"
        assert "https" in label["advice"][0]["en"] and label["advice"][0]["ja"]


def test_inventory_keeps_the_weakest_session_per_role() -> None:
    inv = Inventory(home_net=DEFAULT_HOME_NET, vendors=VendorLookup(path=Path("/nonexistent")))
    mac = "02:00:00:00:03:02"
    for n, facts in enumerate([
        {"tls_negotiated": "0304:1301:443"},
        {"tls_negotiated": "0301:002f:443"},
        {"tls_negotiated": "0303:c02f:443"},  # stronger: the TLS 1.0 session stays
        {"tls_served": "0303:c02f:8443"},
        {"tls_negotiated": "nonsense"},
    ]):  # fmt: skip
        inv.on_discovery(DiscoveryEvent(ts=NOW + n, source="tls", mac=mac, ip="192.168.1.60",
                                        facts=facts))  # fmt: skip
    (device,) = inv.snapshot()
    assert device.extras["tls_negotiated"] == "0301:002f:443"
    assert device.extras["tls_served"] == "0303:c02f:8443"
    assert device.ips == ["192.168.1.60"]
