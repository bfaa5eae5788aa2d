"""The durable outbox: numbering, acks, order, disk budget, and survival of kill -9."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from mimamori.edge.errors import OutboxCorrupt
from mimamori.edge.outbox import Outbox, cost
from mimamori.protocol import (
    Alert,
    AlertBatch,
    Device,
    DeviceBatch,
    FlowBatch,
    FlowSummary,
    Heartbeat,
    SensorMessage,
    decode_up,
)
from mimamori.protocol.sequence import time_floor

NOW = 1_800_000_000.0
GW = "gw1"


def heartbeat(now: float = NOW) -> Heartbeat:
    return Heartbeat(gateway=GW, seq=0, sent_at=now, uptime_s=5.0)


def flows(n: int = 20, now: float = NOW) -> FlowBatch:
    rows = [
        FlowSummary(ts=now, local_ip=f"192.168.1.{i % 250 + 1}", remote_ip=f"203.0.113.{i % 250}",
                    remote_port=443, proto=6, bytes_out=i * 1000 + 17, pkts_out=i)
        for i in range(n)
    ]  # fmt: skip
    return FlowBatch(gateway=GW, seq=0, sent_at=now, flows=rows)


def alerts(now: float = NOW) -> AlertBatch:
    alert = Alert(id="a1", category="scan", severity="high", detected_at=now, actor="10.0.0.5",
                  summary_en="port scan", summary_ja="ポートスキャン", dedup_key="scan:10.0.0.5")  # fmt: skip
    return AlertBatch(gateway=GW, seq=0, sent_at=now, alerts=[alert])


def devices(now: float = NOW) -> DeviceBatch:
    dev = Device(mac="00:11:22:33:44:55", first_seen=now, last_seen=now)
    return DeviceBatch(gateway=GW, seq=0, sent_at=now, devices=[dev])


def open_box(path: Path, **kw: object) -> Outbox:
    kw.setdefault("clock", lambda: NOW)
    return Outbox(path=path / "outbox.db", **kw)


def test_numbers_from_time_floor_in_order_and_ack_deletes(tmp_path: Path) -> None:
    with open_box(tmp_path) as box:
        seqs = [box.append(heartbeat()) for _ in range(5)]
        assert seqs == [time_floor(NOW) + i for i in range(5)]
        pend = box.pending()
        assert [p.seq for p in pend] == seqs
        # The stored payload is the wire form, stamped with its own number.
        assert [decode_up(p.payload).seq for p in pend] == seqs
        assert all(p.kind == "heartbeat" for p in pend)
        assert [p.seq for p in box.pending(after_seq=seqs[1], limit=2)] == seqs[2:4]
        assert box.depth() == 5
        size = sum(cost(len(p.payload)) for p in pend)
        assert box.size_bytes() == size

        assert box.ack([(seqs[0], seqs[1]), (seqs[3], seqs[3])]) == 3
        assert [p.seq for p in box.pending()] == [seqs[2], seqs[4]]
        # Acks are idempotent; inverted ranges are ignored.
        assert box.ack([(seqs[0], seqs[1]), (seqs[4], seqs[2])]) == 0
        assert box.depth() == 2
        assert box.get(seqs[2]) is not None and box.get(seqs[0]) is None


def test_builder_receives_its_sequence_number(tmp_path: Path) -> None:
    with open_box(tmp_path) as box:
        seen: list[int] = []

        def build(seq: int) -> Heartbeat:
            seen.append(seq)
            return Heartbeat(gateway=GW, seq=seq, sent_at=NOW, uptime_s=float(seq % 7))

        seq = box.append(build)
        assert seen == [seq]
        got = box.get(seq)
        assert got is not None and decode_up(got.payload).seq == seq


def test_numbering_continues_across_reopen_and_never_reuses(tmp_path: Path) -> None:
    with open_box(tmp_path) as box:
        last = box.append(heartbeat())
        assert last is not None
        box.ack([(last, last)])  # nothing stored any more; the counter must still hold
        will = box.reserve()
        assert will == last + 1
    # Same clock: continue after the reserved number.
    with open_box(tmp_path) as box:
        assert box.append(heartbeat()) == will + 1
        assert box.depth() == 0 + 1
    # Clock jumped ahead (days offline, powered down): the time floor wins.
    later = NOW + 86_400
    with open_box(tmp_path, clock=lambda: later) as box:
        assert box.append(heartbeat()) == time_floor(later)
    # Clock went backwards (bad RTC): last_used + 1 wins, never a reused number.
    with open_box(tmp_path, clock=lambda: NOW - 3600) as box:
        assert box.append(heartbeat()) == time_floor(later) + 1


def test_budget_drops_flows_then_health_then_alerts_oldest_first(tmp_path: Path) -> None:
    (tmp_path / "probe").mkdir()
    probe = open_box(tmp_path / "probe")
    sizes = {}
    for name, msg in (("flows", flows()), ("heartbeat", heartbeat()), ("alerts", alerts()),
                      ("devices", devices())):  # fmt: skip
        seq = probe.append(msg)
        assert seq is not None
        got = probe.get(seq)
        assert got is not None
        sizes[name] = cost(len(got.payload))
    probe.close()

    # Room for: 3 flow batches, 3 heartbeats, 2 alerts, 1 device batch (with a few bytes of
    # slack, since a compressed batch's size can differ by a byte from one number to another).
    budget = 3 * sizes["flows"] + 3 * sizes["heartbeat"] + 2 * sizes["alerts"] + sizes["devices"]
    budget += 16
    with open_box(tmp_path, budget_bytes=budget) as box:
        f = [box.append(flows()) for _ in range(3)]
        h = [box.append(heartbeat()) for _ in range(3)]
        a = [box.append(alerts()) for _ in range(2)]
        d = [box.append(devices())]
        assert box.dropped() == {} and box.size_bytes() > budget - 32

        # A new alert pushes out the oldest flow batch only.
        a.append(box.append(alerts()))
        left = {p.seq for p in box.pending(limit=1000)}
        assert f[0] not in left and f[1] in left
        assert box.dropped() == {"flows": 1}

        # Two more alerts: the remaining flows go (oldest first), nothing else yet.
        a.append(box.append(alerts()))
        a.append(box.append(alerts()))
        left = {p.seq for p in box.pending(limit=1000)}
        assert not left & set(f)
        assert set(h) <= left
        # A flow batch cannot push out anything of higher priority: it is dropped itself,
        # and its number is not consumed.
        before = box.last_seq
        assert box.append(flows()) is None
        assert box.last_seq == before
        assert box.dropped() == {"flows": 4}

        # Alerts now push out heartbeats, oldest first, before any alert or device.
        a.append(box.append(alerts()))
        left = {p.seq for p in box.pending(limit=1000)}
        assert h[0] not in left and h[1] in left
        for _ in range(3):
            a.append(box.append(alerts()))
        left = {p.seq for p in box.pending(limit=1000)}
        assert not left & set(h)
        assert box.dropped()["heartbeat"] == 3
        # Only alerts and devices remain; new alerts now replace the oldest of those.
        assert box.size_bytes() <= budget
        assert box.append(alerts()) is not None
        left = {p.seq for p in box.pending(limit=1000)}
        # Alerts and device batches share the top priority: oldest first across both.
        order = sorted(a + d)
        gone = [s for s in order if s not in left]
        assert gone and gone == order[: len(gone)]
        assert box.dropped()["alerts"] == len([s for s in gone if s in a])
        dropped = box.dropped()
    # Counters survive a restart.
    with open_box(tmp_path, budget_bytes=budget) as box:
        assert box.dropped() == dropped
        stats = box.stats()
        assert stats.depth == box.depth() and stats.bytes <= budget


def test_corrupt_database_is_reported(tmp_path: Path) -> None:
    (tmp_path / "outbox.db").write_bytes(b"this is not sqlite" * 400)
    with pytest.raises(OutboxCorrupt):
        open_box(tmp_path)


def test_too_large_message_is_rejected_and_counted(tmp_path: Path) -> None:
    with open_box(tmp_path) as box:
        # Random hex compresses only to half: far over the 256 kB wire limit once encoded.
        junk = os.urandom(400_000).hex()
        msg = SensorMessage(gateway=GW, seq=0, sent_at=NOW, sensor_id="s1",
                            sensor_kind="self_report", received_at=NOW, body={"junk": junk})  # fmt: skip
        before = box.last_seq
        assert box.append(msg) is None
        assert box.stats().rejected == 1 and box.last_seq == before
        assert box.append(heartbeat()) == before + 1


# --- kill -9 -------------------------------------------------------------------------------

_WRITER = textwrap.dedent(
    """
    import os, sys, threading
    from mimamori.edge.outbox import Outbox
    from mimamori.protocol import FlowBatch, FlowSummary, Heartbeat

    box = Outbox(path=sys.argv[1], budget_bytes=int(sys.argv[2]))
    rows = [FlowSummary(ts=1.0, local_ip="10.0.0.%d" % i, remote_ip="198.51.100.7", proto=6,
                        bytes_out=i) for i in range(200)]

    def say(*words):
        # One write per line: atomic on a pipe, so the two threads never interleave.
        os.write(1, (" ".join(map(str, words)) + "\\n").encode())

    def acker():
        # Acknowledge whatever is oldest, all the time, like a fast cloud.
        while True:
            pend = box.pending(limit=7)
            if len(pend) > 3:
                # Said before it is done: a kill in between must not look like a loss.
                say("A", pend[0].seq, pend[2].seq)
                box.ack([(pend[0].seq, pend[2].seq)])

    threading.Thread(target=acker, daemon=True).start()
    i = 0
    while True:
        i += 1
        if i % 3:
            seq = box.append(Heartbeat(gateway="gw1", seq=0, sent_at=1.0, uptime_s=i))
        else:
            seq = box.append(FlowBatch(gateway="gw1", seq=0, sent_at=1.0, flows=rows))
        if i % 11 == 0:
            say("R", box.reserve())
        say("S", seq)
    """
)


def _note(line: str, stored: set[int], used: list[int], acked: list[tuple[int, int]]) -> None:
    """Record one line of the writer's report."""
    tag, *nums = line.split()
    if tag == "S" and nums[0] != "None":
        stored.add(int(nums[0]))
        used.append(int(nums[0]))
    elif tag == "R":
        used.append(int(nums[0]))
    elif tag == "A":
        acked.append((int(nums[0]), int(nums[1])))


