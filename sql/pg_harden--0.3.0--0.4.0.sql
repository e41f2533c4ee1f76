-- pg_harden 0.3.0 -> 0.4.0
\echo Use "ALTER EXTENSION pg_harden UPDATE TO '0.4.0'" to load this file. \quit

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
WITH leaf AS (
    SELECT CASE WHEN ic.relispartition THEN pg_catalog.pg_partition_root(s.indexrelid)
                ELSE s.indexrelid END AS indexrelid,
           s.idx_scan
      FROM pg_catalog.pg_stat_all_indexes s
      JOIN pg_catalog.pg_class ic ON ic.oid = s.indexrelid
), per_index AS (
    SELECT indexrelid, pg_catalog.sum(idx_scan)::bigint AS idx_scan
      FROM leaf GROUP BY indexrelid
), db AS (
    SELECT d.stats_reset FROM pg_catalog.pg_stat_database d
     WHERE d.datname = pg_catalog.current_database()
), unused AS (
    -- never one that enforces something (unique, primary key, exclusion,
    -- any constraint), the replica identity, or an invalid one
    SELECT p.indexrelid, p.idx_scan, i.indrelid, i.indexprs, i.indisclustered, c.relkind
      FROM per_index p
      JOIN pg_catalog.pg_index i ON i.indexrelid = p.indexrelid
      JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
      JOIN harden._relations r ON r.relid = i.indrelid
     WHERE p.idx_scan = 0
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
      FROM unused u
      JOIN pg_catalog.pg_constraint k ON k.conrelid = u.indrelid AND k.contype = 'f'
     CROSS JOIN LATERAL (SELECT harden._fk_indexes(k.oid) AS served_by) f
     WHERE u.indexrelid = ANY (f.served_by)
       AND NOT EXISTS (SELECT FROM pg_catalog.unnest(f.served_by) AS x
                        WHERE x <> u.indexrelid AND x NOT IN (SELECT indexrelid FROM unused))
), needs AS (
    SELECT u.*,
           ARRAY(SELECT pg_catalog.format('lookups of foreign key %I%s', fk.conname,
                                          CASE WHEN pg_catalog.cardinality(fk.others) = 0 THEN ' (the only index serving it)'
                                               ELSE pg_catalog.format(' (also served by %s, unused too: keep one)',
                                                    (SELECT pg_catalog.string_agg(o::pg_catalog.regclass::text, ', ')
                                                       FROM pg_catalog.unnest(fk.others) AS o)) END)
                   FROM fk WHERE fk.indexrelid = u.indexrelid ORDER BY fk.conname) AS fk_needs,
           EXISTS (SELECT FROM fk WHERE fk.indexrelid = u.indexrelid
                      AND pg_catalog.cardinality(fk.others) = 0) AS only_fk_index,
           harden._main_bytes(u.indexrelid) AS bytes
      FROM unused u
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
           -- every column's order reversed: a btree read backwards
           ARRAY(SELECT o # 3::int2 FROM pg_catalog.unnest((i.indoption)[0:i.indnkeyatts - 1])
                   WITH ORDINALITY AS u(o, n) ORDER BY u.n) AS reversed,
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
            OR (d.relam = (SELECT oid FROM pg_catalog.pg_am WHERE amname = 'btree')
                AND k.options[1:d.indnkeyatts] = d.reversed))
       AND d.include <@ (k.keys || k.include)
       AND ((d.indexprs IS NULL AND d.indpred IS NULL AND k.indpred IS NULL)
            OR harden._index_same_expr(d.indexrelid, k.indexrelid))
       -- operator-class options (a trigram index's signature length, say)
       AND NOT EXISTS (SELECT FROM pg_catalog.pg_attribute ad
                         JOIN pg_catalog.pg_attribute ak ON ak.attrelid = k.indexrelid AND ak.attnum = ad.attnum
                        WHERE ad.attrelid = d.indexrelid AND ad.attnum <= d.indnkeyatts
                          AND ad.attoptions IS DISTINCT FROM ak.attoptions)
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
), scans AS (
    SELECT s.relid, greatest(r.reltuples, 0) AS reltuples, s.seq_scan, s.seq_tup_read, s.idx_scan,
           least(coalesce(idx.n, 0) + coalesce(fks.n, 0), s.seq_scan) AS maintenance
      FROM pg_catalog.pg_stat_all_tables s
      JOIN harden._relations r ON r.relid = s.relid
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
      FROM harden.vacuum_health v, settings s
     WHERE v.vacuum_due AND v.live_tuples + v.dead_tuples >= s.min_rows
    UNION ALL
    SELECT 'xid_age', CASE WHEN v.xid_age >= 1500000000 THEN 'critical' ELSE 'warning' END,
           harden._qualified(v."table"),
           pg_catalog.format('transaction ID age %s (wraparound at 2147483647)', v.xid_age),
           pg_catalog.format('VACUUM (FREEZE) %s;', harden._qualified(v."table"))
      FROM harden.vacuum_health v, settings s WHERE v.xid_age >= s.xid_age
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
