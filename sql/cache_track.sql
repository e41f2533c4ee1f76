-- Automatic write tracking (no cache_watch needed), per-value dependencies
-- (cache_watch(table, by => column)), untracked dependencies and their TTL.
SET client_min_messages = warning;
SELECT harden.cache_flush() >= 0 AS flushed;

-- How many queries cache_query() ran in this database: a hit runs none.
CREATE FUNCTION ct_runs() RETURNS bigint LANGUAGE sql AS $$
  SELECT (jsonb_path_query_first(harden.metrics_json(),
    '$.metrics.harden_cache_queries_total.samples[*] ? (@.labels.database == $db).value',
    jsonb_build_object('db', current_database())))::bigint $$;

CREATE TABLE ct_items (id int PRIMARY KEY, cat int NOT NULL, price numeric NOT NULL);
INSERT INTO ct_items SELECT g, g % 3, g FROM generate_series(1, 9) g;
CREATE TABLE ct_other (id int PRIMARY KEY);

-- Every kind of committed write invalidates an unwatched table's results.
SELECT harden.cache_query('ct:sum', 'SELECT sum(price) AS s, count(*) AS n FROM ct_items');
SELECT ct_runs() AS runs \gset
SELECT harden.cache_query('ct:sum', 'SELECT sum(price) AS s, count(*) AS n FROM ct_items') AS hit;
SELECT ct_runs() - :runs AS ran;
UPDATE ct_items SET price = price + 1 WHERE id = 1;
SELECT harden.cache_query('ct:sum', 'SELECT sum(price) AS s, count(*) AS n FROM ct_items') AS after_update;
DELETE FROM ct_items WHERE id = 9;
SELECT harden.cache_query('ct:sum', 'SELECT sum(price) AS s, count(*) AS n FROM ct_items') AS after_delete;
MERGE INTO ct_items t USING (VALUES (9, 0, 9)) AS s(id, cat, price) ON t.id = s.id
  WHEN NOT MATCHED THEN INSERT VALUES (s.id, s.cat, s.price);
SELECT harden.cache_query('ct:sum', 'SELECT sum(price) AS s, count(*) AS n FROM ct_items') AS after_merge;
-- A write from inside a function (SPI) is seen too.
DO $$ BEGIN UPDATE ct_items SET price = price - 1 WHERE id = 1; END $$;
SELECT harden.cache_query('ct:sum', 'SELECT sum(price) AS s, count(*) AS n FROM ct_items') AS after_do;
-- A write to another table leaves it cached.
SELECT ct_runs() AS runs \gset
INSERT INTO ct_other VALUES (1);
SELECT harden.cache_query('ct:sum', 'SELECT sum(price) AS s, count(*) AS n FROM ct_items') AS unrelated;
SELECT ct_runs() - :runs AS ran;
-- EXPLAIN without ANALYZE writes nothing.
EXPLAIN (COSTS OFF) DELETE FROM ct_items;
SELECT harden.cache_query('ct:sum', 'SELECT sum(price) AS s, count(*) AS n FROM ct_items') AS after_explain;
SELECT ct_runs() - :runs AS ran;

-- A transaction that wrote a table reads its own rows for results over it
-- (not cached), while results over other tables are still served.
SELECT harden.cache_query('ct:other', 'SELECT count(*) AS n FROM ct_other') AS other;
BEGIN;
UPDATE ct_items SET price = 0 WHERE id = 2;
SELECT harden.cache_query('ct:sum', 'SELECT sum(price) AS s, count(*) AS n FROM ct_items') AS own_rows;
SELECT ct_runs() AS runs \gset
SELECT harden.cache_query('ct:other', 'SELECT count(*) AS n FROM ct_other') AS other;
SELECT ct_runs() - :runs AS ran;
ROLLBACK;
SELECT harden.cache_query('ct:sum', 'SELECT sum(price) AS s, count(*) AS n FROM ct_items') AS committed;
SELECT ct_runs() AS runs \gset
SELECT harden.cache_query('ct:other', 'SELECT count(*) AS n FROM ct_other') AS other_cached;
SELECT ct_runs() - :runs AS ran;

