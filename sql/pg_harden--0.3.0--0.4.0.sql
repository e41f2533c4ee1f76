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
