"""``mimamori soc``: SOC actions on alerts and incidents through the API over HTTPS.

::

    export MIMAMORI_API_URL=https://soc.example:8443 MIMAMORI_API_TOKEN=...
    mimamori soc incidents --status open --min-severity high
    mimamori soc ack 42
    mimamori soc dispatch 42 --who "Tanaka" --outcome pending --note "向かっています"
    mimamori soc resolve 42 --note "NAS を再構築"

The client speaks only HTTPS unless ``--insecure-http`` is given (for a local test API);
``--ca`` names the CA file of a private API certificate. ``--json`` prints the API's
answer as it came.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mimamori.cloud.errors import CloudError, ConfigError

SEVERITIES = ("info", "low", "medium", "high", "critical")
STATUSES = ("open", "acknowledged", "assigned", "dispatched", "resolved")
OUTCOMES = ("pending", "fixed", "mitigated", "no_issue", "unreachable")


class ApiError(CloudError):
    """The API refused a request or could not be reached."""

    def __init__(self, message: str, *, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, kw_only=True)
class SocClient:
    """A small client of the SOC API (stdlib only, so the CLI needs no extra package)."""

    base_url: str
    token: str = field(repr=False)
    ssl_context: ssl.SSLContext | None = None
    timeout_s: float = 30.0

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> Any:
        """Call the API; return the decoded JSON answer or raise :class:`ApiError`."""
        query = {k: v for k, v in (params or {}).items() if v is not None}
        url = self.base_url.rstrip("/") + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s, context=self.ssl_context) as r:
                return json.loads(r.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise ApiError(f"{exc.code}: {_detail(exc.read())}", status=exc.code) from exc
        except (urllib.error.URLError, OSError) as exc:
            raise ApiError(f"cannot reach {self.base_url}: {exc}") from exc


def _detail(raw: bytes) -> str:
    try:
        detail = json.loads(raw).get("detail", raw.decode(errors="replace"))
    except (ValueError, AttributeError):
        return raw.decode(errors="replace")[:300]
    if isinstance(detail, list):  # FastAPI's validation errors
        return "; ".join(f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg')}" for d in detail)
    return str(detail)


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """Rows as a plain text table (wide characters counted as two columns)."""

    def width(text: str) -> int:
        return sum(2 if ord(ch) > 0x2E7F else 1 for ch in text)

    def cell(value: Any) -> str:
        text = "" if value is None else str(value)
        return text.replace("\n", " ")[:60]

    cells = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([width(c), *(width(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    lines = []
    for row in [list(columns), *cells]:
        lines.append("  ".join(v + " " * (w - width(v)) for v, w in zip(row, widths, strict=True)))
    return "\n".join(line.rstrip() for line in lines)


_ALERT_COLS = (
    "id",
    "tenant",
    "gateway",
    "severity",
    "category",
    "detected_at",
    "incident_id",
    "summary_en",
)
_INCIDENT_COLS = (
    "id",
    "tenant",
    "severity",
    "status",
    "category",
    "assignee",
    "alert_count",
    "last_alert_at",
    "title",
)
_NOTIFY_COLS = (
    "tenant",
    "enabled",
    "webhook_url",
    "has_webhook_secret",
    "email_to",
    "max_per_hour",
)
_AUDIT_COLS = ("id", "at", "actor", "action", "target", "tenant", "result")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mimamori soc",
        description="SOC actions on alerts and incidents through the API over HTTPS.",
    )
    p.add_argument("--url", default=None, help="API base URL (env MIMAMORI_API_URL)")
    p.add_argument("--token", default=None, help="API token (env MIMAMORI_API_TOKEN)")
    p.add_argument(
        "--token-file",
        default=None,
        help="file holding the API token (keeps it out of the process list)",
    )
    p.add_argument(
        "--ca", default=None, help="CA file of the API's certificate (env MIMAMORI_API_CA)"
    )
    p.add_argument(
        "--insecure-http", action="store_true", help="allow an http:// URL (local testing only)"
    )
    p.add_argument("--json", action="store_true", help="print the API's JSON answer")
    sub = p.add_subparsers(dest="command", required=True)

    a = sub.add_parser("alerts", help="list alerts")
    a.add_argument("--tenant")
    a.add_argument("--gateway")
    a.add_argument("--category")
    a.add_argument("--min-severity", choices=SEVERITIES)
    a.add_argument("--since", help="ISO 8601 time")
    a.add_argument("--before-id", type=int)
    a.add_argument("--limit", type=int, default=50)

    i = sub.add_parser("incidents", help="list incidents")
    i.add_argument("--tenant")
    i.add_argument("--status", choices=STATUSES)
    i.add_argument("--min-severity", choices=SEVERITIES)
    i.add_argument("--category")
    i.add_argument("--gateway")
    i.add_argument("--assignee")
    i.add_argument("--since", help="ISO 8601 time (last alert at or after)")
    i.add_argument("--until", help="ISO 8601 time (last alert before)")
    i.add_argument("--before-id", type=int)
    i.add_argument("--limit", type=int, default=50)

    for name, text in (("show", "an incident and its timeline"), ("ack", "acknowledge")):
        sub.add_parser(name, help=text).add_argument("id", type=int)
    s = sub.add_parser("assign", help="assign to a SOC user")
    s.add_argument("id", type=int)
    s.add_argument("user")
    s = sub.add_parser("escalate", help="raise the severity, with a reason")
    s.add_argument("id", type=int)
    s.add_argument("--severity", required=True, choices=SEVERITIES)
    s.add_argument("--reason", required=True)
    s = sub.add_parser("resolve", help="resolve with a note")
    s.add_argument("id", type=int)
    s.add_argument("--note", required=True)
    s = sub.add_parser("reopen", help="reopen a resolved incident (admin)")
    s.add_argument("id", type=int)
    s.add_argument("--reason", required=True)
    s = sub.add_parser("dispatch", help="record an on-site visit (駆け付け)")
    s.add_argument("id", type=int)
    s.add_argument("--who", required=True)
    s.add_argument("--outcome", choices=OUTCOMES, default="pending")
    s.add_argument("--note", default="")
    s.add_argument("--at", help="ISO 8601 time of the visit (default: now)")
    s = sub.add_parser("dispatch-outcome", help="record what a visit found")
    s.add_argument("id", type=int)
    s.add_argument("dispatch_id", type=int)
    s.add_argument("--outcome", choices=OUTCOMES, required=True)
    s.add_argument("--note", default="")
    s = sub.add_parser("note", help="add a note")
    s.add_argument("id", type=int)
    s.add_argument("text")

    n = sub.add_parser("notify-show", help="a tenant's notification settings (admin)")
    n.add_argument("tenant")
    n = sub.add_parser("notify-set", help="set a tenant's notification settings (admin)")
    n.add_argument("tenant")
    n.add_argument("--webhook", help="URL the JSON payload is POSTed to")
    n.add_argument("--secret-file", help="file holding the webhook's HMAC key")
    n.add_argument("--email", action="append", default=[], help="recipient (repeatable)")
    n.add_argument("--max-per-hour", type=int, help="messages per hour before a digest")
    n.add_argument("--disable", action="store_true", help="turn notifications off")

    u = sub.add_parser("audit", help="the global audit log (admin)")
    u.add_argument("--actor")
    u.add_argument("--action")
    u.add_argument("--tenant")
    u.add_argument("--target")
    u.add_argument("--since")
    u.add_argument("--limit", type=int, default=50)
    return p


def client_from(args: argparse.Namespace, env: Mapping[str, str]) -> SocClient:
    """Build the client from flags, falling back to the environment."""
    url = args.url or env.get("MIMAMORI_API_URL", "")
    token = args.token or _secret(args.token_file) or env.get("MIMAMORI_API_TOKEN", "")
    ca = args.ca or env.get("MIMAMORI_API_CA") or None
    if not url or not token:
        raise ConfigError("give --url and --token (or MIMAMORI_API_URL and MIMAMORI_API_TOKEN)")
    if not url.startswith("https://") and not (args.insecure_http and url.startswith("http://")):
        raise ConfigError(f"the API URL must be https:// (got {url!r})")
    try:
        ctx = ssl.create_default_context(cafile=ca)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the CA file {ca!r}: {exc}") from exc
    return SocClient(base_url=url, token=token, ssl_context=ctx)


def _secret(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the secret file {path}: {exc}") from exc


def _timeline(detail: Mapping[str, Any]) -> str:
    inc = detail["incident"]
    head = [
        f"incident #{inc['id']}  {inc['tenant']}  {inc['severity']}  {inc['status']}",
        f"  title:    {inc['title']}",
        f"  category: {inc['category']}  gateway: {inc['gateway'] or '-'}  "
        f"alerts: {inc['alert_count']}  assignee: {inc['assignee'] or '-'}",
    ]
    if inc["resolution"]:
        head.append(f"  resolution: {inc['resolution']}")
    rows = [
        {
            "at": e["at"],
            "kind": e["kind"],
            "actor": e["actor"],
            "text": e["text"],
            "detail": json.dumps(e["detail"], ensure_ascii=False),
        }
        for e in detail["timeline"]
    ]
    return "\n".join([*head, "", table(rows, ("at", "kind", "actor", "text", "detail"))])


def run(args: argparse.Namespace, client: SocClient) -> tuple[Any, str]:
    """Do the command; return the API's answer and its readable form."""
    c, cmd = client, args.command
    inc_path = f"/v1/incidents/{getattr(args, 'id', 0)}"
    if cmd == "alerts":
        got = c.request(
            "GET",
            "/v1/alerts",
            params={
                "tenant": args.tenant,
                "gateway": args.gateway,
                "category": args.category,
                "min_severity": args.min_severity,
                "since": args.since,
                "before_id": args.before_id,
                "limit": args.limit,
            },
        )
        return got, table(got, _ALERT_COLS)
    if cmd == "incidents":
        got = c.request(
            "GET",
            "/v1/incidents",
            params={
                "tenant": args.tenant,
                "status": args.status,
                "min_severity": args.min_severity,
                "category": args.category,
                "gateway": args.gateway,
                "assignee": args.assignee,
                "since": args.since,
                "until": args.until,
                "before_id": args.before_id,
                "limit": args.limit,
            },
        )
        return got, table(got, _INCIDENT_COLS)
    if cmd == "audit":
        got = c.request(
            "GET",
            "/v1/audit",
            params={
                "actor": args.actor,
                "action": args.action,
                "tenant": args.tenant,
                "target": args.target,
                "since": args.since,
                "limit": args.limit,
            },
        )
        return got, table(got, _AUDIT_COLS)
    if cmd in ("notify-show", "notify-set"):
        path = f"/v1/admin/tenants/{urllib.parse.quote(args.tenant, safe='')}/notify"
        if cmd == "notify-show":
            got = c.request("GET", path)
        else:
            got = c.request(
                "PUT",
                path,
                body={
                    "webhook_url": args.webhook,
                    "webhook_secret": _secret(args.secret_file),
                    "email_to": args.email,
                    "max_per_hour": args.max_per_hour,
                    "enabled": not args.disable,
                },
            )
        return got, table([got], _NOTIFY_COLS)
    if cmd == "show":
        got = c.request("GET", inc_path)
        return got, _timeline(got)
    posts: dict[str, tuple[str, dict[str, Any] | None]] = {
        "ack": ("acknowledge", None),
        "assign": ("assign", {"user": getattr(args, "user", None)}),
        "escalate": (
            "escalate",
            {"severity": getattr(args, "severity", None), "reason": getattr(args, "reason", None)},
        ),
        "resolve": ("resolve", {"note": getattr(args, "note", None)}),
        "reopen": ("reopen", {"reason": getattr(args, "reason", None)}),
        "note": ("notes", {"text": getattr(args, "text", None)}),
        "dispatch": (
            "dispatch",
            {
                "who": getattr(args, "who", None),
                "outcome": getattr(args, "outcome", None),
                "notes": getattr(args, "note", ""),
                "dispatched_at": getattr(args, "at", None),
            },
        ),
        "dispatch-outcome": (
            f"dispatches/{getattr(args, 'dispatch_id', 0)}/outcome",
            {"outcome": getattr(args, "outcome", None), "notes": getattr(args, "note", "")},
        ),
    }
    action, body = posts[cmd]
    got = c.request("POST", f"{inc_path}/{action}", body=body)
    return got, table([got], _INCIDENT_COLS)


def main(argv: list[str]) -> int:
    """Entry point of ``mimamori soc``."""
    args = _parser().parse_args(argv)
    try:
        got, text = run(args, client_from(args, os.environ))
    except CloudError as exc:
        print(f"mimamori soc: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(got, ensure_ascii=False, indent=2) if args.json else text)
    return 0
