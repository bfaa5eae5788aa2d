-- mimamori schema v1, part 2 on TimescaleDB: hypertables, compression, retention and
-- continuous aggregates. Relation and column names are identical to the plain PostgreSQL
-- variant (0002_timeseries.postgresql.sql) so dashboards work on both.

CREATE EXTENSION IF NOT EXISTS timescaledb;

-- Flow summaries: one row per (interval, local device, remote endpoint), the field names
-- of protocol FlowSummary plus tenant and gateway. No CHECK constraints: the protocol
-- has validated every field, and this is the hottest write path.
CREATE TABLE flows (
    ts          timestamptz NOT NULL,
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
    first_seen  timestamptz,
    last_seen   timestamptz
);
-- One-day chunks: a day of a few thousand sites fits memory; retention drops whole days.
SELECT create_hypertable('flows', 'ts', chunk_time_interval => interval '1 day',
                         create_default_indexes => false);
-- The only index: every dashboard query names a tenant (and usually a gateway) and a
-- time range. Each extra index costs ingest throughput.
CREATE INDEX flows_tenant_gateway_ts ON flows (tenant, gateway, ts DESC);
-- Compressed chunks segment by gateway: queries filter by it and it repeats in a chunk.
ALTER TABLE flows SET (timescaledb.compress,
                       timescaledb.compress_segmentby = 'tenant, gateway',
                       timescaledb.compress_orderby = 'ts DESC');
-- Late rows (a gateway back after a day offline) still land in uncompressed chunks.
SELECT add_compression_policy('flows', interval '2 days');

CREATE TABLE heartbeats (
    ts              timestamptz NOT NULL,   -- sent_at of the heartbeat
    received_at     timestamptz NOT NULL DEFAULT now(),
    tenant          text NOT NULL,
    gateway         text NOT NULL,
    seq             bigint NOT NULL,
    interval_s      real NOT NULL,
    uptime_s        double precision NOT NULL,
    load1           real NOT NULL,
    mem_used_pct    real NOT NULL,
    disk_used_pct   real NOT NULL,
    temp_c          real,
    packets_seen    bigint NOT NULL,
    packets_dropped bigint NOT NULL,
    outbox_depth    bigint NOT NULL,
    outbox_bytes    bigint NOT NULL,
    agent_version   text NOT NULL,
    config_hash     text NOT NULL,
    intel_age_s     double precision
);
SELECT create_hypertable('heartbeats', 'ts', chunk_time_interval => interval '7 days',
                         create_default_indexes => false);
CREATE INDEX heartbeats_gateway_ts ON heartbeats (gateway, ts DESC);
CREATE INDEX heartbeats_tenant_ts ON heartbeats (tenant, ts DESC);
ALTER TABLE heartbeats SET (timescaledb.compress,
                            timescaledb.compress_segmentby = 'gateway',
                            timescaledb.compress_orderby = 'ts DESC');
SELECT add_compression_policy('heartbeats', interval '7 days');

CREATE TABLE sensor_messages (
    ts          timestamptz NOT NULL,   -- received_at: when the gateway heard the sensor
    tenant      text NOT NULL,
    gateway     text NOT NULL,
    seq         bigint NOT NULL,
    sensor_id   text NOT NULL,
    sensor_kind text NOT NULL,
    sent_at     timestamptz NOT NULL,
    ingested_at timestamptz NOT NULL DEFAULT now(),
    body        jsonb NOT NULL
);
SELECT create_hypertable('sensor_messages', 'ts', chunk_time_interval => interval '7 days',
                         create_default_indexes => false);
CREATE INDEX sensor_messages_sensor_ts ON sensor_messages (tenant, sensor_id, ts DESC);

-- Rollups. Buckets start at multiples of the width since the UNIX epoch (time_bucket's
-- default origin for these widths), which is what date_bin gives on plain PostgreSQL.
-- `summaries` counts the raw rows folded into each bucket.
CREATE MATERIALIZED VIEW flows_5m WITH (timescaledb.continuous,
                                        timescaledb.materialized_only = false) AS
SELECT time_bucket(interval '5 minutes', ts) AS bucket,
       tenant, gateway, mac, local_ip, remote_ip, remote_port, proto, dir, app, sni,
       sum(pkts_out)::bigint AS pkts_out, sum(pkts_in)::bigint AS pkts_in,
       sum(bytes_out)::bigint AS bytes_out, sum(bytes_in)::bigint AS bytes_in,
       sum(conns)::bigint AS conns, count(*)::bigint AS summaries
FROM flows
GROUP BY bucket, tenant, gateway, mac, local_ip, remote_ip, remote_port, proto, dir, app, sni
WITH NO DATA;

-- Hourly rollup built on the 5-minute one (hierarchical continuous aggregate).
CREATE MATERIALIZED VIEW flows_1h WITH (timescaledb.continuous,
                                        timescaledb.materialized_only = false) AS
SELECT time_bucket(interval '1 hour', bucket) AS bucket,
       tenant, gateway, mac, local_ip, remote_ip, remote_port, proto, dir, app, sni,
       sum(pkts_out)::bigint AS pkts_out, sum(pkts_in)::bigint AS pkts_in,
       sum(bytes_out)::bigint AS bytes_out, sum(bytes_in)::bigint AS bytes_in,
       sum(conns)::bigint AS conns, sum(summaries)::bigint AS summaries
FROM flows_5m
GROUP BY 1, tenant, gateway, mac, local_ip, remote_ip, remote_port, proto, dir, app, sni
WITH NO DATA;

-- Background refresh: the 5-minute rollup trails real time by 10 minutes and looks back
-- 3 days so that late batches (gateway offline for a day) are folded in; real-time
-- aggregation (materialized_only = false) covers the most recent buckets at query time.
SELECT add_continuous_aggregate_policy('flows_5m', start_offset => interval '3 days',
    end_offset => interval '10 minutes', schedule_interval => interval '5 minutes');
SELECT add_continuous_aggregate_policy('flows_1h', start_offset => interval '3 days',
    end_offset => interval '1 hour', schedule_interval => interval '30 minutes');

-- Retention from storage_policies (0001), so both flavours keep the same windows.
SELECT add_retention_policy(relation::regclass, retain)
FROM storage_policies
WHERE relation IN ('flows', 'flows_5m', 'flows_1h', 'heartbeats', 'sensor_messages');
