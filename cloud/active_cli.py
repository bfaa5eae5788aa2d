"""``mimamori cloud active``: the tenant's switch for a gateway's opt-in active checks.

::

    mimamori cloud active --tenant T --gateway G --on [--credentials] [--by NAME]
    mimamori cloud active --tenant T --gateway G --off

Publishes a ``set_config`` command (``{"active": {"enabled": ..., "credentials": ...}}``,
QoS 1, valid for ``--ttl-h`` hours) on the gateway's command topic with the cloud's broker
login (``MIMAMORI_MQTT_*``, the ingesters' role may publish downstream). The broker keeps
it in the gateway's session while the gateway is offline. ``--on`` without
``--credentials`` switches the factory-login tries off. When a database is configured
(``MIMAMORI_DSN`` or ``--dsn``) an audit row records who switched what: switch on only
with the tenant's consent. The gateway applies it within its local rule
(``[active] allow_remote``, docs/labels.md); switching off is always honoured.
"""

from __future__ import annotations

import argparse
import getpass
import sys
import time
import uuid
from typing import Any

from mimamori.cloud import settings as settings_mod
from mimamori.cloud.errors import CloudError
from mimamori.protocol import Command, codec, topics

#: How long a switch waits for an offline gateway by default.
DEFAULT_TTL_H = 24.0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mimamori cloud active",
        description="switch a gateway's opt-in active checks on or off (the tenant's switch)",
    )
    p.add_argument("--tenant", required=True)
    p.add_argument("--gateway", required=True)
    on_off = p.add_mutually_exclusive_group(required=True)
    on_off.add_argument("--on", dest="enabled", action="store_const", const=True)
    on_off.add_argument("--off", dest="enabled", action="store_const", const=False)
    p.add_argument(
        "--credentials", action="store_true",
        help="with --on: also try a few factory logins per device (Telnet, FTP, HTTP Basic)",
    )  # fmt: skip
    p.add_argument("--ttl-h", type=float, default=DEFAULT_TTL_H,
                   help="hours the command stays valid for an offline gateway (default 24)")  # fmt: skip
    p.add_argument("--by", default="", help="who switches (audit log; default: the login name)")
    p.add_argument("--dsn", help="PostgreSQL for the audit row (default: $MIMAMORI_DSN)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the broker")
    return p


def build_command(*, enabled: bool, credentials: bool, ttl_h: float, now: float) -> Command:
    """The ``set_config`` command for the switch (``credentials`` only counts when on)."""
    args = {"active": {"enabled": enabled, "credentials": enabled and credentials}}
    return Command(id=uuid.uuid4().hex, command="set_config", args=args, issued_at=now,
                   expires_at=now + ttl_h * 3600)  # fmt: skip


def publish(settings: settings_mod.Settings, topic: str, payload: bytes, *, timeout: float) -> None:
    """Publish one QoS 1 message with the cloud's broker login and wait for the broker."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"mimamori-active-cli-{uuid.uuid4().hex[:8]}",
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    if settings.mqtt_username:
        client.username_pw_set(settings.mqtt_username, settings.mqtt_password)
    context = settings.tls_context()
    if context is not None:
        client.tls_set_context(context)
    try:
        client.connect(settings.mqtt_host, settings.port, keepalive=30)
        client.loop_start()
        info = client.publish(topic, payload, qos=1)
        info.wait_for_publish(timeout)
        if not info.is_published():
            raise CloudError(f"the broker did not acknowledge the command within {timeout} s")
    except OSError as exc:
        raise CloudError(
            f"cannot reach the broker {settings.mqtt_host}:{settings.port}: {exc}"
        ) from exc
    finally:
        client.loop_stop()
        client.disconnect()


def main(argv: list[str]) -> int:
    """Entry point of ``mimamori cloud active``."""
    args = _parser().parse_args(argv)
    if not topics.valid_id(args.tenant) or not topics.valid_id(args.gateway):
        print("mimamori cloud active: --tenant and --gateway must be ids "
              "(lowercase letters, digits, '-', '_') / ID の形式が正しくありません",
              file=sys.stderr)  # fmt: skip
        return 2
    if not 0 < args.ttl_h <= 24 * 30:
        print("mimamori cloud active: --ttl-h must be in (0, 720]", file=sys.stderr)
        return 2
    if args.credentials and not args.enabled:
        print("mimamori cloud active: --credentials goes with --on / --on と一緒に指定してください",
              file=sys.stderr)  # fmt: skip
        return 2
    command = build_command(enabled=args.enabled, credentials=args.credentials,
                            ttl_h=args.ttl_h, now=time.time())  # fmt: skip
    overrides: dict[str, Any] = {"dsn": args.dsn}
    try:
        settings = settings_mod.from_env().with_overrides(**overrides)
        publish(settings, topics.command(args.tenant, args.gateway), codec.encode(command),
                timeout=args.timeout)  # fmt: skip
        if settings.dsn:
            from mimamori.cloud.api import audit

            audit.record(
                settings.dsn, actor=args.by or getpass.getuser(), action="gateway.active_checks",
                target=args.gateway, tenant=args.tenant, result="ok",
                detail={"command": command.id, **command.args["active"]},
            )  # fmt: skip
    except CloudError as exc:
        print(f"mimamori cloud active: {exc}", file=sys.stderr)
        return 1
    state = command.args["active"]
    what_en = "on" if state["enabled"] else "off"
    what_ja = "オン" if state["enabled"] else "オフ"
    logins = " with factory-login tries / 初期パスワード確認あり" if state["credentials"] else ""
    print(f"gateway {args.gateway} ({args.tenant}): active checks {what_en}{logins} "
          f"(command {command.id}) / 能動チェックを{what_ja}にしました")  # fmt: skip
    if not settings.dsn:
        print("  no database configured: no audit row written / 監査ログは記録されていません",
              file=sys.stderr)  # fmt: skip
    return 0
