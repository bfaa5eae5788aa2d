"""Cloud settings, read from the environment in this one place.

=============================  ==========================================  ===============
variable                       meaning                                     default
=============================  ==========================================  ===============
MIMAMORI_DSN                   PostgreSQL connection string (libpq)        (required)
MIMAMORI_MQTT_HOST             broker host                                 127.0.0.1
MIMAMORI_MQTT_PORT             broker port                                 1883 (8883 TLS)
MIMAMORI_MQTT_USERNAME         broker user of the ingester                 (none)
MIMAMORI_MQTT_PASSWORD         its password                                (none)
MIMAMORI_MQTT_TLS_CA           CA file; setting it turns TLS on            (none: no TLS)
MIMAMORI_MQTT_TLS_CERT         client certificate (mutual TLS)             (none)
MIMAMORI_MQTT_TLS_KEY          client key                                  (none)
MIMAMORI_MQTT_CLIENT_ID        MQTT client id (unique per ingester)        mimamori-ingest-<pid>
MIMAMORI_METRICS_PORT          Prometheus exporter port, 0 = off           0
MIMAMORI_BATCH_ROWS            rows that trigger a database commit         20000
MIMAMORI_BATCH_DELAY_S         longest wait before a commit of a batch     0.05
MIMAMORI_QUEUE_MESSAGES        bounded queue between MQTT and database     2000
MIMAMORI_QUARANTINE_BYTES      payload bytes kept per quarantined message  65536
=============================  ==========================================  ===============

The sensors job's thresholds (:class:`~mimamori.cloud.sensors.SensorsConfig`, read by
:func:`sensors_from_env` for ``mimamori cloud jobs``):

=========================================  ==============================  ========
variable                                   meaning                         default
=========================================  ==============================  ========
MIMAMORI_SENSORS_OFFLINE_AFTER_INTERVALS   missed intervals before offline 3
MIMAMORI_SENSORS_DEFAULT_HEARTBEAT_S       interval of a sensor that has   60
                                           not announced its own
MIMAMORI_SENSORS_MAX_HEARTBEAT_S           longest interval used           3600
MIMAMORI_SENSORS_OFFLINE_SEVERITY          severity of sensor_offline      medium
MIMAMORI_SENSORS_CANARY_SEVERITY           severity of canary_touch        high
=========================================  ==============================  ========
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from mimamori.cloud.errors import ConfigError
from mimamori.cloud.sensors import SensorsConfig


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything the cloud services need to connect and size themselves."""

    dsn: str = ""
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int | None = None
    mqtt_username: str | None = None
    mqtt_password: str | None = field(default=None, repr=False)
    mqtt_tls_ca: str | None = None
    mqtt_tls_cert: str | None = None
    mqtt_tls_key: str | None = None
    mqtt_client_id: str = field(default_factory=lambda: f"mimamori-ingest-{os.getpid()}")
    metrics_port: int = 0
    # A commit costs a WAL flush (~1-5 ms); 20k rows amortise it while keeping one
    # batch's COPY well under a second.
    batch_rows: int = 20000
    # Longest wait for more messages once one is in hand. Under load batches fill while the
    # previous one commits, so this matters only at low rates, where it adds directly to
    # ack latency; 50 ms still groups a burst of a site's messages into one commit.
    batch_delay_s: float = 0.05
    # Messages held between the MQTT reader and the writer. At most 256 KiB each on the
    # wire (protocol MAX_PAYLOAD), so the queue bounds the ingester's memory.
    queue_messages: int = 2000
    quarantine_bytes: int = 65536

    @property
    def port(self) -> int:
        """The broker port: the explicit one, else 8883 with TLS and 1883 without."""
        if self.mqtt_port is not None:
            return self.mqtt_port
        return 8883 if self.mqtt_tls_ca else 1883

    def tls_context(self) -> ssl.SSLContext | None:
        """A client TLS context when a CA is configured, else None (plain MQTT)."""
        if not self.mqtt_tls_ca:
            return None
        ctx = ssl.create_default_context(cafile=self.mqtt_tls_ca)
        if self.mqtt_tls_cert:
            ctx.load_cert_chain(self.mqtt_tls_cert, self.mqtt_tls_key)
        return ctx

    def require_dsn(self) -> str:
        if not self.dsn:
            raise ConfigError("no database: set MIMAMORI_DSN or pass --dsn")
        return self.dsn

    def with_overrides(self, **overrides: Any) -> Settings:
        """A copy with the given fields replaced, ignoring None (unset CLI options)."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


def _int(env: Mapping[str, str], name: str, default: int | None) -> int | None:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}={raw!r} is not an integer") from exc


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}={raw!r} is not a number") from exc


def from_env(env: Mapping[str, str] | None = None) -> Settings:
    """Settings from ``env`` (the process environment by default)."""
    e = os.environ if env is None else env
    base = Settings()
    return Settings(
        dsn=e.get("MIMAMORI_DSN", ""),
        mqtt_host=e.get("MIMAMORI_MQTT_HOST", base.mqtt_host),
        mqtt_port=_int(e, "MIMAMORI_MQTT_PORT", None),
        mqtt_username=e.get("MIMAMORI_MQTT_USERNAME") or None,
        mqtt_password=e.get("MIMAMORI_MQTT_PASSWORD") or None,
        mqtt_tls_ca=e.get("MIMAMORI_MQTT_TLS_CA") or None,
        mqtt_tls_cert=e.get("MIMAMORI_MQTT_TLS_CERT") or None,
        mqtt_tls_key=e.get("MIMAMORI_MQTT_TLS_KEY") or None,
        mqtt_client_id=e.get("MIMAMORI_MQTT_CLIENT_ID") or base.mqtt_client_id,
        metrics_port=_int(e, "MIMAMORI_METRICS_PORT", 0) or 0,
        batch_rows=_int(e, "MIMAMORI_BATCH_ROWS", base.batch_rows) or base.batch_rows,
        batch_delay_s=_float(e, "MIMAMORI_BATCH_DELAY_S", base.batch_delay_s),
        queue_messages=_int(e, "MIMAMORI_QUEUE_MESSAGES", base.queue_messages)
        or base.queue_messages,
        quarantine_bytes=_int(e, "MIMAMORI_QUARANTINE_BYTES", base.quarantine_bytes)
        or base.quarantine_bytes,
    )


#: Prefix of the environment variables of :class:`SensorsConfig` (field name in capitals).
SENSORS_ENV_PREFIX = "MIMAMORI_SENSORS_"


def sensors_from_env(env: Mapping[str, str] | None = None) -> SensorsConfig:
    """The sensors job's thresholds: defaults, overridden by ``MIMAMORI_SENSORS_<FIELD>``.

    ConfigError names the variable, what it must be and its default.
    """
    e = os.environ if env is None else env
    base = SensorsConfig()
    values: dict[str, Any] = {}
    for f in fields(SensorsConfig):
        name = SENSORS_ENV_PREFIX + f.name.upper()
        raw = e.get(name, "").strip()
        if not raw:
            continue
        if isinstance(getattr(base, f.name), float):
            try:
                values[f.name] = float(raw)
            except ValueError as exc:
                raise ConfigError(
                    f"{name}={raw!r} is not a number; set a number of "
                    f"{'seconds' if f.name.endswith('_s') else 'intervals'} or unset it "
                    f"for the default ({getattr(base, f.name):g})"
                ) from exc
        else:
            values[f.name] = raw
    try:
        return SensorsConfig(**values)
    except ValueError as exc:
        # SensorsConfig's messages name its fields; say which variables set them.
        named = [f.name for f in fields(SensorsConfig) if f.name in str(exc)] or ["?"]
        shown = []
        for field_name in named:
            var = SENSORS_ENV_PREFIX + field_name.upper()
            if field_name in values:
                shown.append(f"{var}={e.get(var, '').strip()!r}")
            else:
                shown.append(f"{var} (unset: default {getattr(base, field_name, '?')})")
        raise ConfigError(f"{', '.join(shown)}: {exc}; fix or unset it") from exc
