-- Query analysis, second round: advice that contradicted other advice,
-- fixes that made things worse, scans counted from maintenance, coverage
-- that was not real, query_check() patterns that got nothing specific, and
-- SQL that broke on an odd name.  Each block is a trap some tool falls in.
SET client_min_messages = warning;
SET harden.analyze_min_rows = 1000;
SET harden.health_min_size = 0;

-- ---- a drop proposal says what the index is still needed for ----
CREATE TABLE adv_parent (id int PRIMARY KEY);
INSERT INTO adv_parent SELECT generate_series(1, 100);
CREATE TABLE adv_child (id int PRIMARY KEY, parent_id int REFERENCES adv_parent,
                        other_id int REFERENCES adv_parent, k int);
INSERT INTO adv_child SELECT i, 1 + i % 100, 1 + i % 50, i % 7 FROM generate_series(1, 300) AS i;
CREATE INDEX adv_child_parent ON adv_child (parent_id);     -- the only one for a key: keep
CREATE INDEX adv_child_other1 ON adv_child (other_id);      -- two unused ones serve a key: keep one
CREATE INDEX adv_child_other2 ON adv_child (other_id, k);
CREATE INDEX adv_child_k ON adv_child (k);                  -- CLUSTER uses it: review
CLUSTER adv_child USING adv_child_k;
CREATE INDEX adv_child_id_k ON adv_child (id, k);           -- needed for nothing: drop
ANALYZE adv_child;
SELECT index, verdict, needed_for, drop_sql FROM harden.unused_indexes
 WHERE "table" = 'adv_child'::regclass ORDER BY index::text;
-- missing_fk_indexes does not ask for what unused_indexes said to keep
SELECT count(*) AS missing FROM harden.missing_fk_indexes WHERE "table" = 'adv_child'::regclass;
-- a used index serving the key makes the unused one free to go
SET enable_seqscan = off;
SET enable_bitmapscan = off;
SELECT count(*) FROM adv_child WHERE other_id = 3 AND k = 1;
RESET enable_seqscan;
RESET enable_bitmapscan;
SELECT pg_stat_force_next_flush();
SELECT pg_stat_clear_snapshot();
SELECT index, verdict, needed_for FROM harden.unused_indexes
 WHERE index IN ('adv_child_other1'::regclass, 'adv_child_other2'::regclass) ORDER BY index::text;
SELECT "check", severity, object, detail, suggestion FROM harden.health_report()
 WHERE "check" = 'unused_index' AND object LIKE 'public.adv\_child%' ORDER BY object;
-- of two interchangeable indexes, the one CLUSTER uses is not the one to
-- drop; a clustered duplicate says where to move the clustering first
CREATE INDEX adv_child_k_new ON adv_child (k);
CLUSTER adv_child USING adv_child_k_new;
SELECT index, covered_by, verdict, needed_for FROM harden.duplicate_indexes
 WHERE "table" = 'adv_child'::regclass ORDER BY index::text;
CREATE INDEX adv_child_k_id ON adv_child (k, id);
SELECT index, covered_by, verdict, needed_for FROM harden.duplicate_indexes
 WHERE "table" = 'adv_child'::regclass ORDER BY index::text;

-- ---- coverage that is not real, and coverage that is ----
-- an index in another collation than the lookups compare with does not
-- serve a foreign key; a hash index does
CREATE TABLE adv_tparent (code text PRIMARY KEY);
CREATE TABLE adv_coll (id int, code text REFERENCES adv_tparent);
CREATE INDEX ON adv_coll (code COLLATE "POSIX");
CREATE TABLE adv_hash (id int, code text REFERENCES adv_tparent);
CREATE INDEX ON adv_hash USING hash (code);
CREATE TABLE adv_pattern (id int, code text REFERENCES adv_tparent);
CREATE INDEX ON adv_pattern (code text_pattern_ops);
-- a referenced column in another collation: the index must have that one
CREATE TABLE adv_pparent (code text COLLATE "POSIX" PRIMARY KEY);
CREATE TABLE adv_pchild (id int, code text REFERENCES adv_pparent);
CREATE INDEX ON adv_pchild (code);
SELECT "table", constraint_name, create_sql FROM harden.missing_fk_indexes
 WHERE "table"::text LIKE 'adv\_%' ORDER BY "table"::text;
