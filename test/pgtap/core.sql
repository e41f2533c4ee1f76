-- Core objects and their privileges.
BEGIN;
SELECT plan(9);

SELECT has_schema('harden');
SELECT has_function('harden', 'version', '{}'::name[]);
SELECT has_function('harden', 'metrics', '{}'::name[]);
SELECT has_function('harden', 'metrics_json', '{}'::name[]);
SELECT function_returns('harden', 'metrics_json', '{}'::name[], 'jsonb');

CREATE ROLE pgh_plain;
GRANT USAGE ON SCHEMA harden TO pgh_plain;
SET LOCAL ROLE pgh_plain;
SELECT lives_ok($$ SELECT harden.metrics() $$, 'a plain role may read metrics');
SELECT throws_ok($$ SELECT harden.metrics_reset() $$, '42501', NULL,
                 'a plain role may not reset metrics');
RESET ROLE;

SELECT ok(NOT has_function_privilege('public', 'harden.metrics_reset()', 'EXECUTE'),
          'metrics_reset is revoked from PUBLIC');
SELECT is((harden.metrics_json()->>'preloaded')::bool, true, 'preloaded in the test cluster');

SELECT * FROM finish();
ROLLBACK;
