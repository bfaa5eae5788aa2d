"""Private Mosquitto and PostgreSQL processes for tests, benchmarks and the demo.

Each service runs from the system's binaries, on a free port on 127.0.0.1, with a
configuration generated into its own temporary directory, and is removed on exit. Nothing
touches the machine's own broker or database. When the process runs as root (CI, the
sandbox), PostgreSQL runs as the ``postgres`` system user because initdb refuses root.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self


class ServiceError(RuntimeError):
    """A private service could not be started or stopped."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, timeout: float = 15.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise ServiceError(f"nothing listens on {host}:{port} after {timeout:.0f} s")


def _pg_bindir() -> Path:
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=True)
        candidate = Path(out.stdout.strip())
        if (candidate / "postgres").exists():
            return candidate
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "postgres").exists():
            return candidate
    raise ServiceError("PostgreSQL server binaries not found; install postgresql (see README)")


def _pg_pkglibdir() -> Path | None:
    pg_config = shutil.which("pg_config")
    if not pg_config:
        return None
    out = subprocess.run([pg_config, "--pkglibdir"], capture_output=True, text=True, check=False)
    return Path(out.stdout.strip()) if out.returncode == 0 else None


def timescaledb_available() -> bool:
    """True when the TimescaleDB extension is installed for this PostgreSQL."""
    libdir = _pg_pkglibdir()
    return bool(libdir and any(libdir.glob("timescaledb*.so")))


def mosquitto_binary() -> str:
    for candidate in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise ServiceError("mosquitto not found; install mosquitto (see README)")


# --- Mosquitto ------------------------------------------------------------------------


