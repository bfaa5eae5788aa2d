-- Rollups for long dashboard ranges, on TimescaleDB: hierarchical continuous aggregates
-- over flows_1h, real-time like the others (same names and columns as the tables of
-- 0008_daily_rollups.postgresql.sql):
--
--   flows_1d      flows_1h folded into UTC days, every grouping column kept: totals and
--                 top-N tables over weeks read about 1/8 of the hourly rows
--   flows_app_1h  flows_1h folded to (hour, tenant, gateway, app): a site's traffic over
--                 time, per application, without the device and endpoint columns
--
-- A database migrated with data already in flows_1h gets these filled for the policies'
-- windows only; 'mimamori cloud jobs run-once --only rollups' refreshes them entirely.

-- time_bucket's default origin for a day (2000-01-03, a Monday) is a UTC midnight, as
-- date_bin's 2000-01-01 origin on plain PostgreSQL: the same day buckets on both.
CREATE MATERIALIZED VIEW flows_1d WITH (timescaledb.continuous,
                                        timescaledb.materialized_only = false,
                                        timescaledb.create_group_indexes = false) AS
SELECT time_bucket(interval '1 day', bucket) AS bucket,
       tenant, gateway, mac, local_ip, remote_ip, remote_port, proto, dir, app, sni,
       sum(pkts_out)::bigint AS pkts_out, sum(pkts_in)::bigint AS pkts_in,
       sum(bytes_out)::bigint AS bytes_out, sum(bytes_in)::bigint AS bytes_in,
       sum(conns)::bigint AS conns, sum(summaries)::bigint AS summaries
FROM flows_1h
GROUP BY 1, tenant, gateway, mac, local_ip, remote_ip, remote_port, proto, dir, app, sni
WITH NO DATA;
-- The two filters dashboards use (site: tenant and gateways; device: tenant and mac),
-- instead of one index per grouping column.
CREATE INDEX flows_1d_tenant_gateway_bucket ON flows_1d (tenant, gateway, bucket DESC);
CREATE INDEX flows_1d_tenant_mac_bucket ON flows_1d (tenant, mac, bucket DESC);

CREATE MATERIALIZED VIEW flows_app_1h WITH (timescaledb.continuous,
                                            timescaledb.materialized_only = false,
                                            timescaledb.create_group_indexes = false) AS
SELECT time_bucket(interval '1 hour', bucket) AS bucket, tenant, gateway, app,
       sum(pkts_out)::bigint AS pkts_out, sum(pkts_in)::bigint AS pkts_in,
       sum(bytes_out)::bigint AS bytes_out, sum(bytes_in)::bigint AS bytes_in,
       sum(conns)::bigint AS conns, sum(summaries)::bigint AS summaries
FROM flows_1h
GROUP BY 1, tenant, gateway, app
WITH NO DATA;
CREATE INDEX flows_app_1h_tenant_gateway_bucket ON flows_app_1h (tenant, gateway, bucket DESC);

-- Like flows_1h: look back 3 days for late batches. A day bucket is materialized once the
-- day is over; until then real-time aggregation computes it from flows_1h.
SELECT add_continuous_aggregate_policy('flows_1d', start_offset => interval '4 days',
    end_offset => interval '1 hour', schedule_interval => interval '1 hour');
SELECT add_continuous_aggregate_policy('flows_app_1h', start_offset => interval '3 days',
    end_offset => interval '1 hour', schedule_interval => interval '30 minutes');

INSERT INTO storage_policies (relation, retain) VALUES
    ('flows_1d', interval '800 days'),
    ('flows_app_1h', interval '400 days')
ON CONFLICT (relation) DO NOTHING;
SELECT add_retention_policy(relation::regclass, retain)
FROM storage_policies
WHERE relation IN ('flows_1d', 'flows_app_1h');
