-- Query analysis: query_check() on crafted plans, the index views with the
-- false positives other tools are known for, sizes, bloat, vacuum, locks,
-- health_report() and its metrics.
SET client_min_messages = warning;
-- "Large" is 1000 rows here so the tables stay small and the test fast.
SET harden.analyze_min_rows = 1000;

CREATE TABLE qc_product (id int PRIMARY KEY, code text, name text, descr varchar(200),
                         flag boolean, payload text);
INSERT INTO qc_product
SELECT i, 'c' || i, 'product ' || i, 'descr ' || i, true, repeat('x', 40) || i
  FROM generate_series(1, 5000) AS i;
CREATE INDEX qc_product_code ON qc_product (code);
CREATE INDEX qc_product_flag ON qc_product (flag);
CREATE TABLE qc_small (id int PRIMARY KEY, name text);
INSERT INTO qc_small SELECT i, 'small ' || i FROM generate_series(1, 50) AS i;
CREATE TABLE qc_order (id int PRIMARY KEY, customer text, product_id int REFERENCES qc_product,
                       note text);
INSERT INTO qc_order SELECT i, 'cust ' || (i % 300), 1 + i % 5000, 'n' || (i % 7)
  FROM generate_series(1, 5000) AS i;
ANALYZE qc_product, qc_small, qc_order;