-- Partitions: a row routed through the parent invalidates results reading
-- the partition directly, and the parent's.
CREATE TABLE ct_ev (id int, region text) PARTITION BY LIST (region);
CREATE TABLE ct_ev_eu PARTITION OF ct_ev FOR VALUES IN ('eu');
CREATE TABLE ct_ev_us PARTITION OF ct_ev FOR VALUES IN ('us');
SELECT harden.cache_query('ct:eu', 'SELECT count(*) AS n FROM ct_ev_eu');
SELECT harden.cache_query('ct:ev', 'SELECT count(*) AS n FROM ct_ev');
INSERT INTO ct_ev VALUES (1, 'eu');
SELECT harden.cache_query('ct:eu', 'SELECT count(*) AS n FROM ct_ev_eu') AS routed;
SELECT harden.cache_query('ct:ev', 'SELECT count(*) AS n FROM ct_ev') AS parent;
UPDATE ct_ev SET region = 'us' WHERE id = 1;
SELECT harden.cache_query('ct:eu', 'SELECT count(*) AS n FROM ct_ev_eu') AS moved_out;
TRUNCATE ct_ev;
SELECT harden.cache_query('ct:ev', 'SELECT count(*) AS n FROM ct_ev') AS truncated;
-- Inheritance: TRUNCATE of the parent reaches the child.
CREATE TABLE ct_base (id int);
CREATE TABLE ct_child () INHERITS (ct_base);
INSERT INTO ct_child VALUES (1);
SELECT harden.cache_query('ct:child', 'SELECT count(*) AS n FROM ct_child');
TRUNCATE ct_base;
SELECT harden.cache_query('ct:child', 'SELECT count(*) AS n FROM ct_child') AS truncated_child;
-- REFRESH MATERIALIZED VIEW.
CREATE MATERIALIZED VIEW ct_mv AS SELECT count(*) AS n FROM ct_items;
SELECT harden.cache_query('ct:mv', 'SELECT n FROM ct_mv');
INSERT INTO ct_items VALUES (10, 1, 10);
REFRESH MATERIALIZED VIEW ct_mv;
SELECT harden.cache_query('ct:mv', 'SELECT n FROM ct_mv') AS refreshed;

-- A dependency whose writes cannot be tracked (a SQL or procedural
-- function may read any table) caps the TTL at harden.cache_untracked_ttl.
CREATE FUNCTION ct_count() RETURNS bigint LANGUAGE plpgsql STABLE AS
  $$ BEGIN RETURN (SELECT count(*) FROM ct_items); END $$;
SELECT harden.cache_query('ct:fn', 'SELECT ct_count() AS n', '1 day');
SELECT ttl <= interval '60 seconds' AS capped FROM harden.cache_entries WHERE key = 'ct:fn';
SET harden.cache_untracked_ttl = '5s';
SELECT harden.cache_delete('ct:fn');
SELECT harden.cache_query('ct:fn', 'SELECT ct_count() AS n') AS stored;
SELECT ttl <= interval '5 seconds' AS capped FROM harden.cache_entries WHERE key = 'ct:fn';
SET harden.cache_untracked_ttl = 0;
SELECT harden.cache_delete('ct:fn');
SELECT harden.cache_query('ct:fn', 'SELECT ct_count() AS n') AS computed;
SELECT count(*) AS not_cached FROM harden.cache_entries WHERE key = 'ct:fn';
RESET harden.cache_untracked_ttl;
-- A function of this session's temporary schema: returned, never cached
-- (another session of the role would call its own).
CREATE FUNCTION pg_temp.ct_tf() RETURNS int LANGUAGE sql AS 'SELECT 7';
SELECT harden.cache_query('ct:tf', 'SELECT pg_temp.ct_tf() AS v') AS temp_fn;
SELECT count(*) AS not_cached FROM harden.cache_entries WHERE key = 'ct:tf';
-- A tracked result keeps the TTL it asked for.
SELECT harden.cache_query('ct:long', 'SELECT count(*) AS n FROM ct_items', '1 day') IS NOT NULL AS stored;
SELECT ttl > interval '23 hours' AS uncapped FROM harden.cache_entries WHERE key = 'ct:long';

