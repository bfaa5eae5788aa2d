"""``mimamori bench edge``: the full edge pipeline against bare nfstream on one capture.

Both run over the same file with the same nfstream settings (idle 15 s, active 60 s,
statistical analysis on, one meter process), each in a fresh child process:

* ``nfstream``: iterate the ``NFStreamer`` and nothing else;
* ``pipeline``: :func:`mimamori.edge.replay.replay`, i.e. nfstream plus the discovery pass
  over the file, record conversion, the detection engine, summaries, inventory and the
  encoding of every message the gateway would send;
* ``nodetect``: the same with an engine that does nothing, to tell the pipeline's own
  cost from the detection rules'.

Small captures are looped (``--packets``, default 200,000): copies of the file are laid
end to end in a temporary pcap, each shifted in time past the previous one, with gaps
over an hour shortened to an hour so that merged captures do not span years. Packets per
second count every frame of the looped file over the child's wall time, start-up
included; ``cpu_ratio`` compares CPU seconds of the two process trees instead, which a
busy machine disturbs less. Memory is sampled every 50 ms over the child
and its processes (nfstream's meter is a forked child): ``peak_rss_mb`` is the largest
sum of their RSS, which counts pages they share twice and so overstates;
``peak_pss_mb`` the largest sum of their PSS, which shares those pages out and is the
memory the tree really occupies. Each side runs ``--runs`` times; the best run counts.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_LOOP_GAP_S = 60.0
_MAX_GAP_S = 3600.0


def loop_capture(src: Path, dst: Path, *, min_packets: int) -> int:
    """Write ``src`` repeated end to end into ``dst`` until it holds ``min_packets``.

    Returns the number of packets written. Reads pcap and pcapng; writes pcap.
    """
    import dpkt

    # (time, frame, original length): captures cut at a snap length meter by the original.
    frames: list[tuple[float, bytes, int]] = []
    with src.open("rb") as fh:
        magic = fh.read(4)
        fh.seek(0)
        if magic == b"\x0a\x0d\x0d\x0a":
            reader: Any = dpkt.pcapng.Reader(fh)
            frames = [(float(ts), bytes(buf), len(buf)) for ts, buf in reader]
        else:
            reader = dpkt.pcap.Reader(fh)
            frames = _pcap_records(src)
        linktype = reader.datalink()
    # Relative times with long gaps shortened.
    rel: list[float] = [0.0]
    for (a, _, _), (b, _, _) in itertools.pairwise(frames):
        rel.append(rel[-1] + min(max(b - a, 0.0), _MAX_GAP_S))
    span = rel[-1] + _LOOP_GAP_S
    base = frames[0][0]
    written = 0
    copies = 0
    with dst.open("wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype))
        while written < min_packets:
            offset = base + copies * span
            for (_, buf, origlen), t in zip(frames, rel, strict=True):
                ts = offset + t
                sec = int(ts)
                out.write(struct.pack("<IIII", sec, int((ts - sec) * 1e6), len(buf), origlen))
                out.write(buf)
            written += len(frames)
            copies += 1
    return written


def _pcap_records(path: Path) -> list[tuple[float, bytes, int]]:
    data = path.read_bytes()
    endian = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    tick = 1e-9 if data[:4] in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d") else 1e-6
    record = struct.Struct(endian + "IIII")
    out = []
    off = 24
    while off + 16 <= len(data):
        sec, frac, caplen, origlen = record.unpack_from(data, off)
        out.append((sec + frac * tick, data[off + 16 : off + 16 + caplen], origlen))
        off += 16 + caplen
    return out


# --- children --------------------------------------------------------------------------


def _child_nfstream(path: str) -> dict[str, Any]:
    from mimamori.edge.capture import FlowMeter

    start = time.perf_counter()
    flows = packets = 0
    for flow in FlowMeter(source=[path]).streamer():
        flows += 1
        packets += flow.bidirectional_packets
    return {"seconds": time.perf_counter() - start, "flows": flows, "flow_packets": packets}


class _NoDetection:
    """An engine that raises nothing: isolates the pipeline's own cost from detection's."""

    def on_flow(self, record: Any) -> list[Any]:
        return []

    on_arp = on_discovery = tick = finish = on_flow


def _child_pipeline(path: str, home_net: list[str], *, detect: bool = True) -> dict[str, Any]:
    from mimamori.edge.replay import replay

    start = time.perf_counter()
    factory = None if detect else (lambda nets: _NoDetection())
    # Summaries are encoded and counted, not kept: the gateway hands them to its outbox.
    result = replay(
        [path], home_net=home_net or _default_nets(), engine_factory=factory, keep_summaries=False
    )
    seconds = time.perf_counter() - start
    return {"seconds": seconds, **result.stats}


def _default_nets() -> list[str]:
    from mimamori.edge.summaries import DEFAULT_HOME_NET

    return [str(n) for n in DEFAULT_HOME_NET]


def _run_child(args: list[str]) -> tuple[dict[str, Any], float, float]:
    """Run one measurement in a fresh interpreter.

    Returns its JSON, the peak summed RSS and the peak summed PSS of its process tree (MB).
    The JSON gains ``cpu_s``: CPU time of the child and every process it waited for
    (nfstream's meter), steadier than wall time on a shared machine. PSS splits pages
    shared between the processes (the meter is forked from the child) among them, so its
    sum is the memory the tree really occupies; summed RSS counts shared pages twice.
    """
    import resource

    import psutil

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    cmd = [sys.executable, "-m", "mimamori.simulators.bench.edge", "--child", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    parent = psutil.Process(proc.pid)
    peak = peak_pss = 0
    while proc.poll() is None:
        try:
            tree = [parent, *parent.children(recursive=True)]
            rss = pss = 0
            for p in tree:
                with contextlib.suppress(psutil.Error):
                    full = p.memory_full_info()
                    rss += full.rss
                    pss += getattr(full, "pss", full.rss)
            peak = max(peak, rss)
            peak_pss = max(peak_pss, pss)
        except psutil.Error:
            pass
        time.sleep(0.05)
    out, _ = proc.communicate()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark child failed ({proc.returncode}): {' '.join(cmd)}")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    result["cpu_s"] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return result, peak / 1e6, peak_pss / 1e6


def bench(pcap: Path, *, packets: int, runs: int, home_net: list[str]) -> dict[str, Any]:
    """Measure both sides; the dictionary ``--json`` prints."""
    with tempfile.TemporaryDirectory(prefix="mimamori-bench-") as tmp:
        looped = Path(tmp) / "looped.pcap"
        total = loop_capture(pcap, looped, min_packets=packets)
        nf_runs = [_run_child(["nfstream", str(looped)]) for _ in range(runs)]
        pl_runs = [_run_child(["pipeline", str(looped), *home_net]) for _ in range(runs)]
        bare_runs = [_run_child(["nodetect", str(looped), *home_net]) for _ in range(runs)]
    nf_best = min(r[0]["seconds"] for r in nf_runs)
    pl_best = min(r[0]["seconds"] for r in pl_runs)
    nf_cpu = min(r[0]["cpu_s"] for r in nf_runs)
    pl_cpu = min(r[0]["cpu_s"] for r in pl_runs)
    bare_best = min(r[0]["seconds"] for r in bare_runs)
    bare_cpu = min(r[0]["cpu_s"] for r in bare_runs)
    stats = pl_runs[0][0]
    metered = stats["bytes_metered"]
    return {
        "pcap": str(pcap),
        "packets": total,
        "runs": runs,
        "nfstream_pps": round(total / nf_best),
        "pipeline_pps": round(total / pl_best),
        "ratio": round(nf_best / pl_best, 3),
        "cpu_ratio": round(nf_cpu / pl_cpu, 3),
        "nfstream_cpu_s": round(nf_cpu, 3),
        "pipeline_cpu_s": round(pl_cpu, 3),
        "nfstream_seconds": [round(r[0]["seconds"], 3) for r in nf_runs],
        "pipeline_seconds": [round(r[0]["seconds"], 3) for r in pl_runs],
        "no_detection_pps": round(total / bare_best),
        "no_detection_ratio": round(nf_best / bare_best, 3),
        "no_detection_cpu_ratio": round(nf_cpu / bare_cpu, 3),
        "peak_rss_mb": round(max(r[1] for r in pl_runs), 1),
        "peak_pss_mb": round(max(r[2] for r in pl_runs), 1),
        "nfstream_peak_rss_mb": round(max(r[1] for r in nf_runs), 1),
        "nfstream_peak_pss_mb": round(max(r[2] for r in nf_runs), 1),
        "flows": stats["flows"],
        "bytes_metered": metered,
        "bytes_uplink": stats["bytes_uplink"],
        "uplink_ratio": round(stats["bytes_uplink"] / metered, 5) if metered else 0.0,
        "messages": stats["messages"],
        "summary_rows": stats["summary_rows"],
    }


def main(argv: list[str]) -> int:
    """Entry point of ``mimamori bench edge``."""
    if argv[:1] == ["--child"]:
        kind, path, *rest = argv[1:]
        if kind == "nfstream":
            result = _child_nfstream(path)
        else:
            result = _child_pipeline(path, rest, detect=kind == "pipeline")
        print(json.dumps(result))
        return 0
    parser = argparse.ArgumentParser(
        prog="mimamori bench edge", description="edge pipeline vs bare nfstream on a capture"
    )
    parser.add_argument("--pcap", required=True, type=Path, help="capture file (pcap/pcapng)")
    parser.add_argument(
        "--packets", type=int, default=200_000, help="loop the capture to at least this many"
    )
    parser.add_argument("--runs", type=int, default=3, help="runs of each side (best counts)")
    parser.add_argument(
        "--home-net", action="append", default=[], metavar="CIDR", help="monitored network"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if not args.pcap.is_file():
        print(f"mimamori bench edge: no such file: {args.pcap}", file=sys.stderr)
        return 2
    result = bench(args.pcap, packets=args.packets, runs=max(1, args.runs), home_net=args.home_net)
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{result['pcap']} looped to {result['packets']} packets, best of {result['runs']}:\n"
            f"  bare nfstream   {result['nfstream_pps']:>10,} packets/s\n"
            f"  edge pipeline   {result['pipeline_pps']:>10,} packets/s"
            f"  (ratio {result['ratio']:.2f}, goal >= 0.7; by CPU time {result['cpu_ratio']:.2f})\n"
            f"  without detect  {result['no_detection_pps']:>10,} packets/s"
            f"  (ratio {result['no_detection_ratio']:.2f}; by CPU {result['no_detection_cpu_ratio']:.2f})\n"
            f"  peak RSS        {result['peak_rss_mb']:>10.1f} MB summed, "
            f"{result['peak_pss_mb']:.1f} MB PSS (goal <= 200)\n"
            f"  uplink          {result['bytes_uplink']:>10,} of {result['bytes_metered']:,} "
            f"bytes metered = {100 * result['uplink_ratio']:.3f}% (goal <= 1%)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
