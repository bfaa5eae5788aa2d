"""Negotiated TLS (a ServerHello's version and cipher suite): naming, judging, ranking.

Pure, shared by the edge (edge/tls_hello.py reads ServerHellos and keeps each device's
weakest session in its inventory extras) and the labels (edge or cloud), so that both
judge the same summary the same way.

A session is *weak* when it negotiated SSL 3.0, TLS 1.0 or TLS 1.1 (RFC 8996 retired the
last two), or a cipher suite without real protection: NULL encryption, EXPORT strength,
anonymous key exchange (no server authentication), RC4, DES or 3DES, or an MD5 MAC. It is
*modern* when it negotiated TLS 1.2 with an AEAD cipher (GCM, CCM, ChaCha20-Poly1305) or
TLS 1.3 (AEAD only). TLS 1.2 with CBC and SHA-1/SHA-2 MACs is neither.

Cipher suites are named by their IANA names from dpkt's table (``dpkt.ssl_ciphersuites``).
The summary kept per device is ``"VVVV:CCCC:port"`` (hex version, hex suite, server
port), e.g. ``"0301:0005:443"``: small, and judged again wherever it is read.
"""

from __future__ import annotations

from typing import Literal

from dpkt import ssl_ciphersuites

#: Device.extras keys: the weakest session the device *served* (it sent the ServerHello)
#: and the weakest it *negotiated as a client* (it received one), as "VVVV:CCCC:port".
SERVED_EXTRA = "tls_served"
CLIENT_EXTRA = "tls_negotiated"

VERSIONS = {
    0x0300: "SSL 3.0",
    0x0301: "TLS 1.0",
    0x0302: "TLS 1.1",
    0x0303: "TLS 1.2",
    0x0304: "TLS 1.3",
}
_WEAK_VERSIONS = frozenset((0x0300, 0x0301, 0x0302))
#: Parts of an IANA suite name that mark it weak, and the reason given for each.
_WEAK_PARTS = (
    ("_NULL_", "no encryption"),
    ("EXPORT", "export-grade key"),
    ("_anon_", "no server authentication"),
    ("_RC4_", "RC4"),
    ("_DES", "DES"),
    ("3DES", "3DES"),
)
_AEAD = ("_GCM", "_CCM", "CHACHA20_POLY1305")

Strength = Literal["weak", "modern", "plain"]


def version_name(version: int) -> str:
    """``"TLS 1.2"``, or the hex code of an unknown version."""
    return VERSIONS.get(version, f"version 0x{version:04x}")


def suite_name(code: int) -> str:
    """The IANA name of cipher suite ``code`` (``"TLS_RSA_WITH_RC4_128_SHA"``)."""
    suite = ssl_ciphersuites.BY_CODE.get(code)
    return suite.name if suite is not None else f"cipher suite 0x{code:04x}"


def weaknesses(version: int, code: int) -> list[str]:
    """Why a session with this version and suite is weak (empty if it is not)."""
    why: list[str] = []
    if version in _WEAK_VERSIONS:
        why.append(f"{version_name(version)} (retired)")
    suite = ssl_ciphersuites.BY_CODE.get(code)
    if suite is not None:
        name = f"_{suite.name}_"
        why += [reason for part, reason in _WEAK_PARTS if part in name]
        if name.endswith("_MD5_"):
            why.append("MD5 MAC")
    return list(dict.fromkeys(why))


def strength(version: int, code: int) -> Strength:
    """``weak``, ``modern`` (TLS 1.3, or 1.2 with an AEAD suite) or ``plain``."""
    if weaknesses(version, code):
        return "weak"
    if version == 0x0304:
        return "modern"
    name = suite_name(code)
    if version == 0x0303 and any(part in name for part in _AEAD):
        return "modern"
    return "plain"


_STRENGTH_RANK = {"weak": 0, "plain": 1, "modern": 2}


def summary(version: int, code: int, port: int) -> str:
    """The per-device summary string of one session."""
    return f"{version:04x}:{code:04x}:{port}"


def parse_summary(text: str) -> tuple[int, int, int] | None:
    """(version, suite, port) of a summary string, None if it is not one."""
    parts = text.split(":")
    if len(parts) != 3:
        return None
    try:
        version, code, port = int(parts[0], 16), int(parts[1], 16), int(parts[2])
    except ValueError:
        return None
    if not (0 <= version <= 0xFFFF and 0 <= code <= 0xFFFF and 0 <= port <= 0xFFFF):
        return None
    return version, code, port


def rank(text: str) -> tuple[int, int, int]:
    """Sort key of a summary: weaker sessions first (weak, plain, modern; then version)."""
    parsed = parse_summary(text)
    if parsed is None:
        return (99, 0, 0)
    version, code, _ = parsed
    return (_STRENGTH_RANK[strength(version, code)], version, len(weaknesses(version, code)) * -1)


def weaker(current: str, new: str) -> str:
    """Of two summaries, the one to keep (the weaker; ``current`` on a tie)."""
    if parse_summary(new) is None:
        return current
    if parse_summary(current) is None or rank(new) < rank(current):
        return new
    return current


def describe(text: str, role: Literal["server", "client"]) -> tuple[Strength, str] | None:
    """The strength and an English detail of a summary, from the device's side."""
    parsed = parse_summary(text)
    if parsed is None:
        return None
    version, code, port = parsed
    what = f"{version_name(version)} with {suite_name(code)}"
    where = (
        f"serves {what} on port {port}"
        if role == "server"
        else f"negotiated {what} with a server on port {port}"
    )
    why = weaknesses(version, code)
    detail = f"{where} (ServerHello" + (f": {', '.join(why)})" if why else ")")
    return strength(version, code), detail
