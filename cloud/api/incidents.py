"""SOC workflow on incidents: list, show with timeline, acknowledge, assign, escalate,
dispatch (駆け付け), resolve, reopen, notes; and the global audit log for admins.

Every action writes one audit row (ok, denied, invalid) and, when it changes an
incident, one ``incident_actions`` row in the same transaction as the change. An
incident outside the caller's tenants answers 404, so its existence does not leak.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal, NoReturn

import psycopg
from fastapi import APIRouter, HTTPException, Path, Query, Request
from mimamori.cloud.api import audit, workflow
from mimamori.cloud.api.auth import Principal
from mimamori.cloud.api.context import Admin, ApiContext, Caller, Conn, Ctx, remote
from mimamori.cloud.errors import StoreError
from psycopg.types.json import Jsonb
from pydantic import BaseModel, Field


class Problem(BaseModel):
    """The body of a refusal: what is wrong, in one sentence."""

    detail: str


# Documented so clients (and the schema test) know every refusal's shape.
router = APIRouter(
    prefix="/v1",
    tags=["incidents"],
    responses={code: {"model": Problem} for code in (400, 401, 403, 404, 409, 503)},
)

Severity = Literal["info", "low", "medium", "high", "critical"]
Status = Literal["open", "acknowledged", "assigned", "dispatched", "resolved"]
Outcome = Literal["pending", "fixed", "mitigated", "no_issue", "unreachable"]
SEVERITIES: tuple[str, ...] = ("info", "low", "medium", "high", "critical")
MAX_LIMIT = 1000
IncidentId = Annotated[int, Path(ge=1, le=2**63 - 1)]
#: PostgreSQL text cannot hold NUL: refuse it as bad input (422), not a database error.
NO_NUL = r"^[^\x00]*$"
_Text = Annotated[str, Field(min_length=1, max_length=4000, pattern=NO_NUL)]


class IncidentOut(BaseModel):
    id: int
    tenant: str
    category: str
    severity: str
    status: str
    title: str
    gateway: str | None
    alert_count: int
    first_alert_at: datetime
    last_alert_at: datetime
    opened_at: datetime
    updated_at: datetime
    assignee: str | None
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    resolved_at: datetime | None
    resolved_by: str | None
    resolution: str


class TimelineEntry(BaseModel):
    at: datetime
    kind: Literal["alert", "action", "note", "dispatch"]
    actor: str
    text: str
    detail: dict[str, Any]


class IncidentDetail(BaseModel):
    incident: IncidentOut
    timeline: list[TimelineEntry]


class AuditOut(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    target: str
    tenant: str | None
    result: str
    detail: dict[str, Any]
    remote: str


class AssignIn(BaseModel):
    user: Annotated[str, Field(min_length=1, max_length=63, pattern=NO_NUL)]


class EscalateIn(BaseModel):
    severity: Severity
    reason: _Text


class ResolveIn(BaseModel):
    note: _Text


class ReopenIn(BaseModel):
    reason: _Text


class NoteIn(BaseModel):
    text: _Text


class DispatchIn(BaseModel):
    who: Annotated[str, Field(min_length=1, max_length=200, pattern=NO_NUL)]
    dispatched_at: datetime | None = None
    outcome: Outcome = "pending"
    notes: Annotated[str, Field(max_length=4000, pattern=NO_NUL)] = ""


class OutcomeIn(BaseModel):
    outcome: Outcome
    notes: Annotated[str, Field(max_length=4000, pattern=NO_NUL)] = ""


_COLUMNS = tuple(IncidentOut.model_fields)
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM incidents"


def _incident(row: tuple[Any, ...]) -> IncidentOut:
    return IncidentOut(**dict(zip(_COLUMNS, row, strict=True)))


def _q(conn: psycopg.Connection[Any], sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
    try:
        return conn.execute(sql, params).fetchall()
    except psycopg.Error as exc:
        raise StoreError(f"incident query failed: {exc}") from exc


@router.get("/incidents", response_model=list[IncidentOut])
def list_incidents(
    request: Request,
    ctx: Ctx,
    conn: Conn,
    who: Caller,
    tenant: Annotated[str | None, Query(max_length=63, pattern=NO_NUL)] = None,
    status: Status | None = None,
    min_severity: Severity | None = None,
    category: Annotated[str | None, Query(max_length=40, pattern=NO_NUL)] = None,
    gateway: Annotated[str | None, Query(max_length=63, pattern=NO_NUL)] = None,
    assignee: Annotated[str | None, Query(max_length=63, pattern=NO_NUL)] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    before_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
) -> list[IncidentOut]:
    """Incidents visible to the caller, newest first; page with ``before_id``."""
    given = {
        "tenant": tenant,
        "status": status,
        "min_severity": min_severity,
        "category": category,
        "gateway": gateway,
        "assignee": assignee,
    }
    filters: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    if tenant is not None and not who.can_see(tenant):
        _audit(ctx, request, who, "incidents.list", "denied", tenant=tenant, detail=filters)
        raise HTTPException(403, f"no access to tenant {tenant!r}")
    where, params = ["true"], list[Any]()
    if not who.is_admin:
        where.append("tenant = ANY(%s)")
        params.append(sorted(who.tenants))
    for column in ("tenant", "status", "category", "gateway", "assignee"):
        if given[column] is not None:
            where.append(f"{column} = %s")
            params.append(given[column])
    if min_severity is not None:
        where.append("severity = ANY(%s)")
        params.append(list(SEVERITIES[SEVERITIES.index(min_severity) :]))
    for op, value in ((">=", since), ("<", until)):
        if value is not None:
            where.append(f"last_alert_at {op} %s")
            params.append(value)
    if before_id is not None:
        where.append("id < %s")
        params.append(before_id)
    rows = _q(
        conn, f"{_SELECT} WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT %s", [*params, limit]
    )
    out = [_incident(r) for r in rows]
    _audit(
        ctx,
        request,
        who,
        "incidents.list",
        "ok",
        tenant=tenant,
        detail={**filters, "rows": len(out)},
    )
    return out


@router.get("/incidents/{incident_id}", response_model=IncidentDetail)
def show_incident(
    request: Request, ctx: Ctx, conn: Conn, who: Caller, incident_id: IncidentId
) -> IncidentDetail:
    """One incident with its full timeline: alerts, actions, notes and dispatches."""
    inc = _load(conn, ctx, request, who, incident_id, "incident.show", lock=False)
    timeline = [
        TimelineEntry(
            at=r[0],
            kind="alert",
            actor=r[1],
            text=r[2],
            detail={"alert_id": r[3], "severity": r[4], "gateway": r[5], "summary_ja": r[6]},
        )
        for r in _q(
            conn,
            "SELECT detected_at, actor, summary_en, id, severity, gateway, "
            "summary_ja FROM alerts WHERE incident_id = %s",
            (incident_id,),
        )
    ]
    timeline += [
        TimelineEntry(
            at=r[0], kind="action", actor=r[1], text=r[2], detail={"from": r[3], "to": r[4], **r[5]}
        )
        for r in _q(
            conn,
            "SELECT at, actor, action, from_status, to_status, detail "
            "FROM incident_actions WHERE incident_id = %s",
            (incident_id,),
        )
    ]
    timeline += [
        TimelineEntry(at=r[0], kind="note", actor=r[1], text=r[2], detail={})
        for r in _q(
            conn,
            "SELECT at, author, body FROM incident_notes WHERE incident_id = %s",
            (incident_id,),
        )
    ]
    timeline += [
        TimelineEntry(
            at=r[0],
            kind="dispatch",
            actor=r[1],
            text=r[2],
            detail={
                "dispatch_id": r[3],
                "who": r[2],
                "outcome": r[4],
                "recorded_at": r[5].isoformat(),
                "notes": r[6],
            },
        )
        for r in _q(
            conn,
            "SELECT dispatched_at, recorded_by, who, id, outcome, recorded_at, "
            "notes FROM dispatches WHERE incident_id = %s",
            (incident_id,),
        )
    ]
    timeline.sort(key=lambda e: e.at)
    _audit(ctx, request, who, "incident.show", "ok", inc=inc)
    return IncidentDetail(incident=inc, timeline=timeline)


@router.post("/incidents/{incident_id}/acknowledge", response_model=IncidentOut)
def acknowledge(
    request: Request, ctx: Ctx, conn: Conn, who: Caller, incident_id: IncidentId
) -> IncidentOut:
    """open -> acknowledged; the caller becomes the assignee when there is none."""
    return _act(
        conn,
        ctx,
        request,
        who,
        incident_id,
        "acknowledge",
        {},
        "acknowledged_at = now(), acknowledged_by = %(who)s, "
        "assignee = coalesce(assignee, %(who)s)",
    )


@router.post("/incidents/{incident_id}/assign", response_model=IncidentOut)
def assign(
    request: Request, ctx: Ctx, conn: Conn, who: Caller, incident_id: IncidentId, body: AssignIn
) -> IncidentOut:
    """Hand the incident to a SOC user who can see its tenant."""
    inc = _load(conn, ctx, request, who, incident_id, "incident.assign")
    rows = _q(
        conn,
        "SELECT role, tenants FROM api_users WHERE id = %s AND disabled_at IS NULL",
        (body.user,),
    )
    if not rows or not (rows[0][0] == "admin" or inc.tenant in rows[0][1]):
        _audit(ctx, request, who, "incident.assign", "invalid", inc=inc, detail={"user": body.user})
        raise HTTPException(400, f"user {body.user!r} does not exist or cannot see this tenant")
    return _act(
        conn,
        ctx,
        request,
        who,
        incident_id,
        "assign",
        {"user": body.user},
        "assignee = %(user)s",
        inc=inc,
    )


@router.post("/incidents/{incident_id}/escalate", response_model=IncidentOut)
def escalate(
    request: Request, ctx: Ctx, conn: Conn, who: Caller, incident_id: IncidentId, body: EscalateIn
) -> IncidentOut:
    """Raise the severity (never lower it) with a reason; high and critical notify."""
    inc = _load(conn, ctx, request, who, incident_id, "incident.escalate")
    if SEVERITIES.index(body.severity) <= SEVERITIES.index(inc.severity):
        _audit(
            ctx,
            request,
            who,
            "incident.escalate",
            "invalid",
            inc=inc,
            detail={"severity": body.severity},
        )
        raise HTTPException(409, f"escalation must raise the severity above {inc.severity}")
    return _act(
        conn,
        ctx,
        request,
        who,
        incident_id,
        "escalate",
        {"severity": body.severity, "reason": body.reason, "from_severity": inc.severity},
        "severity = %(severity)s",
        inc=inc,
    )


@router.post("/incidents/{incident_id}/dispatch", response_model=IncidentOut)
def dispatch(
    request: Request, ctx: Ctx, conn: Conn, who: Caller, incident_id: IncidentId, body: DispatchIn
) -> IncidentOut:
    """Record an on-site visit (駆け付け): who went, when, the outcome so far, notes."""
    at = body.dispatched_at or datetime.now(UTC)
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    detail = {"who": body.who, "outcome": body.outcome, "dispatched_at": at.isoformat()}
    inc = _act(conn, ctx, request, who, incident_id, "dispatch", detail, "", audit_now=False)
    did = _q(
        conn,
        "INSERT INTO dispatches (incident_id, recorded_by, who, dispatched_at, "
        "outcome, notes) VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
        (incident_id, who.user, body.who, at, body.outcome, body.notes),
    )[0][0]
    _audit(
        ctx, request, who, "incident.dispatch", "ok", inc=inc, detail={**detail, "dispatch_id": did}
    )
    return inc


@router.post(
    "/incidents/{incident_id}/dispatches/{dispatch_id}/outcome", response_model=IncidentOut
)
def dispatch_outcome(
    request: Request,
    ctx: Ctx,
    conn: Conn,
    who: Caller,
    incident_id: IncidentId,
    dispatch_id: IncidentId,
    body: OutcomeIn,
) -> IncidentOut:
    """Record what an on-site visit found once it is over."""
    inc = _load(conn, ctx, request, who, incident_id, "incident.dispatch_outcome")
    done = _q(
        conn,
        "UPDATE dispatches SET outcome = %s, notes = CASE WHEN %s = '' THEN notes "
        "ELSE %s END WHERE id = %s AND incident_id = %s RETURNING id",
        (body.outcome, body.notes, body.notes, dispatch_id, incident_id),
    )
    if not done:
        _audit(
            ctx,
            request,
            who,
            "incident.dispatch_outcome",
            "invalid",
            inc=inc,
            detail={"dispatch_id": dispatch_id},
        )
        raise HTTPException(404, f"incident {incident_id} has no dispatch {dispatch_id}")
    detail = {"dispatch_id": dispatch_id, "outcome": body.outcome}
    return _act(
        conn,
        ctx,
        request,
        who,
        incident_id,
        "note",
        detail,
        "",
        inc=inc,
        record_as="dispatch_outcome",
    )


@router.post("/incidents/{incident_id}/resolve", response_model=IncidentOut)
def resolve(
    request: Request, ctx: Ctx, conn: Conn, who: Caller, incident_id: IncidentId, body: ResolveIn
) -> IncidentOut:
    """Close the incident with resolution notes."""
    return _act(
        conn,
        ctx,
        request,
        who,
        incident_id,
        "resolve",
        {"note": body.note},
        "resolved_at = now(), resolved_by = %(who)s, resolution = %(note)s",
    )


@router.post("/incidents/{incident_id}/reopen", response_model=IncidentOut)
def reopen(
    request: Request, ctx: Ctx, conn: Conn, who: Admin, incident_id: IncidentId, body: ReopenIn
) -> IncidentOut:
    """Admin only: resolved -> open (409 when a newer incident for the problem is open)."""
    try:
        with conn.transaction():
            return _act(
                conn,
                ctx,
                request,
                who,
                incident_id,
                "reopen",
                {"reason": body.reason},
                "resolved_at = NULL, resolved_by = NULL",
            )
    except StoreError as exc:
        if not isinstance(exc.__cause__, psycopg.errors.UniqueViolation):
            raise
    _audit(
        ctx,
        request,
        who,
        "incident.reopen",
        "invalid",
        target=f"incident:{incident_id}",
        detail={"reason": "a newer incident for the same problem is open"},
    )
    raise HTTPException(409, "a newer incident for the same problem is open; use that one")


@router.post("/incidents/{incident_id}/notes", response_model=IncidentOut)
def add_note(
    request: Request, ctx: Ctx, conn: Conn, who: Caller, incident_id: IncidentId, body: NoteIn
) -> IncidentOut:
    """Add a free-text note to the incident's timeline."""
    inc = _load(conn, ctx, request, who, incident_id, "incident.note")
    _q(
        conn,
        "INSERT INTO incident_notes (incident_id, author, body) VALUES (%s, %s, %s) RETURNING id",
        (incident_id, who.user, body.text),
    )
    _audit(ctx, request, who, "incident.note", "ok", inc=inc, detail={"chars": len(body.text)})
    return inc


