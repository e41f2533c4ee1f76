-- The background worker (harden.worker_interval = 200ms, test/run.sh)
-- applies the timer and gives back the expired hold of a hostile table
-- owner (test/attack/hostile.sql): the owner's trigger runs as the owner,
-- security-restricted; none of its look-alike functions or operators runs;
-- the owner does not become superuser; the worker's settings are its own.
\set ON_ERROR_STOP 1
SET client_min_messages = warning;
\ir ../attack/hostile.sql
SELECT plan(9);

\ir lib/wait_for.sql

SELECT pg_temp.hostile_setup('atk_wk');
SELECT ok(pg_temp.wait_for($$ (SELECT runs > 0 FROM harden.worker_status WHERE database = current_database()) $$),
  'the worker runs in this database');
SELECT errors AS errors_before FROM harden.worker_status WHERE database = current_database() \gset
SELECT pg_temp.hostile_arm('atk_wk', 1);

SELECT ok(pg_temp.wait_for($$ (SELECT status = 'abandoned' FROM atk_wk.cart WHERE id = 1) $$),
  'the worker applies the timer of the hostile owner''s table');
SELECT ok(pg_temp.wait_for($$ (SELECT stock = 10 FROM atk_wk.product WHERE id = 1) $$),
  'the worker gives back the expired hold on it');
-- A few more runs: whatever the worker runs after the owner's trigger.
SELECT runs AS runs_then FROM harden.worker_status WHERE database = current_database() \gset
SELECT ok(pg_temp.wait_for(format($$ (SELECT runs >= %s + 3 FROM harden.worker_status
                                      WHERE database = current_database()) $$, :runs_then)),
  'the worker runs on');

SELECT results_eq($$ SELECT tbl, usr, restricted FROM atk_wk.traps ORDER BY tbl $$,
  $$ VALUES ('cart'::text, 'atk_wk'::text, true), ('product', 'atk_wk', true) $$,
  'the owner''s trigger ran for both, as the owner, security-restricted');
SELECT is((SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = 'atk_wk'), false,
  'the owner did not become superuser');
SELECT is((SELECT pg_catalog.string_agg(fn || ' as ' || usr, ', ') FROM atk_wk.calls), NULL,
  'none of the owner''s functions or operators ran');
SELECT is((SELECT errors FROM harden.worker_status WHERE database = current_database()), :errors_before::bigint,
  'the worker had no errors');
SELECT is((SELECT pg_catalog.string_agg(application_name, ', ') FROM pg_catalog.pg_stat_activity
            WHERE datname = current_database() AND backend_type = 'pg_harden worker'),
  'pg_harden worker', 'the trigger''s set_config(application_name) did not stay in the worker');

SELECT * FROM finish();
