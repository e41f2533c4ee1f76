-- Without shared_preload_libraries: the extension installs, functions that
-- need shared memory fail with PH001 and a HINT, the rest keep working.
BEGIN;
SELECT plan(16);

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

SELECT is(harden.version(), (SELECT extversion FROM pg_extension WHERE extname = 'pg_harden'),
  'version() works');
SELECT matches(harden.metrics(), 'pg_harden_preloaded 0', 'metrics() reports preloaded 0');
SELECT is((harden.metrics_json()->>'preloaded')::bool, false, 'metrics_json() reports preloaded false');

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

SELECT * FROM finish();
ROLLBACK;
