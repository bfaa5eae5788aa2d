"""Flow summaries: direction, keys, folding, interval flushing, conservation of counts."""

from __future__ import annotations

import random
from pathlib import Path

import msgspec
from mimamori.edge.pipeline import Draft, Pipeline
from mimamori.edge.replay import replay
from mimamori.edge.summaries import MAX_BATCH_ROWS, Summarizer, batches, parse_home_net
from mimamori.protocol import (
    Alert,
    ArpEvent,
    DiscoveryEvent,
    FlowBatch,
    FlowRecord,
    FlowSummary,
    codec,
)
from mimamori.protocol.codec import decode_up, encode

NETS = parse_home_net(["192.168.1.0/24"])
PC = "aa:00:00:00:00:01"


def _flow(
    src: str,
    dst: str,
    dport: int,
    *,
    sport: int = 40000,
    t: float = 1000.0,
    pkts: tuple[int, int] = (3, 2),
    nbytes: tuple[int, int] = (300, 200),
    proto: int = 6,
    app: str = "",
    src_mac: str = PC,
    dst_mac: str = "bb:00:00:00:00:01",
) -> FlowRecord:
    return FlowRecord(
        first_seen=t,
        last_seen=t + 1,
        src_ip=src,
        src_port=sport,
        dst_ip=dst,
        dst_port=dport,
        proto=proto,
        src_mac=src_mac,
        dst_mac=dst_mac,
        pkts_src2dst=pkts[0],
        pkts_dst2src=pkts[1],
        bytes_src2dst=nbytes[0],
        bytes_dst2src=nbytes[1],
        app=app,
    )


def _totals(rows: list[FlowSummary]) -> tuple[int, int, int, int, int]:
    return (
        sum(r.pkts_out + r.pkts_in for r in rows),
        sum(r.bytes_out + r.bytes_in for r in rows),
        sum(r.conns for r in rows),
        sum(r.pkts_out for r in rows),
        sum(r.bytes_in for r in rows),
    )


def test_directions_and_aggregation() -> None:
    s = Summarizer(home_net=NETS, interval=60)
    # Two connections of the PC to the same web server fold into one row.
    s.add(_flow("192.168.1.10", "93.184.216.34", 443, sport=50001, app="TLS"), 1000)
    s.add(_flow("192.168.1.10", "93.184.216.34", 443, sport=50002, t=1010, app="TLS"), 1011)
    # An internet host reached the PC's SSH port: an "in" row keyed by the local port.
    s.add(
        _flow(
            "203.0.113.9",
            "192.168.1.10",
            22,
            sport=61000,
            src_mac="bb:00:00:00:00:01",
            dst_mac=PC,
        ),
        1020,
    )
    s.add(_flow("192.168.1.10", "192.168.1.20", 445), 1030)
    s.add(_flow("192.168.1.10", "224.0.0.251", 5353, proto=17), 1030)
    start, rows = s.flush()
    assert start == 960.0  # intervals are aligned to multiples of the interval
    by_dir = {(r.dir, r.remote_ip): r for r in rows}
    web = by_dir[("out", "93.184.216.34")]
    assert (web.conns, web.pkts_out, web.pkts_in, web.bytes_out, web.bytes_in) == (
        2,
        6,
        4,
        600,
        400,
    )
    assert (web.first_seen, web.last_seen, web.mac, web.app) == (1000, 1011, PC, "TLS")
    ssh = by_dir[("in", "203.0.113.9")]
    assert (ssh.local_ip, ssh.remote_port, ssh.mac) == ("192.168.1.10", 22, PC)
    # Counts are from the local device's point of view: what the remote sent is "in".
    assert (ssh.pkts_in, ssh.pkts_out, ssh.bytes_in, ssh.bytes_out) == (3, 2, 300, 200)
    assert by_dir[("lan", "192.168.1.20")].remote_port == 445
    assert by_dir[("lan", "224.0.0.251")].proto == 17
    assert len(rows) == 4


def test_folding_vertical_scan_keeps_the_target() -> None:
    s = Summarizer(home_net=NETS, interval=60, keep_rows=5)
    flows = [
        _flow("192.168.1.10", "192.168.1.30", port, pkts=(1, 1), nbytes=(60, 54))
        for port in range(1, 1001)
    ]
    for f in flows:
        s.add(f, 1000)
    _, rows = s.flush()
    assert len(rows) == 6  # the 5 largest plus one row for the rest of the host's ports
    folded = [r for r in rows if r.remote_port == 0]
    assert len(folded) == 1 and folded[0].remote_ip == "192.168.1.30"
    assert folded[0].conns == 995
    assert _totals(rows) == (2000, 114000, 1000, 1000, 54000)


