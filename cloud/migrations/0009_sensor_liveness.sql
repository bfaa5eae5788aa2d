-- Sensor liveness on the cloud's clock, with each sensor's own heartbeat interval
-- (cloud/jobs/sensors.py). Same on plain PostgreSQL and TimescaleDB: `sensors` is a
-- plain table on both.
--
-- last_heard      the cloud's clock when the ingester last committed a message of the
--                 sensor (its transaction's now(), as gateways.last_heard). last_seen
--                 stays the gateway's stamp (when its relay heard the sensor): a gateway
--                 whose clock is behind, or whose backlog arrives after an outage, makes
--                 last_seen look old although the sensor is alive. NULL (not heard since
--                 this migration and nothing to backfill from): the job uses last_seen.
-- heartbeat_s     the interval the sensor announced in its newest self-report (only
--                 self-reports carry it; heartbeats and canary messages do not).
-- self_report_at  last_seen of that self-report, so a re-sent older one cannot overwrite it.
ALTER TABLE sensors ADD COLUMN IF NOT EXISTS last_heard timestamptz;
ALTER TABLE sensors ADD COLUMN IF NOT EXISTS heartbeat_s double precision;
ALTER TABLE sensors ADD COLUMN IF NOT EXISTS self_report_at timestamptz;

-- Backfill from the stored messages. ingested_at is when the cloud committed each one;
-- an outbox holds at most about a day offline, so the newest receipt is among the
-- messages of the two days before last_seen (bounded scan of sensor_messages_sensor_ts).
UPDATE sensors s SET last_heard = (
    SELECT max(m.ingested_at) FROM sensor_messages m
    WHERE m.tenant = s.tenant AND m.sensor_id = s.sensor_id
      AND m.ts >= s.last_seen - interval '2 days'
)
WHERE s.last_heard IS NULL;

-- Only positive numbers up to a day (numeric first: a huge JSON number must not fail a
-- cast; CASE keeps the cast from seeing a string).
UPDATE sensors s SET (heartbeat_s, self_report_at) = (
    SELECT (m.body ->> 'heartbeat_s')::float8, m.ts
    FROM sensor_messages m
    WHERE m.tenant = s.tenant AND m.sensor_id = s.sensor_id
      AND m.sensor_kind = 'self_report'
      AND CASE WHEN jsonb_typeof(m.body -> 'heartbeat_s') = 'number'
               THEN (m.body -> 'heartbeat_s')::numeric END BETWEEN 0.001 AND 86400
    ORDER BY m.ts DESC
    LIMIT 1
)
WHERE s.heartbeat_s IS NULL;