@pytest.mark.fault
@pytest.mark.parametrize("budget", [512 * 1024 * 1024, 40_000])
def test_survives_kill_9_mid_write(tmp_path: Path, budget: int) -> None:
    """A writer killed at random points leaves a sound database and no reusable number."""
    db = tmp_path / "outbox.db"
    seen_max = 0
    for round_ in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(db), str(budget)],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert proc.stdout is not None
        stored: set[int] = set()
        acked: list[tuple[int, int]] = []
        used: list[int] = []
        deadline = time.monotonic() + 30
        lines = 0

        # Kill at a different depth each round, while both threads are writing.
        while lines < 300 + 250 * round_ and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines += 1
            _note(line, stored, used, acked)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        # What the writer said between our last read and its death counts too.
        for line in proc.stdout:
            if line.endswith("\n"):
                _note(line, stored, used, acked)
        proc.stdout.close()
        assert lines > 100, "writer produced too little before the kill"

        # Integrity: SQLite's full check passes after the crash.
        conn = sqlite3.connect(db)
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        conn.close()
        with Outbox(path=db, budget_bytes=budget) as box:
            left = {p.seq for p in box.pending(limit=1_000_000)}
            dropped = sum(box.dropped().values())
            # Every reported, unacknowledged, undropped message is still there.
            unacked = {s for s in stored if not any(a <= s <= b for a, b in acked)}
            if dropped == 0:
                assert unacked <= left
            assert box.size_bytes() <= budget
            # No number is ever handed out twice, across every kill so far.
            assert min(used) > seen_max
            assert len(set(used)) == len(used)
            new = box.append(Heartbeat(gateway="gw1", seq=0, sent_at=1.0, uptime_s=1))
            assert new is not None and new > max(used) and new > max(left, default=0)
            seen_max = new


