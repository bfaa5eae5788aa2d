"""Threat-intelligence refresh: fetch the feeds, build one bundle, publish it to gateways.

The ``intel`` job (``mimamori cloud jobs``) runs :func:`run_job`. Feeds are listed in a
TOML file named by ``MIMAMORI_INTEL_FEEDS`` (no file: the job does nothing)::

    refresh_s = 3600          # fetch the feeds (and re-publish) at most this often
    timeout_s = 30            # per download
    [[feed]]
    name = "ipsum"            # 1-63 characters; the bundle's sources name it
    source = "https://raw.githubusercontent.com/stamparm/ipsum/master/levels/3.txt"
    format = "auto"           # auto | list | csv (mimamori.detect.intel parses them)

``source`` is an http(s) URL (fetched with If-None-Match / If-Modified-Since, so an
unchanged feed costs a 304) or a file path (offline sites, tests). Each feed's last good
body is kept in ``intel_feeds``: a feed that fails to download still contributes what it
had, and the failure is counted there (``failures``, ``last_error``).

The merged indicators become one :class:`~mimamori.protocol.IntelBundle`, stored in
``intel_bundles`` and published RETAINED (QoS 1) on every tenant's intel topic, so a
gateway that connects later gets it from the broker at once. The version is a hash of
the indicators: an unchanged set keeps its version and ``generated_at`` (which gateways
report as the age of their intel). The encoded bundle must fit the protocol's 256 KiB
payload limit; when the feeds give more, the highest-scored indicators are kept (score:
a feed's count column, e.g. ipsum's number of blacklists, summed over feeds listing it)
and a source entry says how many were left out.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import msgspec
import paho.mqtt.client as mqtt
import psycopg
from mimamori.cloud.errors import CloudError, ConfigError
from mimamori.cloud.settings import Settings
from mimamori.detect import intel as detect_intel
from mimamori.detect.errors import IntelError as DetectIntelError
from mimamori.protocol import IntelBundle, codec, topics
from paho.mqtt.enums import CallbackAPIVersion

#: The environment variable naming the feeds file.
FEEDS_ENV = "MIMAMORI_INTEL_FEEDS"
#: A feed larger than this is refused (a wrong URL serving a disk image, say).
MAX_FEED_BYTES = 64 * 1024 * 1024


class IntelFeedError(CloudError):
    """A feed could not be fetched or read (the job goes on with the feed's last body)."""


class Feed(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: str
    source: str
    format: Literal["auto", "list", "csv"] = "auto"


class FeedsConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The feeds file, validated."""

    # An hour: feeds such as ipsum change daily; hourly keeps a new list under an hour old
    # on gateways and re-publishes the retained bundle often enough to cover a broker
    # that lost it or a tenant added since.
    refresh_s: float = 3600.0
    timeout_s: float = 30.0
    feed: list[Feed] = []


def load_feeds(path: str | Path) -> FeedsConfig:
    """Read and validate a feeds file; errors name the file and the problem."""
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        config = msgspec.convert(raw, FeedsConfig)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the intel feeds file ({exc})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from exc
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    names = [f.name for f in config.feed]
    for name in names:
        if not topics.valid_id(name):
            raise ConfigError(f"{path}: feed name {name!r}: use 1-63 of a-z, 0-9, '-', '_'")
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: feed names must be unique")
    if config.refresh_s <= 0 or config.timeout_s <= 0:
        raise ConfigError(f"{path}: refresh_s and timeout_s must be > 0")
    return config


# --- fetching -------------------------------------------------------------------------


@dataclass(frozen=True)
class Fetched:
    """A download's outcome: ``body`` is None when the server said it is unchanged."""

    body: str | None
    etag: str | None = None
    last_modified: str | None = None


def fetch(
    feed: Feed, *, etag: str | None, last_modified: str | None, timeout: float
) -> Fetched:
    """Download (URL) or read (path) one feed; IntelFeedError on any failure."""
    if not re.match(r"^https?://", feed.source):
        try:
            data = Path(feed.source).read_bytes()[: MAX_FEED_BYTES + 1]
        except OSError as exc:
            raise IntelFeedError(f"feed {feed.name}: cannot read {feed.source}: {exc}") from exc
        return Fetched(body=_text(feed, data))
    request = urllib.request.Request(feed.source, headers={"User-Agent": "mimamori-intel"})
    if etag:
        request.add_header("If-None-Match", etag)
    if last_modified:
        request.add_header("If-Modified-Since", last_modified)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            data = response.read(MAX_FEED_BYTES + 1)
            return Fetched(body=_text(feed, data), etag=response.headers.get("ETag"),
                           last_modified=response.headers.get("Last-Modified"))  # fmt: skip
    except urllib.error.HTTPError as exc:
        if exc.code == 304:
            return Fetched(body=None, etag=etag, last_modified=last_modified)
        raise IntelFeedError(f"feed {feed.name}: HTTP {exc.code} from {feed.source}") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise IntelFeedError(f"feed {feed.name}: cannot fetch {feed.source}: {exc}") from exc


def _text(feed: Feed, data: bytes) -> str:
    if len(data) > MAX_FEED_BYTES:
        raise IntelFeedError(f"feed {feed.name}: larger than {MAX_FEED_BYTES} bytes")
    return data.decode("utf-8", errors="replace")


# --- building the bundle --------------------------------------------------------------


def parse(feed: Feed, body: str) -> detect_intel.Intel:
    """The feed's indicators (bad lines are counted in ``rejected``, never fatal)."""
    if feed.format == "list":
        return detect_intel.parse_list(body, source=feed.name)
    if feed.format == "csv":
        try:
            return detect_intel.parse_csv(body, source=feed.name)
        except DetectIntelError as exc:
            raise IntelFeedError(str(exc)) from exc
    return detect_intel.parse_feed(body, source=feed.name)


def _key(token: str) -> str:
    """An indicator as Intel stores it (so scores and the bundle use the same spelling)."""
    try:
        net = ipaddress.ip_network(token, strict=False)
        return net.network_address.compressed if net.num_addresses == 1 else net.compressed
    except ValueError:
        return token.lower().rstrip(".")


def scores(bodies: Mapping[str, str]) -> dict[str, float]:
    """Indicator -> score: each listing feed adds its count column (ipsum's second
    column, the number of blacklists) or 1 when there is none."""
    out: dict[str, float] = {}
    for body in bodies.values():
        for raw in body.splitlines():
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            tokens = re.split(r"[\s,;]+", line)
            weight = 1.0
            if len(tokens) >= 2 and tokens[1].isdigit():
                weight = float(tokens[1])
            key = _key(tokens[0])
            out[key] = out.get(key, 0.0) + weight
    return out


@dataclass(frozen=True)
class Built:
    bundle: IntelBundle
    payload: bytes
    dropped: int


def build(
    intel: detect_intel.Intel, *, generated_at: float, score: Mapping[str, float]
) -> Built:
    """The bundle for ``intel``, cut to the protocol's payload limit by score if needed."""
    everything = [*intel.ips, *intel.cidrs, *intel.domains]
    digest = hashlib.sha256("\n".join(sorted(everything)).encode()).hexdigest()[:16]
    bundle = intel.to_bundle(version=digest, generated_at=generated_at)
    whole = _fitting(bundle)
    if whole is not None:
        return Built(bundle=bundle, payload=whole, dropped=0)
    # Highest score first; ties broken by the indicator so the cut is reproducible.
    ranked = sorted(everything, key=lambda k: (-score.get(_key(k), 1.0), k))

    def cut(k: int) -> Built | None:
        kept = ranked[:k]  # already in Intel's spelling: no re-parsing needed
        candidate = IntelBundle(
            version=f"{digest}-{k}", generated_at=generated_at,
            ips=sorted(x for x in kept if x in intel.ips),
            cidrs=sorted(x for x in kept if x in intel.cidrs),
            domains=sorted(x for x in kept if x in intel.domains),
            sources=[*(s[:255] for s in intel.sources),
                     f"truncated: kept {k} of {len(ranked)} (payload limit)"],
        )  # fmt: skip
        payload = _fitting(candidate)
        return None if payload is None else Built(candidate, payload, len(ranked) - k)

    low, high = 0, len(ranked) - 1  # the largest k that fits lies in [low, high]
    # Start near the size ratio (compression is about linear in the count) to save steps.
    guess = min(high, int(len(ranked) * codec.MAX_PAYLOAD / len(codec.encode(bundle))))
    if cut(guess) is not None:
        low = guess
    else:
        high = guess - 1
    while low < high:
        mid = (low + high + 1) // 2
        if cut(mid) is not None:
            low = mid
        else:
            high = mid - 1
    best = cut(low)
    if best is None:  # an empty bundle always fits, so this is a bug
        raise IntelFeedError("cannot fit even an empty intel bundle")
    return best


def _fitting(bundle: IntelBundle) -> bytes | None:
    """The encoded bundle if a gateway's decoder accepts its size (compressed and not)."""
    payload = codec.encode(bundle)
    try:
        codec.unwrap(payload)  # the receiving side's limits, checked the same way
    except codec.TooLarge:
        return None
    return payload


# --- the job --------------------------------------------------------------------------


@dataclass
class RefreshResult:
    """What one run did (the job runner logs it)."""

    due: bool = True
    version: str = ""
    indicators: int = 0
    dropped: int = 0
    new_bundle: bool = False
    tenants: int = 0
    failed_feeds: list[str] | None = None


def refresh(
    conn: psycopg.Connection[Any],
    *,
    feeds: FeedsConfig,
    settings: Settings,
    now: datetime,
    force: bool = False,
) -> RefreshResult:
    """Fetch due feeds, store the bundle, publish it retained to every tenant."""
    # Due by the last successful publish, so a run whose publish failed is retried next time.
    last = conn.execute("SELECT max(published_at) FROM intel_bundles").fetchall()[0][0]
    if not force and last is not None and (now - last).total_seconds() < feeds.refresh_s:
        return RefreshResult(due=False)
    failed: list[str] = []
    bodies: dict[str, str] = {}
    merged = detect_intel.Intel()
    for feed in feeds.feed:
        body = _refresh_feed(conn, feed, now=now, timeout=feeds.timeout_s, failed=failed)
        if not body:
            continue
        try:
            got = parse(feed, body)
        except IntelFeedError as exc:
            _record_failure(conn, feed, str(exc))
            failed.append(feed.name)
            continue
        conn.execute("UPDATE intel_feeds SET indicators = %s, rejected = %s WHERE name = %s",
                     (len(got), got.rejected, feed.name))  # fmt: skip
        bodies[feed.name] = body
        merged = merged.merged(got)
    if not bodies:
        # Nothing to go on (every feed failed and none was ever fetched): publishing an
        # empty bundle would wipe the gateways' indicators, so the retained one stays.
        return RefreshResult(failed_feeds=failed)
    built = build(merged, generated_at=now.timestamp(), score=scores(bodies))
    version = built.bundle.version
    stored = conn.execute(
        "SELECT payload FROM intel_bundles WHERE version = %s", (version,)
    ).fetchall()
    payload = bytes(stored[0][0]) if stored else built.payload
    if not stored:
        conn.execute(
            "INSERT INTO intel_bundles (version, generated_at, indicators, dropped, payload) "
            "VALUES (%s, %s, %s, %s, %s)",
            (version, now, len(built.bundle.ips) + len(built.bundle.cidrs)
             + len(built.bundle.domains), built.dropped, payload),
        )  # fmt: skip
    tenants = [r[0] for r in conn.execute("SELECT id FROM tenants ORDER BY id").fetchall()]
    publish(settings, {topics.intel(t): payload for t in tenants})
    conn.execute("UPDATE intel_bundles SET published_at = %s, tenants = %s WHERE version = %s",
                 (now, len(tenants), version))  # fmt: skip
    return RefreshResult(version=version, indicators=len(merged) - built.dropped,
                         dropped=built.dropped, new_bundle=not stored, tenants=len(tenants),
                         failed_feeds=failed)  # fmt: skip


def _record_failure(conn: psycopg.Connection[Any], feed: Feed, error: str) -> None:
    conn.execute(
        "INSERT INTO intel_feeds (name, source, failures, last_error) VALUES (%s, %s, 1, %s) "
        "ON CONFLICT (name) DO UPDATE SET failures = intel_feeds.failures + 1, "
        "last_error = EXCLUDED.last_error, source = EXCLUDED.source",
        (feed.name, feed.source, error[:1000]),
    )


def _refresh_feed(
    conn: psycopg.Connection[Any], feed: Feed, *, now: datetime, timeout: float,
    failed: list[str],
) -> str:
    """The feed's current body: fetched, or the stored one if unchanged or unreachable."""
    rows = conn.execute(
        "SELECT source, etag, last_modified, body FROM intel_feeds WHERE name = %s",
        (feed.name,),
    ).fetchall()
    same = bool(rows) and rows[0][0] == feed.source  # a moved feed starts afresh
    etag, modified, body = (rows[0][1], rows[0][2], rows[0][3]) if same else (None, None, "")
    try:
        got = fetch(feed, etag=etag, last_modified=modified, timeout=timeout)
    except IntelFeedError as exc:
        _record_failure(conn, feed, str(exc))
        failed.append(feed.name)
        return str(body or "")
    changed = got.body is not None and got.body != body
    conn.execute(
        "INSERT INTO intel_feeds AS f (name, source, etag, last_modified, fetched_at, "
        "changed_at, body, failures, last_error) VALUES (%s, %s, %s, %s, %s, %s, %s, 0, '') "
        "ON CONFLICT (name) DO UPDATE SET source = EXCLUDED.source, etag = EXCLUDED.etag, "
        "last_modified = EXCLUDED.last_modified, fetched_at = EXCLUDED.fetched_at, "
        "changed_at = coalesce(EXCLUDED.changed_at, f.changed_at), body = EXCLUDED.body, "
        "failures = 0, last_error = ''",
        (feed.name, feed.source, got.etag, got.last_modified, now,
         now if changed else None, got.body if got.body is not None else body),
    )  # fmt: skip
    return got.body if got.body is not None else str(body or "")


def publish(settings: Settings, messages: Mapping[str, bytes], *, timeout: float = 30.0) -> None:
    """Publish each payload RETAINED with QoS 1 and wait until the broker has them all."""
    if not messages:
        return
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                         client_id=f"mimamori-intel-{os.getpid()}")  # fmt: skip
    if settings.mqtt_username:
        client.username_pw_set(settings.mqtt_username, settings.mqtt_password)
    try:
        tls = settings.tls_context()
        if tls is not None:
            client.tls_set_context(tls)
        client.connect(settings.mqtt_host, settings.port, keepalive=60)
    except (OSError, ValueError) as exc:
        raise IntelFeedError(f"cannot reach the broker to publish intel: {exc}") from exc
    client.loop_start()
    try:
        deadline = time.monotonic() + timeout
        infos = [client.publish(topic, payload, qos=1, retain=True)
                 for topic, payload in messages.items()]  # fmt: skip
        for info in infos:
            info.wait_for_publish(max(0.1, deadline - time.monotonic()))
            if not info.is_published():
                raise IntelFeedError("the broker did not acknowledge the intel bundle in time")
    except (RuntimeError, ValueError) as exc:
        raise IntelFeedError(f"publishing intel failed: {exc}") from exc
    finally:
        client.disconnect()
        client.loop_stop()


def run_job(
    conn: psycopg.Connection[Any],
    *,
    settings: Settings,
    now: datetime | None = None,
    env: Mapping[str, str] | None = None,
) -> RefreshResult | str:
    """The runner's ``intel`` job: refresh from the feeds file named by MIMAMORI_INTEL_FEEDS.

    A bad feeds file or an unreachable broker is reported in the result (and retried on
    the next run): it must not stop the other jobs.
    """
    path = (os.environ if env is None else env).get(FEEDS_ENV, "")
    if not path:
        return f"off ({FEEDS_ENV} not set)"
    try:
        feeds = load_feeds(path)
        return refresh(conn, feeds=feeds, settings=settings, now=now or datetime.now(UTC))
    except (ConfigError, IntelFeedError) as exc:
        return f"failed: {exc}"
