-- Threat-intelligence feeds and bundles (cloud/intel.py), and liveness on the cloud's clock.

-- One row per configured feed: what the last fetch returned, kept so that a feed the
-- server reports unchanged (304 to If-Modified-Since / If-None-Match) or that fails to
-- download still contributes its last good indicators.
CREATE TABLE intel_feeds (
    name           text PRIMARY KEY,
    source         text NOT NULL,          -- URL or file path
    etag           text,
    last_modified  text,                   -- the server's Last-Modified, verbatim
    fetched_at     timestamptz,            -- last successful fetch (200 or 304)
    changed_at     timestamptz,            -- last time the body changed
    body           text NOT NULL DEFAULT '',
    indicators     integer NOT NULL DEFAULT 0,
    rejected       integer NOT NULL DEFAULT 0,
    failures       integer NOT NULL DEFAULT 0,  -- consecutive failed fetches
    last_error     text NOT NULL DEFAULT ''
);

-- Every bundle built; the newest is what gateways hold (published retained per tenant).
-- The payload is the encoded protocol message, so a re-publish sends the same bytes.
CREATE TABLE intel_bundles (
    version        text PRIMARY KEY,
    generated_at   timestamptz NOT NULL,
    indicators     integer NOT NULL,       -- in the bundle
    dropped        integer NOT NULL DEFAULT 0,  -- left out to fit the payload limit
    payload        bytea NOT NULL,
    published_at   timestamptz,
    tenants        integer NOT NULL DEFAULT 0
);
CREATE INDEX intel_bundles_generated ON intel_bundles (generated_at DESC);

-- last_seen is the gateway's own clock (the heartbeat's sent_at), shown to staff;
-- last_heard is the cloud's clock when the ingester last committed a heartbeat from it.
-- Liveness compares last_heard with the cloud's now, so a gateway whose clock is off is
-- not declared offline. NULL (gateways never heard since this migration): last_seen.
ALTER TABLE gateways ADD COLUMN last_heard timestamptz;
