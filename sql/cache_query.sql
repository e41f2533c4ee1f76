-- harden.cache_query(), cache_watch() / cache_unwatch(): results, parameters,
-- dependencies, staleness after committed writes, roles, and every error.
SET client_min_messages = warning;
SELECT harden.cache_flush() >= 0 AS flushed;
SELECT harden.cache_stats_reset();

CREATE TABLE cq_products (id int PRIMARY KEY, name text NOT NULL, price numeric NOT NULL);
INSERT INTO cq_products SELECT g, 'p' || g, g * 1.5 FROM generate_series(1, 3) g;
CREATE TABLE cq_stock (product_id int REFERENCES cq_products, qty int);
INSERT INTO cq_stock VALUES (1, 10), (2, 0), (3, 7);

-- A miss runs the query; rows come back as a jsonb array of objects.
SELECT harden.cache_query('cq:list', 'SELECT id, name, price FROM cq_products ORDER BY id');
SELECT hits, misses,
       jsonb_path_query_first(harden.metrics_json(),
         '$.metrics.harden_cache_queries_total.samples[*] ? (@.labels.database == $db).value',
         jsonb_build_object('db', current_database())) AS queries
  FROM harden.cache_stats;
-- The table is a dependency whose writes are tracked (no watch needed); the
-- second call is a hit.
SELECT harden.cache_query('cq:list', 'SELECT id, name, price FROM cq_products ORDER BY id') -> 0 AS first;
SELECT key, type, owner, deps, unwatched, hits FROM harden.cache_entries WHERE key = 'cq:list';
SELECT hits, misses FROM harden.cache_stats;

-- An empty result is an empty array, not NULL.
SELECT harden.cache_query('cq:none', 'SELECT * FROM cq_products WHERE false');
-- Types go through row_to_json: numbers, NULL, nested rows, arrays.
SELECT harden.cache_query('cq:types', $$SELECT 1 AS i, NULL::text AS n, ARRAY[1,2] AS a,
                                              ROW(1, 'x') AS r, true AS b, 'q"t' AS s$$);

-- A committed write invalidates, watched or not ...
UPDATE cq_products SET price = 99 WHERE id = 1;
SELECT harden.cache_query('cq:list', 'SELECT id, name, price FROM cq_products ORDER BY id') -> 0 AS still_cached;
-- ... and watching it makes results computed before stale at once.
SELECT harden.cache_watch('cq_products');
SELECT harden.cache_watch('cq_products') AS again;
SELECT tgname, tgtype FROM pg_trigger WHERE tgrelid = 'cq_products'::regclass AND NOT tgisinternal;
SELECT harden.cache_query('cq:list', 'SELECT id, name, price FROM cq_products ORDER BY id') -> 0 AS fresh;
SELECT deps, unwatched FROM harden.cache_entries WHERE key = 'cq:list';

-- A committed UPDATE, INSERT, DELETE or TRUNCATE makes the result stale.
UPDATE cq_products SET price = 2 WHERE id = 1;
SELECT harden.cache_query('cq:list', 'SELECT id, name, price FROM cq_products ORDER BY id') -> 0 AS after_update;
INSERT INTO cq_products VALUES (4, 'p4', 6);
SELECT jsonb_array_length(harden.cache_query('cq:list', 'SELECT id, name, price FROM cq_products ORDER BY id')) AS after_insert;
DELETE FROM cq_products WHERE id = 4;
SELECT jsonb_array_length(harden.cache_query('cq:list', 'SELECT id, name, price FROM cq_products ORDER BY id')) AS after_delete;
-- A rolled-back write changes nothing, so the result stays cached.
SELECT hits AS hits_before FROM harden.cache_stats \gset
BEGIN;
UPDATE cq_products SET price = 1000;
ROLLBACK;
SELECT harden.cache_query('cq:list', 'SELECT id, name, price FROM cq_products ORDER BY id') -> 0 AS after_rollback;
SELECT hits - :hits_before AS new_hits FROM harden.cache_stats;
-- A statement that changes no row still counts as a write (over-invalidation is safe).
UPDATE cq_products SET price = price WHERE false;
SELECT hits AS hits_before FROM harden.cache_stats \gset
SELECT harden.cache_query('cq:list', 'SELECT id, name, price FROM cq_products ORDER BY id') -> 0 AS after_noop;
SELECT hits - :hits_before AS new_hits FROM harden.cache_stats;