-- Per-value dependencies: watched by cat, a result pinned to cat = $1 (or
-- a constant) depends on writes of that value only.
SELECT harden.cache_watch('ct_items', by => 'cat');
SELECT tgname FROM pg_trigger WHERE tgrelid = 'ct_items'::regclass AND NOT tgisinternal ORDER BY 1;
SELECT harden.cache_query('ct:cat', 'SELECT id FROM ct_items WHERE cat = $1 ORDER BY id', NULL, 1);
SELECT harden.cache_query('ct:cat2', 'SELECT id FROM ct_items WHERE cat = 2 AND price > 0 ORDER BY id');
SELECT harden.cache_query('ct:all', 'SELECT count(*) AS n FROM ct_items');
SELECT key, deps FROM harden.cache_entries WHERE key IN ('ct:cat', 'ct:cat2', 'ct:all') ORDER BY key;
-- A price update of a cat-2 row: cat 1 stays cached, cat 2 and the total do not.
SELECT ct_runs() AS runs \gset
UPDATE ct_items SET price = price + 100 WHERE id = 2;
SELECT harden.cache_query('ct:cat', 'SELECT id FROM ct_items WHERE cat = $1 ORDER BY id', NULL, 1) AS cat1;
SELECT ct_runs() - :runs AS ran;
SELECT harden.cache_query('ct:cat2', 'SELECT id FROM ct_items WHERE cat = 2 AND price > 0 ORDER BY id') AS cat2;
SELECT harden.cache_query('ct:all', 'SELECT count(*) AS n FROM ct_items') AS total;
SELECT ct_runs() - :runs AS ran;
-- Moving a row from cat 2 to cat 1 moves both values.
UPDATE ct_items SET cat = 1 WHERE id = 2;
SELECT harden.cache_query('ct:cat', 'SELECT id FROM ct_items WHERE cat = $1 ORDER BY id', NULL, 1) AS cat1_gained;
SELECT harden.cache_query('ct:cat2', 'SELECT id FROM ct_items WHERE cat = 2 AND price > 0 ORDER BY id') AS cat2_lost;
-- INSERT and DELETE of a value; a rolled-back write changes nothing.
INSERT INTO ct_items VALUES (11, 1, 1);
SELECT harden.cache_query('ct:cat', 'SELECT id FROM ct_items WHERE cat = $1 ORDER BY id', NULL, 1) AS inserted;
DELETE FROM ct_items WHERE id = 11;
SELECT harden.cache_query('ct:cat', 'SELECT id FROM ct_items WHERE cat = $1 ORDER BY id', NULL, 1) AS deleted;
SELECT ct_runs() AS runs \gset
BEGIN;
UPDATE ct_items SET price = 0 WHERE cat = 1;
ROLLBACK;
SELECT harden.cache_query('ct:cat', 'SELECT id FROM ct_items WHERE cat = $1 ORDER BY id', NULL, 1) AS rolled_back;
SELECT ct_runs() - :runs AS ran;
-- A write whose values are unknown (TRUNCATE, or the trigger not firing
-- under session_replication_role = replica) moves every value.
SELECT ct_runs() AS runs \gset
SET session_replication_role = replica;
UPDATE ct_items SET price = price WHERE id = 3;
RESET session_replication_role;
SELECT harden.cache_query('ct:cat', 'SELECT id FROM ct_items WHERE cat = $1 ORDER BY id', NULL, 1) AS after_unknown;
SELECT ct_runs() - :runs AS ran;
-- Not pinned: a self-join, an OR, a cast parameter of another type.
SELECT harden.cache_query('ct:self', 'SELECT count(*) AS n FROM ct_items a JOIN ct_items b USING (id) WHERE a.cat = 1');
SELECT harden.cache_query('ct:or', 'SELECT count(*) AS n FROM ct_items WHERE cat = 1 OR id = 3');
SELECT harden.cache_query('ct:cast', 'SELECT count(*) AS n FROM ct_items WHERE cat = $1', NULL, 1::bigint);
SELECT ct_runs() AS runs \gset
UPDATE ct_items SET price = price + 1 WHERE id = 3;
SELECT harden.cache_query('ct:self', 'SELECT count(*) AS n FROM ct_items a JOIN ct_items b USING (id) WHERE a.cat = 1') AS self;
SELECT harden.cache_query('ct:or', 'SELECT count(*) AS n FROM ct_items WHERE cat = 1 OR id = 3') AS "or";
SELECT harden.cache_query('ct:cast', 'SELECT count(*) AS n FROM ct_items WHERE cat = $1', NULL, 1::bigint) AS "cast";
SELECT ct_runs() - :runs AS ran;
-- Errors: a column that does not exist, a partitioned table.
SELECT harden.cache_watch('ct_items', by => 'nosuch');
SELECT harden.cache_watch('ct_ev', by => 'region');
-- Watching without a column drops the row trigger; unwatching drops all.
SELECT harden.cache_watch('ct_items');
SELECT tgname FROM pg_trigger WHERE tgrelid = 'ct_items'::regclass AND NOT tgisinternal ORDER BY 1;
SELECT harden.cache_watch('ct_items', by => 'cat');
SELECT harden.cache_unwatch('ct_items');
SELECT count(*) AS triggers FROM pg_trigger WHERE tgrelid = 'ct_items'::regclass AND NOT tgisinternal;

