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

-- ---------------------------------------------------------------------------
-- breakers and redaction
-- ---------------------------------------------------------------------------

-- Definitions, kept by pg_dump.  Written by harden.breaker_define() and
-- harden.breaker_drop() as the extension's owner.
CREATE SEQUENCE harden.breakers_id_seq;
CREATE TABLE harden.breakers (
    name              text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9_.:-]{1,63}$'),
    -- Stays when a breaker is redefined: a new id is a new breaker.
    id                bigint NOT NULL UNIQUE DEFAULT nextval('harden.breakers_id_seq'),
    failure_threshold integer NOT NULL DEFAULT 5 CHECK (failure_threshold > 0),
    failure_rate      double precision CHECK (failure_rate > 0 AND failure_rate <= 1),
    min_calls         integer NOT NULL DEFAULT 10 CHECK (min_calls > 0),
    failure_window    interval NOT NULL DEFAULT '1 minute' CHECK (failure_window > interval '0'),
    cooldown          interval NOT NULL DEFAULT '30 seconds' CHECK (cooldown > interval '0'),
    half_open_probes  integer NOT NULL DEFAULT 1 CHECK (half_open_probes BETWEEN 1 AND 1000000),
    defined_at        timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE harden.breakers IS 'circuit breakers: trip after failure_threshold failures (or, with failure_rate, that share of at least min_calls calls) within failure_window; stay open for cooldown; close after half_open_probes successful probes';
ALTER SEQUENCE harden.breakers_id_seq OWNED BY harden.breakers.id;
SELECT pg_catalog.pg_extension_config_dump('harden.breakers', '');
SELECT pg_catalog.pg_extension_config_dump('harden.breakers_id_seq', '');
GRANT SELECT ON harden.breakers TO PUBLIC;

-- One row per breaker, moved by the shipped circuit_breaker machine: every
-- state change is checked by its trigger and audited in harden.fsm_log.
-- Not dumped: a restored database starts with closed breakers.
CREATE TABLE harden.breaker_states (
    name  text PRIMARY KEY REFERENCES harden.breakers ON DELETE CASCADE,
    state text NOT NULL DEFAULT 'closed',
    since timestamptz NOT NULL DEFAULT clock_timestamp()
);
COMMENT ON TABLE harden.breaker_states IS 'the recorded state of each breaker (the live state is in shared memory: harden.breaker_status)';
GRANT SELECT ON harden.breaker_states TO PUBLIC;
SELECT harden.fsm_attach('harden.breaker_states', 'state', 'circuit_breaker');
-- CREATE EXTENSION makes this attachment and the timers of its rows: a dump
-- must not restore them again.
SELECT pg_catalog.pg_extension_config_dump('harden.fsm_attached',
    'WHERE relid <> ''harden.breaker_states''::pg_catalog.regclass');
SELECT pg_catalog.pg_extension_config_dump('harden.fsm_due',
    'WHERE relid <> ''harden.breaker_states''::pg_catalog.regclass');

-- Direct edits of the definitions reach shared memory at commit.
CREATE FUNCTION harden.breakers_changed() RETURNS trigger
    AS 'MODULE_PATHNAME', 'harden_breakers_changed'
    LANGUAGE C;
REVOKE ALL ON FUNCTION harden.breakers_changed() FROM PUBLIC;
CREATE TRIGGER breakers_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON harden.breakers
    FOR EACH STATEMENT EXECUTE FUNCTION harden.breakers_changed();
-- Sessions forget breakers of an earlier installation (DROP EXTENSION) at commit.
DELETE FROM harden.breakers;

CREATE FUNCTION harden.breaker_define(name text, failure_threshold integer DEFAULT 5,
                                      failure_window interval DEFAULT '1 minute',
                                      cooldown interval DEFAULT '30 seconds',
                                      half_open_probes integer DEFAULT 1,
                                      failure_rate double precision DEFAULT NULL,
                                      min_calls integer DEFAULT 10) RETURNS void
    AS 'MODULE_PATHNAME', 'harden_breaker_define'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION harden.breaker_define(text, integer, interval, interval, integer, double precision, integer) IS 'define a circuit breaker, or change a defined one''s settings (its state stays)';
REVOKE ALL ON FUNCTION harden.breaker_define(text, integer, interval, interval, integer, double precision, integer) FROM PUBLIC;

CREATE FUNCTION harden.breaker_drop(name text) RETURNS boolean
    AS 'MODULE_PATHNAME', 'harden_breaker_drop'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION harden.breaker_drop(text) IS 'drop a circuit breaker; false if there was none of that name';
REVOKE ALL ON FUNCTION harden.breaker_drop(text) FROM PUBLIC;

CREATE FUNCTION harden.breaker_allow(name text) RETURNS boolean
    AS 'MODULE_PATHNAME', 'harden_breaker_allow'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION harden.breaker_allow(text) IS 'whether a call may go ahead: true while closed, and for the probe calls of half-open';

CREATE FUNCTION harden.breaker_record(name text, success boolean) RETURNS text
    AS 'MODULE_PATHNAME', 'harden_breaker_record'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION harden.breaker_record(text, boolean) IS 'record the outcome of a call; returns the breaker''s state afterwards';

CREATE FUNCTION harden.breaker_sync(name text DEFAULT NULL) RETURNS integer
    AS 'MODULE_PATHNAME', 'harden_breaker_sync'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION harden.breaker_sync(text) IS 'bring harden.breaker_states (and the audit trail) up to the live state of one or every breaker; returns how many rows moved';

CREATE FUNCTION harden.breaker_status_rows(
    OUT name text, OUT state text, OUT since timestamptz,
    OUT window_calls bigint, OUT window_failures bigint,
    OUT allowed bigint, OUT rejected bigint, OUT successes bigint,
    OUT failures bigint, OUT opens bigint,
    OUT recorded_state text, OUT synced boolean,
    OUT failure_threshold integer, OUT failure_rate double precision, OUT min_calls integer,
    OUT failure_window interval, OUT cooldown interval, OUT half_open_probes integer)
    RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'harden_breaker_status'
    LANGUAGE C VOLATILE PARALLEL RESTRICTED;
CREATE VIEW harden.breaker_status AS SELECT * FROM harden.breaker_status_rows();
COMMENT ON VIEW harden.breaker_status IS 'each breaker of this database: live state and counters (since the breaker was loaded into shared memory), the recorded state, and its settings';
GRANT SELECT ON harden.breaker_status TO PUBLIC;

CREATE FUNCTION harden.redact(value jsonb) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'harden_redact_jsonb'
    LANGUAGE C STABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION harden.redact(jsonb) IS 'the document with personal data masked: values of sensitive keys (harden.redact_keys) and e-mails, phone numbers, card numbers and national ids in strings';

CREATE FUNCTION harden.redact(value text) RETURNS text
    AS 'MODULE_PATHNAME', 'harden_redact_text'
    LANGUAGE C STABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION harden.redact(text) IS 'the text with e-mails, phone numbers, card numbers and national ids masked';
