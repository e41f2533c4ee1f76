-- Without shared_preload_libraries: the extension installs, functions that
-- need shared memory fail with PH001 and a HINT, the rest keep working.
BEGIN;
SELECT plan(42);

SELECT is(current_setting('shared_preload_libraries'), '', 'cluster is not preloaded');
SELECT throws_ok($$ SELECT harden.metrics_reset() $$, 'PH001',
  'harden.metrics_reset() requires pg_harden to be loaded via shared_preload_libraries',
  'shared-memory function raises PH001');

CREATE FUNCTION pg_temp.error_hint(sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE h text;
BEGIN
  EXECUTE sql;
  RETURN NULL;
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS h = PG_EXCEPTION_HINT;
  RETURN h;
END $$;
SELECT matches(pg_temp.error_hint('SELECT harden.metrics_reset()'),
  'shared_preload_libraries', 'the HINT says how to preload');

SELECT throws_ok($$ SELECT harden.cache_set('k', '1'::jsonb) $$, 'PH001',
  'harden.cache_set() requires pg_harden to be loaded via shared_preload_libraries',
  'cache_set raises PH001');
SELECT throws_ok($$ SELECT harden.cache_get('k') $$, 'PH001', NULL, 'cache_get raises PH001');
SELECT throws_ok($$ SELECT * FROM harden.cache_stats $$, 'PH001', NULL, 'cache_stats raises PH001');
SELECT throws_ok($$ SELECT * FROM harden.worker_status $$, 'PH001', NULL, 'worker_status raises PH001');
SELECT ok(NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE backend_type LIKE 'pg_harden%'),
  'no background worker runs without preloading');
SELECT throws_ok($$ SELECT harden.cache_query('k', 'SELECT 1') $$, 'PH001', NULL, 'cache_query raises PH001');
-- Watching needs no shared memory, and a watched table stays writable.
CREATE TABLE np_watched (id int);
SELECT ok(harden.cache_watch('np_watched'), 'cache_watch installs its trigger');
SELECT lives_ok($$ INSERT INTO np_watched VALUES (1); UPDATE np_watched SET id = 2; TRUNCATE np_watched $$,
  'writes to a watched table work');

SELECT is(harden.version(), (SELECT extversion FROM pg_extension WHERE extname = 'pg_harden'),
  'version() works');
SELECT matches(harden.metrics(), 'harden_preloaded 0', 'metrics() reports preloaded 0');
SELECT is((harden.metrics_json()->>'preloaded')::bool, false, 'metrics_json() reports preloaded false');

-- State machines need no shared memory: they are enforced, audited and
-- fired as usual; only the per-machine counters are not kept.
CREATE TABLE np_orders (id int PRIMARY KEY, status text NOT NULL DEFAULT 'pending');
SELECT lives_ok($$ SELECT harden.fsm_attach('np_orders', 'status', 'order') $$, 'fsm_attach works');
INSERT INTO np_orders VALUES (1);
SELECT lives_ok($$ UPDATE np_orders SET status = 'processing' WHERE id = 1 $$, 'an allowed transition passes');
SELECT throws_ok($$ UPDATE np_orders SET status = 'delivered' WHERE id = 1 $$, 'PH201',
  NULL, 'an invalid transition raises PH201');
SELECT is(harden.fsm_fire('np_orders', '1', 'ship'), 'shipped', 'fsm_fire works');
SELECT is((SELECT array_agg(to_state ORDER BY id) FROM harden.fsm_log WHERE table_name = 'public.np_orders'),
  '{pending,processing,shipped}'::text[], 'transitions are audited');