-- Dependencies come from the plan: joins, subqueries and views (the view
-- itself too: privileges on it decide).
CREATE VIEW cq_in_stock AS
  SELECT p.id, p.name FROM cq_products p JOIN cq_stock s ON s.product_id = p.id WHERE s.qty > 0;
SELECT harden.cache_query('cq:instock', 'SELECT * FROM cq_in_stock ORDER BY id');
SELECT deps::text[] AS deps, unwatched FROM harden.cache_entries WHERE key = 'cq:instock';
-- A write to the other table invalidates too; watching it moves it again.
UPDATE cq_stock SET qty = 5 WHERE product_id = 2;
SELECT harden.cache_query('cq:instock', 'SELECT * FROM cq_in_stock ORDER BY id') AS cached;
SELECT harden.cache_watch('cq_stock');
SELECT harden.cache_query('cq:instock', 'SELECT * FROM cq_in_stock ORDER BY id') AS fresh;
SELECT unwatched FROM harden.cache_entries WHERE key = 'cq:instock';

-- Within a transaction that wrote a watched table, results are computed
-- from its own rows and not cached (they are not committed).
BEGIN;
INSERT INTO cq_products VALUES (5, 'p5', 7.5);
SELECT jsonb_array_length(harden.cache_query('cq:list', 'SELECT id, name, price FROM cq_products ORDER BY id')) AS own_rows;
ROLLBACK;
SELECT jsonb_array_length(harden.cache_query('cq:list', 'SELECT id, name, price FROM cq_products ORDER BY id')) AS committed_rows;

-- Inside a transaction block the result is published at commit; a
-- rollback discards it.
SELECT harden.cache_delete('cq:list');
BEGIN;
SELECT jsonb_array_length(harden.cache_query('cq:list', 'SELECT id, name, price FROM cq_products ORDER BY id')) AS computed;
SELECT count(*) AS in_store FROM harden.cache_entries WHERE key = 'cq:list';
-- The session reads its own pending result: a hit.
SELECT hits AS hits_before FROM harden.cache_stats \gset
SELECT jsonb_array_length(harden.cache_query('cq:list', 'SELECT id, name, price FROM cq_products ORDER BY id')) AS own_pending;
SELECT hits - :hits_before AS new_hits FROM harden.cache_stats;
ROLLBACK;
SELECT count(*) AS after_rollback FROM harden.cache_entries WHERE key = 'cq:list';
BEGIN;
SELECT jsonb_array_length(harden.cache_query('cq:list', 'SELECT id, name, price FROM cq_products ORDER BY id')) AS computed;
COMMIT;
SELECT count(*) AS after_commit FROM harden.cache_entries WHERE key = 'cq:list';

-- REPEATABLE READ: the snapshot may be older than the generations, so a
-- miss is computed but not cached.
SELECT harden.cache_delete('cq:list');
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT jsonb_array_length(harden.cache_query('cq:list', 'SELECT id, name, price FROM cq_products ORDER BY id')) AS computed;
COMMIT;
SELECT count(*) AS cached_after_rr FROM harden.cache_entries WHERE key = 'cq:list';

-- Parameters bind as $1..$n and are part of the entry: the same key with
-- other parameters (or other SQL) is a miss, never the other result.
SELECT harden.cache_query('cq:one', 'SELECT name FROM cq_products WHERE id = $1', NULL, 2);
SELECT harden.cache_query('cq:one', 'SELECT name FROM cq_products WHERE id = $1', NULL, 3);
SELECT harden.cache_query('cq:one', 'SELECT name, price FROM cq_products WHERE id = $1', NULL, 3);
SELECT harden.cache_query('cq:one', 'SELECT $1::text AS a, $2::int AS b, $3::date AS c', NULL, 'x', 42, date '2026-01-02');
SELECT harden.cache_query('cq:one', 'SELECT $1 AS untyped', NULL, 'literal');
SELECT harden.cache_query('cq:one', 'SELECT $1::int IS NULL AS null_param', NULL, NULL::int);
SELECT harden.cache_query('cq:one', 'SELECT $1 + $2 AS sum', NULL, VARIADIC ARRAY[20, 22]);
-- Parameters are values, never SQL.
SELECT harden.cache_query('cq:one', 'SELECT $1 AS v', NULL, '1; DROP TABLE cq_products');
SELECT count(*) AS products_still_there FROM cq_products;