@router.get("/audit", response_model=list[AuditOut])
def audit_log(
    request: Request,
    ctx: Ctx,
    conn: Conn,
    who: Admin,
    actor: Annotated[str | None, Query(max_length=100, pattern=NO_NUL)] = None,
    action: Annotated[str | None, Query(max_length=100, pattern=NO_NUL)] = None,
    tenant: Annotated[str | None, Query(max_length=63, pattern=NO_NUL)] = None,
    target: Annotated[str | None, Query(max_length=100, pattern=NO_NUL)] = None,
    since: datetime | None = None,
    before_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
) -> list[AuditOut]:
    """Admin only: the global audit log, newest first, with filters."""
    where, params = ["true"], list[Any]()
    for column, value in (
        ("actor", actor),
        ("action", action),
        ("tenant", tenant),
        ("target", target),
        ("at >=", since),
        ("id <", before_id),
    ):
        if value is not None:
            where.append(f"{column} %s" if " " in column else f"{column} = %s")
            params.append(value)
    names = tuple(AuditOut.model_fields)
    rows = _q(
        conn,
        f"SELECT {', '.join(names)} FROM audit_log WHERE {' AND '.join(where)} "
        "ORDER BY id DESC LIMIT %s",
        [*params, limit],
    )
    _audit(ctx, request, who, "audit.list", "ok", detail={"rows": len(rows)})
    return [AuditOut(**dict(zip(names, r, strict=True))) for r in rows]


