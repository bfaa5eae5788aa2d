"""Threat-intel parsing and matching, on the real ipsum feed and hand-written feeds."""

from __future__ import annotations

from pathlib import Path

import pytest
from mimamori.detect import Intel, IntelError, parse_csv, parse_feed, parse_list
from mimamori.protocol import IntelBundle, decode_down, encode


def test_ipsum_feed(shared_data: Path) -> None:
    text = (shared_data / "intel" / "ipsum_level3.txt").read_text()
    intel = parse_feed(text, source="ipsum_level3")
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    assert len(intel.ips) == len({ln.split()[0] for ln in lines})
    assert intel.rejected == 0
    first = lines[0].split()[0]
    assert intel.match_ip(first) == first
    assert intel.match_ip("192.0.2.1") == ""


def test_plain_list_mixed_kinds() -> None:
    intel = parse_list(
        "# comment\n"
        "203.0.113.5\t7\n"  # ipsum style: ip, tab, count
        "198.51.100.0/24 ; a network\n"
        "10.0.0.1/32\n"  # a /32 is an address
        "Evil.Example.\n"
        "*.wild.example\n"
        "0.0.0.0 ads.example\n"  # hosts-file line
        "not an indicator!\n"
        "2001:db8::/32\n",
        source="test",
    )
    assert intel.ips == {"203.0.113.5", "10.0.0.1"}
    assert intel.cidrs == {"198.51.100.0/24", "2001:db8::/32"}
    assert intel.domains == {"evil.example", "wild.example", "ads.example"}
    assert intel.rejected == 1
    assert intel.match_ip("198.51.100.200") == "198.51.100.0/24"
    assert intel.match_ip("2001:db8:1::5") == "2001:db8::/32"
    assert intel.match_domain("a.b.evil.example") == "evil.example"
    assert intel.match_domain("notevil.example") == ""


def test_csv_feeds() -> None:
    urlhaus = (
        "# URLhaus export\n"
        "# id,dateadded,url,url_status,threat\n"
        '"1","2024-01-01","http://bad.example/x.exe","online","malware_download"\n'
        '"2","2024-01-01","https://203.0.113.9:8080/p","online","malware_download"\n'
    )
    intel = parse_csv(urlhaus, source="urlhaus")
    assert intel.domains == {"bad.example"} and intel.ips == {"203.0.113.9"}
    feodo = "first_seen_utc,dst_ip,dst_port,malware\n2024-01-01,198.51.100.7,443,Emotet\n"
    assert parse_feed(feodo).ips == {"198.51.100.7"}
    with pytest.raises(IntelError):
        parse_csv("a,b,c\n1,2,3\n")


def test_bundle_round_trip_through_the_protocol() -> None:
    intel = Intel(ips=["203.0.113.5"], cidrs=["198.51.100.0/24"], domains=["evil.example"],
                  sources=["ipsum"])  # fmt: skip
    bundle = intel.to_bundle(version="2026-11-22", generated_at=1_700_000_000.0)
    decoded = decode_down(encode(bundle))
    assert isinstance(decoded, IntelBundle)
    back = Intel.from_bundle(decoded)
    assert (back.ips, back.cidrs, back.domains) == (intel.ips, intel.cidrs, intel.domains)
    bad = IntelBundle(version="x", generated_at=0.0, ips=["nope"], domains=["-bad-"])
    assert Intel.from_bundle(bad).rejected == 2


def test_merge() -> None:
    a, b = Intel(ips=["203.0.113.5"], sources=["a"]), Intel(domains=["x.example"], sources=["b"])
    m = a.merged(b)
    assert len(m) == 2 and m.sources == ["a", "b"]