SELECT t AS "table", (SELECT count(*) FROM pg_constraint k, unnest(harden._fk_indexes(k.oid))
                       WHERE k.conrelid = t AND k.contype = 'f') AS serving
  FROM unnest('{adv_coll,adv_hash,adv_pattern,adv_pchild}'::regclass[]) AS t ORDER BY t::text;
-- the index it asks for serves the key: the create_sql is right
CREATE INDEX ON adv_pchild (code COLLATE "POSIX");
SELECT count(*) AS still_missing FROM harden.missing_fk_indexes WHERE "table" = 'adv_pchild'::regclass;
-- not a foreign key, not a relation: nothing, no error
SELECT harden._fk_indexes(0), harden._fk_indexes((SELECT oid FROM pg_constraint
                                                  WHERE conrelid = 'adv_parent'::regclass AND contype = 'p'));

-- a second UNIQUE index identical to a UNIQUE constraint's; (a) and (a DESC)
CREATE TABLE adv_uq (a int UNIQUE, b int, c int, d int);
CREATE UNIQUE INDEX adv_uq_a2 ON adv_uq (a);                 -- reported: the constraint enforces it
CREATE UNIQUE INDEX adv_uq_a_nnd ON adv_uq (a) NULLS NOT DISTINCT;   -- stricter: kept
CREATE UNIQUE INDEX adv_uq_ab ON adv_uq (a, b);              -- implied, not the same keys: kept
CREATE INDEX adv_uq_b ON adv_uq (b);
CREATE INDEX adv_uq_b_desc ON adv_uq (b DESC);               -- the same lookups and orders
CREATE INDEX adv_uq_cd ON adv_uq (c, d DESC);
CREATE INDEX adv_uq_cd_rev ON adv_uq (c DESC, d);            -- all reversed: the same
CREATE INDEX adv_uq_cd_half ON adv_uq (c DESC, d DESC);      -- half reversed: another order
CREATE INDEX adv_uq_c_nf ON adv_uq (c NULLS FIRST);          -- NULLs elsewhere: another order
SELECT index, covered_by, kind FROM harden.duplicate_indexes
 WHERE "table" = 'adv_uq'::regclass ORDER BY index::text;

-- ---- a failed CREATE UNIQUE INDEX CONCURRENTLY ----
CREATE TABLE adv_inv (id int, k int, note text);
INSERT INTO adv_inv VALUES (1, 1, 'a'), (2, 1, 'b'), (3, NULL, 'c'), (4, NULL, 'd'), (5, 2, 'e');
CREATE UNIQUE INDEX CONCURRENTLY adv_inv_k ON adv_inv (k);
-- a non-unique one that failed (on a division by zero)
CREATE INDEX CONCURRENTLY adv_inv_expr ON adv_inv ((1 / (id - 3)));
SELECT index, is_unique, ready, fix_sql, duplicates_sql, recreate_sql FROM harden.invalid_indexes
 WHERE "table" = 'adv_inv'::regclass ORDER BY index::text;
-- the suggested query finds the rows that break it (NULLs do not)
DO $$
DECLARE
  r record;
BEGIN
  FOR r IN EXECUTE (SELECT duplicates_sql FROM harden.invalid_indexes WHERE index = 'adv_inv_k'::regclass) LOOP
    RAISE WARNING 'duplicate %', r;
  END LOOP;
END $$;
SELECT "check", detail, suggestion FROM harden.health_report()
 WHERE "check" = 'invalid_index' AND object LIKE 'public.adv\_inv%' ORDER BY object;
-- the fix works: drop, remove the duplicates, recreate
DO $$
DECLARE
  v record;
BEGIN
  SELECT * INTO v FROM harden.invalid_indexes WHERE index = 'adv_inv_k'::regclass;
  EXECUTE replace(v.fix_sql, 'CONCURRENTLY ', '');
  DELETE FROM adv_inv WHERE id = 2;
  EXECUTE replace(v.recreate_sql, 'CONCURRENTLY ', '');
END $$;
SELECT indisvalid FROM pg_index WHERE indexrelid = 'adv_inv_k'::regclass;

