-- pg_harden 0.4.0 -> 0.5.0
\echo Use "ALTER EXTENSION pg_harden UPDATE TO '0.5.0'" to load this file. \quit
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

-- A histogram's samples carry their series name (_bucket, _sum, _count).
CREATE VIEW harden.metric_rows AS
SELECT coalesce(s.value ->> 'name', f.key) AS name,
       f.value ->> 'type' AS type,
       s.value -> 'labels' AS labels,
       (s.value ->> 'value')::double precision AS value,
       f.value ->> 'help' AS help
  FROM pg_catalog.jsonb_each(harden.metrics_json() -> 'metrics') f,
       pg_catalog.jsonb_array_elements(f.value -> 'samples') s;
COMMENT ON VIEW harden.metric_rows IS 'every series of harden.metrics(), one row each: series name (a histogram''s end in _bucket, _sum or _count), family type, labels, value, help';
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

-- ===========================================================================
-- query analysis: verdicts that agree with each other (drop proposals say
-- what an index is still needed for), fixes that work, lock-free sizes,
-- PgHero's checks, hypothetical-index proofs, index suggestions from
-- pg_stat_statements, and history.  Views change in place: columns are only
-- appended.
-- ===========================================================================

-- Names and sizes without relation locks (src/analyze_size.c): the views
-- must answer while DDL waits for a table.
CREATE OR REPLACE FUNCTION harden._qualified(rel pg_catalog.oid) RETURNS text
    AS 'MODULE_PATHNAME', 'harden_qualified'
    LANGUAGE C STABLE STRICT PARALLEL SAFE;

CREATE FUNCTION harden._relation_bytes(rel pg_catalog.oid,
    OUT main_bytes bigint, OUT table_bytes bigint, OUT index_bytes bigint,
    OUT toast_bytes bigint, OUT rows double precision)
    AS 'MODULE_PATHNAME', 'harden_relation_bytes'
    LANGUAGE C STABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION harden._relation_bytes(pg_catalog.oid) IS 'sizes of a relation from its files, without locking it: main fork, all forks, its indexes, its TOAST; estimated rows; a partitioned table or index sums its leaves';

CREATE FUNCTION harden._main_bytes(rel pg_catalog.oid) RETURNS bigint
    AS 'MODULE_PATHNAME', 'harden_main_bytes'
    LANGUAGE C STABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION harden._main_bytes(pg_catalog.oid) IS 'pg_relation_size() from the files, without locking the relation; a partitioned table or index sums its leaves';

CREATE FUNCTION harden._fk_indexes(con pg_catalog.oid) RETURNS pg_catalog.oid[]
    AS 'MODULE_PATHNAME', 'harden_fk_indexes'
    LANGUAGE C STABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION harden._fk_indexes(pg_catalog.oid) IS 'the valid indexes that serve a foreign key''s lookups on its referencing table: a non-partial btree leading with its columns (any order) or a hash index on a one-column key, with the key''s equality operator and the referenced column''s collation';

-- An index proposal tried as a hypothetical index (hypopg, when installed).
CREATE FUNCTION harden._hypo_cost(sql text, index_sql text,
    OUT cost_before double precision, OUT cost_after double precision, OUT unverified text)
    AS 'MODULE_PATHNAME', 'harden_hypo_cost'
    LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
COMMENT ON FUNCTION harden._hypo_cost(text, text) IS 'the plan cost of a statement without and with the index of a CREATE INDEX statement, created as a hypothetical index with hypopg; unverified says why it could not be tried (hypopg not installed, an index method hypopg does not simulate)';

-- ---------------------------------------------------------------------------
-- Indexes
-- ---------------------------------------------------------------------------

CREATE OR REPLACE VIEW harden.unused_indexes AS
WITH db AS (
    SELECT d.stats_reset FROM pg_catalog.pg_stat_database d
     WHERE d.datname = pg_catalog.current_database()
), unused AS (
    -- never one that enforces something (unique, primary key, exclusion,
    -- any constraint), the replica identity, or an invalid one; a
    -- partition's index counts in its root's, which sums the scans of the
    -- partitions' (pg_inherits read directly: no locks)
    SELECT i.indexrelid, s.idx_scan, i.indrelid, i.indexprs, i.indisclustered, c.relkind
      FROM pg_catalog.pg_index i
      JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
      JOIN harden._relations r ON r.relid = i.indrelid
     CROSS JOIN LATERAL (
        SELECT CASE WHEN c.relkind = 'I'
                    THEN (WITH RECURSIVE tree AS (
                              SELECT h.inhrelid FROM pg_catalog.pg_inherits h WHERE h.inhparent = i.indexrelid
                              UNION ALL
                              SELECT h.inhrelid FROM pg_catalog.pg_inherits h JOIN tree t ON h.inhparent = t.inhrelid)
                          SELECT coalesce(pg_catalog.sum(pg_catalog.pg_stat_get_numscans(t.inhrelid)), 0) FROM tree t)
                    ELSE pg_catalog.pg_stat_get_numscans(i.indexrelid) END::bigint AS idx_scan) s
     WHERE NOT c.relispartition
       AND s.idx_scan = 0
       AND NOT (i.indisunique OR i.indisprimary OR i.indisexclusion OR i.indisreplident)
       AND i.indisvalid
       -- (a hashed subplan: pg_constraint has no index on conindid)
       AND i.indexrelid NOT IN (SELECT k.conindid FROM pg_catalog.pg_constraint k WHERE k.conindid <> 0)
), fk AS (
    -- foreign keys whose lookups it serves and that no index outside this
    -- view serves: dropping it (and the others named) would make
    -- harden.missing_fk_indexes ask for an index again
    SELECT u.indexrelid, k.conname,
           ARRAY(SELECT x FROM pg_catalog.unnest(f.served_by) AS x WHERE x <> u.indexrelid ORDER BY x) AS others
      FROM pg_catalog.pg_constraint k
     CROSS JOIN LATERAL (SELECT harden._fk_indexes(k.oid) AS served_by) f
      JOIN unused u ON u.indrelid = k.conrelid AND u.indexrelid = ANY (f.served_by)
     WHERE k.contype = 'f'
       AND k.conrelid IN (SELECT indrelid FROM unused)
       AND NOT EXISTS (SELECT FROM pg_catalog.unnest(f.served_by) AS x
                        WHERE x <> u.indexrelid AND x NOT IN (SELECT indexrelid FROM unused))
), fk_by_index AS (
    SELECT fk.indexrelid,
           pg_catalog.array_agg(pg_catalog.format('lookups of foreign key %I%s', fk.conname,
                                CASE WHEN pg_catalog.cardinality(fk.others) = 0 THEN ' (the only index serving it)'
                                     ELSE pg_catalog.format(' (also served by %s, unused too: keep one)',
                                          (SELECT pg_catalog.string_agg(o::pg_catalog.regclass::text, ', ')
                                             FROM pg_catalog.unnest(fk.others) AS o)) END)
                                ORDER BY fk.conname) AS fk_needs,
           pg_catalog.bool_or(pg_catalog.cardinality(fk.others) = 0) AS only_fk_index
      FROM fk GROUP BY fk.indexrelid
), needs AS (
    SELECT u.*, coalesce(f.fk_needs, '{}') AS fk_needs, coalesce(f.only_fk_index, false) AS only_fk_index,
           harden._main_bytes(u.indexrelid) AS bytes
      FROM unused u LEFT JOIN fk_by_index f ON f.indexrelid = u.indexrelid
)
SELECT u.indrelid::pg_catalog.regclass AS "table", u.indexrelid::pg_catalog.regclass AS index,
       u.bytes AS index_bytes, pg_catalog.pg_size_pretty(u.bytes) AS index_size,
       u.idx_scan, db.stats_reset, pg_catalog.pg_is_in_recovery() AS standby,
       CASE WHEN pg_catalog.pg_is_in_recovery() THEN 'low'
            WHEN db.stats_reset > pg_catalog.now() - interval '7 days' THEN 'low'
            WHEN db.stats_reset IS NULL THEN 'medium'
            ELSE 'high' END AS confidence,
       CASE WHEN u.indexprs IS NOT NULL
            THEN 'expression index: the planner may use the statistics ANALYZE keeps on its expressions' END AS note,
       CASE WHEN NOT u.only_fk_index
            THEN pg_catalog.format('DROP INDEX %s%s;', CASE WHEN u.relkind = 'i' THEN 'CONCURRENTLY ' ELSE '' END,
                                   harden._qualified(u.indexrelid)) END AS drop_sql,
       u.fk_needs || CASE WHEN u.indisclustered THEN ARRAY['clustering (the index CLUSTER uses)'] ELSE '{}'::text[] END
           AS needed_for,
       CASE WHEN u.only_fk_index THEN 'keep'
            WHEN u.indisclustered OR pg_catalog.cardinality(u.fk_needs) > 0 THEN 'review'
            ELSE 'drop' END AS verdict
  FROM needs u
 CROSS JOIN db;
COMMENT ON VIEW harden.unused_indexes IS 'indexes never scanned since statistics were reset (partitioned indexes summed over their partitions); never unique, primary key, constraint, replica-identity or invalid ones; needed_for: what dropping it breaks (the only index serving a foreign key: verdict keep, no drop_sql; one of several unused ones serving it, or clustering: verdict review)';

