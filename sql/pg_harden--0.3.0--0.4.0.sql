-- pg_harden 0.3.0 -> 0.4.0
\echo Use "ALTER EXTENSION pg_harden UPDATE TO '0.4.0'" to load this file. \quit

-- Every object added or changed here is also in sql/pg_harden.sql, the full
-- script a fresh install runs; test/upgrade.sh compares the two paths.
-- Views are changed in place (CREATE OR REPLACE VIEW, columns appended), so
-- views of the user's over them survive the update.

-- ---------------------------------------------------------------------------
-- Upgrades that keep user objects: fsm_attachments shows when and by whom
-- ---------------------------------------------------------------------------

CREATE OR REPLACE VIEW harden.fsm_attachments AS
SELECT t.tgrelid::regclass AS table_name,
       a.attname AS column_name,
       split_part(encode(t.tgargs, 'escape'), '\000', 1) AS machine,
       split_part(encode(t.tgargs, 'escape'), '\000', 2) <> 'noaudit' AS audit,
       t.tgenabled <> 'D' AS enabled,
       f.attached_at,
       f.attached_by
  FROM pg_catalog.pg_trigger t
  JOIN pg_catalog.pg_attribute a ON a.attrelid = t.tgrelid AND a.attnum = t.tgattr[0]
  LEFT JOIN harden.fsm_attached f
    ON f.relid = t.tgrelid AND f.machine = split_part(encode(t.tgargs, 'escape'), '\000', 1)
 WHERE t.tgfoid = 'harden.fsm_enforce()'::pg_catalog.regprocedure
   AND t.tgparentid = 0;
COMMENT ON VIEW harden.fsm_attachments IS 'which machine is enforced on which column, since when and by whom';

-- ---------------------------------------------------------------------------
-- A real scrape: one row per series of metrics(), for SQL exporters
-- (prometheus/pg_harden.yaml)
-- ---------------------------------------------------------------------------

CREATE VIEW harden.metric_rows AS
SELECT f.key AS name,
       f.value ->> 'type' AS type,
       s.value -> 'labels' AS labels,
       (s.value ->> 'value')::double precision AS value,
       f.value ->> 'help' AS help
  FROM pg_catalog.jsonb_each(harden.metrics_json() -> 'metrics') f,
       pg_catalog.jsonb_array_elements(f.value -> 'samples') s;
COMMENT ON VIEW harden.metric_rows IS 'every series of harden.metrics(), one row each: family name, type, labels, value, help';
GRANT SELECT ON harden.metric_rows TO PUBLIC;