# --- helpers -------------------------------------------------------------------------


def _audit(
    ctx: ApiContext,
    request: Request,
    who: Principal,
    action: str,
    result: str,
    *,
    inc: IncidentOut | None = None,
    tenant: str | None = None,
    target: str = "",
    detail: dict[str, Any] | None = None,
) -> None:
    audit.record(
        ctx.dsn,
        actor=who.user,
        action=action,
        result=result,
        target=f"incident:{inc.id}" if inc else target,
        tenant=inc.tenant if inc else tenant,
        detail=detail,
        remote=remote(request),
    )


def _load(
    conn: psycopg.Connection[Any],
    ctx: ApiContext,
    request: Request,
    who: Principal,
    incident_id: int,
    action: str,
    *,
    lock: bool = True,
) -> IncidentOut:
    """The incident, locked for the rest of the request; 404 when missing or not visible."""
    rows = _q(conn, f"{_SELECT} WHERE id = %s{' FOR UPDATE' if lock else ''}", (incident_id,))
    if not rows or not who.can_see(rows[0][1]):
        _audit(
            ctx,
            request,
            who,
            action,
            "denied" if rows else "invalid",
            target=f"incident:{incident_id}",
            tenant=rows[0][1] if rows else None,
            detail={"reason": "not found"},
        )
        raise HTTPException(404, f"no incident {incident_id}")
    return _incident(rows[0])