-- The TTL argument, the default TTL and policies apply as for cache_set.
SELECT harden.cache_query('cq:ttl', 'SELECT 1 AS one', '1 hour') IS NOT NULL AS stored;
SELECT ttl > interval '59 minutes' AND ttl <= interval '1 hour' AS ttl_ok
  FROM harden.cache_entries WHERE key = 'cq:ttl';
INSERT INTO harden.cache_policies (prefix, default_ttl, secure) VALUES ('cq:secret:', '5 minutes', true);
SELECT harden.cache_query('cq:secret:x', 'SELECT 1 AS one') IS NOT NULL AS stored;
SELECT secure, tags IS NULL AS tags_hidden, ttl <= interval '5 minutes' AS ttl_capped
  FROM harden.cache_entries WHERE key = 'cq:secret:x';
DELETE FROM harden.cache_policies WHERE prefix = 'cq:secret:';
-- A negative TTL is rejected as for cache_set.
SELECT harden.cache_query('cq:ttl', 'SELECT 1', '-1 second');

-- Results are per role: another role computes its own (see the pgTAP suite
-- for row-level security); plain entries and query results do not mix.
SELECT harden.cache_set('cq:list', '"plain"'::jsonb);
SELECT harden.cache_get('cq:list') AS plain_value;
SELECT jsonb_array_length(harden.cache_query('cq:list', 'SELECT id, name, price FROM cq_products ORDER BY id')) AS query_value;
SELECT key, deps IS NULL AS plain FROM harden.cache_entries WHERE key = 'cq:list' ORDER BY 2;
-- cache_delete removes both the plain entry and the caller's query result.
SELECT harden.cache_delete('cq:list');
SELECT count(*) FROM harden.cache_entries WHERE key = 'cq:list';
SELECT harden.cache_delete('cq:list');
-- Patterns and flushes reach query results too.
SELECT harden.cache_query('cq:pat:1', 'SELECT 1 AS one') IS NOT NULL AS stored;
SELECT harden.cache_invalidate('cq:pat:*');
SELECT count(*) FROM harden.cache_entries WHERE key LIKE 'cq:pat:%';

-- Results larger than harden.cache_max_entry_size are returned, not cached.
SET harden.cache_max_entry_size = '1kB';
SELECT jsonb_array_length(harden.cache_query('cq:big', 'SELECT g, repeat(''x'', 100) AS pad FROM generate_series(1, 100) g')) AS rows;
SELECT count(*) AS cached FROM harden.cache_entries WHERE key = 'cq:big';
RESET harden.cache_max_entry_size;

-- cache_unwatch: results computed before go stale; writes are still tracked.
SELECT harden.cache_query('cq:list', 'SELECT id FROM cq_products ORDER BY id') IS NOT NULL AS stored;
SELECT harden.cache_unwatch('cq_products');
SELECT harden.cache_unwatch('cq_products') AS again;
SELECT count(*) AS gone FROM harden.cache_entries WHERE key = 'cq:list';
SELECT harden.cache_query('cq:list', 'SELECT id FROM cq_products ORDER BY id') IS NOT NULL AS stored;
SELECT unwatched FROM harden.cache_entries WHERE key = 'cq:list';
SELECT count(*) FROM pg_trigger WHERE tgrelid = 'cq_products'::regclass AND tgname = 'harden_cache_watch';

-- Partitioned tables: the watch covers the partitions, so a write that
-- names a partition directly invalidates too.
CREATE TABLE cq_events (id int, region text) PARTITION BY LIST (region);
CREATE TABLE cq_events_eu PARTITION OF cq_events FOR VALUES IN ('eu');
CREATE TABLE cq_events_us PARTITION OF cq_events FOR VALUES IN ('us');
SELECT harden.cache_watch('cq_events');
SELECT tgrelid::regclass AS watched FROM pg_trigger WHERE tgname = 'harden_cache_watch'
   AND tgrelid::regclass::text LIKE 'cq_events%' ORDER BY 1;
