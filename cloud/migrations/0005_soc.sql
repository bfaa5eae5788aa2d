-- mimamori schema, part 5: SOC workflow (incident state, actions, notes, on-site
-- dispatches) and notifications (per-tenant settings and a delivery outbox).

-- Incident life cycle: open -> acknowledged -> (dispatched) -> resolved; an admin may
-- reopen a resolved incident. 'assigned' stays allowed for rows written before 0005.
ALTER TABLE incidents DROP CONSTRAINT incidents_status_check;
ALTER TABLE incidents ADD CONSTRAINT incidents_status_check
    CHECK (status IN ('open', 'acknowledged', 'assigned', 'dispatched', 'resolved'));
ALTER TABLE incidents
    ADD COLUMN assignee        text REFERENCES api_users (id),
    ADD COLUMN acknowledged_at timestamptz,
    ADD COLUMN acknowledged_by text,
    ADD COLUMN resolved_by     text,
    ADD COLUMN resolution      text NOT NULL DEFAULT '';

-- Every state change or assignment on an incident, by whom (one row per API action).
CREATE TABLE incident_actions (
    id          bigserial PRIMARY KEY,
    incident_id bigint NOT NULL REFERENCES incidents (id),
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL,
    action      text NOT NULL,   -- acknowledge, assign, escalate, dispatch, resolve, reopen
    from_status text NOT NULL,
    to_status   text NOT NULL,
    detail      jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX incident_actions_incident ON incident_actions (incident_id, id);

CREATE TABLE incident_notes (
    id          bigserial PRIMARY KEY,
    incident_id bigint NOT NULL REFERENCES incidents (id),
    at          timestamptz NOT NULL DEFAULT now(),
    author      text NOT NULL,
    body        text NOT NULL
);
CREATE INDEX incident_notes_incident ON incident_notes (incident_id, id);

-- On-site visits (駆け付け): who went, when, and what they found.
CREATE TABLE dispatches (
    id            bigserial PRIMARY KEY,
    incident_id   bigint NOT NULL REFERENCES incidents (id),
    recorded_at   timestamptz NOT NULL DEFAULT now(),
    recorded_by   text NOT NULL,
    who           text NOT NULL,
    dispatched_at timestamptz NOT NULL,
    outcome       text NOT NULL CHECK (outcome IN ('pending', 'fixed', 'mitigated',
                                                   'no_issue', 'unreachable')),
    notes         text NOT NULL DEFAULT ''
);
CREATE INDEX dispatches_incident ON dispatches (incident_id, id);

-- Where a tenant's notifications go. Only incidents updated after created_at notify, so
-- turning notifications on does not page for every old incident.
CREATE TABLE notify_settings (
    tenant         text PRIMARY KEY REFERENCES tenants (id),
    webhook_url    text,
    webhook_secret text,              -- HMAC-SHA256 key of the signature header, optional
    email_to       text[] NOT NULL DEFAULT '{}',
    max_per_hour   integer CHECK (max_per_hour > 0),   -- NULL: the notify config's default
    enabled        boolean NOT NULL DEFAULT true,
    created_at     timestamptz NOT NULL DEFAULT now()
);

-- The notification outbox: a row per message and channel, written before any delivery,
-- so a crash neither loses (pending rows are retried) nor invents a message (the unique
-- key makes enqueueing idempotent). Delivery is at least once; receivers deduplicate on
-- the idempotency key sent with every message.
CREATE TABLE notifications (
    id              bigserial PRIMARY KEY,
    idempotency_key text NOT NULL UNIQUE,
    tenant          text NOT NULL,
    incident_id     bigint REFERENCES incidents (id),
    kind            text NOT NULL CHECK (kind IN ('new', 'escalated', 'digest')),
    channel         text NOT NULL CHECK (channel IN ('webhook', 'email')),
    severity        text NOT NULL,
    payload         jsonb NOT NULL,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'held', 'sent', 'digested', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    last_error      text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL,
    sent_at         timestamptz,
    digest_id       bigint REFERENCES notifications (id)
);
CREATE INDEX notifications_due ON notifications (next_attempt_at) WHERE status = 'pending';
CREATE INDEX notifications_sent ON notifications (tenant, channel, sent_at)
    WHERE status = 'sent';
