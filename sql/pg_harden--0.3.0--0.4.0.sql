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

-- ---------------------------------------------------------------------------
-- Dump and restore: no dangling attachment or timer of a dropped table
-- ---------------------------------------------------------------------------

DELETE FROM harden.fsm_attached a WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = a.relid);
DELETE FROM harden.fsm_due t WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = t.relid);
-- A dropped table takes its attachments and timers with it (its audit rows
-- stay: they name the table as text); else their regclass would dangle, and
-- a dump would restore the bare OID, naming whatever table gets it later.
CREATE FUNCTION harden.fsm_tables_dropped() RETURNS event_trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM harden.fsm_attached a
     USING pg_event_trigger_dropped_objects() d
     WHERE d.classid = 'pg_class'::regclass AND d.objsubid = 0 AND a.relid = d.objid;
    DELETE FROM harden.fsm_due t
     USING pg_event_trigger_dropped_objects() d
     WHERE d.classid = 'pg_class'::regclass AND d.objsubid = 0 AND t.relid = d.objid;
END $$;
REVOKE ALL ON FUNCTION harden.fsm_tables_dropped() FROM PUBLIC;
CREATE EVENT TRIGGER harden_fsm_tables_dropped ON sql_drop
    EXECUTE FUNCTION harden.fsm_tables_dropped();
