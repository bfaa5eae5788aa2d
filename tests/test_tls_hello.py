"""TLS ServerHellos: the version and cipher suite a session negotiated, per device and role.

Synthesised hellos (TLS 1.0 with RC4, TLS 1.2 with AES-GCM, TLS 1.3 through
supported_versions, cut short, garbage) and the shared IoT captures, whose sessions were
read first with a scratch dpkt script: the D-Link camera, the TP-Link HS110 plug and the
Belkin WeMo switch all negotiate TLS 1.0 with CBC suites with their clouds.
"""

from __future__ import annotations

import io
import json
import random
import struct
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import pytest
from mimamori.detect.labels import tls
from mimamori.edge import replay as replay_cli
from mimamori.edge.discovery import BPF_FILTER, Decoder, read_capture
from mimamori.edge.discovery_live import compile_filter, filter_passes
from mimamori.edge.tls_hello import parse_server_hello
from mimamori.protocol import DiscoveryEvent
from mimamori.simulators.pcapgen import End, Packets, PcapWriter, Tcp

NAS = End(mac="02:00:00:00:00:d1", ip="192.168.9.40", port=443)
HUB = End(mac="02:00:00:00:00:d2", ip="192.168.9.41", port=8443)
CLOUD = End(mac="02:00:00:00:00:fe", ip="198.51.100.9", port=443)  # the router's MAC
PHONE = ("02:00:00:00:00:d3", "192.168.9.50")
PLUG = ("02:00:00:00:00:d4", "192.168.9.51")
RC4_SHA, AES_GCM, TLS13_AES = 0x0005, 0xC02F, 0x1301


def _hello(version: int, cipher: int, *, supported: int | None = None, extra: bytes = b"") -> bytes:
    """A ServerHello record as a server writes it (followed by ``extra`` records)."""
    exts = b""
    if supported is not None:
        exts = (
            struct.pack("!HHH", 43, 2, supported) + struct.pack("!HH", 51, 4) + b"\x00\x1d\x00\x00"
        )
    body = (
        struct.pack("!H", version) + bytes(range(32)) + b"\x20" + bytes(32)
        + struct.pack("!HB", cipher, 0) + struct.pack("!H", len(exts)) + exts
    )  # fmt: skip
    hs = b"\x02" + len(body).to_bytes(3, "big") + body
    record_version = min(version, 0x0303)
    return b"\x16" + struct.pack("!HH", record_version, len(hs)) + hs + extra


@pytest.mark.parametrize(
    ("payload", "parsed"),
    [
        (_hello(0x0301, RC4_SHA), (0x0301, RC4_SHA)),
        (_hello(0x0303, AES_GCM), (0x0303, AES_GCM)),
        (_hello(0x0303, TLS13_AES, supported=0x0304), (0x0304, TLS13_AES)),
        (_hello(0x0300, 0x000A), (0x0300, 0x000A)),  # SSL 3.0, 3DES
        # ServerHello, Certificate and ServerHelloDone in one record cut by the segment:
        (_hello(0x0302, 0x002F, extra=b"\x0b\x00\x10\x00" + b"\x00" * 40)[:-20], (0x0302, 0x002F)),
        (_hello(0x0303, AES_GCM)[:44], None),  # cut inside the random
        (_hello(0x0303, AES_GCM)[:77], None),  # cut before the cipher suite
        (b"\x16\x03\x01\x00\x50\x01" + bytes(80), None),  # a ClientHello
        (b"\x16\x03\x03\x00\x50\x02" + b"\xff" * 80, None),  # garbage with the right bytes
        (b"", None),
    ],
)  # fmt: skip
def test_parse_server_hello(payload: bytes, parsed: tuple[int, int] | None) -> None:
    assert parse_server_hello(payload) == parsed


def test_hostile_hellos_never_raise() -> None:
    rng = random.Random(11)
    good = _hello(0x0303, TLS13_AES, supported=0x0304)
    for n in range(3000):
        junk = bytearray(good[: rng.randrange(len(good) + 1)])
        for _ in range(rng.randrange(6)):
            if junk:
                junk[rng.randrange(len(junk))] = rng.randrange(256)
        if n % 3 == 0:
            junk = bytearray(b"\x16\x03\x03\x00\x40\x02" + rng.randbytes(rng.randrange(80)))
        result = parse_server_hello(bytes(junk))
        assert result is None or (result[0] >> 8 == 3 and 0 <= result[1] <= 0xFFFF)


