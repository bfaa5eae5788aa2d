-- mimamori schema, part 4: enrollment tokens, SOC API users and tokens, the audit log.
--
-- No secret is stored in clear: enrollment and API tokens are kept as HMAC-SHA256 under a
-- server-side pepper (the tokens are 256-bit random strings, so a slow hash would add
-- nothing; the pepper makes a stolen database dump useless for forging tokens). Broker
-- passwords live only in Mosquitto's dynamic-security file, hashed by the plugin.

-- One-time enrollment tokens: each works once (used_at) and only until expires_at.
CREATE TABLE enrollment_tokens (
    token_hash  text PRIMARY KEY,
    tenant      text NOT NULL REFERENCES tenants (id),
    gateway     text NOT NULL REFERENCES gateways (id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text NOT NULL DEFAULT '',
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz
);
CREATE INDEX enrollment_tokens_gateway ON enrollment_tokens (gateway);

-- When the gateway's current broker credential was issued (credential_hash, from 0001,
-- holds a peppered hash of it so an operator can tell which credential a box holds).
ALTER TABLE gateways ADD COLUMN enrolled_at timestamptz;

-- SOC users of the API. An analyst sees only the tenants listed; an admin sees all.
CREATE TABLE api_users (
    id          text PRIMARY KEY,
    role        text NOT NULL CHECK (role IN ('analyst', 'admin')),
    tenants     text[] NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    disabled_at timestamptz
);

CREATE TABLE api_tokens (
    token_hash   text PRIMARY KEY,
    user_id      text NOT NULL REFERENCES api_users (id),
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    revoked_at   timestamptz,
    last_used_at timestamptz
);
CREATE INDEX api_tokens_user ON api_tokens (user_id);

-- Every API action and security-relevant CLI action: who, when, what, on what, outcome.
CREATE TABLE audit_log (
    id        bigserial PRIMARY KEY,
    at        timestamptz NOT NULL DEFAULT now(),
    actor     text NOT NULL,          -- api user id, 'gateway:<id>', 'cli', or 'anonymous'
    action    text NOT NULL,          -- e.g. 'alerts.list', 'enroll', 'gateway.revoke'
    target    text NOT NULL DEFAULT '',
    tenant    text,
    result    text NOT NULL,          -- 'ok', 'denied', 'invalid', 'error'
    detail    jsonb NOT NULL DEFAULT '{}',
    remote    text NOT NULL DEFAULT ''
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_actor ON audit_log (actor, at);
