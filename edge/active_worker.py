"""The background worker of the opt-in active checks.

:class:`ActiveWorker` runs in its own thread so that a slow device never holds up
capture. Every ``poll_s`` it asks for the known devices (``devices``: the agent reads the
inventory in the capture thread), and checks each one that is due: a unicast MAC with an
address the guard allows (in the site's LAN, not the gateway itself) and no check within
``interval_h``. The result goes to ``deliver`` as a ``DiscoveryEvent(source="active")``;
the agent hands it to the pipeline, whose inventory publishes it to the cloud label.

When each device was last checked is kept in ``state_path`` (JSON, beside the outbox), so
a restarting gateway does not try a device's logins again within the interval: a device
that locks an account after a few bad passwords must never be locked by us.

The switch (:meth:`ActiveWorker.switch`) may be flipped at run time by the tenant's
``set_config`` command; it takes effect at the next connection (the guard reads it on
every connection), and switching on wakes the worker at once. The rule between the local
file and the tenant (:func:`merge_switch`): with ``allow_remote`` (the default) the
tenant's last word wins, both ways; without it the tenant can only switch off. The
tenant's word is kept in ``active-switch.json`` beside the outbox (:class:`RemoteSwitch`)
so that it survives a restart.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from mimamori.detect.labels.credentials import DefaultCredentials, load_credentials
from mimamori.edge.active import ActiveConfig, Network, ProbeGuard, ProbeRefused, RateLimiter
from mimamori.edge.active_logins import Dial, check_device, dial
from mimamori.edge.inventory import is_unicast_mac
from mimamori.protocol import Device, DiscoveryEvent

log = logging.getLogger(__name__)

#: Devices remembered in the state file at most (the inventory's own bound).
MAX_REMEMBERED = 4096
#: The switches the tenant's ``set_config`` command may set.
SWITCHES = ("enabled", "credentials")


def merge_switch(
    local: ActiveConfig, remote: Mapping[str, bool], *, allow_remote: bool
) -> ActiveConfig:
    """The settings in force: ``local`` with the tenant's ``remote`` switches applied.

    With ``allow_remote`` the tenant's switch wins both ways; without it the tenant can
    switch off what the local file switched on, never the reverse (withdrawing consent
    must always work; giving it needs the installer's permission).
    """

    def pick(key: str, local_value: bool) -> bool:
        if key not in remote:
            return local_value
        return bool(remote[key]) if allow_remote else local_value and bool(remote[key])

    return dataclasses.replace(
        local,
        enabled=pick("enabled", local.enabled),
        credentials=pick("credentials", local.credentials),
    )


def parse_switch(args: Mapping[str, object]) -> dict[str, bool]:
    """The ``active`` part of a ``set_config`` command's args: ``{"enabled": bool,
    "credentials": bool}`` (either may be left out). ``ValueError`` names what is wrong."""
    part = args.get("active")
    if not isinstance(part, Mapping):
        raise ValueError("args.active: expected an object such as {'enabled': true}")
    unknown = sorted(set(part) - set(SWITCHES))
    if unknown:
        raise ValueError(
            f"args.active: unknown switch {unknown[0]!r} (known: enabled, credentials)"
        )
    out: dict[str, bool] = {}
    for key, value in part.items():
        if not isinstance(value, bool):
            raise ValueError(f"args.active.{key}: expected true or false, got {value!r}")
        out[str(key)] = value
    return out


class RemoteSwitch:
    """The tenant's last ``set_config`` switches, kept in a JSON file."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.values: dict[str, bool] = self._load()

    def _load(self) -> dict[str, bool]:
        if self.path is None:
            return {}
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
            return {k: v for k, v in dict(doc).items() if k in SWITCHES and isinstance(v, bool)}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, TypeError) as exc:
            log.warning("active checks: ignoring %s (%s)", self.path, exc)
            return {}

    def update(self, values: Mapping[str, bool]) -> None:
        self.values.update(values)
        if self.path is None:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            tmp.write_text(json.dumps(self.values), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("active checks: cannot save %s (%s)", self.path, exc)


class ActiveWorker:
    """Checks each known LAN device at most once per interval, off the capture thread."""

    def __init__(
        self,
        *,
        config: ActiveConfig,
        home_net: Iterable[Network],
        own_ips: Iterable[str] | Callable[[], Iterable[str]],
        devices: Callable[[], list[Device]],
        deliver: Callable[[DiscoveryEvent], None],
        state_path: Path | None = None,
        credentials: DefaultCredentials | None = None,
        dial: Dial = dial,
        clock: Callable[[], float] = time.time,
        limiter: RateLimiter | None = None,
        poll_s: float = 60.0,
    ) -> None:
        # A callable is asked again every round: the box's own address may change (DHCP).
        self._own_ips = own_ips if callable(own_ips) else None
        self.guard = ProbeGuard(
            config=config, home_net=home_net, own_ips=() if callable(own_ips) else own_ips,
            limiter=limiter,
        )  # fmt: skip
        if self._own_ips is not None:
            self.guard.own_ips = frozenset(self._own_ips())
        self._devices = devices
        self._deliver = deliver
        self.state_path = state_path
        self.credentials = credentials or load_credentials()
        self._dial = dial
        self._clock = clock
        self.poll_s = poll_s
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self.checked_at: dict[str, float] = self._load_state()
        self.stats = {"checked": 0, "findings": 0, "events": 0, "errors": 0, "rounds": 0}

    @property
    def config(self) -> ActiveConfig:
        return self.guard.config

    def switch(self, *, enabled: bool | None = None, credentials: bool | None = None) -> None:
        """Switch the checks (and the login tries) on or off, from any thread."""
        with self._lock:
            now = self.guard.config
            self.guard.config = dataclasses.replace(
                now,
                enabled=now.enabled if enabled is None else enabled,
                credentials=now.credentials if credentials is None else credentials,
            )
        log.info(
            "active checks: %s, credential tries: %s",
            "on" if self.config.enabled else "off", "on" if self.config.credentials else "off",
        )  # fmt: skip
        if self.config.enabled:
            self._wake.set()

    # --- running -------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Check due devices every ``poll_s`` until ``stop`` is set; never raises."""
        while not stop.is_set():
            if self.config.enabled:
                try:
                    self.run_once(stop)
                except Exception:  # a bug here must not end the thread for good
                    self.stats["errors"] += 1
                    log.exception("active checks: a round failed")
            self._wake.wait(self.poll_s)
            self._wake.clear()
            if stop.is_set():
                return

    def halt(self) -> None:
        """For shutdown: refuse every further connection and end the current wait."""
        with self._lock:
            self.guard.config = dataclasses.replace(self.guard.config, enabled=False)
        self._wake.set()

    def run_once(self, stop: threading.Event | None = None) -> int:
        """Check every device that is due now; the number checked."""
        self.stats["rounds"] += 1
        if self._own_ips is not None:
            self.guard.own_ips = frozenset(self._own_ips())
        done = 0
        for device in self._devices():
            if (stop is not None and stop.is_set()) or not self.config.enabled:
                break
            target = self._target(device)
            if target is None:
                continue
            self._check(device, target)
            done += 1
        return done

    def due(self, mac: str, now: float) -> bool:
        last = self.checked_at.get(mac)
        return last is None or now - last >= self.config.interval_h * 3600 or now < last

    def _target(self, device: Device) -> str | None:
        """The address to check ``device`` at, if it is due and may be probed."""
        if not is_unicast_mac(device.mac) or not self.due(device.mac, self._clock()):
            return None
        return next((ip for ip in device.ips if not self.guard.reason(ip)), None)

    def _check(self, device: Device, ip: str) -> None:
        now = self._clock()
        before = self.checked_at.get(device.mac)
        # Marked before the check: a crash in the middle must not make us try again soon.
        self.checked_at[device.mac] = now
        self._save_state()
        try:
            report = check_device(
                mac=device.mac, ip=ip, guard=self.guard, vendor=device.vendor,
                credentials=self.credentials, dial=self._dial,
            )  # fmt: skip
        except ProbeRefused as exc:  # before any connection (switched off meanwhile)
            log.info("active checks: %s", exc)
            if before is None:
                del self.checked_at[device.mac]
            else:
                self.checked_at[device.mac] = before
            self._save_state()
            return
        except Exception:
            self.stats["errors"] += 1
            log.exception("active checks: checking %s failed", ip)
            return
        self.stats["checked"] += 1
        self.stats["errors"] += report.errors
        findings = report.findings()
        self.stats["findings"] += len(findings)
        log.info(
            "active checks: %s (%s): %d connections, %d findings: %s", device.mac, ip,
            report.connections, len(findings), ", ".join(k for k, _ in findings) or "none",
        )  # fmt: skip
        event = report.event(self._clock())
        if event is not None:
            self.stats["events"] += 1
            self._deliver(event)

    # --- state -------------------------------------------------------------------------

    def _load_state(self) -> dict[str, float]:
        if self.state_path is None:
            return {}
        try:
            doc = json.loads(self.state_path.read_text(encoding="utf-8"))
            return {str(k): float(v) for k, v in dict(doc.get("checked_at", {})).items()}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            log.warning("active checks: ignoring %s (%s)", self.state_path, exc)
            return {}

    def _save_state(self) -> None:
        if self.state_path is None:
            return
        if len(self.checked_at) > MAX_REMEMBERED:
            keep = sorted(self.checked_at.items(), key=lambda kv: kv[1])[-MAX_REMEMBERED:]
            self.checked_at = dict(keep)
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        try:
            tmp.write_text(json.dumps({"checked_at": self.checked_at}), encoding="utf-8")
            os.replace(tmp, self.state_path)
        except OSError as exc:
            log.warning("active checks: cannot save %s (%s)", self.state_path, exc)
