"""Device inventory: vendor lookup, merging of observations, change reporting, bounds."""

from __future__ import annotations

from mimamori.edge.inventory import MAX_IPS, Inventory, VendorLookup
from mimamori.edge.summaries import parse_home_net
from mimamori.protocol import ArpEvent, DiscoveryEvent, FlowRecord

NETS = parse_home_net(["192.168.1.0/24", "fe80::/10"])
_VENDORS = VendorLookup()


def _inventory(**kwargs: float) -> Inventory:
    return Inventory(home_net=NETS, vendors=_VENDORS, **kwargs)  # type: ignore[arg-type]


def _arp(mac: str, ip: str, ts: float = 100.0) -> ArpEvent:
    return ArpEvent(ts=ts, op="request", src_mac=mac, src_ip=ip, target_ip="192.168.1.1")


def test_vendor_list_is_the_packaged_offline_one() -> None:
    assert _VENDORS.path is not None and _VENDORS.path.name == "mac-vendors.txt"
    assert len(_VENDORS) > 30000  # the IEEE MA-L registry, not a hand-made table
    assert _VENDORS.lookup("b8:27:eb:01:02:03") == "Raspberry Pi Foundation"
    assert _VENDORS.lookup("00-0C-29-AA-BB-CC") == "VMware, Inc."
    assert _VENDORS.lookup("02:00:00:00:00:01") == ""


def test_sources_merge_and_dhcp_hostname_wins() -> None:
    inv = _inventory()
    mac = "b8:27:eb:01:02:03"
    inv.on_discovery(
        DiscoveryEvent(ts=100, source="nbns", mac=mac, ip="192.168.1.5", facts={"hostname": "PI"})
    )
    inv.on_discovery(
        DiscoveryEvent(
            ts=101,
            source="dhcp",
            mac=mac,
            facts={
                "hostname": "raspberrypi",
                "dhcp_fingerprint": "1,3,6,15",
                "dhcp_vendor_class": "dhcpcd-9.4.1",
            },
        )
    )
    inv.on_discovery(
        DiscoveryEvent(
            ts=102, source="mdns", mac=mac, facts={"hostname": "pi-mdns", "model": "Pi 4"}
        )
    )
    inv.on_discovery(
        DiscoveryEvent(
            ts=103,
            source="ssdp",
            mac=mac,
            ip="192.168.1.5",
            facts={
                "server": "Linux/6.1 UPnP/1.0 x/1",
                "os_hint": "Linux/6.1",
                "service": "urn:x:device:y:1",
            },
        )
    )
    (device,) = inv.take_changes(110)
    assert device.hostname == "raspberrypi"
    assert (device.vendor, device.model, device.os_hint) == (
        "Raspberry Pi Foundation",
        "Pi 4",
        "Linux/6.1",
    )
    assert (device.dhcp_fingerprint, device.dhcp_vendor_class) == ("1,3,6,15", "dhcpcd-9.4.1")
    assert device.ips == ["192.168.1.5"]
    assert device.services == ["urn:x:device:y:1"]
    assert device.extras["ssdp_server"] == "Linux/6.1 UPnP/1.0 x/1"
    assert (device.first_seen, device.last_seen) == (100, 103)


def test_only_new_or_changed_devices_are_reported_then_refreshed() -> None:
    inv = _inventory(refresh_s=3600)
    inv.on_arp(_arp("b8:27:eb:00:00:01", "192.168.1.5"))
    assert [d.mac for d in inv.take_changes(100)] == ["b8:27:eb:00:00:01"]
    inv.on_arp(_arp("b8:27:eb:00:00:01", "192.168.1.5", ts=200))
    assert inv.take_changes(200) == []  # nothing new: only last_seen moved
    inv.on_arp(_arp("b8:27:eb:00:00:01", "192.168.1.6", ts=300))
    (changed,) = inv.take_changes(300)
    assert changed.ips == ["192.168.1.6", "192.168.1.5"]  # most recent first
    inv.on_arp(_arp("b8:27:eb:00:00:01", "192.168.1.6", ts=3950))
    (refreshed,) = inv.take_changes(3950)  # an hour after the last report, still seen
    assert refreshed.last_seen == 3950
    assert inv.take_changes(8000) == []  # not seen since: no refresh


def test_non_station_and_foreign_addresses_are_ignored() -> None:
    inv = _inventory()
    inv.on_arp(_arp("ff:ff:ff:ff:ff:ff", "192.168.1.9"))
    inv.on_arp(_arp("01:00:5e:00:00:fb", "192.168.1.9"))
    inv.on_arp(_arp("00:00:00:00:00:00", "192.168.1.9"))
    assert len(inv) == 0
    # A flow from the internet: the source MAC is the router's, the address is not local.
    inv.on_flow(
        FlowRecord(
            first_seen=1,
            last_seen=2,
            src_ip="8.8.8.8",
            src_port=53,
            dst_ip="192.168.1.9",
            dst_port=5000,
            proto=17,
            src_mac="00:11:22:33:44:55",
            dst_mac="b8:27:eb:00:00:09",
            pkts_src2dst=1,
            pkts_dst2src=1,
        )
    )
    devices = {d.mac: d for d in inv.snapshot()}
    assert "00:11:22:33:44:55" not in devices
    assert devices["b8:27:eb:00:00:09"].ips == ["192.168.1.9"]
    inv.on_arp(_arp("b8:27:eb:00:00:0a", "0.0.0.0"))  # an ARP probe owns no address yet
    assert {d.mac: d for d in inv.snapshot()}["b8:27:eb:00:00:0a"].ips == []


def test_randomized_mac_is_flagged() -> None:
    inv = _inventory()
    inv.on_arp(_arp("da:a1:19:00:00:01", "192.168.1.7"))
    (device,) = inv.take_changes(100)
    assert device.vendor == "" and device.extras == {"mac_randomized": "true"}


def test_memory_is_bounded() -> None:
    inv = _inventory(max_devices=100, expire_s=1000)
    for i in range(250):
        inv.on_arp(_arp(f"b8:27:eb:00:{i // 256:02x}:{i % 256:02x}", f"192.168.1.{i % 250}", ts=i))
    assert len(inv) == 100 and inv.evicted == 150
    assert "b8:27:eb:00:00:f9" in inv and "b8:27:eb:00:00:00" not in inv
    router = "b8:27:eb:ff:ff:ff"
    for i in range(100):
        inv.on_arp(_arp(router, f"192.168.1.{i}", ts=300))
    assert len(inv.devices([router])[0].ips) == MAX_IPS
    assert len(inv) == 100  # the router took the place of the oldest device
    inv.take_changes(1245)  # devices silent for more than expire_s are forgotten
    assert len(inv) == 1 + 5  # the router and the devices last seen at 245..249
