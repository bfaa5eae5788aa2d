"""Cleartext logins (FTP, Telnet, HTTP Basic/Digest) checked against factory credentials.

Real captures: a Telnet session with an ordinary account and an FTP password-guessing run
(all rejected). Synthesised sessions: a camera accepting root/vizxv over Telnet (typed one
character a packet, as Telnet clients do) and a NAS accepting admin/password over FTP.
Only the verdict leaves the gateway: the password appears nowhere in what it publishes.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import random
from contextlib import redirect_stdout
from pathlib import Path

import dpkt
import pytest
from mimamori.edge import replay as replay_cli
from mimamori.edge.discovery import BPF_FILTER, Decoder, Event, read_capture
from mimamori.edge.discovery_live import compile_filter, filter_passes
from mimamori.edge.evidence import label_replay
from mimamori.edge.logins import strip_telnet
from mimamori.edge.replay import replay
from mimamori.protocol import DiscoveryEvent
from mimamori.simulators.pcapgen import End, Packets, PcapWriter, Tcp

CAMERA = End(mac="02:00:00:00:00:c1", ip="192.168.7.20", port=23)
NAS = End(mac="02:00:00:00:00:a5", ip="192.168.7.30", port=21)
PC = "02:00:00:00:00:0b", "192.168.7.11"


def test_telnet_negotiation_is_stripped() -> None:
    assert strip_telnet(b"\xff\xfb\x01\xff\xfa\x18\x01\xff\xf0login: \xff\xff") == b"login: \xff"


def test_ordinary_and_rejected_logins_leave_nothing(shared_data: Path) -> None:
    telnet = Decoder()
    events = list(read_capture([str(shared_data / "pcap/benign/cleartext/telnet_session.pcap")],
                               decoder=telnet))  # fmt: skip
    assert (telnet.logins.logins, telnet.logins.default_logins) == (1, 0)  # fake/user, accepted
    # Only the server's greeting (its software) leaves the reader.
    assert [e.facts for e in events if e.source == "login"] == [
        {"server": "telnet: OpenBSD/i386 (oof) (ttyp2)"}
    ]
    ftp = Decoder()
    events = list(read_capture([str(shared_data / "pcap/malicious/bruteforce/ftp_bruteforce.pcap")],
                               decoder=ftp))  # fmt: skip
    assert ftp.logins.logins >= 30 and ftp.logins.default_logins == 0  # every guess: 530
    facts = [e.facts for e in events if e.source == "login"]
    assert all(set(f) == {"server"} for f in facts) and len(facts) == ftp.logins.banners
    assert facts[0] == {
        "server": "ftp: redmint FTP server (Version 6.4/OpenBSD/Linux-ftpd-0.17) ready."
    }


def test_server_greetings_become_banners_on_the_label(tmp_path: Path) -> None:
    """The 220 line and the text before a Telnet login prompt name the software."""
    pcap = tmp_path / "greetings.pcap"
    _sessions(pcap)
    result = replay([str(pcap)], labeler=label_replay)
    devices = {d.mac: d for d in result.devices}
    assert devices[NAS.mac].extras["login_server"] == "ftp: NAS FTP server ready"
    assert devices[CAMERA.mac].extras["login_server"] == "telnet: HI3518"
    labels = {lab["mac"]: lab for lab in result.labels}
    banners = [e["detail"] for c in labels[CAMERA.mac]["criteria"] for e in c["evidence"]
               if e["kind"] == "banner"]  # fmt: skip
    assert "login_server: telnet: HI3518" in banners


def test_a_bare_or_hostile_greeting_says_nothing_harmful(tmp_path: Path) -> None:
    rng = random.Random(5)
    path = tmp_path / "greetings.pcap"
    with path.open("wb") as fh:
        out = Packets(PcapWriter(fh))
        client = End(mac=PC[0], ip=PC[1], port=40003)
        tel = Tcp(out, client=client, server=CAMERA, t=1_760_000_100.0, rng=rng).open()
        tel.say("s", b"login: ")  # a bare prompt: no banner
        tel.close()
        client = End(mac=PC[0], ip=PC[1], port=40004)
        ftp = Tcp(out, client=client, server=NAS, t=1_760_000_110.0, rng=rng).open()
        ftp.say("s", b"220 evil\x00\x1b[31mFTP " + b"A" * 400 + b"\r\n")
        ftp.close()
        out.close()
    events = [e for e in read_capture([str(path)], decoder=Decoder()) if e.source == "login"]
    assert len(events) == 1 and events[0].mac == NAS.mac
    banner = events[0].facts["server"]
    assert banner.startswith("ftp: evil") and len(banner) <= 120
    assert not any(ord(ch) < 0x20 for ch in banner)


def _sessions(path: Path) -> None:
    rng = random.Random(3)
    with path.open("wb") as fh:
        out = Packets(PcapWriter(fh))
        client = End(mac=PC[0], ip=PC[1], port=40001)
        tel = Tcp(out, client=client, server=CAMERA, t=1_760_000_000.0, rng=rng).open()
        tel.say("s", b"\xff\xfd\x18\xff\xfb\x01\r\nHI3518 login: ")
        for ch in b"root\r\n":
            tel.say("c", bytes([ch]))
        tel.say("s", b"Password: ")
        for ch in b"vizxv\r\x00":
            tel.say("c", bytes([ch]))
        tel.say("s", b"\r\n\r\nBusyBox v1.20.2 built-in shell (ash)\r\n# ")
        tel.close()
        client = End(mac=PC[0], ip=PC[1], port=40002)
        ftp = Tcp(out, client=client, server=NAS, t=1_760_000_010.0, rng=rng).open()
        ftp.say("s", b"220 NAS FTP server ready\r\n")
        ftp.say("c", b"USER admin\r\n")
        ftp.say("s", b"331 Password required\r\n")
        ftp.say("c", b"PASS password\r\n")
        ftp.say("s", b"230 User admin logged in\r\n")
        ftp.close()
        out.close()


def test_factory_credentials_accepted_in_clear_fail_s1_1_02(tmp_path: Path) -> None:
    pcap = tmp_path / "logins.pcap"
    _sessions(pcap)
    result = replay([str(pcap)], labeler=label_replay)
    devices = {d.mac: d for d in result.devices}
    assert "telnet login as 'root'" in devices[CAMERA.mac].extras["login_default_login"]
    assert "ftp login as 'admin'" in devices[NAS.mac].extras["login_default_login"]
    labels = {lab["mac"]: lab for lab in result.labels}
    for mac in (CAMERA.mac, NAS.mac):
        failing = {c["id"]: c for c in labels[mac]["criteria"] if c["status"] == "fail"}
        assert "S1.1-02" in failing, (mac, sorted(failing))
        assert labels[mac]["outcome"] == "does_not_meet"
    # What the gateway would publish, and what the replay prints: never the passwords.
    published = json.dumps(result.to_json(), ensure_ascii=False)
    assert "vizxv" not in published and "PASS password" not in published
    assert "'password'" not in published


# --- HTTP Basic and Digest ---------------------------------------------------------------

ROUTER = End(mac="02:00:00:00:00:e1", ip="192.168.7.1", port=80)
WEBCAM = End(mac="02:00:00:00:00:e2", ip="192.168.7.21", port=8080)
SITE = End(mac="02:00:00:00:00:01", ip="203.0.113.80", port=80)  # on the internet
T0 = 1_760_000_100.0


def _basic(user: str, password: str) -> bytes:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return f"Authorization: Basic {token}\r\n".encode()


def _digest(user: str, password: str, *, uri: str = "/cgi-bin/admin", qop: bool = True) -> bytes:
    """A real RFC 7616 MD5 Digest header, as a browser computes it."""
    realm, nonce, cnonce, nc = "IPCAM", "5f1e8a6c2d", "0a4f113b", "00000001"
    ha1 = hashlib.md5(f"{user}:{realm}:{password}".encode()).hexdigest()
    ha2 = hashlib.md5(f"GET:{uri}".encode()).hexdigest()
    if qop:
        response = hashlib.md5(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}".encode()).hexdigest()
        extra = f', qop=auth, nc={nc}, cnonce="{cnonce}"'
    else:
        response = hashlib.md5(f"{ha1}:{nonce}:{ha2}".encode()).hexdigest()
        extra = ""
    return (
        f'Authorization: Digest username="{user}", realm="{realm}", nonce="{nonce}", '
        f'uri="{uri}", response="{response}"{extra}\r\n'
    ).encode()


def _get(auth: bytes, uri: str = "/cgi-bin/admin") -> bytes:
    return (
        f"GET {uri} HTTP/1.1\r\nHost: device\r\nUser-Agent: Mozilla/5.0\r\n".encode()
        + auth
        + b"Accept: */*\r\n\r\n"
    )


def _http(path: Path, exchanges: list[tuple[End, list[bytes], bytes]]) -> None:
    """One connection per exchange: the request (in the given segments), the status line."""
    rng = random.Random(5)
    with path.open("wb") as fh:
        out = Packets(PcapWriter(fh))
        for n, (server, segments, status) in enumerate(exchanges):
            client = End(mac=PC[0], ip=PC[1], port=41000 + n)
            tcp = Tcp(out, client=client, server=server, t=T0 + n, rng=rng).open()
            for segment in segments:
                tcp.say("c", segment)
            tcp.say("s", status + b"\r\nServer: httpd\r\nContent-Length: 0\r\n\r\n")
            tcp.close()
        out.close()


def _events(path: Path) -> tuple[Decoder, list[DiscoveryEvent]]:
    decoder = Decoder()
    events = [
        e for e in read_capture([str(path)], decoder=decoder) if isinstance(e, DiscoveryEvent)
    ]
    return decoder, [e for e in events if e.source == "login"]


@pytest.mark.parametrize(
    ("server", "auth", "status", "facts"),
    [
        (ROUTER, _basic("admin", "admin"), b"HTTP/1.1 200 OK", {"default_login", "cleartext_login"}),
        (ROUTER, _basic("admin", "admin"), b"HTTP/1.1 302 Found", {"default_login", "cleartext_login"}),
        (ROUTER, _basic("admin", "admin"), b"HTTP/1.1 401 Unauthorized", {"cleartext_login"}),
        (ROUTER, _basic("admin", "k3#Vq9!mZ"), b"HTTP/1.0 200 OK", {"cleartext_login"}),
        (WEBCAM, _digest("admin", "admin"), b"HTTP/1.1 200 OK", {"default_login"}),
        (WEBCAM, _digest("admin", "admin", qop=False), b"HTTP/1.1 200 OK", {"default_login"}),
        (WEBCAM, _digest("admin", "admin"), b"HTTP/1.1 403 Forbidden", set()),
        (WEBCAM, _digest("admin", "k3#Vq9!mZ"), b"HTTP/1.1 200 OK", set()),
        (ROUTER, b"", b"HTTP/1.1 200 OK", set()),  # no login at all
        (ROUTER, _basic("admin", "admin"), b"HTTP/1.1 404 Not Found", set()),  # no verdict
    ],
)  # fmt: skip
def test_http_logins(
    tmp_path: Path, server: End, auth: bytes, status: bytes, facts: set[str]
) -> None:
    pcap = tmp_path / "http.pcap"
    _http(pcap, [(server, [_get(auth)], status)])
    decoder, events = _events(pcap)
    assert decoder.http_logins.requests == 1
    assert {f for e in events for f in e.facts} == facts
    for event in events:
        assert (event.mac, event.ip) == (server.mac, server.ip)
        assert "k3#Vq9" not in repr(event)
    found = {f: v for e in events for f, v in e.facts.items()}
    if "default_login" in found:
        scheme = "basic" if b"Basic" in auth else "digest"
        assert found["default_login"].startswith(f"http {scheme} login as 'admin' on port")
        assert "factory password" in found["default_login"]
    if "cleartext_login" in found:
        assert found["cleartext_login"] == f"http basic (port {server.port})"


def test_http_logins_to_internet_servers_are_not_read(tmp_path: Path) -> None:
    """Browsing: the prefilter drops the frames before any parsing."""
    pcap = tmp_path / "web.pcap"
    _http(pcap, [(SITE, [_get(_basic("admin", "admin"))], b"HTTP/1.1 200 OK")])
    decoder, events = _events(pcap)
    assert events == [] and decoder.frames == 0 and decoder.http_logins.requests == 0


def test_http_request_split_over_segments_and_retransmitted(tmp_path: Path) -> None:
    """Headers over three segments, the Authorization line cut in two; a retransmission."""
    request = _get(_basic("root", "xc3511"))
    cut = request.index(b"Basic ") + 9
    segments = [request[:20], request[20:cut], request[cut:]]
    pcap = tmp_path / "split.pcap"
    rng = random.Random(9)
    with pcap.open("wb") as fh:
        out = Packets(PcapWriter(fh))
        tcp = Tcp(out, client=End(PC[0], PC[1], 42000), server=ROUTER, t=T0, rng=rng).open()
        for segment in segments:
            tcp.say("c", segment)
        tcp.seq["c"] -= len(segments[-1])  # the last segment again, as TCP retransmits it
        tcp.say("c", segments[-1])
        tcp.say("s", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        tcp.close()
        out.close()
    decoder, events = _events(pcap)
    assert decoder.http_logins.requests == 1 and decoder.http_logins.logins == 1
    (event,) = events
    assert "'root'" in event.facts["default_login"] and "xc3511" not in repr(event)


class Recording(Decoder):
    """A decoder that keeps every frame handed to it."""

    def __init__(self) -> None:
        super().__init__()
        self.decoded: list[bytes] = []

    def decode(self, ts: float, frame: bytes) -> list[Event]:
        self.decoded.append(frame)
        return super().decode(ts, frame)


def test_kernel_filter_agrees_with_the_offline_prefilter(tmp_path: Path, shared_data: Path) -> None:
    """Every frame the kernel would pass reaches the decoder offline, and no other."""
    compiled = compile_filter(BPF_FILTER)
    if compiled is None:
        pytest.skip("libpcap is not installed")
    pcap = tmp_path / "mix.pcap"
    _http(pcap, [
        (ROUTER, [_get(_basic("admin", "admin"))], b"HTTP/1.1 200 OK"),
        (SITE, [_get(b"")], b"HTTP/1.1 200 OK"),
        (WEBCAM, [_get(_digest("admin", "admin"))], b"HTTP/1.1 401 Unauthorized"),
    ])  # fmt: skip
    setup = shared_data / "pcap/benign/iot_setup"
    for path in (pcap, shared_data / "pcap/benign/office/mixed_1kxun.pcap",
                 setup / "hue_bridge.pcap", setup / "dlink_cam.pcap", setup / "wemo_switch.pcap",
                 shared_data / "pcap/benign/cleartext/telnet_session.pcap"):  # fmt: skip
        recording = Recording()
        list(read_capture([str(path)], decoder=recording))
        decoded = recording.decoded
        with path.open("rb") as fh:
            frames = [bytes(buf) for _, buf in dpkt.pcap.Reader(fh)]
        kernel = [f for f in frames if filter_passes(compiled, f)]
        assert decoded == kernel, path.name
        assert len(decoded) > 0, path.name


def test_a_hue_bridge_s_lan_api_is_read_and_has_no_logins(shared_data: Path) -> None:
    """The bridge's REST API on port 80 (app on the LAN) is followed: no Basic, no Digest.
    Its own CBAuth calls to Philips on port 80 are on the internet and never read."""
    path = shared_data / "pcap/benign/iot_setup/hue_bridge.pcap"
    decoder, events = _events(path)
    assert decoder.http_logins.requests >= 20
    assert decoder.http_logins.logins == 0 and events == []


def test_http_factory_login_labels_end_to_end(tmp_path: Path) -> None:
    """``mimamori replay --json``: S1.1-02 and S1.1-12 fail with evidence; no password."""
    pcap = tmp_path / "admin.pcap"
    _http(pcap, [
        (ROUTER, [_get(b"", "/")], b"HTTP/1.1 401 Unauthorized"),
        (ROUTER, [_get(_basic("admin", "password"), "/")], b"HTTP/1.1 200 OK"),
        (WEBCAM, [_get(_digest("admin", "12345"))], b"HTTP/1.1 200 OK"),
    ])  # fmt: skip
    out = io.StringIO()
    with redirect_stdout(out):
        code = replay_cli.main([str(pcap), "--home-net", "192.168.7.0/24", "--json"])
    assert code == 0
    text = out.getvalue()
    doc = json.loads(text)
    labels = {lab["mac"]: lab for lab in doc["labels"]}
    router = {c["id"]: c for c in labels[ROUTER.mac]["criteria"]}
    assert router["S1.1-02"]["status"] == "fail"
    assert any(e["kind"] == "default_credential" and "http basic login as 'admin'" in e["detail"]
               for e in router["S1.1-02"]["evidence"])  # fmt: skip
    assert router["S1.1-12"]["status"] == "fail"
    assert any(e["kind"] == "cleartext_login" and "http basic (port 80)" in e["detail"]
               for e in router["S1.1-12"]["evidence"])  # fmt: skip
    assert any(a["finding"] == "cleartext_login" and a["ja"] for a in labels[ROUTER.mac]["advice"])
    webcam = {c["id"]: c for c in labels[WEBCAM.mac]["criteria"]}
    assert webcam["S1.1-02"]["status"] == "fail"
    assert not any(e["kind"] == "cleartext_login" for e in webcam["S1.1-12"]["evidence"])
    for secret in (
        "password'",
        '"password"',
        "12345",
        base64.b64encode(b"admin:password").decode(),
    ):
        assert secret not in text, secret


def test_a_login_to_an_internet_server_labels_nobody(tmp_path: Path) -> None:
    """Anonymous FTP to a public server: the reader sees an accepted factory login, but the
    server's MAC is the router's, so the inventory keeps nothing of it."""
    pcap = tmp_path / "public_ftp.pcap"
    router = End(mac="02:00:00:00:00:fe", ip="198.51.100.21", port=21)
    with pcap.open("wb") as fh:
        out = Packets(PcapWriter(fh))
        ftp = Tcp(out, client=End(PC[0], PC[1], 40100), server=router, t=T0, rng=random.Random(4))
        ftp.open()
        for who, line in (("s", b"220 ready"), ("c", b"USER anonymous"), ("s", b"331 any"),
                          ("c", b"PASS guest@"), ("s", b"230 Logged in")):  # fmt: skip
            ftp.say(who, line + b"\r\n")
        ftp.close()
        out.close()
    decoder, events = _events(pcap)
    assert decoder.logins.default_logins == 1 and events[0].mac == router.mac
    result = replay([str(pcap)], labeler=label_replay)
    assert all("login_default_login" not in d.extras for d in result.devices)
    assert router.mac not in {d.mac for d in result.devices}