-- ---- sequential scans made by CREATE INDEX and foreign-key checks ----
CREATE TABLE adv_quiet (id int, parent_id int, x int);
INSERT INTO adv_quiet SELECT i, 1 + i % 100, i FROM generate_series(1, 5000) AS i;
CREATE INDEX ON adv_quiet (x);
CREATE INDEX ON adv_quiet (parent_id);
ALTER TABLE adv_quiet ADD FOREIGN KEY (parent_id) REFERENCES adv_parent;
ANALYZE adv_quiet;
-- and one a query reads in full, under a name that is hard on regular expressions
CREATE TABLE "odd(name" (id int, x int);
INSERT INTO "odd(name" SELECT i, i FROM generate_series(1, 5000) AS i;
CREATE INDEX ON "odd(name" (id);
ANALYZE "odd(name";
SELECT count(*) FROM "odd(name" WHERE x = 7;
SELECT count(*) FROM "odd(name" WHERE x = 8;
SELECT pg_stat_force_next_flush();
SELECT pg_stat_clear_snapshot();
SELECT "table", seq_scan, maintenance_scans, query_seq_scans, query_rows_per_scan
  FROM harden.seq_scan_tables WHERE "table" IN ('adv_quiet'::regclass, '"odd(name"'::regclass) ORDER BY "table"::text;
SELECT "check", object, detail FROM harden.health_report()
 WHERE "check" = 'seq_scan' AND object IN ('public.adv_quiet', 'public."odd(name"');
-- the suggested statement runs, and finds the statements that name the table
CREATE TEMP TABLE adv_statements (queryid bigint, query text);
INSERT INTO adv_statements VALUES (1, 'SELECT count(*) FROM "odd(name" WHERE x = $1'),
    (2, 'SELECT * FROM "odd(name2"'), (3, 'SELECT * FROM odd');
DO $$
DECLARE
  r record;
BEGIN
  FOR r IN EXECUTE replace((SELECT suggestion FROM harden.health_report()
                             WHERE "check" = 'seq_scan' AND object = 'public."odd(name"'),
                           'harden.slow_queries', 'pg_temp.adv_statements') LOOP
    RAISE WARNING 'statement %: %', r.queryid, r.query;
  END LOOP;
END $$;

-- ---- query_check(): patterns ----
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE TABLE adv_product (id int PRIMARY KEY, name text, code text);
INSERT INTO adv_product SELECT i, 'product ' || i, 'c' || i FROM generate_series(1, 5000) AS i;
CREATE TABLE adv_term (id int, pat text);
INSERT INTO adv_term SELECT i, 'x' || i FROM generate_series(1, 50) AS i;
ANALYZE adv_product, adv_term;
SELECT q, severity, message, suggestion
  FROM unnest(ARRAY[
    $q$SELECT id FROM adv_product WHERE lower(name) LIKE '%duct 1%'$q$,
    $q$SELECT id FROM adv_product WHERE lower(name) LIKE 'product 1%'$q$,
    $q$SELECT id FROM adv_product WHERE upper(name) ILIKE '%DUCT%'$q$,
    $q$SELECT id FROM adv_product WHERE name LIKE '%'$q$,
    $q$SELECT id FROM adv_product WHERE name LIKE '%%'$q$,
    $q$SELECT id FROM adv_product WHERE name LIKE ANY (ARRAY['%a%', 'b%'])$q$,
    $q$SELECT id FROM adv_product WHERE name ILIKE ANY ($1)$q$,
    $q$SELECT id FROM adv_product WHERE name ~ 'duct [0-9]+'$q$,
    $q$SELECT id FROM adv_product WHERE name ~* 'DUCT'$q$,
    $q$SELECT id FROM adv_product WHERE name ~ '^prod'$q$,
    $q$SELECT id FROM adv_product WHERE name SIMILAR TO '%(1|2)'$q$,
    $q$SELECT id FROM adv_product WHERE name LIKE (SELECT max(pat) FROM adv_term)$q$,
    $q$SELECT x.id FROM adv_term t, LATERAL (SELECT id FROM adv_product p WHERE p.name LIKE '%' || t.pat OFFSET 0) x$q$,
    $q$SELECT id FROM adv_product WHERE name LIKE code || '%'$q$]) AS q,
       LATERAL harden.query_check(q)
 WHERE node = 'Seq Scan' ORDER BY q;