@pytest.mark.parametrize(
    ("version", "cipher", "strength", "words"),
    [
        (0x0301, RC4_SHA, "weak", ["TLS 1.0", "TLS_RSA_WITH_RC4_128_SHA", "RC4"]),
        (0x0303, RC4_SHA, "weak", ["TLS 1.2", "RC4"]),
        (0x0303, 0x0004, "weak", ["TLS_RSA_WITH_RC4_128_MD5", "MD5 MAC"]),
        (0x0303, 0x000A, "weak", ["TLS_RSA_WITH_3DES_EDE_CBC_SHA", "3DES"]),
        (0x0303, 0x0003, "weak", ["EXPORT", "export-grade key"]),
        (0x0303, 0x0018, "weak", ["TLS_DH_anon_WITH_RC4_128_MD5", "no server authentication"]),
        (0x0303, 0x0001, "weak", ["TLS_RSA_WITH_NULL_MD5", "no encryption"]),
        (0x0302, 0x002F, "weak", ["TLS 1.1 (retired)"]),
        (0x0303, 0x002F, "plain", ["TLS 1.2", "TLS_RSA_WITH_AES_128_CBC_SHA"]),
        (0x0303, AES_GCM, "modern", ["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"]),
        (0x0303, 0xCCA8, "modern", ["CHACHA20_POLY1305"]),
        (0x0304, TLS13_AES, "modern", ["TLS 1.3", "TLS_AES_128_GCM_SHA256"]),
    ],
)
def test_sessions_are_judged_and_named(
    version: int, cipher: int, strength: str, words: list[str]
) -> None:
    described = tls.describe(tls.summary(version, cipher, 443), "server")
    assert described is not None
    assert described[0] == strength
    for word in words:
        assert word in described[1], (word, described[1])


def test_the_weakest_session_is_kept() -> None:
    tls13, gcm = tls.summary(0x0304, TLS13_AES, 443), tls.summary(0x0303, AES_GCM, 443)
    cbc, rc4 = tls.summary(0x0303, 0x002F, 443), tls.summary(0x0301, RC4_SHA, 443)
    assert tls.weaker("", tls13) == tls13
    assert tls.weaker(tls13, gcm) == gcm
    assert tls.weaker(gcm, cbc) == cbc
    assert tls.weaker(cbc, rc4) == rc4
    assert tls.weaker(rc4, tls13) == rc4
    assert tls.weaker(rc4, "not a summary") == rc4