-- Untyped parameters, as node-postgres and psycopg send them (PREPARE
-- without types is the same): the query gives them their types, so no cast
-- is needed, and an equality on a watched column still pins its value.
SELECT harden.cache_watch('ct_items', by => 'cat');
PREPARE ct_untyped AS SELECT harden.cache_query($1, $2, $3, $4) AS r;
EXECUTE ct_untyped('ct:u', 'SELECT id, price FROM ct_items WHERE cat = $1 ORDER BY id', NULL, '2');
EXECUTE ct_untyped('ct:u2', 'SELECT $1 + 1 AS n, $1 AS again', NULL, '41');
SELECT ct_runs() AS runs \gset
EXECUTE ct_untyped('ct:u', 'SELECT id, price FROM ct_items WHERE cat = $1 ORDER BY id', NULL, '2');
SELECT ct_runs() - :runs AS ran;
UPDATE ct_items SET price = price + 1 WHERE id = 1;
EXECUTE ct_untyped('ct:u', 'SELECT id, price FROM ct_items WHERE cat = $1 ORDER BY id', NULL, '2');
SELECT ct_runs() - :runs AS ran_after_other_cat;
-- A value that is not of the type the query gives is that type's error.
EXECUTE ct_untyped('ct:u', 'SELECT id FROM ct_items WHERE cat = $1', NULL, 'x');
-- The TTL by name, with the parameters following by name.
PREPARE ct_named AS SELECT harden.cache_query(key => $1, sql => $2, ttl => $3,
  VARIADIC params => ARRAY[$4, $5]) AS r;
EXECUTE ct_named('ct:n', 'SELECT count(*) AS n FROM ct_items WHERE cat = $1 AND price > $2', '1 hour', '1', '0');
SELECT ttl > interval '59 minutes' AS ttl_named FROM harden.cache_entries WHERE key = 'ct:n';
-- Untyped literals take the same path.
SELECT harden.cache_query('ct:lit', 'SELECT count(*) AS n FROM ct_items WHERE id > $1', NULL, '5');
SELECT harden.cache_unwatch('ct_items');
DEALLOCATE ct_untyped;
DEALLOCATE ct_named;

-- The generation table's gauges.
SELECT count(*) > 0 AS has_gauges FROM regexp_split_to_table(harden.metrics(), E'\n') l
 WHERE l ~ '^harden_cache_generation_slots(_used)?[{ ]';

DROP MATERIALIZED VIEW ct_mv;
DROP TABLE ct_items, ct_other, ct_ev, ct_base, ct_child;
DROP FUNCTION ct_runs(), ct_count();
SELECT harden.cache_flush() >= 0 AS flushed;