def test_messages_older_than_the_cloud_remembers_are_dropped(tmp_path: Path) -> None:
    clock = [NOW]
    with open_box(tmp_path, clock=lambda: clock[0]) as box:
        old = box.append(flows(now=NOW - 40 * 86400))
        young = box.append(heartbeat(now=NOW - 3600))
        assert box.expire() == 1
        assert [p.seq for p in box.pending()] == [young]
        assert box.get(old) is None and box.dropped() == {"flows": 1}
        assert box.expire() == 0


def test_file_stays_near_the_budget(tmp_path: Path) -> None:
    """The charge per message tracks SQLite's real use, so the file stays near the budget."""
    budget = 3 * 1024 * 1024
    with open_box(tmp_path, budget_bytes=budget, synchronous="OFF") as box:
        rng = random.Random(5)
        for i in range(1500):
            # Incompressible bodies of 0.3 to 20 kB: small health messages to big batches.
            body = {"x": rng.randbytes(rng.choice([150, 1000, 10_000])).hex()}
            box.append(SensorMessage(gateway=GW, seq=0, sent_at=NOW, sensor_id="s1",
                                     sensor_kind="self_report", received_at=NOW, body=body))  # fmt: skip
            if i % 200 == 0:
                box.ack([(p.seq, p.seq) for p in box.pending(limit=50)])
        assert box.size_bytes() <= budget and sum(box.dropped().values()) > 0
    size = (tmp_path / "outbox.db").stat().st_size
    assert size <= budget * 1.05 + 64 * 1024
