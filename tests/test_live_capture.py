"""Live capture on a veth pair whose far end lives in a network namespace the test creates.

Traffic is generated from inside the namespace: a TCP connection to a listener on the near
end, a UDP datagram, and a crafted DHCP DISCOVER (with a hostname and a parameter list);
the kernel's own ARP resolution supplies ARP. The test checks that the flow meter and the
discovery listener both deliver, through :class:`LiveCapture` into a real pipeline.
"""

from __future__ import annotations

import multiprocessing
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from mimamori.edge.capture import FlowMeter, LiveCapture
from mimamori.edge.discovery import DiscoveryListener
from mimamori.edge.inventory import Inventory, VendorLookup
from mimamori.edge.pipeline import Draft, Pipeline
from mimamori.edge.summaries import Summarizer, parse_home_net
from mimamori.protocol import Alert, ArpEvent, DiscoveryEvent, FlowRecord

pytestmark = pytest.mark.netns

NEAR_IP = "10.231.7.1"
FAR_IP = "10.231.7.2"

# Run inside the namespace: a TCP connect, a UDP datagram and a DHCP DISCOVER.
_CLIENT = r"""
import socket, struct, sys
near, far_if, mac = sys.argv[1], sys.argv[2], bytes.fromhex(sys.argv[3].replace(":", ""))
s = socket.create_connection((near, 8765), timeout=5)
s.sendall(b"hello mimamori" * 10)
s.recv(100)
s.close()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.sendto(b"x" * 50, (near, 9999))
opts = (b"\x63\x82\x53\x63" + b"\x35\x01\x01" + b"\x0c\x0alivetester"
        + b"\x37\x04\x01\x03\x06\x0f" + b"\x3c\x08mimamori" + b"\xff")
dhcp = (struct.pack("!BBBBIHHIIII", 1, 1, 6, 0, 0x1234, 0, 0x8000, 0, 0, 0, 0)
        + mac + b"\x00" * 10 + b"\x00" * 192 + opts)
d = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
d.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
d.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, far_if.encode())
d.bind(("0.0.0.0", 68))
d.sendto(dhcp, ("255.255.255.255", 67))
"""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@pytest.fixture
def veth() -> Iterator[tuple[str, str, str, str]]:
    """(namespace, near interface, far interface, far MAC); removed afterwards."""
    if shutil.which("ip") is None:
        pytest.skip("iproute2's ip command is not installed")
    tag = uuid.uuid4().hex[:6]
    ns, near, far = f"mmns{tag}", f"mmn{tag}", f"mmf{tag}"
    try:
        _ip("netns", "add", ns)
    except (subprocess.CalledProcessError, OSError) as exc:
        pytest.skip(f"cannot create a network namespace (need root / CAP_SYS_ADMIN): {exc}")
    try:
        _ip("link", "add", near, "type", "veth", "peer", "name", far)
        _ip("link", "set", far, "netns", ns)
        _ip("addr", "add", f"{NEAR_IP}/24", "dev", near)
        _ip("link", "set", near, "up")
        _ip("netns", "exec", ns, "ip", "addr", "add", f"{FAR_IP}/24", "dev", far)
        _ip("netns", "exec", ns, "ip", "link", "set", far, "up")
        out = subprocess.run(
            ["ip", "netns", "exec", ns, "cat", f"/sys/class/net/{far}/address"],
            check=True,
            capture_output=True,
            text=True,
        )
        yield ns, near, far, out.stdout.strip()
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot set up a veth pair: {exc.stderr!r}")
    finally:
        subprocess.run(["ip", "link", "del", near], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


class _NullEngine:
    def __init__(self) -> None:
        self.seen: list[object] = []

    def on_flow(self, record: FlowRecord) -> list[Alert]:
        self.seen.append(record)
        return []

    def on_arp(self, event: ArpEvent) -> list[Alert]:
        self.seen.append(event)
        return []

    def on_discovery(self, event: DiscoveryEvent) -> list[Alert]:
        self.seen.append(event)
        return []

    def tick(self, now: float) -> list[Alert]:
        return []

    def finish(self, now: float) -> list[Alert]:
        return []


def test_live_capture_delivers_flows_and_discovery(veth: tuple[str, str, str, str]) -> None:
    ns, near, far, far_mac = veth
    nets = parse_home_net(["10.231.7.0/24"])
    drafts: list[Draft] = []
    engine = _NullEngine()
    pipeline = Pipeline(
        engine=engine,
        summarizer=Summarizer(home_net=nets, interval=2),
        inventory=Inventory(home_net=nets, vendors=VendorLookup()),
        sink=drafts.append,
        device_delay_s=0.5,
    )
    live = LiveCapture(
        meter=FlowMeter(source=near, idle_timeout=1, active_timeout=5),
        listener=DiscoveryListener(interface=near, emit=lambda e: None),
    )
    server = socket.create_server((NEAR_IP, 8765))
    server.settimeout(10)

    def serve() -> None:
        conn, _ = server.accept()
        conn.recv(1000)
        conn.sendall(b"ok")
        conn.close()

    server_thread = threading.Thread(target=serve, daemon=True)
    server_thread.start()
    live.start()
    stop = threading.Event()
    runner = threading.Thread(target=live.run, args=(pipeline,), kwargs={"stop": stop})
    runner.start()
    try:
        # The meter process takes a while to open the interface (longer on a busy
        # machine): send probes until one comes out as a flow, then the real traffic.
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        deadline = time.time() + 60
        while time.time() < deadline and not any(
            isinstance(r, FlowRecord) and r.dst_port == 9998 for r in engine.seen
        ):
            probe.sendto(b"probe", (FAR_IP, 9998))
            time.sleep(0.3)
        probe.close()
        subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, "-c", _CLIENT, NEAR_IP, far, far_mac],
            check=True,
            timeout=30,
        )
        deadline = time.time() + 20
        while time.time() < deadline:
            tcp = [r for r in engine.seen if isinstance(r, FlowRecord) and r.dst_port == 8765]
            dhcp = [e for e in engine.seen if isinstance(e, DiscoveryEvent)]
            arp = [e for e in engine.seen if isinstance(e, ArpEvent)]
            if tcp and dhcp and arp:
                break
            time.sleep(0.3)
    finally:
        stop.set()
        runner.join(timeout=10)
        live.stop()
        server.close()
    assert not [p for p in multiprocessing.active_children() if p.is_alive()]  # meters ended
    assert live.error is None
    assert live.listener is not None and live.listener.kernel_filter
    tcp = [r for r in engine.seen if isinstance(r, FlowRecord) and r.dst_port == 8765]
    assert tcp, f"no TCP flow came out of nfstream; saw {engine.seen!r}"
    flow = tcp[0]
    assert (flow.src_ip, flow.dst_ip, flow.proto) == (FAR_IP, NEAR_IP, 6)
    assert flow.src_mac == far_mac
    assert flow.syn >= 1 and flow.synack >= 1  # statistical analysis gives TCP flags
    assert flow.bytes_src2dst > 140  # the 140-byte payload plus headers
    assert any(isinstance(r, FlowRecord) and r.dst_port == 9999 for r in engine.seen)
    dhcp = [e for e in engine.seen if isinstance(e, DiscoveryEvent) and e.source == "dhcp"]
    assert dhcp and dhcp[0].mac == far_mac
    assert dhcp[0].facts["hostname"] == "livetester"
    assert dhcp[0].facts["dhcp_fingerprint"] == "1,3,6,15"
    assert dhcp[0].facts["dhcp_vendor_class"] == "mimamori"
    arp = [e for e in engine.seen if isinstance(e, ArpEvent)]
    assert any(e.src_mac == far_mac and e.src_ip == FAR_IP for e in arp)
    # The pipeline turned it all into published drafts.
    pipeline.finish(time.time())
    devices = {
        d.mac: d for draft in drafts if draft.kind == "devices" for d in draft.body["devices"]
    }
    assert devices[far_mac].hostname == "livetester"
    assert FAR_IP in devices[far_mac].ips
    assert any(draft.kind == "flows" for draft in drafts)
