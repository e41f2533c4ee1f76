-- A table owner plays the attacker against an administrator who applies
-- timed transitions and expired holds with harden.fsm_run_due() and
-- harden.stock_run_due() (test/attack/hostile.sql has the hostile owner).
-- pg_harden must run the owner's triggers as the owner, security-
-- restricted, run none of the owner's look-alike functions or operators,
-- and leave the administrator's settings as they were.
SET client_min_messages = warning;
\ir ../attack/hostile.sql
SELECT plan(37);

SELECT pg_temp.hostile_setup('atk_tap');
SET work_mem = '4MB';
SET application_name = 'admin';
CREATE TEMP TABLE admin_gucs AS
  SELECT name, setting FROM pg_catalog.pg_settings
   WHERE name IN ('search_path', 'work_mem', 'application_name', 'harden.reason', 'role',
                  'statement_timeout');

-- ---- timed transitions ----
SELECT pg_temp.hostile_arm('atk_tap', 1);
SELECT results_eq($$ SELECT applied, failed FROM harden.fsm_run_due() $$,
  $$ VALUES (1::bigint, 0::bigint) $$, 'fsm_run_due applies the timer of the hostile owner''s table');
SELECT is((SELECT status FROM atk_tap.cart WHERE id = 1), 'abandoned', 'the cart is abandoned');
SELECT results_eq($$ SELECT tbl, usr, restricted FROM atk_tap.traps $$,
  $$ VALUES ('cart'::text, 'atk_tap'::text, true) $$,
  'the owner''s trigger ran, as the owner, security-restricted');
SELECT is((SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = 'atk_tap'), false,
  'fsm_run_due: the owner did not become superuser');
SELECT is((SELECT pg_catalog.string_agg(fn || ' as ' || usr, ', ') FROM atk_tap.calls), NULL,
  'fsm_run_due: none of the owner''s functions or operators ran');
SELECT set_eq($$ SELECT name, setting FROM pg_catalog.pg_settings WHERE name IN (SELECT name FROM admin_gucs) $$,
  $$ SELECT name, setting FROM admin_gucs $$,
  'fsm_run_due: the administrator''s search_path and other settings are unchanged');
SELECT is(pg_catalog.current_setting('search_path'), '"$user", public', 'search_path is the administrator''s');
SELECT is((SELECT from_state || ' -> ' || to_state FROM harden.fsm_log
             WHERE table_name = 'atk_tap.cart' AND actor = 'timer'), 'submitted -> abandoned',
  'the timer went through the audit log');
SELECT is((SELECT reason FROM harden.fsm_log WHERE table_name = 'atk_tap.cart' AND actor = 'timer'), NULL,
  'the owner''s trigger could not plant a reason in the timer''s audit row');

-- A second run finds nothing to do and still runs nothing of the owner's.
SELECT results_eq($$ SELECT applied, dropped, failed FROM harden.fsm_run_due() $$,
  $$ VALUES (0::bigint, 0::bigint, 0::bigint) $$, 'a second fsm_run_due has nothing to do');
SELECT is((SELECT count(*) FROM atk_tap.calls), 0::bigint, 'and runs none of the owner''s functions either');
SELECT is(harden.fsm_log_prune() >= 0, true, 'fsm_log_prune runs');
SELECT is((SELECT count(*) FROM atk_tap.calls), 0::bigint, 'fsm_log_prune runs none of the owner''s functions');

-- ---- expiring holds ----
SELECT is(harden.stock_run_due(), 1, 'stock_run_due gives back the hold on the hostile owner''s table');
SELECT is((SELECT stock FROM atk_tap.product WHERE id = 1), 10, 'the stock is whole');
SELECT results_eq($$ SELECT tbl, usr, restricted FROM atk_tap.traps WHERE tbl = 'product' $$,
  $$ VALUES ('product'::text, 'atk_tap'::text, true) $$,
  'the owner''s trigger ran, as the owner, security-restricted');
SELECT is((SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = 'atk_tap'), false,
  'stock_run_due: the owner did not become superuser');
SELECT is((SELECT pg_catalog.string_agg(fn || ' as ' || usr, ', ') FROM atk_tap.calls), NULL,
  'stock_run_due: none of the owner''s functions or operators ran');
SELECT set_eq($$ SELECT name, setting FROM pg_catalog.pg_settings WHERE name IN (SELECT name FROM admin_gucs) $$,
  $$ SELECT name, setting FROM admin_gucs $$,
  'stock_run_due: the administrator''s search_path and other settings are unchanged');
SELECT is(harden.stock_run_due(), 0, 'a second stock_run_due has nothing to do');
SELECT is((SELECT count(*) FROM atk_tap.calls), 0::bigint, 'and runs none of the owner''s functions either');

-- ---- in one transaction with the administrator's own SET LOCAL ----
BEGIN;
SET LOCAL work_mem = '5MB';
SELECT pg_temp.hostile_arm('atk_tap', 2);
SELECT applied FROM harden.fsm_run_due() \gset
SELECT harden.stock_run_due() AS expired \gset
SELECT is(:applied || '/' || :expired, '1/1', 'in a transaction block both runs do their work');
SELECT is(pg_catalog.current_setting('work_mem'), '5MB', 'the administrator''s SET LOCAL survives both runs');
SELECT is(pg_catalog.current_setting('search_path'), '"$user", public', 'and so does its search_path');
COMMIT;
SELECT is((SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = 'atk_tap'), false,
  'the owner is not superuser after the transaction');
SELECT is((SELECT count(*) FROM atk_tap.calls), 0::bigint, 'none of the owner''s functions ran in it');