def _refuse(
    ctx: ApiContext, request: Request, who: Principal, inc: IncidentOut, action: str, exc: Exception
) -> NoReturn:
    _audit(
        ctx,
        request,
        who,
        f"incident.{action}",
        "invalid",
        inc=inc,
        detail={"status": inc.status, "reason": str(exc)},
    )
    raise HTTPException(409, str(exc)) from exc


def _act(
    conn: psycopg.Connection[Any],
    ctx: ApiContext,
    request: Request,
    who: Principal,
    incident_id: int,
    action: workflow.Action,
    detail: dict[str, Any],
    assignments: str,
    *,
    inc: IncidentOut | None = None,
    audit_now: bool = True,
    record_as: str | None = None,
) -> IncidentOut:
    """Check the transition, update the incident, log the action; audit unless told not to."""
    name = record_as or action
    if inc is None:
        inc = _load(conn, ctx, request, who, incident_id, f"incident.{name}")
    try:
        status = workflow.next_status(inc.status, action)
    except workflow.TransitionError as exc:
        _refuse(ctx, request, who, inc, name, exc)
    sets = ", ".join(s for s in ("status = %(status)s", "updated_at = now()", assignments) if s)
    row = _q(
        conn,
        f"UPDATE incidents SET {sets} WHERE id = %(id)s RETURNING {', '.join(_COLUMNS)}",
        {**detail, "status": status, "who": who.user, "id": incident_id},
    )[0]
    _q(
        conn,
        "INSERT INTO incident_actions (incident_id, actor, action, from_status, to_status,"
        " detail) VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
        (incident_id, who.user, name, inc.status, status, Jsonb(detail)),
    )
    out = _incident(row)
    if audit_now:
        _audit(
            ctx,
            request,
            who,
            f"incident.{name}",
            "ok",
            inc=out,
            detail={"from": inc.status, "to": status, **detail},
        )
    return out
