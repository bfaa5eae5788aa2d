"""Fixtures: private Mosquitto and PostgreSQL processes, one per test session.

Each test that needs a database gets a fresh one (``CREATE DATABASE``) in the session's
cluster, so tests never see each other's rows. ``db`` is parametrised over the storage
flavours: plain PostgreSQL always, TimescaleDB when the extension is installed (skipped
with the reason otherwise).
"""

from __future__ import annotations

import itertools
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mimamori.edge import config as edge_config
from mimamori.simulators.services import Mosquitto, Postgres, timescaledb_available

REPO = Path(__file__).resolve().parent.parent


def _shared_data() -> Path:
    """``../shared/data`` beside the checkout; a clone elsewhere (CI in a temporary
    directory) falls back to the workspace's copy. MIMAMORI_SHARED_DATA overrides both."""
    if "MIMAMORI_SHARED_DATA" in os.environ:
        return Path(os.environ["MIMAMORI_SHARED_DATA"])
    for candidate in (REPO.parent / "shared" / "data", Path("/work/shared/data")):
        if candidate.exists():
            return candidate
    return REPO.parent / "shared" / "data"


SHARED_DATA = _shared_data()

_counter = itertools.count()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"shared captures not found at {SHARED_DATA} (set MIMAMORI_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def broker_service() -> Iterator[Mosquitto]:
    with Mosquitto() as broker:
        yield broker


@pytest.fixture
def broker(broker_service: Mosquitto) -> Mosquitto:
    """The session's broker, restarted if an earlier test stopped it."""
    if broker_service.proc is None or broker_service.proc.poll() is not None:
        broker_service.start()
    return broker_service


@pytest.fixture
def topic_prefix() -> str:
    """A unique tenant id per test, so tests sharing one broker never interfere."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def pg_plain() -> Iterator[Postgres]:
    with Postgres(timescaledb=False) as pg:
        yield pg


@pytest.fixture(scope="session")
def pg_timescale() -> Iterator[Postgres]:
    if not timescaledb_available():
        pytest.skip("TimescaleDB is not installed (pg_config --pkglibdir has no timescaledb*.so)")
    with Postgres(timescaledb=True) as pg:
        yield pg


@dataclass
class Database:
    """A fresh database in one of the session's clusters."""

    cluster: Postgres
    name: str

    @property
    def dsn(self) -> str:
        c = self.cluster
        return f"postgresql://{c.user}@{c.host}:{c.port}/{self.name}"

    @property
    def storage(self) -> str:
        return self.cluster.storage


def _fresh_database(cluster: Postgres) -> Database:
    import psycopg

    name = f"test_{os.getpid()}_{next(_counter)}"
    admin = f"postgresql://{cluster.user}@{cluster.host}:{cluster.port}/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return Database(cluster, name)


@pytest.fixture(params=["postgresql", "timescaledb"])
def db(request: pytest.FixtureRequest) -> Database:
    """A fresh, empty database on each storage flavour."""
    if request.param == "timescaledb":
        cluster = request.getfixturevalue("pg_timescale")
    else:
        cluster = request.getfixturevalue("pg_plain")
    return _fresh_database(cluster)


@pytest.fixture
def plain_db(pg_plain: Postgres) -> Database:
    """A fresh database on plain PostgreSQL only (for tests that need just one flavour)."""
    return _fresh_database(pg_plain)


def agent_config(
    tmp_path: Path,
    broker: Mosquitto,
    tenant: str,
    *,
    home_net: str = "192.168.1.0/24",
    capture: bool = True,
    extra: str = "",
) -> edge_config.Config:
    """A gateway configuration for agent tests: the private broker in plain MQTT, fast
    reconnects, the outbox under ``tmp_path``, capture on ``lo`` unless ``capture`` is
    off, and ``extra`` TOML sections appended."""
    capture_section = f'interface = "lo"\nhome_net = ["{home_net}"]\n' if capture else ""
    return edge_config.parse(f"""
[gateway]
id = "gw1"
tenant = "{tenant}"
[capture]
{capture_section}
[mqtt]
host = "{broker.host}"
port = {broker.port}
insecure_plaintext = true
client_id = "{tenant}-gw1"
backoff_initial_s = 0.1
backoff_max_s = 0.5
[outbox]
path = "{tmp_path / "state" / "outbox.db"}"
{extra}
""")


def wait_until(cond: Callable[[], bool], timeout: float = 15.0) -> None:
    """Poll ``cond`` every 50 ms; fail the test if it is not true within ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