-- ---- an administrator without superuser attaches a machine ----
-- The rows are checked as their owner, security-restricted: the owner's
-- row-level security policy, which raises when it runs as anyone else, does
-- not run as the administrator, and the row in no state is found.
CREATE ROLE atk_tap_admin;
GRANT USAGE ON SCHEMA harden TO atk_tap_admin;
GRANT EXECUTE ON FUNCTION harden.fsm_attach(regclass, name, text, boolean) TO atk_tap_admin;
SET search_path = public;
SET ROLE atk_tap;
CREATE TABLE atk_tap.ticket (id int PRIMARY KEY, status text NOT NULL DEFAULT 'closed');
INSERT INTO atk_tap.ticket VALUES (1, 'closed'), (2, 'bogus');
CREATE FUNCTION atk_tap.tripwire() RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
  IF current_user <> 'atk_tap' THEN
    RAISE EXCEPTION 'the policy ran as %', current_user;
  END IF;
  RETURN true;
END $$;
ALTER TABLE atk_tap.ticket ENABLE ROW LEVEL SECURITY;
CREATE POLICY spy ON atk_tap.ticket USING (atk_tap.tripwire());
GRANT USAGE ON SCHEMA atk_tap TO atk_tap_admin;
GRANT SELECT, TRIGGER ON atk_tap.ticket TO atk_tap_admin;
RESET ROLE;
RESET search_path;
SET ROLE atk_tap_admin;
SELECT throws_ok($$ SELECT harden.fsm_attach('atk_tap.ticket', 'status', 'circuit_breaker') $$, 'PH209', NULL,
  'fsm_attach by a non-superuser administrator checks the rows as their owner: no policy runs as the administrator');
SELECT throws_ok($$ SELECT count(*) FROM atk_tap.ticket $$, 'P0001', 'the policy ran as atk_tap_admin',
  'the policy runs for the administrator''s own queries (the tripwire works)');
RESET ROLE;

-- ---- overrides by an operator ----
-- A member of harden_operator, with no privilege on the owner's tables (not
-- even USAGE on its schema), forces a row, retries a timer and releases a
-- hold: the owner's trigger runs as the owner, restricted, nothing of the
-- owner's runs as the operator, and the operator's settings stay.
CREATE ROLE atk_tap_op IN ROLE harden_operator;
INSERT INTO atk_tap.cart VALUES (3), (4);
UPDATE atk_tap.cart SET status = 'submitted' WHERE id IN (3, 4);
UPDATE harden.fsm_due SET due_at = pg_catalog.now() - interval '1 second'
 WHERE relid = 'atk_tap.cart'::regclass AND row_key = '{"id": 4}';
SELECT id AS atk_timer FROM harden.fsm_due WHERE relid = 'atk_tap.cart'::regclass AND row_key = '{"id": 4}' \gset
SELECT harden.stock_reserve('atk_tap.product', ARRAY[1], ARRAY[2], '1 hour', 'atk-op') AS atk_hold \gset
SELECT 'atk_tap.cart'::regclass::oid AS atk_cart \gset
DELETE FROM atk_tap.traps;
DELETE FROM atk_tap.calls;
SET ROLE atk_tap_op;
SET work_mem = '6MB';
CREATE TEMP TABLE op_gucs AS
  SELECT name, setting FROM pg_catalog.pg_settings
   WHERE name IN ('search_path', 'work_mem', 'application_name', 'harden.reason', 'role', 'statement_timeout');
SELECT ok(harden.fsm_force(:atk_cart, '3', 'abandoned', 'operator abandons cart 3'),
  'an operator forces a row of the hostile owner''s table');
SELECT is(harden.fsm_timer_retry(:atk_timer, 'operator retries cart 4'), 'applied',
  'an operator retries a timer of the hostile owner''s table');
SELECT ok(harden.stock_force_release(:atk_hold, 'operator releases the hold'),
  'an operator force-releases a hold on the hostile owner''s table');
SELECT set_eq($$ SELECT name, setting FROM pg_catalog.pg_settings WHERE name IN (SELECT name FROM op_gucs) $$,
  $$ SELECT name, setting FROM op_gucs $$,
  'overrides: the operator''s search_path and other settings are unchanged');
RESET ROLE;
SELECT results_eq($$ SELECT tbl, usr, restricted, count(*) FROM atk_tap.traps GROUP BY 1, 2, 3 ORDER BY 1 $$,
  $$ VALUES ('cart'::text, 'atk_tap'::text, true, 2::bigint), ('product', 'atk_tap', true, 1) $$,
  'overrides: the owner''s trigger ran each time as the owner, security-restricted');
SELECT is((SELECT pg_catalog.string_agg(fn || ' as ' || usr, ', ') FROM atk_tap.calls), NULL,
  'overrides: none of the owner''s functions or operators ran');
SELECT is((SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = 'atk_tap'), false,
  'overrides: the owner did not become superuser');
SELECT results_eq($$ SELECT to_state, actor, role, reason FROM harden.fsm_log
                      WHERE table_name = 'atk_tap.cart' AND row_key IN ('{"id": 3}', '{"id": 4}')
                        AND to_state = 'abandoned' ORDER BY row_key->>'id' $$,
  $$ VALUES ('abandoned'::text, 'force'::text, 'atk_tap_op'::text, 'operator abandons cart 3'::text),
            ('abandoned', 'timer', 'atk_tap', NULL) $$,
  'the audit rows: the forced move as the operator with its reason, the timer as usual; no reason planted');
SELECT results_eq($$ SELECT action, role, reason FROM harden.admin_log WHERE table_name LIKE 'atk_tap.%' ORDER BY id $$,
  $$ VALUES ('timer_retry'::text, 'atk_tap_op'::text, 'operator retries cart 4'::text),
            ('hold_release', 'atk_tap_op', 'operator releases the hold') $$,
  'the admin log has the retry and the release with the reasons given');

SELECT * FROM finish();
