-- mimamori schema v1, part 3: JC-STAR-style device labels (same on every flavour).
--
-- device_labels holds the current label of each device; device_label_history one row per
-- change of a device's outcome or criterion statuses (not per refresh), so the table grows
-- with what changed, not with how often the job runs. Both are small relational tables
-- (one row per device, a few per change): no hypertable, identical on plain PostgreSQL and
-- TimescaleDB. Criteria and advice are jsonb in the form docs/labels.md documents.

CREATE TABLE device_labels (
    tenant            text NOT NULL,
    mac               macaddr NOT NULL,
    gateway           text NOT NULL,
    outcome           text NOT NULL
                      CHECK (outcome IN ('meets_star1_observed', 'does_not_meet',
                                         'insufficient_evidence')),
    kind              text NOT NULL DEFAULT '',
    iot               boolean NOT NULL DEFAULT true,
    impact            smallint NOT NULL DEFAULT 0,
    priority          integer NOT NULL DEFAULT 0,
    criteria          jsonb NOT NULL DEFAULT '[]',
    reasons           jsonb NOT NULL DEFAULT '[]',
    advice            jsonb NOT NULL DEFAULT '[]',
    note              text NOT NULL DEFAULT '',
    -- Statuses of S1.1-01..16 in order (p/f/u): what history compares.
    fingerprint       text NOT NULL,
    catalogue_version text NOT NULL,
    assessed_at       timestamptz NOT NULL,
    changed_at        timestamptz NOT NULL,
    PRIMARY KEY (tenant, mac)
);
CREATE INDEX device_labels_tenant_priority ON device_labels (tenant, priority DESC);

CREATE TABLE device_label_history (
    id                bigserial PRIMARY KEY,
    tenant            text NOT NULL,
    mac               macaddr NOT NULL,
    gateway           text NOT NULL,
    outcome           text NOT NULL,
    fingerprint       text NOT NULL,
    reasons           jsonb NOT NULL DEFAULT '[]',
    catalogue_version text NOT NULL,
    assessed_at       timestamptz NOT NULL
);
CREATE INDEX device_label_history_device ON device_label_history (tenant, mac, assessed_at DESC);