def test_folding_sweep_keeps_the_port_and_big_rows_survive() -> None:
    s = Summarizer(home_net=NETS, interval=60, keep_rows=5)
    for i in range(300):
        s.add(
            _flow("192.168.1.10", f"198.51.{i // 250}.{i % 250}", 23, pkts=(1, 0), nbytes=(60, 0)),
            1000,
        )
    s.add(
        _flow("192.168.1.10", "93.184.216.34", 443, pkts=(900, 1000), nbytes=(90_000, 1_000_000)),
        1000,
    )
    _, rows = s.flush()
    big = [r for r in rows if r.remote_ip == "93.184.216.34"]
    assert len(big) == 1 and big[0].bytes_in == 1_000_000
    folded = [r for r in rows if r.remote_ip == "0.0.0.0"]
    assert len(folded) == 1 and folded[0].remote_port == 23 and folded[0].conns == 296
    assert _totals(rows)[:3] == (300 + 1900, 300 * 60 + 1_090_000, 301)


def test_key_bound_folds_overflow_into_catch_all_rows() -> None:
    s = Summarizer(home_net=NETS, interval=60, keep_rows=1000, max_keys=10)
    for port in range(50):
        s.add(_flow("192.168.1.10", "8.8.8.8", port + 1, pkts=(1, 1), nbytes=(10, 10)), 1000)
    _, rows = s.flush()
    assert s.overflowed == 40
    assert len(rows) == 11
    assert _totals(rows)[:3] == (100, 1000, 50)


def test_batches_split_below_protocol_limits() -> None:
    rows = [
        FlowSummary(ts=0, local_ip="192.168.1.1", remote_ip="8.8.8.8", proto=17)
        for _ in range(2 * MAX_BATCH_ROWS + 1)
    ]
    assert [len(b) for b in batches(rows)] == [MAX_BATCH_ROWS, MAX_BATCH_ROWS, 1]


def test_a_full_batch_of_varied_rows_fits_the_payload_limit() -> None:
    rng = random.Random(3)
    rows = [
        FlowSummary(
            ts=1.7e9 + rng.random() * 60, mac=f"02:00:00:{rng.randrange(256):02x}:00:01",
            local_ip=f"192.168.{rng.randrange(256)}.{rng.randrange(256)}",
            remote_ip=f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}",
            remote_port=rng.randrange(65536), proto=6, app=f"App{rng.randrange(300)}",
            sni=f"h{rng.getrandbits(40):x}.example.com", pkts_out=rng.randrange(10**6),
            pkts_in=rng.randrange(10**6), bytes_out=rng.randrange(10**9),
            bytes_in=rng.randrange(10**9), conns=rng.randrange(1000),
        )
        for _ in range(MAX_BATCH_ROWS)
    ]  # fmt: skip
    wire = codec.encode(FlowBatch(gateway="gw1", seq=1, sent_at=1.7e9, flows=rows))
    assert len(wire) < codec.MAX_PAYLOAD


class _NoAlerts:
    def on_flow(self, record: FlowRecord) -> list[Alert]:
        return []

    def on_arp(self, event: ArpEvent) -> list[Alert]:
        return []

    def on_discovery(self, event: DiscoveryEvent) -> list[Alert]:
        return []

    def tick(self, now: float) -> list[Alert]:
        return []

    def finish(self, now: float) -> list[Alert]:
        return []


def test_pipeline_flushes_each_interval_and_messages_decode() -> None:
    from mimamori.edge.inventory import Inventory, VendorLookup

    drafts: list[Draft] = []
    pipeline = Pipeline(
        engine=_NoAlerts(),
        summarizer=Summarizer(home_net=NETS, interval=60),
        inventory=Inventory(home_net=NETS, vendors=VendorLookup()),
        sink=drafts.append,
    )
    pipeline.on_flow(_flow("192.168.1.10", "8.8.8.8", 53, proto=17, t=1000), 1001)
    pipeline.on_flow(_flow("192.168.1.10", "8.8.4.4", 53, proto=17, t=1010), 1011)
    assert [d.kind for d in drafts] == ["devices"]  # 5 s after the PC was first seen
    pipeline.tick(1019.9)
    assert [d.kind for d in drafts] == ["devices"]
    pipeline.tick(1020)  # the interval 960..1020 has ended
    flows = [d for d in drafts if d.kind == "flows"]
    assert len(flows) == 1 and flows[0].items == 2
    pipeline.finish(1090)
    message = flows[0].build(gateway="gw-1", seq=7)
    decoded = decode_up(encode(message))
    assert decoded.seq == 7 and decoded.gateway == "gw-1"
    assert decoded.sent_at == flows[0].created_at
    devices = [d for d in drafts if d.kind == "devices"]
    assert devices and devices[0].body["devices"][0].mac == PC


