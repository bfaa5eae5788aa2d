"""The pilot sites' cases as scenario tests.

Each test writes a small capture with dpkt (through simulators.pcapgen's TCP writer) into
tmp_path, replays it through the real gateway pipeline (``edge.replay.replay``: nfstream,
discovery, inventory, the detection engine with default thresholds) and checks the alert
the pilot expected, for the reason the rule documents (docs/detection.md). Most tests also
hold a control: a similar but innocent host in the same capture that must stay quiet.

The repeated-detection case goes further, through the real publisher, broker, ingester and
the cloud's incidents job.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dpkt
import pytest
from mimamori.detect import Engine, parse_feed
from mimamori.edge.replay import ReplayResult, replay
from mimamori.edge.summaries import Network
from mimamori.protocol import Alert
from mimamori.simulators.pcapgen import End, Packets, PcapWriter, Tcp, client_hello, server_hello

HOME = ["192.168.10.0/24"]
ROUTER = "00:1a:2b:00:00:01"
#: A day well after Windows XP's end of support (2014-04-08): 2025-06-02 09:00 UTC.
T0 = 1748854800.0
BAD_IP = "198.51.100.23"  # the intel list of these tests names this address


@contextmanager
def capture(path: Path) -> Iterator[Packets]:
    """Collect packets in any order; write them to ``path`` in time order at the end."""
    with path.open("wb") as fh:
        out = Packets(PcapWriter(fh))
        yield out
        out.close()


def tcp(out: Packets, client: tuple[str, str, int], server: tuple[str, str, int], t: float,
        seed: int = 0) -> Tcp:  # fmt: skip
    """A TCP connection (client, server as (mac, ip, port)); the caller opens it."""
    return Tcp(out, client=End(*client), server=End(*server), t=t, rng=random.Random(seed))


def syn_only(out: Packets, client: tuple[str, str, int], server: tuple[str, str, int],
             t: float, tries: int = 3) -> None:  # fmt: skip
    """A connection attempt nobody answers: the SYN and its retransmissions."""
    for i in range(tries):
        seg = dpkt.tcp.TCP(sport=client[2], dport=server[2], seq=1000, flags=dpkt.tcp.TH_SYN,
                           win=64240)  # fmt: skip
        ip = dpkt.ip.IP(src=_ip(client[1]), dst=_ip(server[1]), p=dpkt.ip.IP_PROTO_TCP, ttl=64,
                        data=seg)  # fmt: skip
        out.add(t + (2**i - 1), _eth(client[0], server[0], ip))


def refused(out: Packets, client: tuple[str, str, int], server: tuple[str, str, int],
            t: float) -> None:  # fmt: skip
    """A SYN answered by a reset: a closed port."""
    c = tcp(out, client, server, t)
    c._send("c", dpkt.tcp.TH_SYN)
    c._wait()
    c._send("s", dpkt.tcp.TH_RST | dpkt.tcp.TH_ACK)


def _ip(text: str) -> bytes:
    return bytes(int(x) for x in text.split("."))


def _eth(src: str, dst: str, ip: dpkt.ip.IP) -> bytes:
    mac = bytes.fromhex
    return bytes(dpkt.ethernet.Ethernet(src=mac(src.replace(":", "")),
                                        dst=mac(dst.replace(":", "")), data=ip))  # fmt: skip


def dhcp_request(out: Packets, t: float, mac: str, *, hostname: str, params: bytes,
                 requested: str) -> None:  # fmt: skip
    """A DHCP REQUEST as a client joining the network broadcasts it."""
    msg = dpkt.dhcp.DHCP(
        op=dpkt.dhcp.DHCP_OP_REQUEST, chaddr=bytes.fromhex(mac.replace(":", "")), xid=0x5A5A,
        opts=[(dpkt.dhcp.DHCP_OPT_MSGTYPE, bytes([dpkt.dhcp.DHCPREQUEST])),
              (dpkt.dhcp.DHCP_OPT_REQ_IP, _ip(requested)),
              (dpkt.dhcp.DHCP_OPT_HOSTNAME, hostname.encode()),
              (dpkt.dhcp.DHCP_OPT_PARAM_REQ, params)],
    )  # fmt: skip
    udp = dpkt.udp.UDP(sport=68, dport=67, data=bytes(msg))
    udp.ulen = len(udp)
    ip = dpkt.ip.IP(src=_ip("0.0.0.0"), dst=_ip("255.255.255.255"), p=dpkt.ip.IP_PROTO_UDP,
                    ttl=64, data=udp)  # fmt: skip
    out.add(t, _eth(mac, "ff:ff:ff:ff:ff:ff", ip))


def http_get(out: Packets, client: tuple[str, str, int], server: tuple[str, str, int],
             t: float, *, host: str, user_agent: str) -> None:  # fmt: skip
    c = tcp(out, client, server, t).open()
    c.say("c", (f"GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {user_agent}\r\n"
                "Accept: */*\r\nConnection: close\r\n\r\n").encode())  # fmt: skip
    c.say("s", b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 64\r\n\r\n"
               + b"<html>" + b"x" * 58)  # fmt: skip
    c.close()


def tls(out: Packets, client: tuple[str, str, int], server: tuple[str, str, int], t: float,
        *, sni: str, seed: int = 1) -> None:  # fmt: skip
    rng = random.Random(seed)
    c = tcp(out, client, server, t, seed).open()
    c.say("c", client_hello(sni, rng))
    c.say("s", server_hello(rng))
    c.bulk("c", 900)
    c.bulk("s", 4000)
    c.close()


def run(path: Path, *, intel: str = "") -> ReplayResult:
    """Replay ``path`` on the default engine, with ``intel`` (one indicator per line)."""

    def engine(nets: tuple[Network, ...]) -> Engine:
        return Engine(home_net=nets, intel=parse_feed(intel, source="pilot-feed"))

    return replay([str(path)], home_net=HOME, engine_factory=engine if intel else None)


def found(result: ReplayResult, category: str, actor: str | None = None) -> list[Alert]:
    return [a for a in result.alerts
            if a.category == category and (actor is None or a.actor == actor)]  # fmt: skip


# --- a Windows XP PC on the internet -------------------------------------------------------

XP_UA = "Mozilla/4.0 (compatible; MSIE 8.0; Windows NT 5.1; Trident/4.0; .NET CLR 2.0.50727)"
WIN11_UA = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/131.0.0.0 Safari/537.36")  # fmt: skip


def test_windows_xp_host_reaching_the_internet(tmp_path: Path) -> None:
    path = tmp_path / "xp.pcap"
    xp = ("00:0c:76:00:00:20", "192.168.10.20", 49200)
    modern = ("00:0c:76:00:00:21", "192.168.10.21", 50200)
    with capture(path) as out:
        for i in range(3):
            http_get(out, (xp[0], xp[1], xp[2] + i), (ROUTER, "203.0.113.80", 80),
                     T0 + 20 * i, host="www.example.jp", user_agent=XP_UA)  # fmt: skip
            http_get(out, (modern[0], modern[1], modern[2] + i), (ROUTER, "203.0.113.80", 80),
                     T0 + 5 + 20 * i, host="www.example.jp", user_agent=WIN11_UA)  # fmt: skip
    result = run(path)
    alerts = found(result, "old_os")
    assert [a.actor for a in alerts] == ["192.168.10.20"], "only the XP PC is unsupported"
    a = alerts[0]
    assert a.rule == "old_os.user_agent" and a.target == "Windows XP"
    # It talks to the internet, which makes the finding medium rather than low.
    assert a.evidence["internet"] is True and a.severity == "medium"
    assert a.mac == xp[0]


# --- a personal phone on the office Wi-Fi, talking to a known-bad server -------------------

PHONE_MAC = "f0:18:98:3a:11:07"  # Apple's OUI
#: The DHCP parameter request list iPhones send (option 55).
IOS_PARAMS = bytes([1, 121, 3, 6, 15, 108, 114, 119, 252, 95, 44, 46])


def test_personal_phone_joins_and_talks_to_a_known_bad_server(tmp_path: Path) -> None:
    path = tmp_path / "phone.pcap"
    pc = ("00:0c:76:00:00:30", "192.168.10.30", 51000)
    with capture(path) as out:
        # The office as the gateway has known it for over an hour: one PC at work.
        for i in range(14):
            tls(out, (pc[0], pc[1], pc[2] + i), (ROUTER, "203.0.113.10", 443), T0 + 300 * i,
                sni="outlook.office365.com", seed=i)  # fmt: skip
        # 65 minutes in, a phone joins the Wi-Fi and opens an app that calls a listed server.
        joined = T0 + 3900
        dhcp_request(out, joined, PHONE_MAC, hostname="Taros-iPhone", params=IOS_PARAMS,
                     requested="192.168.10.77")  # fmt: skip
        tls(out, (PHONE_MAC, "192.168.10.77", 60001), (ROUTER, BAD_IP, 443), joined + 2,
            sni="line-present-campaign.example")  # fmt: skip
    result = run(path, intel=f"# pilot list\n{BAD_IP}\n")

    news = found(result, "new_device")
    assert [a.target for a in news] == [PHONE_MAC], "the office PC was learnt, not announced"
    assert news[0].evidence["via"] == "dhcp"
    phone = next(d for d in result.devices if d.mac == PHONE_MAC)
    assert phone.vendor.startswith("Apple") and phone.hostname == "Taros-iPhone"
    assert phone.dhcp_fingerprint == ",".join(str(b) for b in IOS_PARAMS)

    hits = found(result, "intel_match")
    assert [(a.actor, a.target) for a in hits] == [("192.168.10.77", BAD_IP)]
    assert hits[0].severity == "high" and hits[0].mac == PHONE_MAC


# --- an infected laptop sending mail to many servers ----------------------------------------


def smtp(out: Packets, client: tuple[str, str, int], server: tuple[str, str, int],
         t: float) -> None:  # fmt: skip
    c = tcp(out, client, server, t).open()
    for who, line in [
        ("s", "220 mx.example.net ESMTP ready"), ("c", "EHLO laptop"),
        ("s", "250-mx.example.net\r\n250 SIZE 10240000"), ("c", "MAIL FROM:<invoice@example.org>"),
        ("s", "250 OK"), ("c", "RCPT TO:<keiri@example.net>"), ("s", "250 OK"),
        ("c", "DATA"), ("s", "354 go ahead"),
        ("c", "Subject: Invoice\r\n\r\nSee the attachment.\r\n."), ("s", "250 queued"),
        ("c", "QUIT"), ("s", "221 bye"),
    ]:  # fmt: skip
        c.say(who, (line + "\r\n").encode())
    c.close()


def test_infected_laptop_mails_many_servers(tmp_path: Path) -> None:
    path = tmp_path / "spam.pcap"
    laptop = ("00:0c:76:00:00:40", "192.168.10.40", 52000)
    clerk = ("00:0c:76:00:00:41", "192.168.10.41", 53000)
    with capture(path) as out:
        for i in range(8):  # eight different mail exchangers within ten minutes
            smtp(out, (laptop[0], laptop[1], laptop[2] + i),
                 (ROUTER, f"198.51.100.{100 + i}", 25), T0 + 70 * i)  # fmt: skip
        for i in range(8):  # the clerk's mail client: the provider's one submission server
            smtp(out, (clerk[0], clerk[1], clerk[2] + i), (ROUTER, "203.0.113.25", 587),
                 T0 + 30 + 70 * i)  # fmt: skip
    result = run(path)
    alerts = found(result, "malware_traffic")
    assert [a.actor for a in alerts] == ["192.168.10.40"]
    assert alerts[0].rule == "malware_traffic.smtp_fanout" and alerts[0].severity == "high"


# --- an established connection to a known-bad address ---------------------------------------


def test_established_connection_to_a_listed_address(tmp_path: Path) -> None:
    path = tmp_path / "established.pcap"
    talker = ("00:0c:76:00:00:50", "192.168.10.50", 54000)
    knocker = ("00:0c:76:00:00:51", "192.168.10.51", 55000)
    with capture(path) as out:
        # One PC completes the handshake and exchanges data with the listed address...
        c = tcp(out, talker, (ROUTER, BAD_IP, 8443), T0).open()
        c.say("c", b"\x00" * 200)
        c.say("s", b"\x01" * 1200)
        c.close()
        # ...another only tries it: the listed server never answers.
        syn_only(out, knocker, (ROUTER, BAD_IP, 8443), T0 + 10)
    result = run(path, intel=f"{BAD_IP}\n")
    by_actor = {a.actor: a for a in found(result, "intel_match")}
    assert set(by_actor) == {"192.168.10.50", "192.168.10.51"}
    assert by_actor["192.168.10.50"].severity == "high"
    assert by_actor["192.168.10.50"].evidence["answered"] is True
    # Tried but not established: medium only.
    assert by_actor["192.168.10.51"].severity == "medium"
    assert by_actor["192.168.10.51"].evidence["answered"] is False


# --- RDP and SMB password guessing from the internet ----------------------------------------

#: An X.224 Connection Request in TPKT, as RDP clients open with (mstshash cookie).
RDP_CR = (b"\x03\x00\x00\x2b\x26\xe0\x00\x00\x00\x00\x00Cookie: mstshash=administrator\r\n"
          b"\x01\x00\x08\x00\x03\x00\x00\x00")  # fmt: skip
RDP_CC = b"\x03\x00\x00\x13\x0e\xd0\x00\x00\x12\x34\x00\x02\x1f\x08\x00\x02\x00\x00\x00"


#: An SMB2 NEGOTIATE request in a NetBIOS session frame (dialects 2.0.2 to 3.1.1).
SMB_NEGOTIATE = (b"\x00\x00\x00\x6c\xfeSMB\x40\x00" + b"\x00" * 6 + b"\x00\x00\x1f\x00"
                 + b"\x00" * 48 + b"\x24\x00\x05\x00\x01\x00" + b"\x00" * 30
                 + b"\x02\x02\x10\x02\x00\x03\x02\x03\x11\x03")  # fmt: skip
SMB_NEGOTIATE_RESPONSE = b"\x00\x00\x00\x80\xfeSMB\x40\x00\x00\x00\x00\x00" + b"\x00" * 120

OPENERS = {"rdp": (3389, RDP_CR, RDP_CC), "smb": (445, SMB_NEGOTIATE, SMB_NEGOTIATE_RESPONSE)}


def login_attempt(out: Packets, attacker: tuple[str, str, int], server: tuple[str, str, int],
                  t: float, seed: int, service: str) -> None:  # fmt: skip
    """One guess: the protocol's opening exchange, an authentication exchange of a few KB
    (NLA or NTLMSSP), then the server closes: wrong password."""
    _, hello, answer = OPENERS[service]
    c = tcp(out, attacker, server, t, seed).open()
    c.say("c", hello)
    c.say("s", answer)
    c.bulk("c", 1800)
    c.bulk("s", 3000)
    c.say("c", b"\x30" * 120)
    c.close()


@pytest.mark.parametrize("service", ["rdp", "smb"])
def test_password_guessing_from_the_internet_on_an_exposed_host(
    tmp_path: Path, service: str
) -> None:
    port = OPENERS[service][0]
    path = tmp_path / f"{service}.pcap"
    attacker = (ROUTER, "203.0.113.200", 40000)
    server = ("00:0c:76:00:00:60", "192.168.10.60", port)
    admin = ("00:0c:76:00:00:61", "192.168.10.61", 61000)
    with capture(path) as out:
        for i in range(14):  # a guess every 8 s
            login_attempt(out, (attacker[0], attacker[1], attacker[2] + i), server, T0 + 8 * i,
                          i, service)  # fmt: skip
        for i in range(2):  # the office admin's two LAN sessions (one typo): no brute force
            login_attempt(out, (admin[0], admin[1], admin[2] + i), server, T0 + 3 + 40 * i,
                          50 + i, service)  # fmt: skip
    result = run(path)
    brute = found(result, "bruteforce")
    assert [a.actor for a in brute] == ["203.0.113.200"]
    assert brute[0].severity == "high" and brute[0].evidence["direction"] == "inbound"
    assert brute[0].evidence["service"] == service and brute[0].evidence["sessions"] >= 10
    exposed = found(result, "exposure")
    assert [(a.actor, a.target) for a in exposed] == [("192.168.10.60", f"{port}/{service}")]
    assert exposed[0].severity == "high" and exposed[0].evidence["remote"] == "203.0.113.200"


# --- repeated detections on one host become one incident ------------------------------------


def test_repeated_detections_become_one_escalated_incident(
    tmp_path: Path, broker: Any, plain_db: Any, topic_prefix: str
) -> None:
    from mimamori.cloud.jobs.runner import run_once
    from mimamori.cloud.settings import Settings
    from mimamori.cloud.testing import IngesterThread, prepare_database, tenant_subscription
    from mimamori.edge.outbox import Outbox
    from mimamori.edge.publisher import Backoff, Publisher, drive
    from mimamori.protocol import AlertBatch

    path = tmp_path / "repeat.pcap"
    scanner = ("00:0c:76:00:00:70", "192.168.10.70")
    nas = ("00:0c:76:00:00:05", "192.168.10.5")
    bursts = 11
    with capture(path) as out:
        # A compromised PC probes the NAS's ports once an hour and a bit, for half a day.
        for b in range(bursts):
            start = T0 + 3700 * b
            for p in range(12):
                refused(out, (scanner[0], scanner[1], 40000 + 100 * b + p),
                        (nas[0], nas[1], 8000 + p), start + 0.5 * p)  # fmt: skip
    result = run(path)
    scans = found(result, "scan", "192.168.10.70")
    assert len(scans) == bursts, "one alert per burst (the engine suppresses within an hour)"
    assert {a.dedup_key for a in scans} == {"scan:192.168.10.70:vertical:192.168.10.5"}
    assert {a.severity for a in scans} == {"medium"}  # LAN to LAN

    gw = "gw1"
    dsn = plain_db.dsn
    prepare_database(dsn, tenant=topic_prefix, gateways=[gw])
    settings = Settings(dsn=dsn, mqtt_port=broker.port, batch_delay_s=0.05,
                        mqtt_client_id=f"ing-{topic_prefix}")  # fmt: skip
    outbox = Outbox(path=tmp_path / "outbox.db")
    pub = Publisher(outbox=outbox, tenant=topic_prefix, gateway=gw, host=broker.host,
                    port=broker.port, ssl_context=None, insecure_plaintext=True,
                    client_id=f"{topic_prefix}-{gw}", ack_timeout=2.0,
                    backoff=Backoff(initial=0.1, maximum=0.5))  # fmt: skip
    stop = threading.Event()
    loop = threading.Thread(target=drive, args=([pub], stop), kwargs={"drain": 2.0})
    ingester = IngesterThread(settings=settings, subscription=tenant_subscription(topic_prefix))
    with ingester:
        loop.start()
        try:
            for alert in result.alerts:  # one message per detection, as the agent sends them
                outbox.append(AlertBatch(gateway=gw, seq=0, sent_at=time.time(), alerts=[alert]))
            deadline = time.monotonic() + 30
            while outbox.depth() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert outbox.depth() == 0, "alerts not acknowledged by the cloud"
        finally:
            stop.set()
            loop.join(10)
            outbox.close()
    report = run_once(dsn, only=["incidents"])
    assert report, "the incidents job reported nothing"
    import psycopg

    with psycopg.connect(dsn) as conn:
        incidents = conn.execute(
            "SELECT dedup_key, severity, alert_count FROM incidents WHERE category = 'scan'"
        ).fetchall()
        ungrouped = conn.execute("SELECT count(*) FROM alerts WHERE incident_id IS NULL")
        left = ungrouped.fetchone()
    assert left == (0,)
    # Eleven medium alerts, one incident, raised a level on reaching ten alerts.
    assert incidents == [("scan:192.168.10.70:vertical:192.168.10.5", "high", bursts)]


@pytest.mark.parametrize("n", [9])
def test_fewer_repeats_stay_at_the_alerts_severity(n: int) -> None:
    """The escalation step the incident test relies on, for the count just below it."""
    from mimamori.cloud.jobs.config import JobsConfig
    from mimamori.cloud.jobs.incidents import escalated

    assert escalated("medium", "medium", 0, n, JobsConfig()) == "medium"
    assert escalated("medium", "medium", n, n + 1, JobsConfig()) == "high"