-- with the indexes advised, nothing is left to say about the patterns
CREATE INDEX ON adv_product USING gin (lower(name) gin_trgm_ops);
CREATE INDEX ON adv_product ((lower(name)) text_pattern_ops);
CREATE INDEX ON adv_product USING gin (name gin_trgm_ops);
ANALYZE adv_product;
SELECT q, count(c.node) AS advice
  FROM unnest(ARRAY[
    $q$SELECT id FROM adv_product WHERE lower(name) LIKE '%duct 1%'$q$,
    $q$SELECT id FROM adv_product WHERE lower(name) LIKE 'product 1%'$q$,
    $q$SELECT id FROM adv_product WHERE name ~ 'duct [0-9]+'$q$,
    $q$SELECT id FROM adv_product WHERE name LIKE ANY (ARRAY['%a%', 'b%'])$q$]) AS q
  LEFT JOIN LATERAL harden.query_check(q) c ON c.node = 'Seq Scan'
 GROUP BY q ORDER BY q;
-- the index creation advice keeps writes going on a plain table
SELECT suggestion FROM harden.query_check('SELECT * FROM adv_quiet WHERE id = 5');
CREATE TABLE adv_part (id int, v int) PARTITION BY RANGE (id);
CREATE TABLE adv_part_1 PARTITION OF adv_part FOR VALUES FROM (0) TO (10000);
INSERT INTO adv_part SELECT i, i FROM generate_series(1, 5000) AS i;
ANALYZE adv_part;
SELECT suggestion FROM harden.query_check('SELECT * FROM adv_part WHERE v = 5');

-- ---- index proposals tried as hypothetical indexes (hypopg) ----
-- without hypopg every proposal says it is unverified (above); with it,
-- one that lowers the plan cost says by how much, one that does not is
-- withdrawn, and one hypopg cannot simulate (gin) stays unverified
CREATE EXTENSION hypopg;
CREATE TABLE adv_hypo (id int, v int, parent_id int REFERENCES adv_parent, name text, w int);
INSERT INTO adv_hypo SELECT i, i, 1 + i % 100, 'n' || i, (i * 7919) % 20000 FROM generate_series(1, 20000) AS i;
ANALYZE adv_hypo;
SELECT message, suggestion FROM harden.query_check('SELECT * FROM adv_hypo WHERE v = 5');
SELECT message, suggestion FROM harden.query_check('SELECT * FROM adv_hypo WHERE id = $1 AND v > 10');
-- a fifth of the rows, all over the table, on storage where a random read
-- costs 100 sequential ones: the index costs more than reading the table
SET random_page_cost = 100;
SELECT message, suggestion FROM harden.query_check('SELECT * FROM adv_hypo WHERE w < 3900');
RESET random_page_cost;
SELECT message, suggestion FROM harden.query_check($$SELECT * FROM adv_hypo WHERE name LIKE '%5%'$$);
SELECT "check", detail, suggestion FROM harden.health_report()
 WHERE "check" = 'missing_fk_index' AND object = 'public.adv_hypo';
SELECT cost_before > cost_after AS lower, unverified
  FROM harden._hypo_cost('SELECT * FROM adv_hypo WHERE v = $1', 'CREATE INDEX ON adv_hypo (v)');
SELECT cost_before, cost_after, unverified
  FROM harden._hypo_cost('SELECT * FROM adv_missing', 'CREATE INDEX ON adv_hypo (v)');
SELECT cost_before, cost_after, unverified
  FROM harden._hypo_cost('SELECT 1; SELECT 2', 'CREATE INDEX ON adv_hypo (v)');
SELECT cost_before, cost_after, unverified
  FROM harden._hypo_cost('SELECT * FROM adv_hypo', 'DROP TABLE adv_hypo');
SELECT cost_before, cost_after, unverified
  FROM harden._hypo_cost('SELECT * FROM adv_hypo', 'CREATE INDEX ON adv_hypo USING gin (name gin_trgm_ops)');
-- nothing is left behind: no hypothetical index, no prepared statement
SELECT count(*) AS hypothetical FROM hypopg_list_indexes;
SELECT count(*) AS prepared FROM pg_prepared_statements;
SELECT count(*) AS adv_hypo_rows FROM adv_hypo;
DROP EXTENSION hypopg;

-- ---- sessions idle in transaction: see test/specs/analyze_advice.spec ----
