-- Rollups for long dashboard ranges, on plain PostgreSQL (tables kept by the rollup job,
-- mimamori cloud jobs; same names and columns as the continuous aggregates of
-- 0008_daily_rollups.timescaledb.sql):
--
--   flows_1d      flows_1h folded into UTC days, every grouping column kept: totals and
--                 top-N tables over weeks read about 1/8 of the hourly rows
--   flows_app_1h  flows_1h folded to (hour, tenant, gateway, app): a site's traffic over
--                 time, per application, without the device and endpoint columns
--
-- Both are recomputed by the job for exactly the hours (and their days) that
-- flow_invalidations names, after flows_5m and flows_1h.

CREATE TABLE flows_1d (
    bucket      timestamptz NOT NULL,
    tenant      text NOT NULL,
    gateway     text NOT NULL,
    mac         macaddr,
    local_ip    inet NOT NULL,
    remote_ip   inet NOT NULL,
    remote_port integer NOT NULL,
    proto       smallint NOT NULL,
    dir         text NOT NULL,
    app         text NOT NULL,
    sni         text NOT NULL,
    pkts_out    bigint NOT NULL,
    pkts_in     bigint NOT NULL,
    bytes_out   bigint NOT NULL,
    bytes_in    bigint NOT NULL,
    conns       bigint NOT NULL,
    summaries   bigint NOT NULL
);
CREATE INDEX flows_1d_tenant_gateway_bucket ON flows_1d (tenant, gateway, bucket DESC);
CREATE INDEX flows_1d_tenant_mac_bucket ON flows_1d (tenant, mac, bucket DESC);
CREATE INDEX flows_1d_bucket ON flows_1d (bucket);

CREATE TABLE flows_app_1h (
    bucket      timestamptz NOT NULL,
    tenant      text NOT NULL,
    gateway     text NOT NULL,
    app         text NOT NULL,
    pkts_out    bigint NOT NULL,
    pkts_in     bigint NOT NULL,
    bytes_out   bigint NOT NULL,
    bytes_in    bigint NOT NULL,
    conns       bigint NOT NULL,
    summaries   bigint NOT NULL
);
CREATE INDEX flows_app_1h_tenant_gateway_bucket ON flows_app_1h (tenant, gateway, bucket DESC);
CREATE INDEX flows_app_1h_bucket ON flows_app_1h (bucket);

-- The device dashboard filters by (tenant, mac) without a gateway: without these it
-- scanned every row of the tenant's sites in the range.
CREATE INDEX flows_5m_tenant_mac_bucket ON flows_5m (tenant, mac, bucket DESC);
CREATE INDEX flows_1h_tenant_mac_bucket ON flows_1h (tenant, mac, bucket DESC);

-- Backfill from the hourly rollup already stored (a no-op on a new database).
INSERT INTO flows_1d
SELECT date_bin(interval '1 day', bucket, timestamptz '2000-01-01 00:00:00+00'),
       tenant, gateway, mac, local_ip, remote_ip, remote_port, proto, dir, app, sni,
       sum(pkts_out)::bigint, sum(pkts_in)::bigint, sum(bytes_out)::bigint,
       sum(bytes_in)::bigint, sum(conns)::bigint, sum(summaries)::bigint
FROM flows_1h
GROUP BY 1, tenant, gateway, mac, local_ip, remote_ip, remote_port, proto, dir, app, sni
ORDER BY tenant, gateway, 1;

INSERT INTO flows_app_1h
SELECT bucket, tenant, gateway, app,
       sum(pkts_out)::bigint, sum(pkts_in)::bigint, sum(bytes_out)::bigint,
       sum(bytes_in)::bigint, sum(conns)::bigint, sum(summaries)::bigint
FROM flows_1h
GROUP BY bucket, tenant, gateway, app
ORDER BY tenant, gateway, bucket;

-- Retention (trimmed by the rollup job on plain PostgreSQL, by policies on TimescaleDB):
-- daily totals outlive the hourly rollup, for year-over-year reports.
INSERT INTO storage_policies (relation, retain) VALUES
    ('flows_1d', interval '800 days'),
    ('flows_app_1h', interval '400 days')
ON CONFLICT (relation) DO NOTHING;
