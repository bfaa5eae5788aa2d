"""Factory reset of a gateway: erase the site's data and the gateway's credentials.

ETSI EN 303 645 provision 5.11-1 asks that a user can erase their data from a device.
Everything a gateway keeps about its site is in a few files: the outbox (flow summaries,
inventory and alerts not yet delivered), the broker credential and CA written by
enrollment, the configuration enrollment wrote, and the sensor-listener credentials.
:func:`plan` lists the ones that exist (from the configuration and the state directory),
:func:`erase` deletes them and says what it did. The configuration file an operator wrote
by hand elsewhere (``/etc/mimamori``) is left: it holds no data and no secret, only paths.

Run it with the agent stopped (``systemctl stop mimamori-edge``): a running agent would
write a new outbox at once. Erasing the credential does not revoke it in the cloud; the
SOC does that with ``mimamori cloud gateway revoke`` (printed as a reminder).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mimamori.edge.config import Config

#: Files that enrollment writes into its state directory (edge/enroll.py).
ENROLLMENT_FILES = ("credential.toml", "broker-ca.pem", "edge.toml")
#: SQLite keeps these beside a database in WAL mode.
_SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


@dataclass
class ResetResult:
    """What :func:`erase` removed and what it could not remove (with the reason)."""

    removed: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)

    def summary(self) -> str:
        """Two lines, Japanese then English."""
        n, bad = len(self.removed), len(self.failed)
        ja = f"初期化: {n} 個のファイルを削除しました" + (
            f"（{bad} 個は削除できません）" if bad else ""
        )
        en = f"factory reset: removed {n} files" + (f" ({bad} could not be removed)" if bad else "")
        return f"{ja}\n{en}"


def _with_side_files(path: Path) -> list[Path]:
    return [path, *(path.with_name(path.name + s) for s in _SQLITE_SIDE_FILES)]


def plan(config: Config | None, state_dir: Path | None) -> list[Path]:
    """The existing files a factory reset removes, in a stable order, without repeats."""
    wanted: list[Path] = []
    if config is not None:
        wanted += _with_side_files(Path(config.outbox.path))
        for name in (config.mqtt.credential_file, config.mqtt.password_file):
            if name:
                wanted.append(Path(name))
        if config.sensors is not None:
            creds = Path(config.sensors.credentials_dir)
            if creds.is_dir():
                wanted += sorted(creds.glob("*.password"))
    if state_dir is not None:
        wanted += [state_dir / name for name in ENROLLMENT_FILES]
        wanted += _with_side_files(state_dir / "outbox.db")
    seen: set[Path] = set()
    found = []
    for path in wanted:
        key = path.resolve()
        if key not in seen and path.is_file():
            seen.add(key)
            found.append(path)
    return found


def erase(paths: list[Path]) -> ResetResult:
    """Delete ``paths``; a file that cannot be deleted is reported, the rest still go."""
    result = ResetResult()
    for path in paths:
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            result.failed.append((path, exc.strerror or str(exc)))
        else:
            result.removed.append(path)
    return result
