-- mimamori schema v1, part 1: registry and relational tables (same on every flavour).
--
-- Conventions: ids of tenants, gateways and sensors are the protocol's lowercase ids
-- (text); every time is timestamptz (UTC instants); IP addresses are inet; MAC addresses
-- are macaddr (6 bytes, canonical form, NULL when the gateway did not know the MAC).

CREATE TABLE tenants (
    id          text PRIMARY KEY,
    name        text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Gateway ids are unique across tenants: a message carries only its gateway id, and the
-- receipts below are keyed by (gateway, seq).
CREATE TABLE gateways (
    id               text PRIMARY KEY,
    tenant           text NOT NULL REFERENCES tenants (id),
    site             text NOT NULL DEFAULT '',
    name             text NOT NULL DEFAULT '',
    state            text NOT NULL DEFAULT 'unknown'
                     CHECK (state IN ('online', 'offline', 'unknown')),
    state_changed_at timestamptz,
    -- Time of the newest heartbeat (its sent_at), and the interval it announced:
    -- the liveness job marks a gateway offline after 3 missed intervals.
    last_seen        timestamptz,
    heartbeat_interval_s real,
    created_at       timestamptz NOT NULL DEFAULT now(),
    revoked_at       timestamptz,
    -- Hash of the gateway's broker credential; NULL until enrollment (a later issue).
    credential_hash  text
);
CREATE INDEX gateways_tenant ON gateways (tenant);

-- Exactly-once: one row per committed (gateway, seq), written in the same transaction as
-- the message's rows. A message whose receipt exists is a duplicate: acked, not stored.
CREATE TABLE receipts (
    gateway      text NOT NULL,
    seq          bigint NOT NULL,
    kind         text NOT NULL,
    rows         integer NOT NULL DEFAULT 0,
    committed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (gateway, seq)
);
CREATE INDEX receipts_committed_at ON receipts (committed_at);

-- Messages that failed validation, kept for analysis. Never acknowledged.
CREATE TABLE quarantine (
    id           bigserial PRIMARY KEY,
    received_at  timestamptz NOT NULL DEFAULT now(),
    topic        text NOT NULL,
    tenant       text,               -- as claimed by the topic (unverified)
    gateway      text,               -- as claimed by the topic or payload (unverified)
    reason       text NOT NULL,      -- machine-readable: malformed, schema, too_large, ...
    detail       text NOT NULL DEFAULT '',
    payload      bytea NOT NULL,     -- truncated to the ingester's quarantine limit
    payload_size integer NOT NULL    -- size before truncation
);
CREATE INDEX quarantine_received_at ON quarantine (received_at);
CREATE INDEX quarantine_reason ON quarantine (reason, received_at);

-- Device inventory, one row per (tenant, MAC). first_seen never moves forward, last_seen
-- never moves back; other facts keep their last non-empty value.
CREATE TABLE devices (
    tenant            text NOT NULL,
    mac               macaddr NOT NULL,
    gateway           text NOT NULL,
    ips               inet[] NOT NULL DEFAULT '{}',
    vendor            text NOT NULL DEFAULT '',
    hostname          text NOT NULL DEFAULT '',
    dhcp_fingerprint  text NOT NULL DEFAULT '',
    dhcp_vendor_class text NOT NULL DEFAULT '',
    model             text NOT NULL DEFAULT '',
    os_hint           text NOT NULL DEFAULT '',
    services          text[] NOT NULL DEFAULT '{}',
    extras            jsonb NOT NULL DEFAULT '{}',
    first_seen        timestamptz NOT NULL,
    last_seen         timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, mac)
);
CREATE INDEX devices_gateway ON devices (gateway);

-- Incidents group alerts about the same problem: (tenant, dedup_key) while not resolved.
CREATE TABLE incidents (
    id              bigserial PRIMARY KEY,
    tenant          text NOT NULL,
    dedup_key       text NOT NULL,
    category        text NOT NULL,
    severity        text NOT NULL
                    CHECK (severity IN ('info', 'low', 'medium', 'high', 'critical')),
    status          text NOT NULL DEFAULT 'open'
                    CHECK (status IN ('open', 'acknowledged', 'assigned', 'resolved')),
    title           text NOT NULL DEFAULT '',
    gateway         text,
    alert_count     integer NOT NULL DEFAULT 0,
    first_alert_at  timestamptz NOT NULL,
    last_alert_at   timestamptz NOT NULL,
    opened_at       timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    resolved_at     timestamptz
);
-- At most one unresolved incident per problem.
CREATE UNIQUE INDEX incidents_open_key ON incidents (tenant, dedup_key)
    WHERE status <> 'resolved';
CREATE INDEX incidents_tenant_status ON incidents (tenant, status, last_alert_at DESC);

-- Alerts from gateways (detect/) and from cloud jobs (gateway_offline, ...).
CREATE TABLE alerts (
    id           bigserial PRIMARY KEY,
    tenant       text NOT NULL,
    gateway      text NOT NULL,
    alert_id     text NOT NULL,      -- Alert.id, unique per gateway
    category     text NOT NULL,
    severity     text NOT NULL
                 CHECK (severity IN ('info', 'low', 'medium', 'high', 'critical')),
    detected_at  timestamptz NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    actor        text NOT NULL,
    target       text NOT NULL DEFAULT '',
    summary_en   text NOT NULL,
    summary_ja   text NOT NULL,
    dedup_key    text NOT NULL,
    rule         text NOT NULL DEFAULT '',
    mac          macaddr,
    evidence     jsonb NOT NULL DEFAULT '{}',
    source       text NOT NULL DEFAULT 'gateway' CHECK (source IN ('gateway', 'cloud')),
    incident_id  bigint REFERENCES incidents (id),
    UNIQUE (gateway, alert_id)
);
CREATE INDEX alerts_tenant_detected ON alerts (tenant, detected_at DESC);
-- The incident job reads alerts not yet grouped.
CREATE INDEX alerts_ungrouped ON alerts (id) WHERE incident_id IS NULL;

-- Sensor nodes (firmware/), seen through their gateway's relay.
CREATE TABLE sensors (
    tenant      text NOT NULL,
    sensor_id   text NOT NULL,
    gateway     text NOT NULL,
    state       text NOT NULL DEFAULT 'unknown'
                CHECK (state IN ('online', 'offline', 'unknown')),
    last_kind   text NOT NULL DEFAULT '',
    first_seen  timestamptz NOT NULL,
    last_seen   timestamptz NOT NULL,
    last_body   jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (tenant, sensor_id)
);

-- How long each time-series relation keeps data. TimescaleDB enforces these with its own
-- retention policies (set from the same values by migration 0002); on plain PostgreSQL
-- the partition job drops whole daily partitions older than this.
CREATE TABLE storage_policies (
    relation   text PRIMARY KEY,
    retain     interval NOT NULL
);
INSERT INTO storage_policies (relation, retain) VALUES
    -- Raw flow summaries: detail for investigations of the last month.
    ('flows', interval '31 days'),
    -- Rollups: 5-minute for a quarter, hourly for monthly reports over a year and more.
    ('flows_5m', interval '92 days'),
    ('flows_1h', interval '400 days'),
    ('heartbeats', interval '31 days'),
    ('sensor_messages', interval '92 days'),
    -- Receipts must outlive any message still waiting in a gateway's outbox (an outbox
    -- keeps at most its disk budget, about a day of traffic offline), or a late re-send
    -- would be stored twice. Plain tables: trimmed with DELETE on both flavours.
    ('receipts', interval '31 days'),
    ('quarantine', interval '31 days');
