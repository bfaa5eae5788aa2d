"""Device labels at the edge: real captures through the replay pipeline, and the pure
assessment on hand-built evidence (table-driven)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest
from mimamori.detect.errors import ConfigError
from mimamori.detect.labels import (
    OUTCOMES,
    DeviceEvidence,
    Observer,
    assess,
    load_catalogue,
    parse_catalogue,
)
from mimamori.edge.evidence import EvidenceCollector, label_replay
from mimamori.edge.replay import replay
from mimamori.edge.summaries import DEFAULT_HOME_NET
from mimamori.protocol import Device, FlowRecord

CAT = load_catalogue()
NOW = 1_700_000_000.0


def _by_mac(labels: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {label["mac"]: label for label in labels}


def _status(label: dict[str, Any], cid: str) -> dict[str, Any]:
    return next(c for c in label["criteria"] if c["id"] == cid)


# --- catalogue -------------------------------------------------------------------------


def test_catalogue_lists_the_sixteen_star1_requirements() -> None:
    assert [c.id for c in CAT.criteria] == [f"S1.1-{n:02d}" for n in range(1, 17)]
    for c in CAT.criteria:
        assert c.etsi and c.summary_ja and c.summary_en
        if c.network == "no":
            assert c.reason, c.id
    assert {c.id for c in CAT.criteria if c.decisive} == {"S1.1-12", "S1.1-13"}


def test_catalogue_validation_refuses_a_missing_requirement() -> None:
    import tomllib
    from importlib import resources

    doc = tomllib.loads(
        resources.files("mimamori.detect.labels").joinpath("catalogue.toml").read_text("utf-8")
    )
    doc["criterion"] = doc["criterion"][1:]
    with pytest.raises(ConfigError, match=r"S1\.1-01\.\.S1\.1-16"):
        parse_catalogue(doc)


def _catalogue_doc() -> dict[str, Any]:
    import tomllib
    from importlib import resources

    text = resources.files("mimamori.detect.labels").joinpath("catalogue.toml").read_text("utf-8")
    return tomllib.loads(text)


def test_catalogue_records_what_was_verified_and_what_was_not() -> None:
    """Confirmed entries name their source; unconfirmed ones say what is uncertain."""
    confirmed = {c.id for c in CAT.criteria if not c.verify}
    # Checked against public sources (catalogue.toml header, docs/labels.md).
    assert confirmed == {f"S1.1-{n:02d}" for n in (1, 2, 3, 4, 5, 6, 7, 8, 12, 16)}
    for c in CAT.criteria:
        if c.verify:
            assert c.note, c.id
            assert not c.source, f"{c.id} is unconfirmed but names a source"
        else:
            assert c.source, c.id
    # A requirement whose subject is unknown is never judged.
    unknown = [c for c in CAT.criteria if c.etsi == "unknown"]
    assert unknown and all(c.network == "no" for c in unknown)
    label = assess(DeviceEvidence(mac="02:00:00:00:00:0a"), catalogue=CAT, now=NOW)
    by_id = {r.id: r for r in label.criteria}
    assert all(by_id[c.id].status == "unknown" and by_id[c.id].reason for c in unknown)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c.pop("note"), "needs a note"),  # an unverified entry must say why
        (lambda c: (c.pop("verify"), c.pop("note")), "name the source"),
    ],
)
def test_catalogue_validation_refuses_unexplained_entries(change: Any, message: str) -> None:
    doc = _catalogue_doc()
    change(next(c for c in doc["criterion"] if c["id"] == "S1.1-10"))
    with pytest.raises(ConfigError, match=message):
        parse_catalogue(doc)


def test_public_surface_is_complete() -> None:
    import mimamori.detect.labels as labels

    # Sorted as ruff's RUF022 wants it (constants, then classes, then functions).
    assert len(set(labels.__all__)) == len(labels.__all__)
    for name in labels.__all__:
        assert hasattr(labels, name), name
    for module in ("assess", "catalogue", "credentials", "observe"):
        mod = getattr(labels, module)
        public = {
            n
            for n, v in vars(mod).items()
            if not n.startswith("_") and getattr(v, "__module__", "") == mod.__name__
        }
        assert public - {"Outdated"} <= set(labels.__all__), module


# --- captures through replay ------------------------------------------------------------


def test_telnet_server_and_client_fail_with_evidence(shared_data: Path) -> None:
    result = replay(
        [str(shared_data / "pcap/benign/cleartext/telnet_session.pcap")], labeler=label_replay
    )
    labels = _by_mac(result.labels)
    server = labels["00:00:c0:9f:a0:97"]  # 192.168.0.1 answers on port 23
    assert server["outcome"] == "does_not_meet"
    for cid in ("S1.1-12", "S1.1-13"):
        crit = _status(server, cid)
        assert crit["status"] == "fail"
        assert any(
            e["kind"] == "cleartext_service" and "23" in e["detail"] for e in crit["evidence"]
        )
    assert any("Telnet" in a["en"] for a in server["advice"])
    client = labels["00:a0:cc:3b:bf:fa"]
    assert _status(client, "S1.1-12")["status"] == "fail"
    assert _status(client, "S1.1-13")["status"] != "fail"  # using Telnet is not serving it


def test_smbv1_fails_unneeded_services(shared_data: Path) -> None:
    result = replay([str(shared_data / "pcap/benign/cleartext/smbv1.pcap")], labeler=label_replay)
    failing = [label for label in result.labels if _status(label, "S1.1-13")["status"] == "fail"]
    assert failing
    evidence = [e for lab in failing for e in _status(lab, "S1.1-13")["evidence"]]
    assert any(e["kind"] == "legacy_service" and "SMBv1" in e["detail"] for e in evidence)
    assert all(lab["outcome"] == "does_not_meet" for lab in failing)


@pytest.mark.parametrize(
    ("capture", "mac", "vendor", "model", "kind", "outcome"),
    [
        # model: from the UPnP device type / SSDP SERVER product token
        ("dlink_cam.pcap", "b0:c5:54:25:5b:0e", "D-Link", "DCS-935L", "camera", "does_not_meet"),
        # model: from the inventory (SSDP/mDNS)
        ("hue_bridge.pcap", "00:17:88:24:76:ff", "Philips", "BSB002", "hub", "does_not_meet"),
        # model: from the DHCP hostname, shaped like a model number
        # its own ClientHello offers TLS 1.0 at best (JA4 t10...): S1.1-12 fails
        ("tplink_hs110.pcap", "50:c7:bf:00:c7:03", "TP-LINK", "HS110(EU)", "plug",
         "does_not_meet"),
        # the first two announce no model in the capture: vendor (MAC prefix) only; the WeMo
        # names its product line in its SSDP device type (urn:Belkin:device:controllee:1)
        ("withings.pcap", "00:24:e4:24:80:2a", "Withings", "", "health", "does_not_meet"),
        ("edimax_plug.pcap", "74:da:38:4a:76:49", "Edimax", "", "plug", "does_not_meet"),
        ("wemo_switch.pcap", "94:10:3e:35:01:c1", "Belkin", "WeMo Switch", "plug", "does_not_meet"),
    ],
)  # fmt: skip
def test_iot_setup_captures_get_identity_and_outcome(
    shared_data: Path, capture: str, mac: str, vendor: str, model: str, kind: str, outcome: str
) -> None:
    result = replay([str(shared_data / "pcap/benign/iot_setup" / capture)], labeler=label_replay)
    label = _by_mac(result.labels)[mac]
    assert vendor.lower() in label["vendor"].lower()
    assert label["model"] == model
    assert label["kind"] == kind
    assert label["outcome"] == outcome
    assert label["outcome"] in OUTCOMES
    if outcome == "does_not_meet":
        assert label["reasons"] and label["advice"]
        assert all(a["ja"] and a["en"] for a in label["advice"])


@pytest.mark.parametrize(
    ("device", "hint"),
    [
        ({"services": ["urn:schemas-upnp-org:device:DCS-935L:1"]}, "DCS-935L"),
        ({"services": ["urn:schemas-upnp-org:device:InternetGatewayDevice:1"]}, ""),
        ({"services": ["urn:Belkin:device:controllee:1"]}, "WeMo Switch"),
        ({"services": ["urn:Belkin:device:insight:1"]}, "WeMo Insight Switch"),
        ({"services": ["urn:Acme:device:gadget:1"]}, ""),  # an unknown product line
        ({"hostname": "DCH-S220"}, "DCH-S220"),  # D-Link siren (IoT Sentinel)
        ({"hostname": "DSP-W215"}, "DSP-W215"),
        ({"hostname": "Lightify-7B5F6B"}, "Lightify"),
        ({"hostname": "ESP_07AEFB"}, ""),  # a Wi-Fi module's default name
        ({"hostname": "LAPTOP-4411"}, ""),
        ({"hostname": "DESKTOP-3JK2L9Q"}, ""),
        ({"extras": {"ssdp_server": "Linux,    UPnP/1.0 DCS-935L/1.0"}}, "DCS-935L"),
        ({"extras": {"ssdp_server": "Linux/3.14.0 UPnP/1.0 IpBridge/1.26.0"}}, ""),
        ({"hostname": "HS110(EU)"}, "HS110(EU)"),
        ({"hostname": "android-1c1335ec95a27318"}, ""),
        ({"hostname": "philips-hue"}, ""),
        ({"model": "BSB002", "hostname": "HS110(EU)"}, "BSB002"),  # the inventory wins
    ],
)
def test_model_hints(device: dict[str, Any], hint: str) -> None:
    obs = Observer(catalogue=CAT)
    obs.device(Device(mac="02:00:00:00:00:0b", first_seen=NOW, last_seen=NOW, **device))
    assert obs.devices["02:00:00:00:00:0b"].model == hint


def test_hue_bridge_announces_an_outdated_kernel(shared_data: Path) -> None:
    result = replay(
        [str(shared_data / "pcap/benign/iot_setup/hue_bridge.pcap")], labeler=label_replay
    )
    crit = _status(_by_mac(result.labels)["00:17:88:24:76:ff"], "S1.1-06")
    assert crit["status"] == "fail"
    assert any(e["kind"] == "outdated" and "Linux/3.14" in e["detail"] for e in crit["evidence"])


def test_raw_records_and_summaries_agree_on_the_telnet_server(shared_data: Path) -> None:
    """The edge collector over FlowRecords finds what the summaries path finds."""
    path = str(shared_data / "pcap/benign/cleartext/telnet_session.pcap")
    result = replay([path], keep_records=True)
    collector = EvidenceCollector(home_net=DEFAULT_HOME_NET)
    for device in result.devices:
        collector.on_device(device)
    for rec in result.records:
        collector.on_flow(rec)
    labels = {lab.mac: lab for lab in collector.labels(now=NOW)}
    server = labels["00:00:c0:9f:a0:97"]
    assert server.outcome == "does_not_meet"
    assert {c.id for c in server.criteria if c.status == "fail"} == {"S1.1-12", "S1.1-13"}


def test_replay_json_prints_labels(shared_data: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "mimamori.cli", "replay", "--json",
         str(shared_data / "pcap/benign/cleartext/telnet_session.pcap")],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout  # fmt: skip
    labels = json.loads(out)["labels"]
    assert {lab["mac"] for lab in labels} == {"00:00:c0:9f:a0:97", "00:a0:cc:3b:bf:fa"}
    for lab in labels:
        assert lab["outcome"] in OUTCOMES
        assert all({"id", "status", "evidence"} <= set(c) for c in lab["criteria"])


# --- pure assessment --------------------------------------------------------------------


def test_a_device_without_evidence_stays_insufficient() -> None:
    label = assess(DeviceEvidence(mac="02:00:00:00:00:01"), catalogue=CAT, now=NOW)
    assert label.outcome == "insufficient_evidence"
    assert {c.status for c in label.criteria} == {"unknown"}
    assert all(c.reason for c in label.criteria)
    assert label.assessed_at == NOW


def test_a_barely_seen_device_stays_insufficient() -> None:
    obs = Observer(catalogue=CAT)
    obs.flow("02:00:00:00:00:02", role="client", peer="internet", app="TLS", port=443,
             ts=NOW, name="example.net")  # fmt: skip
    label = assess(obs.devices["02:00:00:00:00:02"], catalogue=CAT, now=NOW)
    assert _status(label.to_dict(), "S1.1-12")["status"] == "pass"
    assert _status(label.to_dict(), "S1.1-13")["status"] == "unknown"
    assert label.outcome == "insufficient_evidence"


@pytest.mark.parametrize(
    ("flow", "failing"),
    [
        # Telnet answered from the internet: exposed management and cleartext.
        (
            {"role": "server", "peer": "internet", "app": "Telnet", "port": 23},
            {"S1.1-01", "S1.1-12", "S1.1-13"},
        ),
        # Plain-HTTP admin page on the LAN.
        ({"role": "server", "peer": "lan", "app": "HTTP", "port": 80}, {"S1.1-12"}),
        # nDPI calls an SSL 3 handshake "SSL".
        ({"role": "client", "peer": "internet", "app": "SSL", "port": 443}, {"S1.1-12"}),
        # An unknown app on the FTP port, served: judged by the port.
        ({"role": "server", "peer": "lan", "app": "Unknown", "port": 21}, {"S1.1-12", "S1.1-13"}),
        # STUN replies look inbound but expose nothing.
        ({"role": "server", "peer": "internet", "app": "STUN", "port": 3478}, set()),
    ],
)
def test_flow_findings_map_to_criteria(flow: dict[str, Any], failing: set[str]) -> None:
    obs = Observer(catalogue=CAT)
    obs.flow("02:00:00:00:00:03", ts=NOW, **flow)
    label = assess(obs.devices["02:00:00:00:00:03"], catalogue=CAT, now=NOW)
    assert {c.id for c in label.criteria if c.status == "fail"} == failing
    assert (label.outcome == "does_not_meet") == bool(failing)


def test_phones_are_labelled_for_information_and_impact_ranks_cameras_first() -> None:
    obs = Observer(catalogue=CAT)
    for mac, model in (("02:00:00:00:00:04", "DCS-935L"), ("02:00:00:00:00:05", "HS110(EU)")):
        obs.device(Device(mac=mac, model=model, first_seen=NOW, last_seen=NOW))
        obs.flow(mac, role="server", peer="lan", app="Telnet", port=23, ts=NOW)
    obs.device(Device(mac="02:00:00:00:00:06", os_hint="Android 12", first_seen=NOW,
                      last_seen=NOW))  # fmt: skip
    from mimamori.detect.labels import assess_all

    labels = assess_all(obs.devices, catalogue=CAT, now=NOW)
    assert [lab.kind for lab in labels] == ["camera", "plug", "phone"]
    assert labels[0].priority > labels[1].priority
    assert not labels[2].iot and labels[2].note
    assert "カメラ" in labels[0].advice[0]["ja"]


def test_vendor_update_contact_over_tls_supports_updates() -> None:
    obs = Observer(catalogue=CAT)
    obs.flow("02:00:00:00:00:07", role="client", peer="internet", app="TLS", port=443,
             ts=NOW, name="devs.tplinkcloud.com")  # fmt: skip
    label = assess(obs.devices["02:00:00:00:00:07"], catalogue=CAT, now=NOW).to_dict()
    assert _status(label, "S1.1-06")["status"] == "pass"
    # The maker's cloud API says nothing about how updates travel.
    assert _status(label, "S1.1-08")["status"] == "unknown"
    obs.flow("02:00:00:00:00:07", role="client", peer="internet", app="TLS", port=443,
             ts=NOW, name="download.tplinkcloud.com")  # fmt: skip
    label = assess(obs.devices["02:00:00:00:00:07"], catalogue=CAT, now=NOW).to_dict()
    assert _status(label, "S1.1-08")["status"] == "pass"


@pytest.mark.parametrize(
    ("name", "update"),
    [
        ("fwupdate.dlink.com", True),
        ("dcp.cpp.philips.com", True),  # Hue firmware
        ("ota-eu.xbcs.net", True),
        ("api.dch.dlink.com", False),  # D-Link sensors' cloud API (IoT Sentinel)
        ("www.fitbit.com", False),  # Aria scale's uploads
        ("scalews.withings.net", False),
    ],
)
def test_only_update_hosts_over_http_refute_update_integrity(name: str, update: bool) -> None:
    obs = Observer(catalogue=CAT)
    obs.flow("02:00:00:00:00:0c", role="client", peer="internet", app="HTTP", port=80,
             ts=NOW, name=name)  # fmt: skip
    label = assess(obs.devices["02:00:00:00:00:0c"], catalogue=CAT, now=NOW).to_dict()
    assert _status(label, "S1.1-08")["status"] == ("fail" if update else "unknown")
    assert _status(label, "S1.1-12")["status"] == "fail"  # plain HTTP to the internet


def test_collector_ignores_unanswered_inbound_and_counts_garbage() -> None:
    col = EvidenceCollector(home_net=DEFAULT_HOME_NET)
    probe = FlowRecord(first_seen=NOW, last_seen=NOW, src_ip="203.0.113.9", src_port=40000,
                       dst_ip="192.168.1.20", dst_port=23, proto=6, dst_mac="02:00:00:00:00:08",
                       pkts_src2dst=1, app="Telnet", syn=1)  # fmt: skip
    col.on_flow(probe)
    assert "02:00:00:00:00:08" not in col.observer.devices  # the probe was never answered
    col.on_flow(FlowRecord(first_seen=NOW, last_seen=NOW, src_ip="bogus", src_port=1,
                           dst_ip="also-bogus", dst_port=2, proto=17))  # fmt: skip
    assert col.bad_records == 1


def test_the_makers_cloud_names_the_kind_when_the_device_does_not() -> None:
    """IoT Sentinel's Aria scale: a GainSpan Wi-Fi module's MAC and name, fitbit.com."""
    obs = Observer(catalogue=CAT)
    scale, pc = "02:00:00:00:00:0d", "02:00:00:00:00:0e"
    obs.device(Device(mac=scale, first_seen=NOW, last_seen=NOW, vendor="Delta Electronics",
                      hostname="GainSpanca9152"))  # fmt: skip
    obs.device(Device(mac=pc, first_seen=NOW, last_seen=NOW, os_hint="Windows 10"))
    for mac, name in ((scale, "www.fitbit.com"), (pc, "download.epson.net")):
        obs.flow(mac, role="client", peer="internet", app="HTTP", port=80, ts=NOW, name=name)
    labels = {m: assess(obs.devices[m], catalogue=CAT, now=NOW).to_dict() for m in (scale, pc)}
    assert labels[scale]["kind"] == "health"
    assert labels[pc]["kind"] == "pc"  # its own facts win over the printer maker it reached


def test_collector_reads_a_cut_connection_as_the_devices_own() -> None:
    """The records path orients flows as the summaries do (IoT Sentinel's TP-Link plug).

    Its TLS connection to a cloud port 50443 was cut by the idle timeout, and the next
    piece began with the server's packet: not the internet reaching the plug.
    """
    plug = "50:c7:bf:00:fc:a3"
    late = FlowRecord(first_seen=NOW, last_seen=NOW + 5, src_ip="52.18.200.165",
                      src_port=50443, dst_ip="192.168.1.30", dst_port=48456, proto=6,
                      src_mac="02:00:00:00:00:fe", dst_mac=plug, pkts_src2dst=3,
                      pkts_dst2src=2, bytes_src2dst=400, bytes_dst2src=200, app="TLS")  # fmt: skip
    col = EvidenceCollector(home_net=DEFAULT_HOME_NET)
    col.on_flow(late)
    ev = col.observer.devices[plug]
    assert not ev.of("exposure", "exposure_mgmt")
    assert [e.detail for e in ev.of("tls_cloud")] == ["TLS/50443"]
    # With the handshake seen, the internet did open it: that is exposure.
    col.on_flow(msgspec.structs.replace(late, syn=1, synack=1))
    assert [e.detail for e in ev.of("exposure")] == ["TLS/48456"]


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("i.ezvizlife.com", "camera"),
        ("api.lifx.co", "light"),
        ("snu.lgtvsdp.com", "tv"),
        ("osb.samsungcloudsolution.com", "tv"),
        ("api.sonos.com", "speaker"),
        ("www.hpeprint.com", "printer"),
        ("eu.ecouser.net", "appliance"),
        ("a1.tuyaeu.com", "device"),  # white-label maker of everything: no kind
    ],
)
def test_a_makers_service_names_a_silent_devices_kind(name: str, kind: str) -> None:
    obs = Observer(catalogue=CAT)
    mac = "02:00:00:00:00:0f"
    obs.device(Device(mac=mac, first_seen=NOW, last_seen=NOW, vendor="Espressif Inc."))
    obs.flow(mac, role="client", peer="internet", app="TLS", port=443, ts=NOW, name=name)
    label = assess(obs.devices[mac], catalogue=CAT, now=NOW).to_dict()
    assert label["kind"] == kind
    assert _status(label, "S1.1-06")["status"] == "pass"  # it keeps in touch with its maker