CREATE OR REPLACE VIEW harden.duplicate_indexes AS
WITH idx AS (
    SELECT i.indexrelid, i.indrelid, c.relam, i.indnkeyatts, i.indexprs, i.indpred,
           i.indisunique, i.indnullsnotdistinct, i.indisclustered,
           (i.indkey)[0:i.indnkeyatts - 1] AS keys,
           (i.indkey)[i.indnkeyatts:i.indnatts - 1] AS include,
           (i.indclass)[0:i.indnkeyatts - 1] AS opclasses,
           (i.indcollation)[0:i.indnkeyatts - 1] AS collations,
           (i.indoption)[0:i.indnkeyatts - 1] AS options,
           -- never drop a primary key, an exclusion or any constraint's
           -- index, or the replica identity; a partition's index goes with
           -- its parent's.  A plain UNIQUE index can go when another
           -- enforces the same uniqueness.
           NOT (i.indisprimary OR i.indisexclusion OR i.indisreplident
                OR c.relispartition
                OR i.indexrelid IN (SELECT k.conindid FROM pg_catalog.pg_constraint k WHERE k.conindid <> 0))
               AS droppable
      FROM pg_catalog.pg_index i
      JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
      JOIN harden._relations r ON r.relid = i.indrelid
     WHERE i.indisvalid AND i.indisready AND i.indislive
), pairs AS (
    SELECT d.indexrelid AS drop_index, k.indexrelid AS keep_index, d.indrelid, d.indisclustered,
           d.indnkeyatts = k.indnkeyatts AND d.include <@ k.include AND k.include <@ d.include AS exact
      FROM idx d
      JOIN idx k ON k.indrelid = d.indrelid AND k.indexrelid <> d.indexrelid AND k.relam = d.relam
     WHERE d.droppable
       AND d.indnkeyatts <= k.indnkeyatts
       AND (d.indnkeyatts = k.indnkeyatts
            OR d.relam = (SELECT oid FROM pg_catalog.pg_am WHERE amname = 'btree'))
       -- a unique index is served only by one enforcing the same keys
       AND (NOT d.indisunique
            OR (k.indisunique AND k.indnkeyatts = d.indnkeyatts
                AND k.indnullsnotdistinct = d.indnullsnotdistinct))
       AND k.keys[1:d.indnkeyatts] = d.keys
       AND k.opclasses[1:d.indnkeyatts] = d.opclasses
       AND k.collations[1:d.indnkeyatts] = d.collations
       AND (k.options[1:d.indnkeyatts] = d.options
            -- or every column's order reversed: a btree read backwards
            OR (d.relam = (SELECT oid FROM pg_catalog.pg_am WHERE amname = 'btree')
                AND k.options[1:d.indnkeyatts]
                    = ARRAY(SELECT u.o # 3::int2 FROM pg_catalog.unnest(d.options) WITH ORDINALITY AS u(o, n)
                             ORDER BY u.n)))
       AND d.include <@ (k.keys || k.include)
       AND ((d.indexprs IS NULL AND d.indpred IS NULL AND k.indpred IS NULL)
            OR harden._index_same_expr(d.indexrelid, k.indexrelid))
       -- operator-class options (a trigram index's signature length, say),
       -- compared where either index has some
       AND ((d.indexrelid NOT IN (SELECT o.attrelid FROM pg_catalog.pg_attribute o WHERE o.attoptions IS NOT NULL)
             AND k.indexrelid NOT IN (SELECT o.attrelid FROM pg_catalog.pg_attribute o WHERE o.attoptions IS NOT NULL))
            OR NOT EXISTS (SELECT FROM pg_catalog.pg_attribute ad
                         JOIN pg_catalog.pg_attribute ak ON ak.attrelid = k.indexrelid AND ak.attnum = ad.attnum
                        WHERE ad.attrelid = d.indexrelid AND ad.attnum <= d.indnkeyatts
                          AND ad.attoptions IS DISTINCT FROM ak.attoptions))
       -- of two interchangeable indexes, only one is reported: not the
       -- one CLUSTER uses, else the newer
       AND NOT (k.droppable AND k.indisunique = d.indisunique AND d.indnkeyatts = k.indnkeyatts
                AND k.include <@ (d.keys || d.include)
                AND ((d.indisclustered AND NOT k.indisclustered)
                     OR (d.indisclustered = k.indisclustered AND d.indexrelid < k.indexrelid)))
)
SELECT DISTINCT ON (p.drop_index)
       p.indrelid::pg_catalog.regclass AS "table", p.drop_index::pg_catalog.regclass AS index,
       p.keep_index::pg_catalog.regclass AS covered_by,
       CASE WHEN p.exact THEN 'exact' ELSE 'prefix' END AS kind,
       harden._main_bytes(p.drop_index) AS index_bytes,
       pg_catalog.format('DROP INDEX %s%s;',
                         CASE WHEN c.relkind = 'i' THEN 'CONCURRENTLY ' ELSE '' END,
                         harden._qualified(p.drop_index)) AS drop_sql,
       CASE WHEN p.indisclustered
            THEN ARRAY[pg_catalog.format('clustering (first: ALTER TABLE %s CLUSTER ON %I;)',
                                         harden._qualified(p.indrelid), (SELECT kc.relname FROM pg_catalog.pg_class kc WHERE kc.oid = p.keep_index))]
            ELSE '{}'::text[] END AS needed_for,
       CASE WHEN p.indisclustered THEN 'review' ELSE 'drop' END AS verdict
  FROM pairs p
  JOIN pg_catalog.pg_class c ON c.oid = p.drop_index
 ORDER BY p.drop_index, p.exact DESC, p.keep_index;
COMMENT ON VIEW harden.duplicate_indexes IS 'indexes whose every use another valid index serves: same method, key columns (or a btree prefix of them), operator classes, collations, sort options (or all reversed, for a btree), expressions and predicate; INCLUDE columns covered; a UNIQUE index only by one enforcing the same keys; needed_for: what to move before dropping it';

CREATE OR REPLACE VIEW harden.missing_fk_indexes AS
WITH fk AS (
    SELECT con.conname, con.conrelid, con.confrelid, con.conkey, con.confkey, r.relispartition,
           greatest(r.reltuples, 0) AS reltuples
      FROM pg_catalog.pg_constraint con
      JOIN harden._relations r ON r.relid = con.conrelid
      LEFT JOIN pg_catalog.pg_constraint parent ON parent.oid = con.conparentid
     WHERE con.contype = 'f' AND r.relkind = 'r'
       -- a partitioned referenced table adds one row per referenced partition
       AND (parent.oid IS NULL OR parent.conrelid <> con.conrelid)
       AND pg_catalog.cardinality(harden._fk_indexes(con.oid)) = 0
), named AS (
    SELECT CASE WHEN fk.relispartition THEN pg_catalog.pg_partition_root(fk.conrelid)
                ELSE fk.conrelid END AS root,
           coalesce(pg_catalog.pg_partition_root(fk.confrelid), fk.confrelid) AS referenced,
           fk.conname, fk.relispartition, fk.reltuples,
           ARRAY(SELECT a.attname FROM pg_catalog.unnest(fk.conkey) WITH ORDINALITY AS u(attnum, ord)
                   JOIN pg_catalog.pg_attribute a ON a.attrelid = fk.conrelid AND a.attnum = u.attnum
                  ORDER BY u.ord) AS columns,
           -- the lookups compare under the referenced column's collation
           ARRAY(SELECT pg_catalog.quote_ident(a.attname)
                        || CASE WHEN pa.attcollation <> a.attcollation
                                THEN ' COLLATE ' || pg_catalog.format('%I.%I', cn.nspname, co.collname)
                                ELSE '' END
                   FROM ROWS FROM (pg_catalog.unnest(fk.conkey), pg_catalog.unnest(fk.confkey)) WITH ORDINALITY AS u(attnum, pattnum, ord)
                   JOIN pg_catalog.pg_attribute a ON a.attrelid = fk.conrelid AND a.attnum = u.attnum
                   JOIN pg_catalog.pg_attribute pa ON pa.attrelid = fk.confrelid AND pa.attnum = u.pattnum
                   LEFT JOIN pg_catalog.pg_collation co ON co.oid = pa.attcollation
                   LEFT JOIN pg_catalog.pg_namespace cn ON cn.oid = co.collnamespace
                  ORDER BY u.ord) AS index_columns
      FROM fk
)
SELECT n.root::pg_catalog.regclass AS "table", n.conname AS constraint_name, n.columns,
       n.referenced::pg_catalog.regclass AS referenced,
       CASE WHEN pg_catalog.bool_or(n.relispartition) THEN pg_catalog.count(*) END::integer AS partitions,
       pg_catalog.sum(n.reltuples)::bigint AS rows,
       -- CONCURRENTLY keeps writes going on a plain table; a partitioned
       -- one does not take it
       pg_catalog.format('CREATE INDEX %sON %s (%s);',
                         CASE WHEN pg_catalog.bool_or(n.relispartition) THEN '' ELSE 'CONCURRENTLY ' END,
                         harden._qualified(n.root), pg_catalog.array_to_string(n.index_columns, ', '))
           AS create_sql,
       -- what the foreign key runs on each delete or key update of a referenced row
       pg_catalog.format('SELECT 1 FROM %s x WHERE %s', harden._qualified(n.root),
                         (SELECT pg_catalog.string_agg(pg_catalog.format('x.%s = $%s', c, o), ' AND ' ORDER BY o)
                            FROM pg_catalog.unnest(n.index_columns) WITH ORDINALITY AS u(c, o))) AS lookup_sql
  FROM named n
 GROUP BY n.root, n.referenced, n.conname, n.columns, n.index_columns;
COMMENT ON VIEW harden.missing_fk_indexes IS 'foreign keys no index serves (see harden._fk_indexes: a btree leading with the key''s columns in any order, or a hash index on a one-column key, with the right operator class and collation); partitions are checked one by one and reported under their root with the number lacking one';

CREATE OR REPLACE VIEW harden.invalid_indexes AS
WITH invalid AS (
    SELECT i.indexrelid, i.indrelid, i.indisunique, i.indisready, i.indnkeyatts, i.indpred,
           i.indnullsnotdistinct, c.relkind,
           ARRAY(SELECT pg_catalog.pg_get_indexdef(i.indexrelid, k, true)
                   FROM pg_catalog.generate_series(1, i.indnkeyatts) AS k) AS keys
      FROM pg_catalog.pg_index i
      JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
      JOIN harden._relations r ON r.relid = i.indrelid
     WHERE NOT i.indisvalid
)
SELECT v.indrelid::pg_catalog.regclass AS "table", v.indexrelid::pg_catalog.regclass AS index,
       harden._main_bytes(v.indexrelid) AS index_bytes,
       EXISTS (SELECT FROM pg_catalog.pg_stat_progress_create_index p
                WHERE p.index_relid = v.indexrelid) AS building,
       -- a unique index most often failed on duplicate keys, where a
       -- REINDEX fails again and leaves a second invalid index behind
       CASE WHEN v.indisunique
            THEN pg_catalog.format('DROP INDEX %s%s;', CASE WHEN v.relkind = 'i' THEN 'CONCURRENTLY ' ELSE '' END,
                                   harden._qualified(v.indexrelid))
            ELSE pg_catalog.format('REINDEX INDEX %s%s;', CASE WHEN v.relkind = 'i' THEN 'CONCURRENTLY ' ELSE '' END,
                                   harden._qualified(v.indexrelid)) END AS fix_sql,
       v.indisunique AS is_unique,
       v.indisready AS ready,
       CASE WHEN v.indisunique
            THEN pg_catalog.format('SELECT %s, count(*) FROM %s WHERE %s GROUP BY %s HAVING count(*) > 1 LIMIT 100;',
                                   pg_catalog.array_to_string(v.keys, ', '), harden._qualified(v.indrelid),
                                   pg_catalog.concat_ws(' AND ',
                                             CASE WHEN NOT v.indnullsnotdistinct
                                                  THEN (SELECT pg_catalog.string_agg(pg_catalog.format('(%s) IS NOT NULL', k), ' AND ')
                                                          FROM pg_catalog.unnest(v.keys) AS k) END,
                                             CASE WHEN v.indpred IS NOT NULL
                                                  THEN '(' || pg_catalog.pg_get_expr(v.indpred, v.indrelid, true) || ')' END,
                                             CASE WHEN v.indnullsnotdistinct AND v.indpred IS NULL THEN 'true' END),
                                   pg_catalog.array_to_string(v.keys, ', ')) END AS duplicates_sql,
       CASE WHEN v.indisunique
            THEN pg_catalog.regexp_replace(pg_catalog.pg_get_indexdef(v.indexrelid), '^CREATE UNIQUE INDEX ',
                                           CASE WHEN v.relkind = 'i' THEN 'CREATE UNIQUE INDEX CONCURRENTLY '
                                                ELSE 'CREATE UNIQUE INDEX ' END) || ';' END AS recreate_sql
  FROM invalid v;
COMMENT ON VIEW harden.invalid_indexes IS 'indexes left invalid by a failed CREATE INDEX CONCURRENTLY (building: one is running now), or partitioned indexes missing on a partition; ready: still maintained by writes; a unique one: drop it, remove the rows duplicates_sql finds, then run recreate_sql';

-- ---------------------------------------------------------------------------
-- Sizes: from the files, without waiting for locks
-- ---------------------------------------------------------------------------

CREATE OR REPLACE VIEW harden.table_sizes AS
SELECT r.relid::pg_catalog.regclass AS "table",
       CASE r.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'partitioned table' ELSE 'materialized view' END AS kind,
       b.rows::bigint AS rows,
       (b.table_bytes + b.index_bytes + b.toast_bytes)::bigint AS total_bytes,
       b.table_bytes::bigint AS table_bytes,
       b.index_bytes::bigint AS index_bytes,
       b.toast_bytes::bigint AS toast_bytes,
       pg_catalog.pg_size_pretty((b.table_bytes + b.index_bytes + b.toast_bytes)::bigint) AS total_size
  FROM harden._relations r
 CROSS JOIN LATERAL harden._relation_bytes(r.relid) b;
COMMENT ON VIEW harden.table_sizes IS 'size of each table with its indexes and TOAST; a partitioned table sums its partitions; read from the files without locking the tables';

CREATE OR REPLACE VIEW harden.index_sizes AS
SELECT i.indrelid::pg_catalog.regclass AS "table", i.indexrelid::pg_catalog.regclass AS index,
       b.bytes, pg_catalog.pg_size_pretty(b.bytes) AS size, s.idx_scan,
       i.indisunique AS is_unique, i.indisprimary AS is_primary, i.indisvalid AS is_valid
  FROM pg_catalog.pg_index i
  JOIN harden._relations r ON r.relid = i.indrelid
  LEFT JOIN pg_catalog.pg_stat_all_indexes s ON s.indexrelid = i.indexrelid
 CROSS JOIN LATERAL (SELECT harden._main_bytes(i.indexrelid) AS bytes) b;
COMMENT ON VIEW harden.index_sizes IS 'size and scans of each index; a partitioned index sums its partitions (and has no scan count of its own); read from the files without locking';

-- ---------------------------------------------------------------------------
-- Sequential scans, without those of maintenance
-- ---------------------------------------------------------------------------

-- CREATE INDEX and the validation of a foreign key each read the table
-- once, and count as sequential scans: a table nobody queries looks
-- seq-scanned after its indexes are built.  maintenance_scans is an upper
-- bound on those (one per index and per validated foreign key from or to
-- the table); the query_ columns are what is left.
CREATE OR REPLACE VIEW harden.seq_scan_tables AS
WITH fks AS (
    SELECT t.relid, pg_catalog.count(*) AS n
      FROM pg_catalog.pg_constraint k,
           LATERAL (VALUES (k.conrelid), (k.confrelid)) AS t(relid)
     WHERE k.contype = 'f' AND k.convalidated
     GROUP BY t.relid
), idx AS (
    SELECT i.indrelid AS relid, pg_catalog.count(*) AS n FROM pg_catalog.pg_index i GROUP BY i.indrelid
), counted AS (
    -- the statistics functions, not pg_stat_all_tables: that view sums
    -- the index scans of every table, this only of those seq-scanned
    SELECT r.relid, greatest(r.reltuples, 0) AS reltuples,
           pg_catalog.pg_stat_get_numscans(r.relid) AS seq_scan,
           pg_catalog.pg_stat_get_tuples_returned(r.relid) AS seq_tup_read
      FROM harden._relations r
     WHERE r.relkind IN ('r', 'm')
), scans AS (
    SELECT s.relid, s.reltuples, s.seq_scan, s.seq_tup_read,
           (SELECT pg_catalog.sum(pg_catalog.pg_stat_get_numscans(i.indexrelid))
              FROM pg_catalog.pg_index i WHERE i.indrelid = s.relid)::bigint AS idx_scan,
           least(coalesce(idx.n, 0) + coalesce(fks.n, 0), s.seq_scan) AS maintenance
      FROM counted s
      LEFT JOIN fks ON fks.relid = s.relid
      LEFT JOIN idx ON idx.relid = s.relid
     WHERE s.seq_scan > 0
)
SELECT s.relid::pg_catalog.regclass AS "table", s.reltuples::bigint AS rows,
       s.seq_scan, s.seq_tup_read, (s.seq_tup_read / s.seq_scan)::bigint AS rows_per_scan,
       s.idx_scan,
       pg_catalog.round(s.seq_scan::numeric / (s.seq_scan + coalesce(s.idx_scan, 0)), 3) AS seq_scan_share,
       s.maintenance::bigint AS maintenance_scans,
       (s.seq_scan - s.maintenance)::bigint AS query_seq_scans,
       (greatest(s.seq_tup_read - s.maintenance * s.reltuples, 0)
        / nullif(s.seq_scan - s.maintenance, 0))::bigint AS query_rows_per_scan
  FROM scans s;
COMMENT ON VIEW harden.seq_scan_tables IS 'tables read by sequential scans, with how many rows each scan read on average; maintenance_scans: at most that many were CREATE INDEX or foreign-key validation, query_seq_scans and query_rows_per_scan the rest';

-- ---------------------------------------------------------------------------
-- Vacuum: from the statistics functions of each table
-- ---------------------------------------------------------------------------

CREATE OR REPLACE VIEW harden.vacuum_health AS
WITH opts AS (
    SELECT r.relid, r.reltuples,
           pg_catalog.max(o.option_value) FILTER (WHERE o.option_name = 'autovacuum_enabled') AS enabled,
           pg_catalog.max(o.option_value) FILTER (WHERE o.option_name = 'autovacuum_vacuum_threshold') AS vac_threshold,
           pg_catalog.max(o.option_value) FILTER (WHERE o.option_name = 'autovacuum_vacuum_scale_factor') AS vac_scale,
           pg_catalog.max(o.option_value) FILTER (WHERE o.option_name = 'autovacuum_analyze_threshold') AS anl_threshold,
           pg_catalog.max(o.option_value) FILTER (WHERE o.option_name = 'autovacuum_analyze_scale_factor') AS anl_scale,
           pg_catalog.max(o.option_value) FILTER (WHERE o.option_name = 'autovacuum_freeze_max_age') AS freeze_max_age
      FROM harden._relations r
      LEFT JOIN LATERAL pg_catalog.pg_options_to_table(r.reloptions) o ON true
     WHERE r.relkind IN ('r', 'm')
     GROUP BY r.relid, r.reltuples
), limits AS (
    SELECT o.relid,
           coalesce(o.enabled::boolean, true)
               AND pg_catalog.current_setting('autovacuum')::boolean AS autovacuum_enabled,
           coalesce(o.vac_threshold, pg_catalog.current_setting('autovacuum_vacuum_threshold'))::numeric
               + coalesce(o.vac_scale, pg_catalog.current_setting('autovacuum_vacuum_scale_factor'))::numeric
                 * greatest(o.reltuples, 0) AS vacuum_at,
           coalesce(o.anl_threshold, pg_catalog.current_setting('autovacuum_analyze_threshold'))::numeric
               + coalesce(o.anl_scale, pg_catalog.current_setting('autovacuum_analyze_scale_factor'))::numeric
                 * greatest(o.reltuples, 0) AS analyze_at,
           coalesce(o.freeze_max_age, pg_catalog.current_setting('autovacuum_freeze_max_age'))::bigint AS freeze_max_age
      FROM opts o
), s AS (
    -- the statistics functions, not pg_stat_all_tables (which also sums
    -- every table's index scans)
    SELECT l.*, pg_catalog.pg_stat_get_live_tuples(l.relid) AS n_live_tup,
           pg_catalog.pg_stat_get_dead_tuples(l.relid) AS n_dead_tup,
           pg_catalog.pg_stat_get_mod_since_analyze(l.relid) AS n_mod_since_analyze,
           greatest(pg_catalog.pg_stat_get_last_vacuum_time(l.relid),
                    pg_catalog.pg_stat_get_last_autovacuum_time(l.relid)) AS last_vacuum,
           greatest(pg_catalog.pg_stat_get_last_analyze_time(l.relid),
                    pg_catalog.pg_stat_get_last_autoanalyze_time(l.relid)) AS last_analyze
      FROM limits l
)
SELECT s.relid::pg_catalog.regclass AS "table", s.n_live_tup AS live_tuples, s.n_dead_tup AS dead_tuples,
       pg_catalog.round(s.n_dead_tup::numeric / nullif(s.n_live_tup + s.n_dead_tup, 0), 3) AS dead_ratio,
       s.last_vacuum, s.last_analyze,
       s.autovacuum_enabled,
       s.n_dead_tup > s.vacuum_at AS vacuum_due,
       s.n_mod_since_analyze > s.analyze_at AS analyze_due,
       pg_catalog.age(c.relfrozenxid) AS xid_age,
       pg_catalog.mxid_age(c.relminmxid) AS mxid_age,
       pg_catalog.age(c.relfrozenxid) > s.freeze_max_age AS freeze_due
  FROM s
  JOIN pg_catalog.pg_class c ON c.oid = s.relid;

-- ---------------------------------------------------------------------------
-- Cache hits: from the statistics functions of each relation (the
-- pg_statio views also sum every table's index and TOAST blocks)
-- ---------------------------------------------------------------------------

CREATE OR REPLACE VIEW harden.cache_hit_ratio AS
WITH rel AS (
    SELECT c.relkind, pg_catalog.pg_stat_get_blocks_hit(c.oid) AS hits,
           pg_catalog.pg_stat_get_blocks_fetched(c.oid) - pg_catalog.pg_stat_get_blocks_hit(c.oid) AS reads
      FROM pg_catalog.pg_class c
      JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     WHERE c.relkind IN ('r', 't', 'm', 'i')
       AND n.nspname <> ALL (ARRAY['pg_catalog', 'information_schema'])
       AND n.nspname !~ '^pg_toast'
)
SELECT 'table' AS kind, pg_catalog.sum(hits)::bigint AS hits, pg_catalog.sum(reads)::bigint AS reads,
       pg_catalog.round(pg_catalog.sum(hits) / nullif(pg_catalog.sum(hits + reads), 0), 4) AS ratio
  FROM rel WHERE relkind <> 'i'
UNION ALL
SELECT 'index', pg_catalog.sum(hits)::bigint, pg_catalog.sum(reads)::bigint,
       pg_catalog.round(pg_catalog.sum(hits) / nullif(pg_catalog.sum(hits + reads), 0), 4)
  FROM rel WHERE relkind = 'i';

-- ---------------------------------------------------------------------------
-- The checks PgHero users look for
-- ---------------------------------------------------------------------------

-- Every sequence with the columns it feeds (OWNED BY, serial, identity or a
-- DEFAULT nextval()), and how much of the range it may still hand out is
-- used: the limit is the sequence's own maximum or the column type's,
-- whichever is lower (an integer column fed by a bigint sequence fails at
-- 2147483647).  last_value is NULL for a sequence the caller may not read.
CREATE VIEW harden.sequence_exhaustion AS
WITH fed AS (
    SELECT DISTINCT d.objid AS seqid, d.refobjid AS relid, d.refobjsubid AS attnum
      FROM pg_catalog.pg_depend d
     WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
       AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
       AND d.deptype IN ('a', 'i') AND d.refobjsubid > 0
    UNION
    SELECT DISTINCT dd.refobjid, ad.adrelid, ad.adnum
      FROM pg_catalog.pg_attrdef ad
      JOIN pg_catalog.pg_depend dd ON dd.classid = 'pg_catalog.pg_attrdef'::pg_catalog.regclass
                                  AND dd.objid = ad.oid
                                  AND dd.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
      JOIN pg_catalog.pg_class sc ON sc.oid = dd.refobjid AND sc.relkind = 'S'
), seqs AS (
    SELECT s.seqrelid, s.seqtypid, s.seqincrement, s.seqmax, s.seqmin, s.seqcycle,
           ps.last_value, f.relid, f.attnum, a.attname, a.atttypid
      FROM pg_catalog.pg_sequence s
      JOIN pg_catalog.pg_class c ON c.oid = s.seqrelid
      JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
      LEFT JOIN pg_catalog.pg_sequences ps ON ps.schemaname = n.nspname AND ps.sequencename = c.relname
      LEFT JOIN fed f ON f.seqid = s.seqrelid
      LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = f.relid AND a.attnum = f.attnum
     WHERE n.nspname <> ALL (ARRAY['pg_catalog', 'information_schema'])
       AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend e
                        WHERE e.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                          AND e.objid = s.seqrelid AND e.deptype = 'e')
), limits AS (
    SELECT q.*,
           CASE WHEN q.seqincrement > 0 THEN q.seqmax ELSE q.seqmin END AS seq_limit,
           CASE WHEN q.seqincrement > 0
                THEN CASE q.atttypid WHEN 'int2'::pg_catalog.regtype THEN 32767
                                     WHEN 'int4'::pg_catalog.regtype THEN 2147483647 END
                ELSE CASE q.atttypid WHEN 'int2'::pg_catalog.regtype THEN -32768
                                     WHEN 'int4'::pg_catalog.regtype THEN -2147483648 END END AS column_limit,
           CASE WHEN q.seqincrement > 0 THEN q.seqmin ELSE q.seqmax END AS start_value
      FROM seqs q
), bounded AS (
    SELECT l.*,
           -- the column's type ends the range first (or with the sequence)
           l.column_limit IS NOT NULL AND abs(l.column_limit - l.start_value) <= abs(l.seq_limit - l.start_value)
               AS column_bound
      FROM limits l
)
SELECT l.seqrelid::pg_catalog.regclass AS sequence,
       pg_catalog.format_type(l.seqtypid, NULL) AS sequence_type,
       l.relid::pg_catalog.regclass AS "table", l.attname AS "column",
       pg_catalog.format_type(l.atttypid, NULL) AS column_type,
       l.last_value,
       CASE WHEN l.column_bound THEN l.column_limit ELSE l.seq_limit END AS limit_value,
       CASE WHEN l.column_bound THEN 'column' ELSE 'sequence' END AS limited_by,
       pg_catalog.round(abs(coalesce(l.last_value, l.start_value) - l.start_value)::numeric
                        / nullif(abs(CASE WHEN l.column_bound THEN l.column_limit ELSE l.seq_limit END - l.start_value), 0), 4)
           AS used_ratio,
       l.seqcycle AS cycles,
       CASE WHEN l.column_bound
            THEN pg_catalog.format('ALTER TABLE %s ALTER COLUMN %I TYPE bigint;', harden._qualified(l.relid), l.attname)
                 || CASE WHEN l.seqtypid <> 'int8'::pg_catalog.regtype
                         THEN pg_catalog.format(' ALTER SEQUENCE %s AS bigint;', harden._qualified(l.seqrelid)) ELSE '' END
                 || '  -- the ALTER TABLE rewrites the table under an exclusive lock'
            ELSE pg_catalog.format('ALTER SEQUENCE %s AS bigint MAXVALUE %s;', harden._qualified(l.seqrelid),
                                   CASE WHEN l.seqincrement > 0 THEN '9223372036854775807' ELSE '-1' END) END AS fix_sql
  FROM bounded l;
COMMENT ON VIEW harden.sequence_exhaustion IS 'sequences with the columns they feed and the share of their range used: the limit is the sequence''s maximum or the column type''s, whichever is lower (an integer column fed by a bigint sequence)';

CREATE VIEW harden.not_valid_constraints AS
SELECT k.conrelid::pg_catalog.regclass AS "table", k.conname AS constraint_name,
       CASE k.contype WHEN 'c' THEN 'check' WHEN 'f' THEN 'foreign key' WHEN 'n' THEN 'not null' ELSE k.contype::text END AS kind,
       pg_catalog.pg_get_constraintdef(k.oid, true) AS definition,
       -- SHARE UPDATE EXCLUSIVE: reads and writes go on while it checks
       pg_catalog.format('ALTER TABLE %s VALIDATE CONSTRAINT %I;', harden._qualified(k.conrelid), k.conname) AS validate_sql
  FROM pg_catalog.pg_constraint k
  JOIN harden._relations r ON r.relid = k.conrelid
 WHERE NOT k.convalidated;
COMMENT ON VIEW harden.not_valid_constraints IS 'constraints added NOT VALID and never validated: rows written before may break them, and the planner cannot rely on them';

CREATE VIEW harden.connections AS
WITH a AS (
    SELECT coalesce(a.state, a.backend_type) AS state, a.application_name, a.client_addr,
           a.usename, a.datname, a.xact_start, a.state_change
      FROM pg_catalog.pg_stat_activity a
     WHERE a.backend_type = 'client backend'
), m AS (
    SELECT pg_catalog.current_setting('max_connections')::int
           - pg_catalog.current_setting('superuser_reserved_connections')::int AS usable
)
SELECT a.state, a.application_name, a.client_addr, a.usename, a.datname,
       pg_catalog.count(*) AS connections,
       pg_catalog.round(pg_catalog.count(*)::numeric / nullif(m.usable, 0), 4) AS share_of_max,
       pg_catalog.max(pg_catalog.now() - a.state_change) AS longest_in_state
  FROM a CROSS JOIN m
 GROUP BY a.state, a.application_name, a.client_addr, a.usename, a.datname, m.usable;
COMMENT ON VIEW harden.connections IS 'client connections by state, application, client address, user and database, with their share of the connections non-superusers may open (max_connections - superuser_reserved_connections)';

-- On a standby the WAL position is the last one received.
CREATE VIEW harden.replication_slots AS
SELECT s.slot_name, s.slot_type, s.plugin, s.database, s.active, s.active_pid, s.wal_status,
       (CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_last_wal_receive_lsn()
             ELSE pg_catalog.pg_current_wal_lsn() END - s.restart_lsn)::bigint AS retained_bytes,
       pg_catalog.pg_size_pretty((CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_last_wal_receive_lsn()
                                       ELSE pg_catalog.pg_current_wal_lsn() END - s.restart_lsn)::bigint) AS retained,
       s.safe_wal_size,
       pg_catalog.format('SELECT pg_drop_replication_slot(%L);', s.slot_name) AS drop_sql
  FROM pg_catalog.pg_replication_slots s;
COMMENT ON VIEW harden.replication_slots IS 'replication slots and the WAL each keeps from being removed; an inactive slot keeps it until the disk is full (unless max_slot_wal_keep_size is set)';

CREATE VIEW harden.replication_lag AS
SELECT r.pid, r.application_name, r.client_addr, r.state, r.sync_state,
       (pg_catalog.pg_current_wal_lsn() - r.sent_lsn)::bigint AS send_lag_bytes,
       (pg_catalog.pg_current_wal_lsn() - r.replay_lsn)::bigint AS replay_lag_bytes,
       r.write_lag, r.flush_lag, r.replay_lag
  FROM pg_catalog.pg_stat_replication r;
COMMENT ON VIEW harden.replication_lag IS 'standbys streaming from this server and how far behind each is, in bytes of WAL and in time';

CREATE VIEW harden.table_cache_hits AS
WITH t AS (
    SELECT r.relid, pg_catalog.pg_stat_get_blocks_hit(r.relid) AS hits,
           pg_catalog.pg_stat_get_blocks_fetched(r.relid) - pg_catalog.pg_stat_get_blocks_hit(r.relid) AS reads,
           (SELECT pg_catalog.sum(pg_catalog.pg_stat_get_blocks_hit(i.indexrelid))
              FROM pg_catalog.pg_index i WHERE i.indrelid = r.relid)::bigint AS index_hits,
           (SELECT pg_catalog.sum(pg_catalog.pg_stat_get_blocks_fetched(i.indexrelid)
                                  - pg_catalog.pg_stat_get_blocks_hit(i.indexrelid))
              FROM pg_catalog.pg_index i WHERE i.indrelid = r.relid)::bigint AS index_reads
      FROM harden._relations r
     WHERE r.relkind IN ('r', 'm')
)
SELECT t.relid::pg_catalog.regclass AS "table", t.hits, t.reads,
       pg_catalog.round(t.hits::numeric / nullif(t.hits + t.reads, 0), 4) AS ratio,
       coalesce(t.index_hits, 0) AS index_hits, coalesce(t.index_reads, 0) AS index_reads,
       pg_catalog.round(t.index_hits::numeric / nullif(t.index_hits + t.index_reads, 0), 4) AS index_ratio
  FROM t;
COMMENT ON VIEW harden.table_cache_hits IS 'share of each table''s block reads (and of its indexes'') served from shared buffers';

CREATE VIEW harden.index_cache_hits AS
SELECT s.relid::pg_catalog.regclass AS "table", s.indexrelid::pg_catalog.regclass AS index,
       s.idx_blks_hit AS hits, s.idx_blks_read AS reads,
       pg_catalog.round(s.idx_blks_hit::numeric / nullif(s.idx_blks_hit + s.idx_blks_read, 0), 4) AS ratio
  FROM pg_catalog.pg_statio_all_indexes s
  JOIN harden._relations r ON r.relid = s.relid;
COMMENT ON VIEW harden.index_cache_hits IS 'share of each index''s block reads served from shared buffers';

-- Reads by CREATE INDEX and foreign-key validation do not count (see
-- harden.seq_scan_tables).
CREATE VIEW harden.unread_tables AS
WITH fks AS (
    SELECT t.relid, pg_catalog.count(*) AS n
      FROM pg_catalog.pg_constraint k,
           LATERAL (VALUES (k.conrelid), (k.confrelid)) AS t(relid)
     WHERE k.contype = 'f' AND k.convalidated
     GROUP BY t.relid
), idx AS (
    SELECT i.indrelid AS relid, pg_catalog.count(*) AS n FROM pg_catalog.pg_index i GROUP BY i.indrelid
), db AS (
    SELECT d.stats_reset FROM pg_catalog.pg_stat_database d
     WHERE d.datname = pg_catalog.current_database()
)
SELECT s.relid::pg_catalog.regclass AS "table",
       -- a subquery, not a join: a caller filtering on the other columns
       -- skips measuring the files of the rows it drops
       (SELECT b.table_bytes + b.index_bytes + b.toast_bytes FROM harden._relation_bytes(s.relid) b) AS total_bytes,
       s.n_tup_ins + s.n_tup_upd + s.n_tup_del AS rows_written, db.stats_reset,
       CASE WHEN pg_catalog.pg_is_in_recovery() OR db.stats_reset > pg_catalog.now() - interval '7 days' THEN 'low'
            WHEN db.stats_reset IS NULL THEN 'medium' ELSE 'high' END AS confidence
  FROM pg_catalog.pg_stat_all_tables s
  JOIN harden._relations r ON r.relid = s.relid AND r.relkind IN ('r', 'm')
  LEFT JOIN fks ON fks.relid = s.relid
  LEFT JOIN idx ON idx.relid = s.relid
 CROSS JOIN db
 WHERE s.seq_scan <= coalesce(idx.n, 0) + coalesce(fks.n, 0) AND coalesce(s.idx_scan, 0) = 0;
COMMENT ON VIEW harden.unread_tables IS 'tables no query has read since statistics were reset (scans by CREATE INDEX and foreign-key validation aside): candidates for archiving, or statistics too young to tell';

-- Checkpoints by cause: pg_stat_bgwriter up to PostgreSQL 16,
-- pg_stat_checkpointer from 17.
CREATE FUNCTION harden._checkpoints(OUT timed bigint, OUT requested bigint)
    LANGUAGE plpgsql STABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF to_regclass('pg_catalog.pg_stat_checkpointer') IS NOT NULL THEN
        EXECUTE 'SELECT num_timed, num_requested FROM pg_catalog.pg_stat_checkpointer' INTO timed, requested;
    ELSE
        EXECUTE 'SELECT checkpoints_timed, checkpoints_req FROM pg_catalog.pg_stat_bgwriter' INTO timed, requested;
    END IF;
END $$;
COMMENT ON FUNCTION harden._checkpoints() IS 'checkpoints since the statistics were reset, started by checkpoint_timeout (timed) and by WAL volume or a CHECKPOINT (requested)';

CREATE FUNCTION harden._machine(OUT ram_bytes bigint, OUT cpus integer)
    AS 'MODULE_PATHNAME', 'harden_machine'
    LANGUAGE C STABLE PARALLEL SAFE;
COMMENT ON FUNCTION harden._machine() IS 'physical memory and online CPUs of the machine the server runs on';

-- Each row: a setting far from what this machine and this workload call
-- for, and why.  Rules of thumb, not tuning: the reason says what they rest on.
CREATE VIEW harden.settings_advice AS
WITH m AS (SELECT * FROM harden._machine()),
cur AS (
    SELECT pg_catalog.pg_size_bytes(pg_catalog.current_setting('shared_buffers')) AS shared_buffers,
           pg_catalog.pg_size_bytes(pg_catalog.current_setting('effective_cache_size')) AS effective_cache_size,
           pg_catalog.pg_size_bytes(pg_catalog.current_setting('work_mem')) AS work_mem,
           pg_catalog.pg_size_bytes(pg_catalog.current_setting('maintenance_work_mem')) AS maintenance_work_mem,
           pg_catalog.current_setting('max_connections')::int AS max_connections,
           pg_catalog.current_setting('max_parallel_workers_per_gather')::int AS parallel_per_gather,
           pg_catalog.pg_size_bytes(pg_catalog.current_setting('max_wal_size')) AS max_wal_size,
           pg_catalog.current_setting('autovacuum')::boolean AS autovacuum,
           pg_catalog.current_setting('idle_in_transaction_session_timeout') AS idle_timeout
), bg AS (
    SELECT c.timed AS checkpoints_timed, c.requested AS checkpoints_req FROM harden._checkpoints() c
), advice AS (
    SELECT 'shared_buffers' AS setting, pg_catalog.pg_size_pretty(c.shared_buffers) AS current,
           pg_catalog.pg_size_pretty(m.ram_bytes / 4) AS recommended,
           pg_catalog.format('%s of %s of memory: about a quarter is the usual start; much less leaves reads to the OS cache, much more starves it and work_mem',
                             pg_catalog.round(100.0 * c.shared_buffers / m.ram_bytes, 1) || '%', pg_catalog.pg_size_pretty(m.ram_bytes)) AS reason
      FROM cur c, m WHERE m.ram_bytes > 0 AND (c.shared_buffers < m.ram_bytes / 10 OR c.shared_buffers > m.ram_bytes * 4 / 10)
    UNION ALL
    SELECT 'effective_cache_size', pg_catalog.pg_size_pretty(c.effective_cache_size), pg_catalog.pg_size_pretty(m.ram_bytes * 3 / 4),
           pg_catalog.format('the planner assumes %s of data cached, the machine has %s of memory: too low makes index scans look expensive',
                             pg_catalog.pg_size_pretty(c.effective_cache_size), pg_catalog.pg_size_pretty(m.ram_bytes))
      FROM cur c, m WHERE m.ram_bytes > 0 AND c.effective_cache_size < m.ram_bytes * 4 / 10
    UNION ALL
    SELECT 'work_mem', pg_catalog.pg_size_pretty(c.work_mem),
           pg_catalog.pg_size_pretty(greatest(m.ram_bytes / 4 / c.max_connections, 4 * 1024 * 1024)),
           pg_catalog.format('%s connections each sorting with %s could use %s, more than the %s of memory: one sort or hash per connection at a time is the optimistic case',
                             c.max_connections, pg_catalog.pg_size_pretty(c.work_mem),
                             pg_catalog.pg_size_pretty(c.work_mem * c.max_connections), pg_catalog.pg_size_pretty(m.ram_bytes))
      FROM cur c, m WHERE m.ram_bytes > 0 AND c.work_mem * c.max_connections > m.ram_bytes
    UNION ALL
    SELECT 'maintenance_work_mem', pg_catalog.pg_size_pretty(c.maintenance_work_mem),
           pg_catalog.pg_size_pretty(least(m.ram_bytes / 16, 2::bigint * 1024 * 1024 * 1024)),
           pg_catalog.format('VACUUM and CREATE INDEX get %s of the %s of memory: with more, vacuum passes over indexes fewer times',
                             pg_catalog.pg_size_pretty(c.maintenance_work_mem), pg_catalog.pg_size_pretty(m.ram_bytes))
      FROM cur c, m WHERE m.ram_bytes >= 4::bigint * 1024 * 1024 * 1024 AND c.maintenance_work_mem < 256 * 1024 * 1024
    UNION ALL
    SELECT 'max_parallel_workers_per_gather', c.parallel_per_gather::text, (m.cpus / 2)::text,
           pg_catalog.format('%s workers per query on %s CPUs: more than half the CPUs for one query starves the others', c.parallel_per_gather, m.cpus)
      FROM cur c, m WHERE m.cpus > 0 AND c.parallel_per_gather > greatest(m.cpus / 2, 1)
    UNION ALL
    SELECT 'max_wal_size', pg_catalog.pg_size_pretty(c.max_wal_size), pg_catalog.pg_size_pretty(c.max_wal_size * 4),
           pg_catalog.format('%s of %s checkpoints were forced by WAL volume, not by checkpoint_timeout: each writes every dirty page, and full-page writes follow',
                             b.checkpoints_req, b.checkpoints_req + b.checkpoints_timed)
      FROM cur c, bg b WHERE b.checkpoints_req > b.checkpoints_timed AND b.checkpoints_req >= 10
    UNION ALL
    SELECT 'autovacuum', 'off', 'on',
           'without autovacuum dead rows pile up and transaction IDs age towards wraparound, unless VACUUM runs on a schedule'
      FROM cur c WHERE NOT c.autovacuum
    UNION ALL
    SELECT 'idle_in_transaction_session_timeout', '0', '10min',
           'a session idle in transaction holds its locks and its snapshot (vacuum cannot remove rows it might see) until someone ends it'
      FROM cur c WHERE c.idle_timeout IN ('0', '0ms')
)
SELECT a.setting, a.current, a.recommended, a.reason,
       pg_catalog.format('ALTER SYSTEM SET %I = %L;', a.setting, a.recommended) AS fix_sql
  FROM advice a;
COMMENT ON VIEW harden.settings_advice IS 'settings far from what this machine (memory, CPUs) and this workload (checkpoint statistics) call for, each with its reasoning and an ALTER SYSTEM';

GRANT SELECT ON harden.sequence_exhaustion, harden.not_valid_constraints, harden.connections,
    harden.replication_slots, harden.replication_lag, harden.table_cache_hits, harden.index_cache_hits,
    harden.unread_tables, harden.settings_advice TO PUBLIC;

-- ---------------------------------------------------------------------------
-- Index suggestions for the slow queries of pg_stat_statements
-- ---------------------------------------------------------------------------

-- query_check() on each of harden.slow_queries' statements; each index it
-- proposes, tried with hypopg where installed.  A statement that cannot be
-- planned (a utility statement, another role's table) is skipped.
CREATE FUNCTION harden.suggested_indexes_rows(
    OUT index_sql text, OUT "table" regclass, OUT queryid bigint, OUT calls bigint,
    OUT total_ms double precision, OUT cost_before double precision,
    OUT cost_after double precision, OUT saved_ms double precision, OUT unverified text)
    RETURNS SETOF record
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE AS $$
-- No search_path of its own: the statements are planned as their authors
-- wrote them, with the caller's (this runs with the caller's privileges).
DECLARE
    q record;
    f record;
    h record;
BEGIN
    FOR q IN SELECT s.queryid, s.query, s.calls, s.total_ms FROM harden.slow_queries s
              WHERE s.query OPERATOR(pg_catalog.~*) '^\s*(select|update|delete|with)\M' LOOP
        BEGIN
            FOR f IN SELECT c.relation, c.suggestion FROM harden.query_check(q.query) c
                      WHERE c.suggestion OPERATOR(pg_catalog.~) '^CREATE INDEX ' LOOP
                SELECT * INTO h FROM harden._hypo_cost(q.query, f.suggestion);
                index_sql := f.suggestion;
                "table" := f.relation;
                queryid := q.queryid;
                calls := q.calls;
                total_ms := q.total_ms;
                cost_before := h.cost_before;
                cost_after := h.cost_after;
                -- the statement's time scaled by the drop in plan cost
                saved_ms := q.total_ms * greatest(1 - h.cost_after / nullif(h.cost_before, 0), 0);
                unverified := h.unverified;
                RETURN NEXT;
            END LOOP;
        EXCEPTION WHEN OTHERS THEN
            NULL;
        END;
    END LOOP;
END $$;
COMMENT ON FUNCTION harden.suggested_indexes_rows() IS 'rows of harden.suggested_indexes, one per statement and index';

CREATE VIEW harden.suggested_indexes AS
SELECT r.index_sql, r."table",
       pg_catalog.array_agg(r.queryid ORDER BY r.total_ms DESC) AS queryids,
       pg_catalog.count(*) AS queries, pg_catalog.sum(r.calls)::bigint AS calls,
       pg_catalog.sum(r.total_ms) AS total_ms,
       -- NULL unless every statement's gain was measured (hypopg)
       CASE WHEN pg_catalog.bool_and(r.unverified IS NULL) THEN pg_catalog.sum(r.saved_ms) END AS saved_ms,
       pg_catalog.bool_and(r.unverified IS NULL) AS verified,
       pg_catalog.min(r.unverified) AS unverified
  FROM harden.suggested_indexes_rows() r
 GROUP BY r.index_sql, r."table"
 ORDER BY saved_ms DESC NULLS LAST, total_ms DESC;
COMMENT ON VIEW harden.suggested_indexes IS 'indexes query_check() proposes for the statements of harden.slow_queries, one row per index however many statements want it, ranked by the execution time it saves (measured with hypopg: the statements'' time scaled by the drop in plan cost), else by the time of the statements';
GRANT SELECT ON harden.suggested_indexes TO PUBLIC;

-- ---------------------------------------------------------------------------
-- History: query statistics and relation sizes over time
-- ---------------------------------------------------------------------------

CREATE TABLE harden.analyze_snapshots (
    id bigserial PRIMARY KEY,
    taken_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE INDEX analyze_snapshots_taken_at ON harden.analyze_snapshots (taken_at);
CREATE TABLE harden.snapshot_queries (
    snapshot_id bigint NOT NULL REFERENCES harden.analyze_snapshots ON DELETE CASCADE,
    queryid bigint, query text, calls bigint, total_ms double precision,
    mean_ms double precision, rows bigint
);
CREATE INDEX snapshot_queries_query ON harden.snapshot_queries (queryid, snapshot_id);
CREATE INDEX snapshot_queries_snapshot ON harden.snapshot_queries (snapshot_id);
CREATE TABLE harden.snapshot_sizes (
    snapshot_id bigint NOT NULL REFERENCES harden.analyze_snapshots ON DELETE CASCADE,
    relid pg_catalog.oid NOT NULL, name text NOT NULL, kind text NOT NULL,
    total_bytes bigint NOT NULL, rows bigint,
    PRIMARY KEY (snapshot_id, relid)
);
CREATE INDEX snapshot_sizes_name ON harden.snapshot_sizes (name, snapshot_id);
SELECT pg_catalog.pg_extension_config_dump('harden.analyze_snapshots', '');
SELECT pg_catalog.pg_extension_config_dump('harden.analyze_snapshots_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('harden.snapshot_queries', '');
SELECT pg_catalog.pg_extension_config_dump('harden.snapshot_sizes', '');
GRANT SELECT ON harden.analyze_snapshots, harden.snapshot_queries, harden.snapshot_sizes TO PUBLIC;

-- One snapshot: the statements of harden.slow_queries and the size of every
-- table; older snapshots than harden.analyze_snapshot_retention go.
CREATE FUNCTION harden.analyze_snapshot() RETURNS bigint
    LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    snap bigint;
BEGIN
    INSERT INTO harden.analyze_snapshots DEFAULT VALUES RETURNING id INTO snap;
    INSERT INTO harden.snapshot_queries (snapshot_id, queryid, query, calls, total_ms, mean_ms, rows)
    SELECT snap, s.queryid, s.query, s.calls, s.total_ms, s.mean_ms, s.rows FROM harden.slow_queries s;
    INSERT INTO harden.snapshot_sizes (snapshot_id, relid, name, kind, total_bytes, rows)
    SELECT snap, t."table"::oid, t."table"::text, t.kind, t.total_bytes, t.rows FROM harden.table_sizes t;
    DELETE FROM harden.analyze_snapshots
     WHERE taken_at < now() - coalesce(current_setting('harden.analyze_snapshot_retention', true), '30d')::interval;
    RETURN snap;
END $$;
COMMENT ON FUNCTION harden.analyze_snapshot() IS 'keep the statements of harden.slow_queries and the size of every table as of now, and delete snapshots older than harden.analyze_snapshot_retention; the background worker runs it every harden.analyze_snapshot_interval';
REVOKE ALL ON FUNCTION harden.analyze_snapshot() FROM PUBLIC;

CREATE VIEW harden.size_growth AS
WITH s AS (
    SELECT z.name, z.kind, z.total_bytes, z.rows, a.taken_at,
           pg_catalog.row_number() OVER (PARTITION BY z.name ORDER BY a.taken_at) AS first_rank,
           pg_catalog.row_number() OVER (PARTITION BY z.name ORDER BY a.taken_at DESC) AS last_rank
      FROM harden.snapshot_sizes z JOIN harden.analyze_snapshots a ON a.id = z.snapshot_id
)
SELECT l.name AS "table", l.kind, f.taken_at AS since, l.taken_at AS until,
       f.total_bytes AS bytes_then, l.total_bytes AS bytes_now,
       l.total_bytes - f.total_bytes AS growth_bytes,
       pg_catalog.pg_size_pretty(l.total_bytes - f.total_bytes) AS growth,
       ((l.total_bytes - f.total_bytes)
        / nullif(extract(epoch FROM l.taken_at - f.taken_at) / 86400, 0))::bigint AS bytes_per_day,
       l.rows - f.rows AS rows_growth
  FROM s l JOIN s f ON f.name = l.name AND f.first_rank = 1
 WHERE l.last_rank = 1;
COMMENT ON VIEW harden.size_growth IS 'each table''s size in the first and the last snapshot it is in, and its growth per day';

-- The mean time of a statement's calls since the previous snapshot against
-- its mean before; counters reset in between are skipped.
CREATE VIEW harden.query_slowdown AS
WITH s AS (
    SELECT q.queryid, q.query, q.calls, q.total_ms, a.taken_at,
           pg_catalog.lag(q.calls) OVER w AS prev_calls, pg_catalog.lag(q.total_ms) OVER w AS prev_total_ms,
           pg_catalog.lag(a.taken_at) OVER w AS prev_taken_at,
           pg_catalog.row_number() OVER (PARTITION BY q.queryid ORDER BY a.taken_at DESC) AS last_rank
      FROM harden.snapshot_queries q JOIN harden.analyze_snapshots a ON a.id = q.snapshot_id
    WINDOW w AS (PARTITION BY q.queryid ORDER BY a.taken_at)
)
SELECT s.queryid, s.query, s.prev_taken_at AS since, s.taken_at AS until,
       s.calls - s.prev_calls AS calls,
       s.prev_total_ms / s.prev_calls AS mean_ms_before,
       (s.total_ms - s.prev_total_ms) / (s.calls - s.prev_calls) AS mean_ms_since,
       pg_catalog.round(((s.total_ms - s.prev_total_ms) / (s.calls - s.prev_calls)
                         / nullif(s.prev_total_ms / s.prev_calls, 0))::numeric, 2) AS slowdown
  FROM s
 WHERE s.last_rank = 1 AND s.prev_calls > 0 AND s.calls > s.prev_calls AND s.total_ms >= s.prev_total_ms
   AND (s.total_ms - s.prev_total_ms) / (s.calls - s.prev_calls) > 1.2 * (s.prev_total_ms / s.prev_calls);
COMMENT ON VIEW harden.query_slowdown IS 'statements whose calls since the previous snapshot took at least 20% longer on average than before it';
GRANT SELECT ON harden.size_growth, harden.query_slowdown TO PUBLIC;

-- ---------------------------------------------------------------------------
-- Bloat: the block size inline, so that a filter on bytes reaches the
-- catalogs before the per-index work (health_report() skips small ones)
-- ---------------------------------------------------------------------------

CREATE OR REPLACE VIEW harden.bloat AS
WITH tables AS (
    SELECT r.relid, r.relpages, r.reltuples,
           coalesce((SELECT o.option_value::numeric FROM pg_catalog.pg_options_to_table(r.reloptions) o
                                 WHERE o.option_name = 'fillfactor'), 100) AS fillfactor,
           w.width, w.ncols,
           (SELECT pg_catalog.count(*) FROM pg_catalog.pg_attribute a
             WHERE a.attrelid = r.relid AND a.attnum > 0 AND NOT a.attisdropped) AS natts
      FROM harden._relations r
      JOIN (SELECT s.starelid, pg_catalog.sum(s.stawidth * (1 - s.stanullfrac)) AS width,
                   pg_catalog.count(*) AS ncols
              FROM pg_catalog.pg_statistic s WHERE NOT s.stainherit
             GROUP BY s.starelid) w ON w.starelid = r.relid
     WHERE r.relkind IN ('r', 'm') AND r.relpages > 0 AND r.reltuples >= 0
), table_est AS (
    SELECT t.relid, NULL::pg_catalog.oid AS indexrelid, t.relpages,
           -- tuple header (with null bitmap), data, line pointer
           pg_catalog.ceil(t.reltuples * (8 * pg_catalog.ceil((23 + pg_catalog.ceil(t.natts / 8.0)) / 8) + t.width + 4)
                           / ((pg_catalog.current_setting('block_size')::numeric - 24) * t.fillfactor / 100))::numeric AS expected_pages
      FROM tables t
     WHERE t.ncols >= t.natts
), indexes AS (
    SELECT i.indexrelid, i.indrelid, ic.relpages, ic.reltuples,
           coalesce((SELECT o.option_value::numeric FROM pg_catalog.pg_options_to_table(ic.reloptions) o
                                 WHERE o.option_name = 'fillfactor'), 90) AS fillfactor,
           w.width, w.analysed
      FROM pg_catalog.pg_index i
      JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
      JOIN pg_catalog.pg_am am ON am.oid = ic.relam AND am.amname = 'btree'
      JOIN harden._relations r ON r.relid = i.indrelid AND r.relkind IN ('r', 'm')
     CROSS JOIN LATERAL (
        SELECT pg_catalog.sum(s.stawidth * (1 - s.stanullfrac)) AS width,
               pg_catalog.count(s.stawidth) = pg_catalog.count(*) AS analysed
          FROM pg_catalog.unnest(i.indkey) AS k(attnum)
          LEFT JOIN pg_catalog.pg_statistic s
                 ON s.starelid = i.indrelid AND s.staattnum = k.attnum AND NOT s.stainherit) w
     WHERE ic.relpages > 1 AND ic.reltuples >= 0 AND i.indexprs IS NULL AND i.indisvalid
), index_est AS (
    -- index tuple header, data, line pointer; plus the metapage and ~1% upper levels
    SELECT x.indrelid AS relid, x.indexrelid, x.relpages,
           1 + pg_catalog.ceil(1.01 * x.reltuples * (8 * pg_catalog.ceil((8 + x.width) / 8) + 4)
                               / ((pg_catalog.current_setting('block_size')::numeric - 24 - 16) * x.fillfactor / 100))::numeric AS expected_pages
      FROM indexes x
     WHERE x.analysed
), est AS (
    SELECT * FROM table_est UNION ALL SELECT * FROM index_est
)
SELECT CASE WHEN e.indexrelid IS NULL THEN 'table' ELSE 'index' END AS kind,
       e.relid::pg_catalog.regclass AS "table", e.indexrelid::pg_catalog.regclass AS index,
       (e.relpages * pg_catalog.current_setting('block_size')::numeric)::bigint AS bytes,
       (least(e.expected_pages, e.relpages) * pg_catalog.current_setting('block_size')::numeric)::bigint AS expected_bytes,
       (greatest(e.relpages - e.expected_pages, 0) * pg_catalog.current_setting('block_size')::numeric)::bigint AS bloat_bytes,
       pg_catalog.round(greatest(e.relpages - e.expected_pages, 0) / e.relpages, 3) AS bloat_ratio
  FROM est e;
COMMENT ON VIEW harden.bloat IS 'estimated wasted space of tables and btree indexes (from pg_class and ANALYZE''s column widths, without reading them); needs ANALYZE';

-- ---------------------------------------------------------------------------
-- health_report()'s checks
-- ---------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION harden._health_rows(
    OUT "check" text, OUT severity text, OUT object text, OUT detail text, OUT suggestion text)
    RETURNS SETOF record
    LANGUAGE sql STABLE PARALLEL RESTRICTED
BEGIN ATOMIC
WITH settings AS (
    SELECT coalesce(pg_catalog.current_setting('harden.analyze_min_rows', true), '10000')::float8 AS min_rows,
           pg_catalog.pg_size_bytes(coalesce(pg_catalog.current_setting('harden.health_min_size', true), '10MB')) AS min_size,
           coalesce(pg_catalog.current_setting('harden.health_bloat_ratio', true), '0.5')::numeric AS bloat_ratio,
           coalesce(pg_catalog.current_setting('harden.health_xid_age', true), '500000000')::bigint AS xid_age,
           coalesce(pg_catalog.current_setting('harden.health_slow_query', true), '1s')::interval AS slow_query,
           coalesce(pg_catalog.current_setting('harden.health_cache_hit_ratio', true), '0.95')::numeric AS hit_ratio
), vacuum AS MATERIALIZED (
    -- read once for two checks
    SELECT v.* FROM harden.vacuum_health v, settings s
     WHERE v.vacuum_due OR v.xid_age >= s.xid_age
), findings AS (
    SELECT 'invalid_index' AS "check", 'warning' AS severity, harden._qualified(v.index) AS object,
           CASE WHEN v.is_unique
                THEN pg_catalog.format('unique index on %s is invalid (%s): its build failed, most often on duplicate keys, and a REINDEX would fail again on the same rows; find them with %s then drop it and run %s',
                                       harden._qualified(v."table"),
                                       CASE WHEN v.ready THEN 'it is maintained on every write but never used'
                                            ELSE 'never used; not maintained by writes, it only takes space' END,
                                       v.duplicates_sql, v.recreate_sql)
                ELSE pg_catalog.format('index on %s is invalid: %s', harden._qualified(v."table"),
                                       CASE WHEN v.ready THEN 'it is maintained on every write but never used'
                                            ELSE 'never used; not maintained by writes (its build failed before it was ready), it only takes space' END)
           END AS detail,
           v.fix_sql AS suggestion
      FROM harden.invalid_indexes v WHERE NOT v.building
    UNION ALL
    SELECT 'duplicate_index', CASE WHEN v.verdict = 'drop' THEN 'warning' ELSE 'info' END, harden._qualified(v.index),
           pg_catalog.format('%s duplicate of %s (%s)%s', v.kind, harden._qualified(v.covered_by),
                             pg_catalog.pg_size_pretty(v.index_bytes),
                             CASE WHEN pg_catalog.cardinality(v.needed_for) > 0
                                  THEN '; still needed for ' || pg_catalog.array_to_string(v.needed_for, ', ') ELSE '' END),
           v.drop_sql
      FROM harden.duplicate_indexes v
    UNION ALL
    SELECT 'unused_index', CASE WHEN v.confidence = 'high' AND v.verdict = 'drop' THEN 'warning' ELSE 'info' END,
           harden._qualified(v.index),
           CASE WHEN v.verdict = 'keep'
                THEN pg_catalog.format('never scanned (%s), but keep it: it serves %s; without it every delete or key update of a referenced row reads the whole table',
                                       v.index_size, pg_catalog.array_to_string(v.needed_for, ', '))
                ELSE pg_catalog.format('never scanned (%s; confidence %s%s%s)', v.index_size, v.confidence,
                                       CASE WHEN v.note IS NOT NULL THEN '; ' || v.note ELSE '' END,
                                       CASE WHEN pg_catalog.cardinality(v.needed_for) > 0
                                            THEN '; still needed for ' || pg_catalog.array_to_string(v.needed_for, ', ') ELSE '' END)
           END,
           v.drop_sql
      FROM harden.unused_indexes v, settings s WHERE v.index_bytes >= s.min_size
    UNION ALL
    SELECT 'missing_fk_index', CASE WHEN v.rows >= s.min_rows THEN 'warning' ELSE 'info' END,
           harden._qualified(v."table"),
           pg_catalog.format('foreign key %I (%s) references %s and has no index%s%s', v.constraint_name,
                             pg_catalog.array_to_string(v.columns, ', '), harden._qualified(v.referenced),
                             CASE WHEN v.partitions IS NOT NULL THEN pg_catalog.format(' on %s partitions', v.partitions) ELSE '' END,
                             CASE WHEN h.unverified IS NOT NULL
                                  THEN pg_catalog.format(' (estimate unverified: %s)', h.unverified)
                                  WHEN h.cost_after < h.cost_before
                                  THEN pg_catalog.format(' (with the index, tried as a hypothetical one, its lookup costs %s instead of %s)',
                                                         pg_catalog.round(h.cost_after::numeric), pg_catalog.round(h.cost_before::numeric))
                                  ELSE pg_catalog.format('; tried as a hypothetical index, the index does not lower the cost of its lookup (%s): no index is proposed',
                                                         pg_catalog.round(h.cost_before::numeric)) END),
           CASE WHEN h.unverified IS NOT NULL OR h.cost_after < h.cost_before THEN v.create_sql END
      FROM harden.missing_fk_indexes v
     CROSS JOIN LATERAL harden._hypo_cost(v.lookup_sql, v.create_sql) h, settings s
    UNION ALL
    SELECT 'bloat', 'warning', harden._qualified(coalesce(v.index, v."table")),
           pg_catalog.format('%s: ~%s of %s wasted (estimate)', v.kind, pg_catalog.pg_size_pretty(v.bloat_bytes),
                             pg_catalog.pg_size_pretty(v.bytes)),
           CASE WHEN v.kind = 'index' THEN pg_catalog.format('REINDEX INDEX CONCURRENTLY %s;', harden._qualified(v.index))
                ELSE pg_catalog.format('VACUUM FULL %s;  -- takes an exclusive lock; pg_repack avoids it', harden._qualified(v."table")) END
      FROM harden.bloat v, settings s
     WHERE v.bloat_ratio >= s.bloat_ratio AND v.bloat_bytes >= s.min_size
       -- the same bound as a filter the planner pushes into the view
       AND v.bytes >= pg_catalog.pg_size_bytes(coalesce(pg_catalog.current_setting('harden.health_min_size', true), '10MB'))
    UNION ALL
    SELECT 'seq_scan', 'warning', harden._qualified(v."table"),
           pg_catalog.format('%s sequential scans read ~%s rows each (%s index scans%s)', v.query_seq_scans,
                             v.query_rows_per_scan, coalesce(v.idx_scan, 0),
                             CASE WHEN v.maintenance_scans > 0
                                  THEN pg_catalog.format('; up to %s more by CREATE INDEX and foreign-key checks not counted', v.maintenance_scans)
                                  ELSE '' END),
           -- the statements that read it, to pass to query_check()
           pg_catalog.format('SELECT queryid, query FROM harden.slow_queries WHERE query ~* %L;',
                             -- the name taken literally: every other character escaped
                             '(^|[^[:alnum:]_])' || pg_catalog.regexp_replace(c.relname, '([^[:alnum:]_])', '\\\1', 'g')
                             || '($|[^[:alnum:]_])')
      FROM harden.seq_scan_tables v
      JOIN pg_catalog.pg_class c ON c.oid = v."table", settings s
     WHERE v.rows >= s.min_rows AND v.query_rows_per_scan >= s.min_rows
       AND v.query_seq_scans > coalesce(v.idx_scan, 0)
    UNION ALL
    SELECT 'cache_hit_ratio', 'warning', v.kind || ' blocks',
           pg_catalog.format('%s%% of %s block reads hit shared buffers', pg_catalog.round(v.ratio * 100, 1), v.hits + v.reads),
           '-- a larger shared_buffers, or fewer blocks read: see harden.slow_queries and harden.seq_scan_tables'
      FROM harden.cache_hit_ratio v, settings s
     WHERE v.ratio < s.hit_ratio AND v.hits + v.reads >= 10000
    UNION ALL
    SELECT 'vacuum', CASE WHEN v.autovacuum_enabled THEN 'info' ELSE 'warning' END, harden._qualified(v."table"),
           pg_catalog.format('%s dead tuples (%s%%), autovacuum %s; last vacuum %s', v.dead_tuples,
                             pg_catalog.round(v.dead_ratio * 100, 1),
                             CASE WHEN v.autovacuum_enabled THEN 'due' ELSE 'disabled' END,
                             coalesce(v.last_vacuum::text, 'never')),
           pg_catalog.format('VACUUM (ANALYZE) %s;', harden._qualified(v."table"))
      FROM vacuum v, settings s
     WHERE v.vacuum_due AND v.live_tuples + v.dead_tuples >= s.min_rows
    UNION ALL
    SELECT 'xid_age', CASE WHEN v.xid_age >= 1500000000 THEN 'critical' ELSE 'warning' END,
           harden._qualified(v."table"),
           pg_catalog.format('transaction ID age %s (wraparound at 2147483647)', v.xid_age),
           pg_catalog.format('VACUUM (FREEZE) %s;', harden._qualified(v."table"))
      FROM vacuum v, settings s WHERE v.xid_age >= s.xid_age
    UNION ALL
    SELECT 'long_running_query', 'warning', 'pid ' || v.pid,
           pg_catalog.format('%s for %s (transaction open %s): %s', v.state,
                             pg_catalog.date_trunc('second', v.duration), pg_catalog.date_trunc('second', v.xact_age),
                             pg_catalog.left(v.query, 200)),
           -- a session idle in transaction runs nothing to cancel
           CASE WHEN v.state LIKE 'idle in transaction%'
                THEN pg_catalog.format('SELECT pg_terminate_backend(%s);  -- pg_cancel_backend() does nothing to an idle session; idle_in_transaction_session_timeout ends such sessions automatically', v.pid)
                ELSE pg_catalog.format('SELECT pg_cancel_backend(%s);', v.pid) END
      FROM harden.long_running_queries v WHERE v.datname = pg_catalog.current_database()
    UNION ALL
    SELECT 'blocking_lock', 'warning', 'pid ' || v.pid,
           pg_catalog.format('blocks %s sessions: %s', (SELECT pg_catalog.count(DISTINCT w.pid) FROM harden.blocking_locks w
                                                          WHERE w.root_pid = v.pid AND w.depth > 0),
                             coalesce(pg_catalog.left(v.query, 200), '')),
           pg_catalog.format('SELECT pg_terminate_backend(%s);', v.pid)
      FROM harden.blocking_locks v WHERE v.depth = 0 AND v.pid <> 0
    UNION ALL
    SELECT 'sequence_exhaustion', CASE WHEN v.used_ratio >= 0.95 THEN 'critical' ELSE 'warning' END,
           harden._qualified(v.sequence),
           pg_catalog.format('%s%% of its range used (%s of %s, the %s''s limit%s)',
                             pg_catalog.round(v.used_ratio * 100, 1), v.last_value, v.limit_value,
                             CASE WHEN v.limited_by = 'column' THEN pg_catalog.format('%s column %s.%I', v.column_type,
                                                                                      harden._qualified(v."table"), v."column")
                                  ELSE 'sequence' END,
                             CASE WHEN v.cycles THEN '; it cycles, so values repeat after' ELSE '' END),
           v.fix_sql
      FROM harden.sequence_exhaustion v
     WHERE v.used_ratio >= coalesce(pg_catalog.current_setting('harden.health_sequence_ratio', true), '0.75')::numeric
    UNION ALL
    SELECT 'not_valid_constraint', 'info', harden._qualified(v."table"),
           pg_catalog.format('%s constraint %I was added NOT VALID and never validated: %s', v.kind, v.constraint_name, v.definition),
           v.validate_sql
      FROM harden.not_valid_constraints v
    UNION ALL
    SELECT 'connections', CASE WHEN c.share >= 0.95 THEN 'critical' ELSE 'warning' END, 'connections',
           pg_catalog.format('%s client connections, %s%% of the %s non-superusers may open (%s idle, %s idle in transaction)',
                             c.n, pg_catalog.round(c.share * 100, 1), c.usable, c.idle, c.idle_xact),
           '-- a connection pooler (pgbouncer) in transaction mode, or fewer pool connections per application: see harden.connections'
      FROM (SELECT pg_catalog.sum(v.connections) AS n, pg_catalog.sum(v.share_of_max) AS share,
                   (pg_catalog.current_setting('max_connections')::int
                    - pg_catalog.current_setting('superuser_reserved_connections')::int) AS usable,
                   coalesce(pg_catalog.sum(v.connections) FILTER (WHERE v.state = 'idle'), 0) AS idle,
                   coalesce(pg_catalog.sum(v.connections) FILTER (WHERE v.state LIKE 'idle in transaction%'), 0) AS idle_xact
              FROM harden.connections v) c
     WHERE c.share >= 0.8
    UNION ALL
    SELECT 'replication_slot', 'warning', v.slot_name,
           pg_catalog.format('inactive %s slot keeps %s of WAL (status %s)', v.slot_type, v.retained, coalesce(v.wal_status, 'unknown')),
           v.drop_sql || '  -- only if its consumer is gone for good'
      FROM harden.replication_slots v, settings s
     WHERE NOT v.active AND v.retained_bytes >= s.min_size
    UNION ALL
    SELECT 'replication_lag', 'warning', coalesce(nullif(v.application_name, ''), 'pid ' || v.pid),
           pg_catalog.format('standby replays %s behind (%s)', pg_catalog.pg_size_pretty(v.replay_lag_bytes),
                             coalesce(pg_catalog.date_trunc('second', v.replay_lag)::text, 'no lag time reported')),
           '-- see harden.replication_lag: a slow standby disk or network, or a long query on the standby (hot_standby_feedback)'
      FROM harden.replication_lag v
     WHERE v.replay_lag >= interval '1 minute' OR v.replay_lag_bytes >= 1024 * 1024 * 1024
    UNION ALL
    SELECT 'table_cache_hit_ratio', 'info', harden._qualified(v."table"),
           pg_catalog.format('%s%% of %s block reads hit shared buffers', pg_catalog.round(v.ratio * 100, 1), v.hits + v.reads),
           '-- see harden.seq_scan_tables and query_check() for the statements reading it'
      FROM harden.table_cache_hits v, settings s
     WHERE v.ratio < s.hit_ratio AND v.hits + v.reads >= 10000
    UNION ALL
    SELECT 'unread_table', 'info', harden._qualified(v."table"),
           pg_catalog.format('no query read it since statistics were reset (%s; %s rows written since)',
                             pg_catalog.pg_size_pretty(v.total_bytes), v.rows_written),
           NULL
      FROM harden.unread_tables v, settings s
     WHERE v.confidence = 'high' AND v.total_bytes >= s.min_size
       -- the same as a condition on the database alone, checked once
       -- before any table is measured
       AND NOT pg_catalog.pg_is_in_recovery()
       AND (SELECT d.stats_reset FROM pg_catalog.pg_stat_database d
             WHERE d.datname = pg_catalog.current_database()) <= pg_catalog.now() - interval '7 days'
    UNION ALL
    SELECT 'setting', 'info', v.setting,
           pg_catalog.format('%s is %s, about %s recommended: %s', v.setting, v.current, v.recommended, v.reason),
           v.fix_sql
      FROM harden.settings_advice v
    UNION ALL
    SELECT 'slow_query', 'warning', 'query ' || v.queryid,
           pg_catalog.format('mean %s ms over %s calls (%s%% of the time): %s', pg_catalog.round(v.mean_ms::numeric, 1),
                             v.calls, pg_catalog.round((v.share * 100)::numeric, 1), pg_catalog.left(v.query, 200)),
           -- pg_stat_statements shows constants as $n, which query_check() takes
           CASE WHEN v.query ~* '^\s*(select|insert|update|delete|merge|with)\M'
                THEN pg_catalog.format('SELECT * FROM harden.query_check(%L);', v.query) END
      FROM harden.slow_queries v, settings s
     WHERE v.mean_ms * interval '1 ms' >= s.slow_query
)
SELECT f."check", f.severity, f.object, f.detail, f.suggestion
  FROM findings f
 ORDER BY CASE f.severity WHEN 'critical' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END, f."check", f.object;
END;

-- ---------------------------------------------------------------------------
-- overrides and worker failures
-- ---------------------------------------------------------------------------

-- Members of harden_operator may force states, retry and cancel timers and
-- force-release holds on every table, as its owner may on its own.  A role
-- belongs to the cluster, not to the extension: created if missing, left in
-- place by DROP EXTENSION.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) 'harden_operator') THEN
        CREATE ROLE harden_operator NOLOGIN;
    END IF;
END $$;
-- Operators call pg_harden's functions and read its audit trail.
GRANT USAGE ON SCHEMA harden TO harden_operator;

-- Forced moves are audited like any other, flagged and with their reason.
ALTER TABLE harden.fsm_log ADD COLUMN forced boolean NOT NULL DEFAULT false;
ALTER TABLE harden.fsm_log DROP CONSTRAINT fsm_log_actor_check;
ALTER TABLE harden.fsm_log ADD CONSTRAINT fsm_log_actor_check
    CHECK (actor IN ('sql', 'event', 'timer', 'force'));
COMMENT ON COLUMN harden.fsm_log.forced IS 'moved by harden.fsm_force(), past the transition rules';

-- A failing timer or hold expiry is retried at next_try (NULL: not failing).
ALTER TABLE harden.fsm_due ADD COLUMN next_try timestamptz;
CREATE INDEX fsm_due_next_try ON harden.fsm_due ((coalesce(next_try, due_at)));
CREATE INDEX fsm_due_failing ON harden.fsm_due (id) WHERE attempts > 0;
COMMENT ON COLUMN harden.fsm_due.next_try IS 'when a failing timer is tried again (exponential backoff with jitter); NULL: it has not failed';
ALTER TABLE harden.stock_holds ADD COLUMN next_try timestamptz;
CREATE INDEX stock_holds_failing ON harden.stock_holds (id) WHERE status = 'held' AND attempts > 0;
COMMENT ON COLUMN harden.stock_holds.next_try IS 'when a hold whose expiry failed is tried again (exponential backoff with jitter); NULL: it has not failed';

CREATE OR REPLACE VIEW harden.stock_reservations WITH (security_barrier) AS
SELECT h.id, h.relid AS "table", h.ref, h.status, h.keys, h.qtys,
       (SELECT sum(q) FROM unnest(h.qtys) AS q)::bigint AS units,
       h.created_at, h.expires_at,
       CASE WHEN h.status = 'held' THEN greatest(h.expires_at - clock_timestamp(), interval '0') END AS ttl,
       h.closed_at, h.owner, h.attempts, h.last_error, h.next_try
  FROM harden.stock_holds h
 WHERE has_table_privilege(h.relid, 'SELECT');

-- Administrative actions that are not transitions: retrying and cancelling
-- timers, releasing holds for someone else.
CREATE TABLE harden.admin_log (
    id         bigserial PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    action     text NOT NULL CHECK (action IN ('timer_retry', 'timer_cancel', 'hold_release')),
    table_name text NOT NULL,
    item       jsonb NOT NULL,
    outcome    text NOT NULL,
    role       text NOT NULL,
    reason     text,
    txid       xid8 NOT NULL
);
CREATE INDEX admin_log_at ON harden.admin_log USING brin (at);
COMMENT ON TABLE harden.admin_log IS 'audit of timer retries and cancellations and of holds released by someone other than the role that made them';
SELECT pg_catalog.pg_extension_config_dump('harden.admin_log', '');
SELECT pg_catalog.pg_extension_config_dump('harden.admin_log_id_seq', '');
GRANT SELECT ON harden.admin_log, harden.fsm_log TO harden_operator;

CREATE FUNCTION harden.fsm_force(table_name regclass, key jsonb, to_state text, reason text,
                                 machine text DEFAULT NULL) RETURNS boolean
    AS 'MODULE_PATHNAME', 'harden_fsm_force'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION harden.fsm_force(regclass, jsonb, text, text, text) IS 'move a row to any state of its machine, past the rules, audited as forced (table owner or harden_operator); false if it was already there';

-- Timers of the tables the caller may read (all of them for harden_operator).
CREATE VIEW harden.fsm_timers WITH (security_barrier) AS
SELECT d.id, d.machine, d.relid AS table_name, d.row_key, d.from_state AS state, d.to_state,
       d.due_at, d.attempts, d.next_try, d.last_error, d.created_at
  FROM harden.fsm_due d
 WHERE has_table_privilege(d.relid, 'SELECT')
    OR EXISTS (SELECT 1 FROM pg_catalog.pg_roles r
                WHERE r.rolname = 'harden_operator' AND pg_has_role(r.oid, 'USAGE'));
COMMENT ON VIEW harden.fsm_timers IS 'timed transitions waiting for their deadline, with failed attempts, backoff and last error';
GRANT SELECT ON harden.fsm_timers TO PUBLIC;

CREATE FUNCTION harden.fsm_timer_retry(id bigint, reason text) RETURNS text
    AS 'MODULE_PATHNAME', 'harden_fsm_timer_retry'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION harden.fsm_timer_retry(bigint, text) IS 'apply a due timer now, past its backoff; returns applied, dropped or failed (table owner or harden_operator; audited in harden.admin_log)';

CREATE FUNCTION harden.fsm_timer_cancel(id bigint, reason text) RETURNS void
    AS 'MODULE_PATHNAME', 'harden_fsm_timer_cancel'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION harden.fsm_timer_cancel(bigint, text) IS 'delete a timer, leaving its row in its state (table owner or harden_operator; audited in harden.admin_log)';

CREATE FUNCTION harden.stock_force_release(id bigint, reason text) RETURNS boolean
    AS 'MODULE_PATHNAME', 'harden_stock_force_release'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION harden.stock_force_release(bigint, text) IS 'give a held reservation''s stock back as the table''s owner (table owner or harden_operator; audited in harden.admin_log); false if it was not held';

-- worker_status gains the failures of single items (timers, holds): the
-- columns come from a second function, so the view is replaced in place.
CREATE FUNCTION harden.worker_item_rows(
        OUT database name, OUT item_errors bigint, OUT last_item_error text,
        OUT last_item_error_at timestamptz, OUT items_in_backoff bigint)
    RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'harden_worker_items'
    LANGUAGE C VOLATILE PARALLEL RESTRICTED;
CREATE OR REPLACE VIEW harden.worker_status AS
SELECT s.database, s.pid, s.state, s.started_at, s.last_run, s.runs, s.transitions,
       s.holds_released, s.errors, s.last_error, s.last_error_at, s.next_start,
       i.item_errors, i.last_item_error, i.last_item_error_at, i.items_in_backoff
  FROM harden.worker_status_rows() s
  LEFT JOIN harden.worker_item_rows() i ON i.database = s.database;

-- ---------------------------------------------------------------------------
-- cache: leases (a miss hands out a token; a set with it stores only if
-- nothing invalidated the key or its tags since)
-- ---------------------------------------------------------------------------

CREATE FUNCTION harden.cache_lease(key text, OUT value jsonb, OUT lease bigint) RETURNS record
    AS 'MODULE_PATHNAME', 'harden_cache_lease'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
CREATE FUNCTION harden.cache_lease_text(key text, OUT value text, OUT lease bigint) RETURNS record
    AS 'MODULE_PATHNAME', 'harden_cache_lease_text'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
CREATE FUNCTION harden.cache_lease_bytea(key text, OUT value bytea, OUT lease bigint) RETURNS record
    AS 'MODULE_PATHNAME', 'harden_cache_lease_bytea'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION harden.cache_lease(text) IS 'the jsonb value cached under a key, or on a miss a lease token for cache_set_leased';
COMMENT ON FUNCTION harden.cache_lease_text(text) IS 'the text value cached under a key, or on a miss a lease token for cache_set_leased';
COMMENT ON FUNCTION harden.cache_lease_bytea(text) IS 'the bytea value cached under a key, or on a miss a lease token for cache_set_leased';

CREATE FUNCTION harden.cache_set_leased(key text, value jsonb, lease bigint, ttl interval DEFAULT NULL,
                                        tags text[] DEFAULT '{}', secure boolean DEFAULT false,
                                        public boolean DEFAULT false) RETURNS boolean
    AS 'MODULE_PATHNAME', 'harden_cache_set_leased_jsonb'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
CREATE FUNCTION harden.cache_set_leased(key text, value text, lease bigint, ttl interval DEFAULT NULL,
                                        tags text[] DEFAULT '{}', secure boolean DEFAULT false,
                                        public boolean DEFAULT false) RETURNS boolean
    AS 'MODULE_PATHNAME', 'harden_cache_set_leased_text'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
CREATE FUNCTION harden.cache_set_leased(key text, value bytea, lease bigint, ttl interval DEFAULT NULL,
                                        tags text[] DEFAULT '{}', secure boolean DEFAULT false,
                                        public boolean DEFAULT false) RETURNS boolean
    AS 'MODULE_PATHNAME', 'harden_cache_set_leased_bytea'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION harden.cache_set_leased(text, jsonb, bigint, interval, text[], boolean, boolean) IS 'store a jsonb value with a lease: false if the lease expired or the key or its tags were invalidated since';
COMMENT ON FUNCTION harden.cache_set_leased(text, text, bigint, interval, text[], boolean, boolean) IS 'store a text value with a lease: false if the lease expired or the key or its tags were invalidated since';
COMMENT ON FUNCTION harden.cache_set_leased(text, bytea, bigint, interval, text[], boolean, boolean) IS 'store a bytea value with a lease: false if the lease expired or the key or its tags were invalidated since';

-- ---------------------------------------------------------------------------
-- cache: array forms of cache_delete and cache_invalidate_tag
-- ---------------------------------------------------------------------------

CREATE FUNCTION harden.cache_delete(keys text[]) RETURNS bigint
    AS 'MODULE_PATHNAME', 'harden_cache_delete_many'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION harden.cache_delete(text[]) IS 'delete the entries under several keys; returns how many existed';
CREATE FUNCTION harden.cache_invalidate_tag(tags text[]) RETURNS bigint
    AS 'MODULE_PATHNAME', 'harden_cache_invalidate_tags'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION harden.cache_invalidate_tag(text[]) IS 'delete the entries carrying any of several tags, among those the caller may modify';


-- ---------------------------------------------------------------------------
-- cache persistence: the dump file (docs/persistence.md)
-- ---------------------------------------------------------------------------

CREATE FUNCTION harden.cache_dump() RETURNS bigint
    AS 'MODULE_PATHNAME', 'harden_cache_dump'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION harden.cache_dump() IS 'write the non-secure cache entries of every database to the dump file now; the number written';
REVOKE ALL ON FUNCTION harden.cache_dump() FROM PUBLIC;

-- ---------------------------------------------------------------------------
-- cache warm-up: registered queries kept in the cache (docs/query-results.md)
-- ---------------------------------------------------------------------------

-- Kept by pg_dump.  Each role sees and changes only its own registrations
-- (row-level security); harden.cache_warm() and the worker run each query
-- as its role.
CREATE TABLE harden.cache_warm_queries (
    role pg_catalog.regrole NOT NULL DEFAULT pg_catalog.current_user()::pg_catalog.regrole,
    key text NOT NULL CHECK (pg_catalog.length(key) BETWEEN 1 AND 250),
    sql text NOT NULL,
    ttl interval,
    params text[] NOT NULL DEFAULT '{}',
    search_path text NOT NULL DEFAULT pg_catalog.current_setting('search_path'),
    registered_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (role, key)
);
COMMENT ON TABLE harden.cache_warm_queries IS 'queries the background worker keeps in the cache through cache_query(), each run as the role that registered it';
SELECT pg_catalog.pg_extension_config_dump('harden.cache_warm_queries', '');
ALTER TABLE harden.cache_warm_queries ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_registrations ON harden.cache_warm_queries
    USING (role OPERATOR(pg_catalog.=) pg_catalog.current_user()::pg_catalog.regrole)
    WITH CHECK (role OPERATOR(pg_catalog.=) pg_catalog.current_user()::pg_catalog.regrole);
GRANT SELECT, INSERT, UPDATE, DELETE ON harden.cache_warm_queries TO PUBLIC;

-- The last run of each query: written by pg_harden as the extension's owner.
CREATE TABLE harden.cache_warm_state (
    role oid NOT NULL,
    key text NOT NULL,
    last_run timestamptz NOT NULL,
    last_ok timestamptz,
    last_error text,
    failures bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (role, key)
);
COMMENT ON TABLE harden.cache_warm_state IS 'the last warm-up run of each registered query (see the view harden.cache_warm_status)';

CREATE VIEW harden.cache_warm_status AS
SELECT q.role, q.key, q.ttl, s.last_run, s.last_ok, s.last_error, coalesce(s.failures, 0) AS failures
  FROM harden.cache_warm_queries q
  LEFT JOIN harden.cache_warm_state s
    ON s.role OPERATOR(pg_catalog.=) q.role::pg_catalog.oid AND s.key OPERATOR(pg_catalog.=) q.key;
COMMENT ON VIEW harden.cache_warm_status IS 'registered warm-up queries the caller may see, with their last run and last error';
GRANT SELECT ON harden.cache_warm_status TO PUBLIC;
-- The view reads the registrations with the caller's row-level security.
ALTER VIEW harden.cache_warm_status SET (security_invoker = true);
GRANT SELECT ON harden.cache_warm_state TO PUBLIC;
ALTER TABLE harden.cache_warm_state ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_state ON harden.cache_warm_state FOR SELECT
    USING (role OPERATOR(pg_catalog.=) pg_catalog.current_user()::pg_catalog.regrole::pg_catalog.oid);

CREATE FUNCTION harden.cache_warm_register(key text, sql text, ttl interval DEFAULT NULL,
                                           VARIADIC params text[] DEFAULT '{}') RETURNS void
    LANGUAGE plpgsql VOLATILE
    -- No SET search_path: the caller's is recorded (part of the fingerprint).
    AS $$
BEGIN
    IF cache_warm_register.key IS NULL OR cache_warm_register.sql IS NULL
       OR cache_warm_register.params IS NULL THEN
        RAISE EXCEPTION 'the key, sql and params of a warm-up query must not be NULL'
            USING ERRCODE = '22004';
    END IF;
    PERFORM harden.cache_exists(cache_warm_register.key);  -- PH101 for an invalid key
    INSERT INTO harden.cache_warm_queries AS q (key, sql, ttl, params, search_path)
    VALUES (cache_warm_register.key, cache_warm_register.sql, cache_warm_register.ttl,
            cache_warm_register.params, pg_catalog.current_setting('search_path'))
    ON CONFLICT ON CONSTRAINT cache_warm_queries_pkey DO UPDATE
       SET sql = excluded.sql, ttl = excluded.ttl, params = excluded.params,
           search_path = excluded.search_path, registered_at = excluded.registered_at;
END $$;
COMMENT ON FUNCTION harden.cache_warm_register(text, text, interval, text[]) IS 'keep a query warm: the worker runs cache_query(key, sql, ttl, VARIADIC params) as the current role after start and whenever the entry is missing';

CREATE FUNCTION harden.cache_warm_unregister(key text) RETURNS boolean
    LANGUAGE sql VOLATILE
    BEGIN ATOMIC
        WITH d AS (DELETE FROM harden.cache_warm_queries q
                    WHERE q.role OPERATOR(pg_catalog.=) pg_catalog.current_user()::pg_catalog.regrole
                      AND q.key OPERATOR(pg_catalog.=) cache_warm_unregister.key RETURNING 1)
        SELECT pg_catalog.count(*) OPERATOR(pg_catalog.>) 0 FROM d;
    END;
COMMENT ON FUNCTION harden.cache_warm_unregister(text) IS 'stop keeping the current role''s query of this key warm; whether one was registered';

CREATE FUNCTION harden.cache_warm(missing_only boolean DEFAULT false) RETURNS bigint
    AS 'MODULE_PATHNAME', 'harden_cache_warm'
    LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
COMMENT ON FUNCTION harden.cache_warm(boolean) IS 'run every registered warm-up query of this database now (missing_only: those whose entry is not cached), each as its role; the number run';
REVOKE ALL ON FUNCTION harden.cache_warm(boolean) FROM PUBLIC;
