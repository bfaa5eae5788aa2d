"""Capture: the nfstream meter's records, the discovery decoder and the capture-file reader."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import pytest
from mimamori.edge.capture import CaptureError, FlowMeter
from mimamori.edge.discovery import (
    BPF_FILTER,
    CaptureStats,
    Decoder,
    DiscoveryError,
    compile_filter,
    read_capture,
)
from mimamori.protocol import ArpEvent, DiscoveryEvent


def test_meter_fills_tcp_flags_and_names(shared_data: Path) -> None:
    records = list(FlowMeter(source=[shared_data / "pcap/malicious/scan/synscan.pcap"]))
    tcp = [r for r in records if r.proto == 6]
    assert len(tcp) > 1000
    # A SYN scan: the scanner's SYNs, and the target's SYN-ACK on the few open ports.
    # Packet counts from tcpdump filters on tcp[tcpflags]: 2006 with SYN (12 of them
    # SYN-ACK), 5 with RST, none with FIN.
    assert all(r.syn >= 1 for r in tcp if r.src_ip == "172.16.0.8")
    assert sum(r.syn + r.synack for r in tcp) == 2006
    assert sum(r.synack for r in tcp) == 12
    assert (sum(r.rst for r in tcp), sum(r.fin for r in tcp)) == (5, 0)
    wiki = list(FlowMeter(source=[shared_data / "pcap/benign/office/wikipedia.pcap"]))
    assert any(r.dns_query == "upload.wikimedia.org" and r.dst_port == 53 for r in wiki)
    assert any(r.sni == "www.wikipedia.org" and r.app == "HTTP.Wikipedia" for r in wiki)
    assert all(r.first_seen <= r.last_seen for r in wiki)


def test_meter_rejects_bad_sources(tmp_path: Path) -> None:
    with pytest.raises(CaptureError):
        FlowMeter(source=[tmp_path / "missing.pcap"])
    with pytest.raises(CaptureError):
        FlowMeter(source=[])
    with pytest.raises(CaptureError):
        list(FlowMeter(source="no-such-interface-xyz"))


def test_reader_counts_every_frame_in_pcap_and_pcapng(shared_data: Path) -> None:
    stats = CaptureStats()
    events = list(read_capture([str(shared_data / "pcap/benign/office/netbios.pcap")], stats=stats))
    assert stats.packets == 261  # tcpdump -r netbios.pcap | wc -l (a pcapng file)
    assert stats.first_ts is not None and stats.last_ts is not None
    assert stats.first_ts < stats.last_ts
    assert events == []  # only name queries: they name the wanted host, not the sender
    stats = CaptureStats()
    dhcp = list(read_capture([str(shared_data / "pcap/benign/discovery/dhcp.pcap")], stats=stats))
    assert stats.packets == 9 and stats.bytes == 2972
    assert all(isinstance(e, DiscoveryEvent) and e.source == "dhcp" for e in dhcp)
    assert stats.first_ts is not None and stats.last_ts is not None
    assert stats.first_ts < stats.last_ts


def test_reader_rejects_non_captures(tmp_path: Path) -> None:
    bogus = tmp_path / "x.pcap"
    bogus.write_bytes(b"GIF89a" + b"\x00" * 40)
    with pytest.raises(DiscoveryError):
        list(read_capture([str(bogus)]))
    with pytest.raises(DiscoveryError):
        list(read_capture([str(tmp_path / "absent.pcap")]))


def _eth_udp(sport: int, dport: int, payload: bytes) -> bytes:
    eth = bytes.fromhex("ffffffffffffb827eb0102030800")
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 28 + len(payload), 1, 0, 64, 17, 0,
        bytes([192, 168, 1, 5]), bytes([255, 255, 255, 255]),
    )  # fmt: skip
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0)
    return eth + ip + udp + payload


def test_decoder_never_raises_on_garbage() -> None:
    decoder = Decoder()
    rng = random.Random(7)
    for port in (67, 5353, 1900, 137):
        for _ in range(200):
            payload = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 300)))
            decoder.decode(1.0, _eth_udp(port, port, payload))
    assert decoder.matched == 800
    assert decoder.malformed > 100
    # Truncated ARP, a runt frame, an unknown ethertype.
    assert decoder.decode(1.0, bytes.fromhex("ffffffffffffb827eb0102030806") + b"\x00" * 28) == []
    assert decoder.decode(1.0, b"\x00" * 10) == []


def test_decoder_removes_nul_and_control_characters_from_dhcp_strings() -> None:
    import dpkt

    dhcp = dpkt.dhcp.DHCP(
        op=dpkt.dhcp.DHCP_OP_REQUEST,
        chaddr=bytes.fromhex("b827eb010203"),
        opts=[
            (dpkt.dhcp.DHCP_OPT_MSGTYPE, bytes([dpkt.dhcp.DHCPREQUEST])),
            (dpkt.dhcp.DHCP_OPT_HOSTNAME, b"desk\x00pc\x07\x00"),
            (dpkt.dhcp.DHCP_OPT_VENDOR_ID, b"MSFT 5.0\x00"),
        ],
    )
    events = Decoder().decode(1.0, _eth_udp(68, 67, bytes(dhcp)))
    facts = next(e.facts for e in events if isinstance(e, DiscoveryEvent))
    assert facts["hostname"] == "deskpc"
    assert facts["dhcp_vendor_class"] == "MSFT 5.0"


def test_decoder_ssdp_and_arp() -> None:
    decoder = Decoder()
    notify = (
        b"NOTIFY * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\n"
        b"LOCATION: http://192.168.1.5:49152/desc.xml\r\nNT: urn:schemas-upnp-org:device:MediaRenderer:1\r\n"
        b"SERVER: Linux/4.9 UPnP/1.0 Renderer/2.1\r\n\r\n"
    )
    (event,) = decoder.decode(5.0, _eth_udp(1900, 1900, notify))
    assert isinstance(event, DiscoveryEvent)
    assert (event.source, event.mac, event.ip) == ("ssdp", "b8:27:eb:01:02:03", "192.168.1.5")
    assert event.facts["os_hint"] == "Linux/4.9"
    assert event.facts["service"] == "urn:schemas-upnp-org:device:MediaRenderer:1"
    arp = (
        bytes.fromhex("ffffffffffff" "b827eb010203" "0806" "0001080006040001" "b827eb010203")
        + bytes([192, 168, 1, 5]) + b"\x00" * 6 + bytes([192, 168, 1, 1])
    )  # fmt: skip
    (request,) = decoder.decode(6.0, arp)
    assert request == ArpEvent(
        ts=6.0, op="request", src_mac="b8:27:eb:01:02:03", src_ip="192.168.1.5",
        target_ip="192.168.1.1", target_mac="00:00:00:00:00:00",
    )  # fmt: skip


def test_kernel_filter_compiles() -> None:
    compiled = compile_filter(BPF_FILTER)
    if compiled is None:
        pytest.skip("libpcap is not installed: the listener filters in user space")
    insns, count = compiled
    assert count > 10 and len(insns) == 8 * count
    with pytest.raises(DiscoveryError):
        compile_filter("this is not a filter")


def test_meter_skips_and_counts_flows_it_cannot_convert(shared_data: Path) -> None:
    meter = FlowMeter(source=[shared_data / "pcap/benign/discovery/dhcp.pcap"])
    real = list(meter.streamer())

    class Broken:
        application_name = None  # everything else missing

    meter.streamer = lambda: [real[0], Broken(), *real[1:]]  # type: ignore[method-assign]
    records = list(meter)
    assert len(records) == len(real) and meter.bad_flows == 1


def _write_pcap(path: Path, frames: list[tuple[float, bytes]]) -> None:
    with path.open("wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for ts, frame in frames:
            sec = int(ts)
            out.write(struct.pack("<IIII", sec, int((ts - sec) * 1e6), len(frame), len(frame)))
            out.write(frame)


def _ipv4_udp(src: str, dst: str, sport: int, dport: int) -> bytes:
    payload = b"x" * 20
    udp = struct.pack(">HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip = struct.pack(
        ">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
        bytes(int(o) for o in src.split(".")), bytes(int(o) for o in dst.split(".")),
    )  # fmt: skip
    eth = b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x00"
    return eth + ip + udp


def test_idle_flows_expire_behind_a_long_lived_one(tmp_path: Path) -> None:
    """A flow that went quiet expires after the idle timeout even while a flow created
    before it stays busy (nfstream's cache alone would hold it until the busy one ends)."""
    busy = [(1000.0 + 5 * i, _ipv4_udp("10.0.0.1", "10.0.0.2", 4000, 5000)) for i in range(12)]
    quiet = [(1001.0, _ipv4_udp("10.0.0.3", "10.0.0.4", 4001, 5001))]
    later = [(1100.0, _ipv4_udp("10.0.0.5", "10.0.0.6", 4002, 5002))]
    pcap = tmp_path / "lru.pcap"
    _write_pcap(pcap, sorted(busy + quiet + later))
    records = list(FlowMeter(source=[pcap], idle_timeout=15, active_timeout=600))
    order = [r.src_ip for r in records]
    assert order == ["10.0.0.3", "10.0.0.1", "10.0.0.5"]
    quiet_record = records[0]
    assert quiet_record.expiry == "idle" and quiet_record.pkts_src2dst == 1
    assert records[1].pkts_src2dst == 12