SELECT is((SELECT count(*) FROM harden.fsm_stats), 0::bigint, 'fsm_stats is empty');
SELECT doesnt_match(harden.metrics(), 'fsm_machine_transitions_total', 'no per-machine counters in metrics()');
SELECT lives_ok($$ SELECT harden.fsm_run_due() $$, 'fsm_run_due works');
-- Stock functions need no shared memory.
CREATE TABLE np_stock (id int PRIMARY KEY, q int NOT NULL);
INSERT INTO np_stock VALUES (1, 5), (2, 5);
SELECT lives_ok($$ SELECT harden.stock_attach('np_stock', 'q') $$, 'stock_attach works');
SELECT is(harden.stock_take('np_stock', 1, 2), 3::bigint, 'stock_take works');
SELECT is(harden.stock_take_many('np_stock', ARRAY[2, 1], ARRAY[1, 1]), '{4,2}'::bigint[],
  'stock_take_many works');
SELECT throws_ok($$ SELECT harden.stock_take('np_stock', 1, 100) $$, 'PH301', NULL,
  'a shortage raises PH301');
SELECT ok(harden.stock_release(harden.stock_reserve('np_stock', ARRAY[1], ARRAY[1], '1 hour')),
  'stock_reserve and stock_release work');
SELECT is(harden.stock_run_due(), 0, 'stock_run_due works');
SELECT results_eq('SELECT q FROM np_stock ORDER BY id', ARRAY[2, 4], 'stock is where the calls left it');

-- Query analysis needs no shared memory; only its metrics summary does.
CREATE TABLE np_big (id int, name text);
INSERT INTO np_big SELECT i, 'n' || i FROM generate_series(1, 2000) AS i;
ANALYZE np_big;
SET LOCAL harden.analyze_min_rows = 1000;
SELECT is((SELECT suggestion FROM harden.query_check('SELECT * FROM np_big WHERE name ILIKE ''%7%''')),
  'CREATE INDEX CONCURRENTLY ON public.np_big USING gin (name public.gin_trgm_ops);', 'query_check advises a trigram index');
SELECT throws_ok($$ SELECT * FROM harden.query_check('VACUUM') $$, 'PH401', NULL, 'query_check refuses a utility statement');
CREATE INDEX np_big_a ON np_big (id);
CREATE INDEX np_big_b ON np_big (id);
SELECT is((SELECT count(*) FROM harden.health_report() WHERE "check" = 'duplicate_index' AND object = 'public.np_big_b'),
  1::bigint, 'health_report works');
SELECT doesnt_match(harden.metrics(), 'harden_health_findings\{', 'no health summary in metrics()');

-- Circuit breakers live in shared memory: every breaker function raises
-- PH001; redaction needs none.
SELECT throws_ok($$ SELECT harden.breaker_define('np') $$, 'PH001',
  'harden.breaker_define() requires pg_harden to be loaded via shared_preload_libraries',
  'breaker_define raises PH001');
SELECT throws_ok($$ SELECT harden.breaker_allow('np') $$, 'PH001', NULL, 'breaker_allow raises PH001');
SELECT throws_ok($$ SELECT harden.breaker_record('np', false) $$, 'PH001', NULL, 'breaker_record raises PH001');
SELECT throws_ok($$ SELECT * FROM harden.breaker_status $$, 'PH001', NULL, 'breaker_status raises PH001');
SELECT matches(pg_temp.error_hint('SELECT harden.breaker_allow(''np'')'),
  'shared_preload_libraries', 'the breaker HINT says how to preload');
SELECT is(harden.redact('{"password": "x", "mail": "a@b.io"}'::jsonb),
  '{"mail": "[email]", "password": "[redacted]"}'::jsonb, 'redact(jsonb) works');
SELECT is(harden.redact('call +1 555 123 4567'), 'call [phone]', 'redact(text) works');

-- pg_stat_statements installed but not preloaded: reading it is an error,
-- the views built on it are empty
CREATE EXTENSION pg_stat_statements;
SELECT is((SELECT count(*) FROM harden.slow_queries), 0::bigint, 'slow_queries is empty without pg_stat_statements preloaded');
SELECT is((SELECT count(*) FROM harden.suggested_indexes), 0::bigint, 'suggested_indexes is empty without pg_stat_statements preloaded');
DROP EXTENSION pg_stat_statements;
SELECT * FROM finish();
ROLLBACK;