def _sessions(path: Path, hellos: list[tuple[End, End, bytes]]) -> None:
    rng = random.Random(21)
    with path.open("wb") as fh:
        out = Packets(PcapWriter(fh))
        for n, (client, server, hello) in enumerate(hellos):
            tcp = Tcp(out, client=client, server=server, t=1_760_000_000.0 + n, rng=rng).open()
            tcp.say("c", b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00")  # a (short) ClientHello
            tcp.say("s", hello)
            tcp.say("c", b"\x17\x03\x03\x00\x10" + bytes(16))
            tcp.close()
        out.close()


def _client(mac_ip: tuple[str, str], port: int) -> End:
    return End(mac=mac_ip[0], ip=mac_ip[1], port=port)


def test_attribution_by_role_and_weakest_first(tmp_path: Path) -> None:
    pcap = tmp_path / "tls.pcap"
    _sessions(pcap, [
        (_client(PHONE, 40001), NAS, _hello(0x0301, RC4_SHA)),  # LAN server, LAN client
        (_client(PLUG, 40002), CLOUD, _hello(0x0303, TLS13_AES, supported=0x0304)),
        (_client(PLUG, 40003), CLOUD, _hello(0x0303, AES_GCM)),  # weaker: reported
        (_client(PLUG, 40004), CLOUD, _hello(0x0303, TLS13_AES, supported=0x0304)),  # not
        (_client(PHONE, 40005), HUB, b"\x16\x03\x03\x00\x30\x02\x00\x00\x2c\x03"),  # cut
    ])  # fmt: skip
    decoder = Decoder()
    events = [e for e in read_capture([str(pcap)], decoder=decoder)
              if isinstance(e, DiscoveryEvent) and e.source == "tls"]  # fmt: skip
    assert (decoder.tls.hellos, decoder.tls.malformed) == (4, 1)
    assert decoder.malformed == 1  # the replay's malformed_frames
    got = [(e.mac, e.ip, e.facts) for e in events]
    assert got == [
        (NAS.mac, NAS.ip, {"tls_served": "0301:0005:443"}),
        (PHONE[0], PHONE[1], {"tls_negotiated": "0301:0005:443"}),
        (PLUG[0], PLUG[1], {"tls_negotiated": "0304:1301:443"}),
        (PLUG[0], PLUG[1], {"tls_negotiated": "0303:c02f:443"}),
    ]
    # The router (the internet server's MAC) serves nothing: it is not in private space.
    assert CLOUD.mac not in {e.mac for e in events}
    compiled = compile_filter(BPF_FILTER)
    if compiled is not None:  # one segment per connection passes the kernel filter
        from dpkt.pcap import Reader

        with pcap.open("rb") as fh:
            passed = [bytes(f) for _, f in Reader(fh) if filter_passes(compiled, bytes(f))]
        assert len(passed) == 5  # the four hellos and the one cut short, nothing else
        assert all(f[54] == 0x16 and f[59] == 0x02 for f in passed)


def _replay(paths: list[Path], *extra: str) -> dict[str, Any]:
    out = io.StringIO()
    with redirect_stdout(out):
        assert replay_cli.main([*map(str, paths), "--json", *extra]) == 0
    doc: dict[str, Any] = json.loads(out.getvalue())
    return doc


def _crit(doc: dict[str, Any], mac: str, cid: str) -> dict[str, Any]:
    label = next(lab for lab in doc["labels"] if lab["mac"] == mac)
    return next(c for c in label["criteria"] if c["id"] == cid)


def test_weak_and_modern_servers_labelled(tmp_path: Path) -> None:
    """A NAS serving TLS 1.0 with RC4 fails S1.1-12; a hub serving only TLS 1.3 passes it."""
    pcap = tmp_path / "servers.pcap"
    _sessions(pcap, [
        (_client(PHONE, 40001), NAS, _hello(0x0301, RC4_SHA)),
        (_client(PHONE, 40002), HUB, _hello(0x0303, TLS13_AES, supported=0x0304)),
    ])  # fmt: skip
    doc = _replay([pcap], "--home-net", "192.168.9.0/24")
    devices = {d["mac"]: d for d in doc["devices"]}
    assert devices[NAS.mac]["extras"]["tls_served"] == "0301:0005:443"
    nas = _crit(doc, NAS.mac, "S1.1-12")
    assert nas["status"] == "fail"
    assert any(e["kind"] == "legacy_tls"
               and "serves TLS 1.0 with TLS_RSA_WITH_RC4_128_SHA on port 443" in e["detail"]
               and "RC4" in e["detail"] for e in nas["evidence"])  # fmt: skip
    hub = _crit(doc, HUB.mac, "S1.1-12")
    assert hub["status"] == "pass"
    assert [e["kind"] for e in hub["evidence"]] == ["tls_modern"]
    assert "serves TLS 1.3 with TLS_AES_128_GCM_SHA256 on port 8443" in hub["evidence"][0]["detail"]
    # The phone negotiated TLS 1.0 with RC4 as the NAS's client: its own session is weak.
    phone = _crit(doc, PHONE[0], "S1.1-12")
    assert phone["status"] == "fail"
    assert [e["detail"] for e in phone["evidence"]] == [
        "negotiated TLS 1.0 with TLS_RSA_WITH_RC4_128_SHA with a server on port 443"
        " (ServerHello: TLS 1.0 (retired), RC4)"
    ]


# What the shared captures negotiate (device MAC, server port, version, suite).
SHARED = [
    ("iot_setup/dlink_cam.pcap", "b0:c5:54:25:5b:0e", 443, "TLS 1.0", "TLS_RSA_WITH_AES_256_CBC_SHA"),
    ("iot_setup/tplink_hs110.pcap", "50:c7:bf:00:c7:03", 50443, "TLS 1.0",
     "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA"),
    ("iot_setup/wemo_switch.pcap", "94:10:3e:35:01:c1", 8443, "TLS 1.0",
     "TLS_RSA_WITH_AES_256_CBC_SHA"),
    ("iot/alexa_app.pcapng", "78:f8:82:d3:fb:c2", 443, "TLS 1.0", "TLS_RSA_WITH_AES_128_CBC_SHA"),
]  # fmt: skip


@pytest.mark.parametrize(("capture", "mac", "port", "version", "suite"), SHARED)
def test_shared_captures_negotiate_tls_1_0(
    shared_data: Path, capture: str, mac: str, port: int, version: str, suite: str
) -> None:
    doc = _replay([shared_data / "pcap/benign" / capture])
    devices = {d["mac"]: d for d in doc["devices"]}
    assert "tls_served" not in devices[mac]["extras"]  # the device is the client
    crit = _crit(doc, mac, "S1.1-12")
    assert crit["status"] == "fail"
    expected = f"negotiated {version} with {suite} with a server on port {port} (ServerHello"
    assert any(e["kind"] == "legacy_tls" and expected in e["detail"] for e in crit["evidence"])


def test_shared_captures_without_tls_sessions(shared_data: Path) -> None:
    """Every other IoT capture: no ServerHello at all (no event, nothing malformed)."""
    with_tls = {c for c, *_ in SHARED}
    paths = sorted((shared_data / "pcap/benign/iot_setup").glob("*.pcap")) + sorted(
        (shared_data / "pcap/benign/iot").glob("*.pcap*")
    )
    for path in paths:
        decoder = Decoder()
        events = [e for e in read_capture([str(path)], decoder=decoder)
                  if isinstance(e, DiscoveryEvent) and e.source == "tls"]  # fmt: skip
        assert decoder.tls.malformed == 0, path.name
        shown = f"{path.parent.name}/{path.name}"
        assert bool(events) is (shown in with_tls), shown