SELECT harden.cache_query('cq:events', 'SELECT count(*) AS n FROM cq_events');
INSERT INTO cq_events_eu VALUES (1, 'eu');
SELECT harden.cache_query('cq:events', 'SELECT count(*) AS n FROM cq_events');
-- A result read from a partition depends on its parent too, so a write
-- made through the parent (which fires only the parent's trigger) counts.
SELECT harden.cache_query('cq:events:us', 'SELECT count(*) AS n FROM cq_events_us');
SELECT deps::text[] AS deps FROM harden.cache_entries WHERE key = 'cq:events:us';
INSERT INTO cq_events VALUES (2, 'us');
SELECT harden.cache_query('cq:events:us', 'SELECT count(*) AS n FROM cq_events_us');
SELECT harden.cache_unwatch('cq_events');

-- The search path is part of the entry: one key and SQL text in two
-- schemas (schema-per-tenant) are two results.
CREATE SCHEMA cq_t1;
CREATE SCHEMA cq_t2;
CREATE TABLE cq_t1.o (v text);
CREATE TABLE cq_t2.o (v text);
INSERT INTO cq_t1.o VALUES ('tenant 1');
INSERT INTO cq_t2.o VALUES ('tenant 2');
SET search_path = cq_t1;
SELECT harden.cache_query('cq:tenant', 'SELECT v FROM o');
SET search_path = cq_t2;
SELECT harden.cache_query('cq:tenant', 'SELECT v FROM o');
RESET search_path;
DROP SCHEMA cq_t1, cq_t2 CASCADE;

-- Results that read a temporary table (this session's rows) are returned,
-- never stored; temporary tables cannot be watched.
CREATE TEMP TABLE cq_tmp (v int);
INSERT INTO cq_tmp VALUES (1);
SELECT harden.cache_query('cq:tmp', 'SELECT v FROM cq_tmp');
SELECT count(*) AS cached FROM harden.cache_entries WHERE key = 'cq:tmp';
SELECT harden.cache_watch('cq_tmp');
DROP TABLE cq_tmp;
-- A session whose temporary table shadows a table of a cached result reads
-- its own table, not the shared result.
CREATE TABLE cq_shadow (v text);
INSERT INTO cq_shadow VALUES ('permanent');
SELECT harden.cache_query('cq:shadow', 'SELECT v FROM cq_shadow');
CREATE TEMP TABLE cq_shadow (v text);
INSERT INTO cq_shadow VALUES ('temporary');
SELECT harden.cache_query('cq:shadow', 'SELECT v FROM cq_shadow');
DROP TABLE pg_temp.cq_shadow;
SELECT hits AS hits_before FROM harden.cache_stats \gset
SELECT harden.cache_query('cq:shadow', 'SELECT v FROM cq_shadow');
SELECT hits - :hits_before AS new_hits FROM harden.cache_stats;
DROP TABLE cq_shadow;

-- Parameters are compared by value, not by their text form (which depends
-- on extra_float_digits, DateStyle, ...).
SET extra_float_digits = 0;
SELECT harden.cache_query('cq:f', 'SELECT $1 = 0.3::float8 AS is_point3', NULL, 0.3::float8);
SELECT harden.cache_query('cq:f', 'SELECT $1 = 0.3::float8 AS is_point3', NULL, 0.1::float8 + 0.2::float8);
RESET extra_float_digits;

-- Inheritance: a write through a parent (which fires only the parent's
-- statement trigger) invalidates results read from a child.
CREATE TABLE cq_par (id int);
CREATE TABLE cq_ch () INHERITS (cq_par);
INSERT INTO cq_ch VALUES (1);
SELECT harden.cache_watch('cq_par'), harden.cache_watch('cq_ch');
SELECT harden.cache_query('cq:ch', 'SELECT id FROM cq_ch');
UPDATE cq_par SET id = 99;
SELECT harden.cache_query('cq:ch', 'SELECT id FROM cq_ch');
SELECT harden.cache_unwatch('cq_par'), harden.cache_unwatch('cq_ch');
DROP TABLE cq_par CASCADE;

-- Redefining a view (or a function, a role, a schema) invalidates results.
CREATE VIEW cq_v AS SELECT 1 AS x;
SELECT harden.cache_query('cq:v', 'SELECT x FROM cq_v');
CREATE OR REPLACE VIEW cq_v AS SELECT 2 AS x;
SELECT harden.cache_query('cq:v', 'SELECT x FROM cq_v');
DROP VIEW cq_v;

-- Errors: the query's own errors surface as themselves.
SELECT harden.cache_query('cq:e', 'SELECT * FROM cq_nosuch');
SELECT harden.cache_query('cq:e', 'SELECT 1/0');
SELECT harden.cache_query('cq:e', 'SELEC 1');
SELECT harden.cache_query('cq:e', 'SELECT $1::int', NULL, 'abc');
SELECT harden.cache_query('cq:e', 'SELECT $2::int', NULL, 1);
-- Two columns of one name would lose one of them: an error.
SELECT harden.cache_query('cq:e', 'SELECT 1 AS a, 2 AS a');
-- Only one read-only SELECT is cacheable (PH105).
\set VERBOSITY default
SELECT harden.cache_query('cq:e', '');
SELECT harden.cache_query('cq:e', 'SELECT 1; SELECT 2');
SELECT harden.cache_query('cq:e', 'UPDATE cq_products SET price = 0');
SELECT harden.cache_query('cq:e', 'SELECT * FROM cq_products FOR UPDATE');
SELECT harden.cache_query('cq:e', 'WITH d AS (DELETE FROM cq_products RETURNING *) SELECT * FROM d');
SELECT harden.cache_query('cq:e', 'CREATE TABLE cq_x AS SELECT 1');
SELECT harden.cache_query('cq:e', 'VACUUM');
SELECT count(*) AS untouched FROM cq_products;
-- Keys and arguments.
SELECT harden.cache_query(NULL, 'SELECT 1');
SELECT harden.cache_query('bad key', 'SELECT 1');
SELECT harden.cache_query(repeat('k', 251), 'SELECT 1');
SELECT harden.cache_query('cq:e', NULL);
-- Watching: NULL, unknown relations, views, sequences.
SELECT harden.cache_watch(NULL);
SELECT harden.cache_watch(0::oid::regclass);
SELECT harden.cache_watch('cq_in_stock');
CREATE SEQUENCE cq_seq;
SELECT harden.cache_unwatch('cq_seq');
SELECT harden.cache_watch('cq_nosuch');
-- The trigger function is only for the trigger cache_watch() installs.
SELECT harden.cache_watch_trigger();
CREATE TRIGGER cq_row AFTER INSERT ON cq_stock FOR EACH ROW EXECUTE FUNCTION harden.cache_watch_trigger();
INSERT INTO cq_stock VALUES (1, 1);
DROP TRIGGER cq_row ON cq_stock;
\set VERBOSITY terse

-- Two-phase commit: a prepared transaction's writes count at COMMIT
-- PREPARED, which makes every result of the database stale.
SELECT harden.cache_query('cq:2pc', 'SELECT sum(qty) AS q FROM cq_stock') AS before;
BEGIN;
UPDATE cq_stock SET qty = qty + 1;
PREPARE TRANSACTION 'cq_2pc';
SELECT harden.cache_query('cq:2pc', 'SELECT sum(qty) AS q FROM cq_stock') AS not_yet;
COMMIT PREPARED 'cq_2pc';
SELECT harden.cache_query('cq:2pc', 'SELECT sum(qty) AS q FROM cq_stock') AS committed;
-- Role changes cannot be prepared: COMMIT PREPARED could not invalidate
-- what depends on them in other databases.
CREATE ROLE cq_2pc_role;
BEGIN;
GRANT cq_2pc_role TO CURRENT_USER;
PREPARE TRANSACTION 'cq_2pc_roles';
SELECT count(*) AS prepared FROM pg_prepared_xacts WHERE gid = 'cq_2pc_roles';
DROP ROLE cq_2pc_role;

SELECT harden.cache_unwatch('cq_stock');
DROP VIEW cq_in_stock;
DROP TABLE cq_stock, cq_products, cq_events;
DROP SEQUENCE cq_seq;
SELECT harden.cache_flush() >= 0 AS flushed;
