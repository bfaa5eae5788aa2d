"""The gateway under its own labels (docs/jc-star-self-assessment.md).

The ClientHello is not invented: it is the one the gateway's own TLS context
(``edge/config.py`` ``ssl_context``, built from a configuration file) writes, taken from
OpenSSL through a memory BIO. It is put on the wire of a synthesised capture with the
rest of a gateway's traffic (MQTT over TLS to the broker, DNS to the router, NTP), and
``mimamori replay`` labels the gateway as it labels any device.
"""

from __future__ import annotations

import random
import ssl
from pathlib import Path
from typing import Any

import pytest
from mimamori.edge import config as cfg
from mimamori.edge.evidence import label_replay
from mimamori.edge.replay import replay
from mimamori.simulators.pcapgen import (
    End,
    Packets,
    PcapWriter,
    Tcp,
    _arp,
    _udp,
    dns_answer,
    dns_query,
    server_hello,
)

GW = End("dc:a6:32:00:00:01", "192.168.1.2", 0)  # a Raspberry Pi's MAC prefix
ROUTER = End("02:00:00:00:00:fe", "192.168.1.1", 53)
BROKER = End(ROUTER.mac, "203.0.113.10", 8883)
NTP = End(ROUTER.mac, "198.51.100.123", 123)
T0 = 1_750_000_000.0


def _client_hello(context: ssl.SSLContext) -> bytes:
    """The first flight the context sends to the broker (OpenSSL's own bytes)."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    conn = context.wrap_bio(incoming, outgoing, server_hostname="mqtt.mimamori.example")
    with pytest.raises(ssl.SSLWantReadError):
        conn.do_handshake()
    hello = outgoing.read()
    assert hello[0] == 0x16 and hello[5] == 0x01  # a handshake record with a ClientHello
    return hello


def _capture(path: Path, hello: bytes) -> None:
    rng = random.Random(7)
    with path.open("wb") as fh:
        out = Packets(PcapWriter(fh))
        _arp(out, T0, GW.mac, GW.ip, ROUTER.ip, reply_mac=ROUTER.mac)
        t = T0 + 1
        for i in range(12):  # reconnects over an hour, as after link drops
            qid = 100 + i
            dns = End(GW.mac, GW.ip, 40000 + i)
            _udp(out, t, dns, ROUTER, dns_query("mqtt.mimamori.example", qid))
            _udp(out, t + 0.01, ROUTER, dns, dns_answer("mqtt.mimamori.example", BROKER.ip, qid),
                 dst_mac=GW.mac)  # fmt: skip
            tcp = Tcp(out, client=End(GW.mac, GW.ip, 50000 + i), server=BROKER, t=t + 0.02,
                      rng=rng).open()  # fmt: skip
            tcp.say("c", hello)
            tcp.say("s", server_hello(rng))
            tcp.bulk("c", 40_000)
            tcp.close(duration=5)
            ntp = End(GW.mac, GW.ip, 45000 + i)
            _udp(out, t + 1, ntp, NTP, b"\x23" + bytes(47))
            _udp(out, t + 1.02, NTP, ntp, b"\x24" + bytes(47), dst_mac=GW.mac)
            t += 300
            out.flush_until(t)
        out.close()


def _gateway_context(tmp_path: Path) -> ssl.SSLContext:
    text = (
        '[gateway]\nid = "gw-1"\ntenant = "acme"\n'
        '[mqtt]\nhost = "mqtt.mimamori.example"\nport = 8883\n'
        'username = "gw-1"\npassword_file = "{pw}"\n'
    )
    pw = tmp_path / "pw"
    pw.write_text("not-a-real-secret\n")
    pw.chmod(0o600)
    context = cfg.ssl_context(cfg.parse(text.format(pw=pw)))
    assert context is not None
    return context


def _label(tmp_path: Path, context: ssl.SSLContext) -> dict[str, Any]:
    pcap = tmp_path / "gateway.pcap"
    _capture(pcap, _client_hello(context))
    result = replay([str(pcap)], home_net=["192.168.1.0/24"], labeler=label_replay)
    (label,) = [lab for lab in result.labels if lab["mac"] == GW.mac]
    return label


def _criterion(label: dict[str, Any], cid: str) -> dict[str, Any]:
    (crit,) = [c for c in label["criteria"] if c["id"] == cid]
    return crit


def test_the_gateways_own_traffic_meets_star1(tmp_path: Path) -> None:
    context = _gateway_context(tmp_path)
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    label = _label(tmp_path, context)
    assert label["outcome"] == "meets_star1_observed", label["reasons"]
    assert _criterion(label, "S1.1-12")["status"] == "pass"
    assert _criterion(label, "S1.1-13")["status"] == "pass"


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1 is deprecated:DeprecationWarning")
def test_the_same_check_fails_a_gateway_that_allowed_tls_1_0(tmp_path: Path) -> None:
    """The check can fail: the same traffic from a context capped at TLS 1.0."""
    context = _gateway_context(tmp_path)
    context.minimum_version = ssl.TLSVersion.TLSv1
    context.maximum_version = ssl.TLSVersion.TLSv1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    label = _label(tmp_path, context)
    assert label["outcome"] == "does_not_meet"
    crit = _criterion(label, "S1.1-12")
    assert crit["status"] == "fail"
    assert any("TLS 1.0" in e["detail"] for e in crit["evidence"])