class _Lifecycle:
    """Stop, restart, clean-up and ``with`` for a private service process.

    Subclasses (dataclasses) have ``proc`` and ``workdir`` and define ``start()``, the log
    file's name and how to stop them gracefully.
    """

    proc: subprocess.Popen[bytes] | None
    workdir: Path
    LOG_NAME = "service.log"
    STOP_SIGNAL = signal.SIGTERM
    STOP_WAIT_S = 10.0

    def start(self) -> Self:
        raise NotImplementedError

    def log_tail(self) -> str:
        path = self.workdir / self.LOG_NAME
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def stop(self, sig: int | None = None) -> None:
        """Stop with the graceful signal (or ``sig``: SIGKILL simulates a crash)."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(self.STOP_SIGNAL if sig is None else sig)
            try:
                self.proc.wait(self.STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def restart(self, downtime: float = 0.0) -> None:
        self.stop()
        time.sleep(downtime)
        self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


@dataclass
class Mosquitto(_Lifecycle):
    """A private Mosquitto broker. ``start()``, ``stop()``, ``restart()`` for fault tests."""

    LOG_NAME = "mosquitto.log"

    port: int = field(default_factory=free_port)
    persistence: bool = False
    extra_config: str = ""
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="mimamori-mqtt-")))
    proc: subprocess.Popen[bytes] | None = None
    host: str = "127.0.0.1"

    @property
    def config_path(self) -> Path:
        return self.workdir / "mosquitto.conf"

    def write_config(self) -> None:
        lines = [
            f"listener {self.port} {self.host}",
            # Tests and benches on loopback: anonymous access on 127.0.0.1 only. Production
            # brokers use per-gateway credentials and TLS (cloud/broker.py writes those).
            "allow_anonymous true",
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.workdir}/",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "max_queued_messages 100000",
            "max_inflight_messages 0",
            "set_tcp_nodelay true",
            self.extra_config,
        ]
        self.config_path.write_text("\n".join(lines) + "\n")

    def start(self) -> Mosquitto:
        if not self.config_path.exists():
            self.write_config()
        log = open(self.workdir / "mosquitto.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [mosquitto_binary(), "-c", str(self.config_path)],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        try:
            wait_port(self.port)
        except ServiceError as exc:
            raise ServiceError(f"{exc}; log: {self.log_tail()}") from exc
        return self


# --- PostgreSQL -----------------------------------------------------------------------


def _demote_to(user: str) -> tuple[int, int] | None:
    if os.geteuid() != 0:
        return None
    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid


@dataclass
class Postgres(_Lifecycle):
    """A private PostgreSQL cluster in a temporary directory.

    With ``timescaledb=None`` the extension is preloaded when it is installed. It stops
    with SIGINT, PostgreSQL's fast shutdown.
    """

    LOG_NAME = "postgres.log"
    STOP_SIGNAL = signal.SIGINT
    STOP_WAIT_S = 30.0

    port: int = field(default_factory=free_port)
    timescaledb: bool | None = None
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="mimamori-pg-")))
    dbname: str = "mimamori"
    user: str = "mimamori"
    settings: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        if self.timescaledb is None:
            self.timescaledb = timescaledb_available()
        self._ids = _demote_to("postgres")

    @property
    def datadir(self) -> Path:
        return self.workdir / "data"

    @property
    def dsn(self) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.dbname}"

    @property
    def storage(self) -> str:
        return "timescaledb" if self.timescaledb else "postgresql"

    def _run(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        uid, gid, groups = self._as_user()
        return subprocess.run(
            argv, capture_output=True, text=True, check=False,
            user=uid, group=gid, extra_groups=groups,
        )  # fmt: skip

    def _as_user(self) -> tuple[int | None, int | None, list[int] | None]:
        """uid, gid and supplementary groups to run server processes as (None: ourselves)."""
        if self._ids is None:
            return None, None, None
        uid, gid = self._ids
        return uid, gid, []

    def init(self) -> None:
        bindir = _pg_bindir()
        if self._ids is not None:
            os.chown(self.workdir, *self._ids)
        result = self._run(
            [str(bindir / "initdb"), "-D", str(self.datadir), "-U", self.user, "-A", "trust",
             "-E", "UTF8", "--locale=C", "--no-sync"]
        )  # fmt: skip
        if result.returncode != 0:
            raise ServiceError(f"initdb failed: {result.stderr[-2000:]}")
        conf = {
            "listen_addresses": f"'{self.host}'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.workdir}'",
            "fsync": "on",
            "synchronous_commit": "on",
            "shared_buffers": "256MB",
            "max_connections": "200",
            "max_wal_size": "2GB",
            "log_min_messages": "warning",
            "logging_collector": "off",
        }
        if self.timescaledb:
            conf["shared_preload_libraries"] = "'timescaledb'"
            conf["timescaledb.telemetry_level"] = "off"
            conf["timescaledb.max_background_workers"] = "4"
            conf["max_worker_processes"] = "16"
        conf.update(self.settings)
        with open(self.datadir / "postgresql.conf", "a") as f:
            f.write("\n# mimamori private cluster\n")
            for key, value in conf.items():
                f.write(f"{key} = {value}\n")

    def start(self) -> Postgres:
        if not (self.datadir / "PG_VERSION").exists():
            self.init()
        bindir = _pg_bindir()
        log = open(self.workdir / "postgres.log", "ab")  # noqa: SIM115 - owned by the process
        if self._ids is not None:
            os.chown(self.workdir / "postgres.log", *self._ids)
        uid, gid, groups = self._as_user()
        self.proc = subprocess.Popen(
            [str(bindir / "postgres"), "-D", str(self.datadir)],
            stdout=log,
            stderr=log,
            start_new_session=True,
            user=uid,
            group=gid,
            extra_groups=groups,
        )
        try:
            wait_port(self.port, timeout=30)
            self._wait_ready(bindir)
        except ServiceError as exc:
            raise ServiceError(f"{exc}; log: {self.log_tail()}") from exc
        self._ensure_db(bindir)
        return self

    def _wait_ready(self, bindir: Path) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            r = self._run([str(bindir / "pg_isready"), "-h", self.host, "-p", str(self.port)])
            if r.returncode == 0:
                return
            time.sleep(0.1)
        raise ServiceError("PostgreSQL did not become ready")

    def _ensure_db(self, bindir: Path) -> None:
        r = self._run(
            [str(bindir / "psql"), "-h", self.host, "-p", str(self.port), "-U", self.user,
             "-d", "postgres", "-tAc", f"SELECT 1 FROM pg_database WHERE datname='{self.dbname}'"]
        )  # fmt: skip
        if r.stdout.strip() != "1":
            r = self._run(
                [str(bindir / "createdb"), "-h", self.host, "-p", str(self.port),
                 "-U", self.user, self.dbname]
            )  # fmt: skip
            if r.returncode != 0:
                raise ServiceError(f"createdb failed: {r.stderr}")


@contextlib.contextmanager
def private_services(*, timescaledb: bool | None = None) -> Iterator[tuple[Mosquitto, Postgres]]:
    """A private broker and database, both removed on exit."""
    with Mosquitto() as broker, Postgres(timescaledb=timescaledb) as db:
        yield broker, db