def test_replay_summaries_conserve_packets_and_bytes(shared_data: Path) -> None:
    for pcap, nets in (
        ("pcap/benign/office/mixed_1kxun.pcap", ["192.168.0.0/16"]),
        ("pcap/malicious/scan/synscan.pcap", ["172.16.0.0/12"]),
        ("pcap/benign/iot_week/blink_cam.pcap", ["192.168.0.0/16"]),
    ):
        result = replay([str(shared_data / pcap)], home_net=nets, keep_records=True)
        records = result.records
        rows = result.summaries
        assert sum(r.pkts_out + r.pkts_in for r in rows) == sum(
            r.pkts_src2dst + r.pkts_dst2src for r in records
        ), pcap
        assert sum(r.bytes_out + r.bytes_in for r in rows) == sum(
            r.bytes_src2dst + r.bytes_dst2src for r in records
        ), pcap
        assert sum(r.conns for r in rows) == len(records), pcap
        # Folding keeps scans small: far fewer rows than flows on the SYN scan.
        if "synscan" in pcap:
            assert len(rows) < len(records) / 20


def test_a_cut_connection_keeps_its_direction() -> None:
    """The piece of a long connection after a timeout may start with the server's packet."""
    s = Summarizer(home_net=NETS, interval=60)
    piece = _flow(
        "35.174.82.237",
        "192.168.1.10",
        63350,
        sport=11095,
        src_mac="bb:00:00:00:00:01",
        dst_mac=PC,
        pkts=(4, 6),
        nbytes=(400, 900),
    )
    s.add(piece, 1000)
    # Likewise a flow whose first packet came from a remote port 443.
    s.add(_flow("203.0.113.5", "192.168.1.10", 40000, sport=443, dst_mac=PC), 1000)
    _, rows = s.flush()
    by_remote = {r.remote_ip: r for r in rows}
    row = by_remote["35.174.82.237"]
    assert (row.dir, row.remote_port, row.mac) == ("out", 11095, PC)
    assert (row.pkts_out, row.pkts_in, row.bytes_out, row.bytes_in) == (6, 4, 900, 400)
    assert by_remote["203.0.113.5"].dir == "out"  # no SYN: port 443 is the service


def _row_for(s: Summarizer, remote: str) -> FlowSummary:
    _, rows = s.flush()
    (row,) = [r for r in rows if r.remote_ip == remote]
    return row


def test_the_internet_reaching_a_high_port_without_a_handshake_is_not_inbound() -> None:
    """Late pieces of a device's own connections, as seen in IoT Sentinel set-up captures.

    A TP-Link plug's TLS connection to a cloud port 50443 cut by the idle timeout (both
    ports high: the port rule cannot tell) and an Ednet gateway's connection whose only
    packets were the server's FIN and the device's RST: neither is an exposure.
    """
    s = Summarizer(home_net=NETS, interval=60)
    s.add(_flow("52.18.200.165", "192.168.1.10", 48456, sport=50443, dst_mac=PC), 1000)
    row = _row_for(s, "52.18.200.165")
    assert (row.dir, row.remote_port, row.mac) == ("out", 50443, PC)
    s.add(_flow("52.24.113.48", "192.168.1.10", 9013, sport=7533, dst_mac=PC), 1000)
    row = _row_for(s, "52.24.113.48")
    assert (row.dir, row.remote_port, row.mac) == ("out", 7533, PC)


def test_a_handshake_from_the_internet_is_inbound_whatever_the_port() -> None:
    s = Summarizer(home_net=NETS, interval=60)
    inbound = _flow("203.0.113.9", "192.168.1.10", 48080, sport=50123, dst_mac=PC)
    s.add(msgspec.structs.replace(inbound, syn=1, synack=1), 1000)
    row = _row_for(s, "203.0.113.9")
    assert (row.dir, row.remote_port, row.mac) == ("in", 48080, PC)
    # The same packets without the handshake: the device's own connection.
    s.add(inbound, 1000)
    assert _row_for(s, "203.0.113.9").dir == "out"


def test_a_broadcast_address_never_opens_a_connection() -> None:
    """A Wi-Fi module's discovery broadcast from port 48899 to 255.255.255.255:49999."""
    s = Summarizer(home_net=NETS, interval=60)
    s.add(_flow("192.168.1.10", "255.255.255.255", 49999, sport=48899, proto=17), 1000)
    row = _row_for(s, "255.255.255.255")
    assert (row.dir, row.mac, row.remote_port) == ("lan", PC, 49999)


def test_a_capture_starting_at_the_servers_syn_ack_keeps_the_client() -> None:
    s = Summarizer(home_net=NETS, interval=60)
    late = _flow("203.0.113.5", "192.168.1.10", 40000, sport=443, dst_mac=PC)
    s.add(msgspec.structs.replace(late, syn=1), 1000)  # the SYN-ACK is the only SYN
    row = _row_for(s, "203.0.113.5")
    assert (row.dir, row.remote_port) == ("out", 443)
    # A refused SYN (a scan's probe answered by RST) is the scanner's, whatever the ports.
    probe = _flow("192.168.1.10", "203.0.113.7", 50000, sport=40000, pkts=(1, 1))
    s.add(msgspec.structs.replace(probe, syn=1, rst=1), 1000)
    row = _row_for(s, "203.0.113.7")
    assert (row.dir, row.remote_port) == ("out", 50000)
