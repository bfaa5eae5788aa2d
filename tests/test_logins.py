"""Cleartext logins (FTP, Telnet) checked against factory credentials, at the edge.

Real captures: a Telnet session with an ordinary account and an FTP password-guessing run
(all rejected). Synthesised sessions: a camera accepting root/vizxv over Telnet (typed one
character a packet, as Telnet clients do) and a NAS accepting admin/password over FTP.
Only the verdict leaves the gateway: the password appears nowhere in what it publishes.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from mimamori.edge.discovery import Decoder, read_capture
from mimamori.edge.evidence import label_replay
from mimamori.edge.logins import strip_telnet
from mimamori.edge.replay import replay
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
    assert not [e for e in events if e.source == "login"]
    ftp = Decoder()
    events = list(read_capture([str(shared_data / "pcap/malicious/bruteforce/ftp_bruteforce.pcap")],
                               decoder=ftp))  # fmt: skip
    assert ftp.logins.logins >= 30 and ftp.logins.default_logins == 0  # every guess: 530
    assert not [e for e in events if e.source == "login"]


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
