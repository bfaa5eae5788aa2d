-- mimamori schema v1, part 2 on plain PostgreSQL 15+: the same relation and column names
-- as the TimescaleDB variant (0002_timeseries.timescaledb.sql), built from native
-- partitioning and rollup tables kept by a job (mimamori cloud jobs):
--
--   hypertable          -> table partitioned by range of ts, one partition per UTC day,
--                          plus a DEFAULT partition so no row is ever refused
--   retention policy    -> the job drops daily partitions older than storage_policies
--   continuous aggregate -> rollup table flows_5m / flows_1h, refreshed by the job from
--                          flow_invalidations (hours touched by inserts, filled by a
--                          statement trigger, so late rows are folded in too)
--   compression         -> none (plain PostgreSQL has no columnar compression)

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
) PARTITION BY RANGE (ts);
CREATE INDEX flows_tenant_gateway_ts ON flows (tenant, gateway, ts DESC);
CREATE TABLE flows_default PARTITION OF flows DEFAULT;

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
) PARTITION BY RANGE (ts);
CREATE INDEX heartbeats_gateway_ts ON heartbeats (gateway, ts DESC);
CREATE INDEX heartbeats_tenant_ts ON heartbeats (tenant, ts DESC);
CREATE TABLE heartbeats_default PARTITION OF heartbeats DEFAULT;

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
) PARTITION BY RANGE (ts);
CREATE INDEX sensor_messages_sensor_ts ON sensor_messages (tenant, sensor_id, ts DESC);
CREATE TABLE sensor_messages_default PARTITION OF sensor_messages DEFAULT;

-- Create the daily partition of `parent` holding `day` (UTC) if missing, first moving any
-- rows of that day out of the DEFAULT partition (ATTACH refuses while they are there).
-- Returns true when it created the partition.
CREATE FUNCTION mimamori_ensure_partition(parent text, day date) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    part text := format('%s_p%s', parent, to_char(day, 'YYYYMMDD'));
    lo timestamptz := day::timestamp AT TIME ZONE 'UTC';
    hi timestamptz := (day + 1)::timestamp AT TIME ZONE 'UTC';
BEGIN
    IF to_regclass(part) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                   part, parent);
    EXECUTE format('WITH moved AS (DELETE FROM %I WHERE ts >= %L AND ts < %L RETURNING *) '
                   'INSERT INTO %I SELECT * FROM moved', parent || '_default', lo, hi, part);
    EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                   parent, part, lo, hi);
    RETURN true;
END $$;

-- Drop the daily partitions of `parent` that end at or before `cutoff`, and delete older
-- rows from its DEFAULT partition. Returns the number of partitions dropped.
CREATE FUNCTION mimamori_drop_partitions(parent text, cutoff timestamptz) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    child record;
    dropped integer := 0;
BEGIN
    FOR child IN
        SELECT c.relname
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = parent::regclass
          AND c.relname ~ ('^' || parent || '_p[0-9]{8}$')
    LOOP
        IF (to_date(right(child.relname, 8), 'YYYYMMDD') + 1)::timestamp AT TIME ZONE 'UTC'
           <= cutoff THEN
            EXECUTE format('DROP TABLE %I', child.relname);
            dropped := dropped + 1;
        END IF;
    END LOOP;
    EXECUTE format('DELETE FROM %I WHERE ts < %L', parent || '_default', cutoff);
    RETURN dropped;
END $$;

-- Partitions for yesterday, today and the next two days; the job keeps creating them.
SELECT mimamori_ensure_partition(t, (now() AT TIME ZONE 'UTC')::date + d)
FROM unnest(ARRAY['flows', 'heartbeats', 'sensor_messages']) AS t,
     generate_series(-1, 2) AS d;

-- Rollup tables with the columns of the TimescaleDB continuous aggregates.
CREATE TABLE flows_5m (
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
CREATE INDEX flows_5m_tenant_gateway_bucket ON flows_5m (tenant, gateway, bucket DESC);
CREATE INDEX flows_5m_bucket ON flows_5m (bucket);

CREATE TABLE flows_1h (
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
CREATE INDEX flows_1h_tenant_gateway_bucket ON flows_1h (tenant, gateway, bucket DESC);
CREATE INDEX flows_1h_bucket ON flows_1h (bucket);

-- Hours (UTC) whose flows changed since the rollups were last refreshed. Append-only:
-- the job deletes exactly the ids it has folded in, so an insert that commits during a
-- refresh leaves its own row for the next run.
CREATE TABLE flow_invalidations (
    id    bigserial PRIMARY KEY,
    hour  timestamptz NOT NULL
);

CREATE FUNCTION mimamori_flows_invalidate() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO flow_invalidations (hour)
    SELECT DISTINCT date_bin(interval '1 hour', ts, timestamptz '2000-01-01 00:00:00+00')
    FROM new_rows;
    RETURN NULL;
END $$;

-- One statement-level trigger per INSERT or COPY: a few rows per batch, not per flow.
CREATE TRIGGER flows_invalidate AFTER INSERT ON flows
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION mimamori_flows_invalidate();