-- ---- input errors ----
SELECT * FROM harden.query_check(NULL);
SELECT * FROM harden.query_check('SELEC 1');
SELECT * FROM harden.query_check('SELECT * FROM qc_missing');
SELECT * FROM harden.query_check('');
SELECT * FROM harden.query_check('SELECT 1; SELECT 2');
SELECT * FROM harden.query_check('VACUUM qc_product');
SELECT * FROM harden.query_check('CREATE TABLE qc_x (a int)');
SELECT * FROM harden.query_check('EXPLAIN SELECT 1');
SELECT * FROM harden.query_check('SELECT * INTO qc_x FROM qc_small');
SELECT * FROM harden.query_check('SELECT 1 FROM qc_small WHERE id = $2');
SELECT * FROM harden.query_check('SELECT * FROM qc_small WHERE id = $1 AND name = $1');
-- the SQLSTATEs
CREATE FUNCTION pg_temp.sqlstate(sql text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE sql;
  RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
  RETURN SQLSTATE;
END $$;
SELECT q, pg_temp.sqlstate(format('SELECT * FROM harden.query_check(%L)', q)) AS sqlstate
  FROM unnest(ARRAY['', 'SELECT 1; SELECT 2', 'VACUUM', 'SELECT 1 INTO qc_x', 'PREPARE p AS SELECT 1',
                    'EXPLAIN SELECT 1', 'COPY qc_small TO STDOUT', 'SELEC 1', 'SELECT * FROM qc_missing']) AS q;
SELECT pg_temp.sqlstate('SELECT * FROM harden.query_check(NULL)') AS null_sql;
-- A role without SELECT cannot learn about the plan (as with EXPLAIN).
CREATE ROLE pgh_analyze_nobody;
GRANT USAGE ON SCHEMA harden TO pgh_analyze_nobody;
SET ROLE pgh_analyze_nobody;
SELECT * FROM harden.query_check('SELECT * FROM qc_product WHERE payload = ''x''');
RESET ROLE;

-- ---- never runs the statement ----
SELECT count(*) AS advice FROM harden.query_check('DELETE FROM qc_order WHERE note = ''n1''');
SELECT count(*) AS advice FROM harden.query_check('UPDATE qc_order SET note = ''changed'' WHERE customer = $1');
SELECT count(*) AS advice FROM harden.query_check('INSERT INTO qc_small VALUES (1000, ''new'')');
SELECT count(*) AS orders, count(*) FILTER (WHERE note = 'changed') AS changed FROM qc_order;
SELECT count(*) AS small FROM qc_small;

-- ---- nothing to say ----
SELECT * FROM harden.query_check('SELECT 1');
SELECT * FROM harden.query_check('SELECT * FROM qc_product WHERE id = 42');
SELECT * FROM harden.query_check('SELECT * FROM qc_small WHERE name = ''small 1''');
SELECT * FROM harden.query_check('SELECT * FROM qc_product');
SELECT * FROM harden.query_check('SELECT * FROM generate_series(1, 10) g, (VALUES (1)) v(x) WHERE g > x');

-- ---- LIKE / ILIKE before pg_trgm is installed ----
SELECT severity, node, relation, message, suggestion
  FROM harden.query_check('SELECT id FROM qc_product WHERE name LIKE ''%duct 1%''');

CREATE EXTENSION pg_trgm;
-- leading wildcard, LIKE and ILIKE; a varchar column; a pattern parameter
SELECT severity, relation, message, suggestion
  FROM harden.query_check('SELECT id FROM qc_product WHERE name LIKE ''%duct 1%''');
SELECT severity, relation, message, suggestion
  FROM harden.query_check('SELECT id FROM qc_product WHERE name ILIKE ''_roduct 1%''');
SELECT severity, relation, message, suggestion
  FROM harden.query_check('SELECT id FROM qc_product WHERE descr ILIKE ''%scr 4%''');
SELECT severity, relation, message, suggestion
  FROM harden.query_check('SELECT id FROM qc_product WHERE name ILIKE $1');
SELECT severity, relation, message, suggestion
  FROM harden.query_check($$SELECT id FROM qc_product WHERE name ILIKE '%' || $1 || '%'$$);
-- a pattern taken from the row itself is no advice about an index; one
-- from another table's rows is (a trigram index serves each)
SELECT * FROM harden.query_check('SELECT id FROM qc_product WHERE name LIKE code || ''%''');
SELECT severity, node, relation, message
  FROM harden.query_check($$SELECT x.id FROM qc_small s,
                            LATERAL (SELECT id FROM qc_product p WHERE p.payload LIKE '%' || s.name OFFSET 0) x$$);
-- left-anchored: a btree that compares bytes serves LIKE, not ILIKE
SELECT severity, relation, message, suggestion
  FROM harden.query_check('SELECT id FROM qc_product WHERE name LIKE ''product 1%''');
SELECT severity, relation, message, suggestion
  FROM harden.query_check('SELECT id FROM qc_product WHERE name ILIKE ''product 1%''');
-- code has a btree and the database collation is C: usable for a prefix
SELECT * FROM harden.query_check('SELECT id FROM qc_product WHERE code LIKE ''c1%''');
-- on a small table the advice is info only
SELECT severity, relation, message
  FROM harden.query_check('SELECT id FROM qc_small WHERE name LIKE ''%all 1''');
-- with the indexes the advice names, nothing is left to say
CREATE INDEX qc_product_name_trgm ON qc_product USING gin (name gin_trgm_ops);
CREATE INDEX qc_product_descr_trgm ON qc_product USING gist (descr gist_trgm_ops);
CREATE INDEX qc_product_name_pattern ON qc_product (name text_pattern_ops);
ANALYZE qc_product;
SELECT * FROM harden.query_check('SELECT id FROM qc_product WHERE name LIKE ''%duct 1%''');
SELECT * FROM harden.query_check('SELECT id FROM qc_product WHERE name ILIKE $1');
SELECT * FROM harden.query_check('SELECT id FROM qc_product WHERE descr ILIKE ''%scr 4%''');
SELECT * FROM harden.query_check('SELECT id FROM qc_product WHERE name LIKE ''product 1%''');
-- an index the planner passes over (too short a pattern) is still an index
SET enable_bitmapscan = off;
SET enable_indexscan = off;
SELECT * FROM harden.query_check('SELECT id FROM qc_product WHERE name ILIKE ''%1%''');
RESET enable_bitmapscan;
RESET enable_indexscan;

-- ---- sequential scans with a filter ----
SELECT severity, relation, message, suggestion
  FROM harden.query_check('SELECT * FROM qc_order WHERE customer = ''cust 7'' AND id > 10');
SELECT severity, relation, message, suggestion
  FROM harden.query_check('SELECT * FROM qc_order WHERE customer = $1 AND note = ANY ($2)');
-- a filter that keeps most rows is best read by a seq scan
SELECT * FROM harden.query_check('SELECT * FROM qc_product WHERE flag = true');
SELECT * FROM harden.query_check('SELECT * FROM qc_order WHERE note <> ''n1''');
-- an index exists and the planner passes it over: no index to propose
SET enable_indexscan = off;
SET enable_bitmapscan = off;
SELECT severity, relation, message, suggestion
  FROM harden.query_check('SELECT * FROM qc_product WHERE code = ''c1''');
RESET enable_indexscan;
RESET enable_bitmapscan;
SELECT severity, relation, message, suggestion
  FROM harden.query_check('SELECT * FROM qc_order WHERE length(note) > 3');

-- ---- sorts and hashes past work_mem ----
SET work_mem = '64kB';
SELECT severity, node, message, suggestion
  FROM harden.query_check('SELECT * FROM qc_product ORDER BY payload');
-- a top-N sort keeps only its bound
SELECT * FROM harden.query_check('SELECT * FROM qc_product ORDER BY payload LIMIT 10');
SELECT severity, node, message, suggestion
  FROM harden.query_check('SELECT * FROM qc_product ORDER BY payload LIMIT 100000');
SET enable_sort = off;
SELECT severity, node, message, suggestion
  FROM harden.query_check('SELECT payload, count(*) FROM qc_product GROUP BY payload');
RESET enable_sort;
SET enable_mergejoin = off;
SET enable_nestloop = off;
SELECT severity, node, message, suggestion
  FROM harden.query_check('SELECT * FROM qc_product p JOIN qc_order o ON o.note = p.name');
RESET enable_mergejoin;
RESET enable_nestloop;
RESET work_mem;
SELECT * FROM harden.query_check('SELECT * FROM qc_product ORDER BY payload');

-- ---- nested loops over large unindexed inner relations ----
SET enable_hashjoin = off;
SET enable_mergejoin = off;
SELECT severity, node, relation, message, suggestion
  FROM harden.query_check('SELECT * FROM qc_product p JOIN qc_order o ON o.customer = p.payload');
-- an indexed inner side is fine
SELECT * FROM harden.query_check('SELECT * FROM qc_order o JOIN qc_product p ON p.id = o.id WHERE o.id < 5');
RESET enable_hashjoin;
RESET enable_mergejoin;

-- ---- joins along a foreign key without an index ----
SELECT severity, node, relation, message, suggestion
  FROM harden.query_check('SELECT * FROM qc_product p JOIN qc_order o ON o.product_id = p.id');
SET enable_hashjoin = off;
SELECT severity, node, relation, message, suggestion
  FROM harden.query_check('SELECT * FROM qc_product p JOIN qc_order o ON o.product_id = p.id WHERE p.id < 3');
RESET enable_hashjoin;
CREATE INDEX qc_order_product ON qc_order (product_id);
ANALYZE qc_order;
SELECT * FROM harden.query_check('SELECT * FROM qc_product p JOIN qc_order o ON o.product_id = p.id');

-- ---- subplans, CTEs, unions, views, rules, partitions, DML ----
SELECT severity, node, relation, message
  FROM harden.query_check($$
    WITH c AS MATERIALIZED (SELECT * FROM qc_order WHERE customer = 'cust 1')
    SELECT (SELECT count(*) FROM qc_product WHERE payload = 'x'),
           EXISTS (SELECT 1 FROM qc_order o2 WHERE o2.note = c.note)
      FROM c
    UNION ALL
    SELECT 1, false FROM qc_product WHERE name ILIKE '%z'$$);
CREATE VIEW qc_order_view AS SELECT * FROM qc_order WHERE customer LIKE 'cust%';
SELECT severity, node, relation, message
  FROM harden.query_check('SELECT * FROM qc_order_view WHERE note = ''n1''');
CREATE TABLE qc_ruled (id int);
CREATE RULE qc_ruled_nothing AS ON INSERT TO qc_ruled DO INSTEAD NOTHING;
SELECT * FROM harden.query_check('INSERT INTO qc_ruled VALUES (1)');
CREATE TABLE qc_part (id int, name text) PARTITION BY RANGE (id);
CREATE TABLE qc_part_1 PARTITION OF qc_part FOR VALUES FROM (0) TO (3000);
CREATE TABLE qc_part_2 PARTITION OF qc_part FOR VALUES FROM (3000) TO (6000);
INSERT INTO qc_part SELECT i, 'part ' || i FROM generate_series(1, 5999) AS i;
ANALYZE qc_part;
-- one piece of advice for the partitioned table, not one per partition
SELECT severity, node, relation, message, suggestion
  FROM harden.query_check('SELECT * FROM qc_part WHERE name LIKE ''%rt 12%''');
SELECT severity, node, relation, message, suggestion
  FROM harden.query_check('SELECT * FROM qc_part WHERE name = ''part 12''');
SELECT severity, node, relation, message, suggestion
  FROM harden.query_check($$MERGE INTO qc_small s USING qc_order o ON s.name = o.customer
                             WHEN MATCHED THEN UPDATE SET name = o.note$$);
SELECT severity, node, relation, message
  FROM harden.query_check('DELETE FROM qc_order WHERE note = $1 RETURNING id');

-- ---- the index views ----
CREATE TABLE ix (id int PRIMARY KEY, a int, b int, c int, t text, r int4range,
                 EXCLUDE USING gist (r WITH &&));
INSERT INTO ix SELECT i, i % 10, i % 7, i, 't' || i, int4range(i, i + 1) FROM generate_series(1, 100) AS i;
CREATE INDEX ix_a ON ix (a);                      -- prefix of ix_a_b
CREATE INDEX ix_a_b ON ix (a, b);
CREATE INDEX ix_b1 ON ix (b);                     -- exact pair: the newer one is reported
CREATE INDEX ix_b2 ON ix (b);
CREATE UNIQUE INDEX ix_c_unique ON ix (c);        -- never the one to drop
CREATE INDEX ix_c ON ix (c);
CREATE UNIQUE INDEX ix_c_unique2 ON ix (c);       -- two unique ones: the newer
CREATE INDEX ix_id ON ix (id);                    -- the primary key covers it
CREATE INDEX ix_lower1 ON ix (lower(t));          -- same expression, spelt otherwise
CREATE INDEX ix_lower2 ON ix ((lower((t))));
CREATE INDEX ix_upper ON ix (upper(t));           -- another expression
CREATE INDEX ix_lower_cast ON ix (lower(t::varchar));  -- another tree
CREATE INDEX ix_part1 ON ix (a) WHERE a > 0;      -- partial: only the same predicate
CREATE INDEX ix_part2 ON ix (a) WHERE (a > 0);
CREATE INDEX ix_part3 ON ix (a) WHERE a > 1;
CREATE INDEX ix_inc_c ON ix (t) INCLUDE (c);      -- INCLUDE: neither covers the other
CREATE INDEX ix_inc_b ON ix (t) INCLUDE (b);
CREATE INDEX ix_t ON ix (t);                      -- covered by both
CREATE INDEX ix_t_pattern ON ix (t text_pattern_ops);   -- other opclass
CREATE INDEX ix_t_posix ON ix (t COLLATE "POSIX");      -- other collation
CREATE INDEX ix_a_desc ON ix (a DESC);                  -- read backwards: the same
CREATE INDEX ix_a_hash ON ix USING hash (a);            -- other method
CREATE INDEX ix_b_hash1 ON ix USING hash (b);
CREATE INDEX ix_b_hash2 ON ix USING hash (b);
CREATE INDEX ix_r ON ix USING gist (r);           -- same as the exclusion constraint's
CREATE INDEX ix_trgm_siglen ON ix USING gist (t gist_trgm_ops(siglen = 32));
CREATE INDEX ix_trgm ON ix USING gist (t gist_trgm_ops);   -- other opclass options
CREATE INDEX ix_a_b_c ON ix (a, b) INCLUDE (c);   -- covers ix_a_b: same keys, more INCLUDE
SELECT "table", index, covered_by, kind, drop_sql FROM harden.duplicate_indexes
 WHERE "table" = 'ix'::regclass ORDER BY index::text;

-- partitioned: reported once, at the parent; invalid indexes are neither side
CREATE TABLE ixp (id int, a int) PARTITION BY RANGE (id);
CREATE TABLE ixp_1 PARTITION OF ixp FOR VALUES FROM (0) TO (100);
CREATE TABLE ixp_2 PARTITION OF ixp FOR VALUES FROM (100) TO (200);
CREATE INDEX ixp_a1 ON ixp (a);
CREATE INDEX ixp_a2 ON ixp (a);
CREATE TABLE ixv (id int, k int);
INSERT INTO ixv VALUES (1, 1), (2, 1);
CREATE INDEX ixv_k ON ixv (k);
CREATE UNIQUE INDEX CONCURRENTLY ixv_k_unique ON ixv (k);
CREATE INDEX ixv_k2 ON ixv (k);
SELECT "table", index, covered_by, kind, drop_sql FROM harden.duplicate_indexes
 WHERE "table" IN ('ixp'::regclass, 'ixp_1'::regclass, 'ixp_2'::regclass, 'ixv'::regclass)
 ORDER BY index::text;
SELECT "table", index, building, fix_sql FROM harden.invalid_indexes;
-- the comparison itself: expressions as trees, and not-an-index is false
SELECT harden._index_same_expr('ix_lower1'::regclass, 'ix_lower2'::regclass) AS same_lower,
       harden._index_same_expr('ix_lower1'::regclass, 'ix_lower_cast'::regclass) AS lower_vs_cast,
       harden._index_same_expr('ix_part1'::regclass, 'ix_part3'::regclass) AS other_predicate,
       harden._index_same_expr('ix'::regclass, 'ix'::regclass) AS a_table,
       harden._index_same_expr(0, 0) AS nothing,
       harden._index_same_expr(NULL, 0) AS null_arg;

-- missing foreign-key indexes
CREATE TABLE fk_parent (id int PRIMARY KEY, a int, b int, UNIQUE (a, b));
INSERT INTO fk_parent SELECT i, i, i FROM generate_series(1, 10) AS i;
CREATE TABLE fk_plain (id int, parent_id int REFERENCES fk_parent);          -- reported
CREATE TABLE fk_indexed (id int, parent_id int REFERENCES fk_parent);
CREATE INDEX ON fk_indexed (parent_id);
CREATE TABLE fk_multi (a int, b int, c int, FOREIGN KEY (a, b) REFERENCES fk_parent (a, b));
CREATE INDEX ON fk_multi (b, a, c);                                          -- covered, reordered
CREATE TABLE fk_multi_short (a int, b int, FOREIGN KEY (a, b) REFERENCES fk_parent (a, b));
CREATE INDEX ON fk_multi_short (a);                                          -- reported
CREATE TABLE fk_multi_late (a int, b int, c int, FOREIGN KEY (a, b) REFERENCES fk_parent (a, b));
CREATE INDEX ON fk_multi_late (c, a, b);                                     -- reported
CREATE TABLE fk_partial (id int, parent_id int REFERENCES fk_parent);
CREATE INDEX ON fk_partial (parent_id) WHERE parent_id > 5;                  -- reported
CREATE TABLE fk_hash (id int, parent_id int REFERENCES fk_parent);
CREATE INDEX ON fk_hash USING hash (parent_id);                              -- covered: equality
CREATE TABLE fk_expr (id int, parent_id int REFERENCES fk_parent);
CREATE INDEX ON fk_expr ((parent_id + 0));                                   -- reported
CREATE TABLE fk_include (id int, parent_id int REFERENCES fk_parent);
CREATE INDEX ON fk_include (id) INCLUDE (parent_id);                         -- reported
-- partitioned referencing table: every partition lacks one, then one has
CREATE TABLE fk_part (id int, parent_id int REFERENCES fk_parent) PARTITION BY RANGE (id);
CREATE TABLE fk_part_1 PARTITION OF fk_part FOR VALUES FROM (0) TO (100);
CREATE TABLE fk_part_2 PARTITION OF fk_part FOR VALUES FROM (100) TO (200);
-- partitioned referenced table: one row, not one per referenced partition
CREATE TABLE fk_pparent (id int PRIMARY KEY) PARTITION BY RANGE (id);
CREATE TABLE fk_pparent_1 PARTITION OF fk_pparent FOR VALUES FROM (0) TO (100);
CREATE TABLE fk_pparent_2 PARTITION OF fk_pparent FOR VALUES FROM (100) TO (200);
CREATE TABLE fk_to_part (id int, pid int REFERENCES fk_pparent);
SELECT "table", constraint_name, columns, referenced, partitions, create_sql
  FROM harden.missing_fk_indexes WHERE "table"::text LIKE 'fk\_%' ORDER BY "table"::text, constraint_name;
CREATE INDEX ON fk_part_1 (parent_id);
SELECT "table", columns, partitions FROM harden.missing_fk_indexes WHERE "table" = 'fk_part'::regclass;
CREATE INDEX ON fk_part_2 (parent_id);
SELECT count(*) AS fk_part_rows FROM harden.missing_fk_indexes WHERE "table" = 'fk_part'::regclass;
DROP INDEX fk_part_1_parent_id_idx, fk_part_2_parent_id_idx;
CREATE INDEX ON fk_part (parent_id);
SELECT count(*) AS fk_part_rows FROM harden.missing_fk_indexes WHERE "table" = 'fk_part'::regclass;

-- unused indexes: never unique, primary key, constraint or invalid ones
CREATE TABLE un (id int PRIMARY KEY, a int, b int, t text, UNIQUE (b));
INSERT INTO un SELECT i, i, i, 't' || i FROM generate_series(1, 1000) AS i;
CREATE INDEX un_a ON un (a);
CREATE INDEX un_used ON un (t);
CREATE INDEX un_expr ON un (lower(t));
CREATE TABLE unp (id int, a int) PARTITION BY RANGE (id);
CREATE TABLE unp_1 PARTITION OF unp FOR VALUES FROM (0) TO (100);
CREATE TABLE unp_2 PARTITION OF unp FOR VALUES FROM (100) TO (200);
CREATE INDEX unp_a ON unp (a);
ANALYZE un;
SET enable_seqscan = off;
SELECT count(*) FROM un WHERE t = 't5';
RESET enable_seqscan;
SELECT pg_stat_force_next_flush();
SELECT index, idx_scan, standby, confidence, note, drop_sql FROM harden.unused_indexes
 WHERE "table" IN ('un'::regclass, 'unp'::regclass, 'ixv'::regclass) ORDER BY index::text;

-- ---- sizes, bloat, scans, cache, vacuum ----
SELECT "table", kind, rows, total_bytes > 0 AS has_size, index_bytes > 0 AS has_indexes,
       total_bytes = table_bytes + index_bytes + toast_bytes AS adds_up
  FROM harden.table_sizes WHERE "table" IN ('qc_product'::regclass, 'qc_part'::regclass, 'qc_part_1'::regclass)
 ORDER BY "table"::text;
SELECT "table", index, bytes > 0 AS has_size, is_unique, is_primary, is_valid
  FROM harden.index_sizes WHERE "table" IN ('un'::regclass, 'unp'::regclass) ORDER BY index::text;

CREATE TABLE bl (id int PRIMARY KEY, v text) WITH (autovacuum_enabled = off);
INSERT INTO bl SELECT i, repeat('v', 60) FROM generate_series(1, 20000) AS i;
CREATE TABLE bl_fresh (id int PRIMARY KEY, v text) WITH (autovacuum_enabled = off);
INSERT INTO bl_fresh SELECT i, repeat('v', 60) FROM generate_series(1, 20000) AS i;
ANALYZE bl, bl_fresh;
SELECT kind, "table", index, bloat_ratio < 0.2 AS tight FROM harden.bloat
 WHERE "table" IN ('bl'::regclass, 'bl_fresh'::regclass) ORDER BY "table"::text, kind DESC;
DELETE FROM bl WHERE id % 10 <> 0;
SELECT pg_stat_force_next_flush();
SELECT "table", dead_tuples > 0 AS has_dead, autovacuum_enabled, vacuum_due, xid_age < 1000000 AS young
  FROM harden.vacuum_health WHERE "table" IN ('bl'::regclass, 'bl_fresh'::regclass) ORDER BY "table"::text;
SELECT "check", severity, object, suggestion FROM harden.health_report()
 WHERE "check" = 'vacuum' AND object ~ '^public\.bl';
VACUUM bl;
SELECT kind, "table", index, bloat_ratio > 0.8 AS bloated, bloat_bytes < bytes AS sane FROM harden.bloat
 WHERE "table" IN ('bl'::regclass, 'bl_fresh'::regclass) ORDER BY "table"::text, kind DESC;

SELECT count(*) FROM qc_order WHERE note = 'n3';
SELECT pg_stat_force_next_flush();
SELECT "table", rows, seq_scan > 0 AS scanned, rows_per_scan > 0 AS read_rows
  FROM harden.seq_scan_tables WHERE "table" = 'qc_order'::regclass;
SELECT kind, hits + reads > 0 AS counted, ratio BETWEEN 0 AND 1 AS ratio_ok FROM harden.cache_hit_ratio ORDER BY 1;

-- ---- activity ----
SELECT count(*) AS without_pg_stat_statements FROM harden.slow_queries;
-- installed (and preloaded by the test cluster; test/nopreload has it
-- installed but not preloaded, where the view is empty)
CREATE EXTENSION pg_stat_statements;
SELECT count(*) > 0 AS with_pg_stat_statements FROM harden.slow_queries;
DROP EXTENSION pg_stat_statements;
SELECT count(*) AS blocked FROM harden.blocking_locks;
SELECT count(*) AS long_running FROM harden.long_running_queries;

-- ---- health_report() ----
SET harden.health_min_size = 0;
SET harden.health_bloat_ratio = 0.8;
SELECT "check", severity, object, detail, suggestion FROM harden.health_report()
 WHERE "check" IN ('bloat', 'duplicate_index', 'invalid_index', 'missing_fk_index')
   AND object ~ '^public\.(ix|ixv|ixp|bl|fk_plain|fk_part)([_.]|$)'
    OR "check" = 'unused_index' AND object ~ '^public\.(un|unp)_'
 ORDER BY 1, 3;
SELECT "check", severity, object FROM harden.health_report()
 WHERE "check" IN ('vacuum', 'bloat') AND object ~ '^public\.bl' ORDER BY 1, 3;
-- thresholds are settings
SET harden.health_xid_age = 0;
SELECT count(*) > 0 AS xid_age_reported FROM harden.health_report() WHERE "check" = 'xid_age';
RESET harden.health_xid_age;
SELECT count(*) AS xid_age_reported FROM harden.health_report() WHERE "check" = 'xid_age';
SET harden.health_bloat_ratio = 1;
SELECT count(*) AS bloat_reported FROM harden.health_report() WHERE "check" = 'bloat';
-- metrics() shows the counts of the last run, per check and severity
SELECT count(*) AS missing_fk FROM harden.health_report() WHERE "check" = 'missing_fk_index' AND severity = 'info';
SELECT regexp_replace(line, 'database="[^"]*"', 'database="…"') AS line
  FROM regexp_split_to_table(harden.metrics(), E'\n') AS line
 WHERE line ~ '^harden_health_findings\{.*check="(missing_fk_index|duplicate_index)"'
       AND strpos(line, format('database="%s"', current_database())) > 0
    OR line ~ '^# (HELP|TYPE) harden_health_findings'
 ORDER BY 1;
SELECT (s->>'value')::float8 BETWEEN extract(epoch FROM now()) - 60 AND extract(epoch FROM now()) + 60 AS recent_run
  FROM jsonb_array_elements(harden.metrics_json()->'metrics'->'harden_health_report_timestamp_seconds'->'samples') AS s
 WHERE s->'labels'->>'database' = current_database();

REVOKE USAGE ON SCHEMA harden FROM pgh_analyze_nobody;
DROP ROLE pgh_analyze_nobody;
