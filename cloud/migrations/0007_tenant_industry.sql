-- The industry of each tenant (customer company), for the alert statistics that
-- providers share with each other (cloud/stats_export.py): counts by week, industry,
-- category and severity, with no tenant identifier. NULL or '' is exported as 'unknown'.
-- Free text on purpose: providers use different industry codes (e.g. JSIC major groups).
ALTER TABLE tenants ADD COLUMN IF NOT EXISTS industry text;
