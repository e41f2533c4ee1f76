-- Privileges and identifier handling.
--
-- pr_user has USAGE on schema harden and nothing else; pr_other writes cache
-- entries of its own; pr_owner owns the tables.  pr_user must not flush or
-- invalidate the cache, reset counters, define, redefine or drop machines,
-- attach or detach anything on tables it does not own, run the admin
-- functions, edit the definition or configuration tables, read pr_other's
-- entries (plain, secure or query results) or read the audit log until
-- granted.  Every SECURITY DEFINER function pins search_path.  Tables,
-- schemas and columns with hostile names work with every function that
-- takes them, and never run the SQL in their names (a canary table must
-- survive).
--
-- Cache writes inside a transaction block are published on commit, so the
-- suite runs without a surrounding transaction and cleans up after itself,
-- at the start (in case an earlier run stopped half-way) and at the end.
SET client_min_messages = warning;
SELECT plan(64);

CREATE FUNCTION pg_temp.pr_cleanup() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  PERFORM harden.cache_invalidate('pr:*');
  DROP SCHEMA IF EXISTS "s""; DROP TABLE pr_canary; --" CASCADE;
  DROP TABLE IF EXISTS pr_orders, pr_stock, pr_secret, pr_canary CASCADE;
  IF EXISTS (SELECT FROM harden.fsm_machines WHERE machine = 'pr_m') THEN
    PERFORM harden.fsm_drop('pr_m');
  END IF;
  DELETE FROM harden.fsm_log WHERE machine = 'pr_m' OR table_name LIKE '%pr_canary%'
     OR table_name LIKE 'public.pr_%';
  IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'pr_user') THEN
    EXECUTE 'REVOKE ALL ON harden.fsm_log FROM pr_user';
  END IF;
  DROP OWNED BY pr_user, pr_other, pr_owner;
EXCEPTION WHEN undefined_object THEN
  NULL;   -- the roles do not exist yet
END $$;
SELECT pg_temp.pr_cleanup();
DROP ROLE IF EXISTS pr_user;
DROP ROLE IF EXISTS pr_other;
DROP ROLE IF EXISTS pr_owner;
CREATE ROLE pr_user;
CREATE ROLE pr_other;
CREATE ROLE pr_owner;
GRANT USAGE ON SCHEMA harden TO pr_user, pr_other, pr_owner;
GRANT CREATE ON SCHEMA public TO pr_owner;

-- SQLSTATE of what a statement raises, or 'ok'.
CREATE FUNCTION pg_temp.pr_state(sql text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE sql;
  RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
  RETURN SQLSTATE;
END $$;
GRANT EXECUTE ON FUNCTION pg_temp.pr_state(text) TO PUBLIC;

-- Fixtures, owned by pr_owner, attached by the superuser.
CREATE TABLE pr_canary (x int);
CREATE TABLE pr_orders (id int PRIMARY KEY, status text NOT NULL DEFAULT 'pending');
CREATE TABLE pr_stock (id int PRIMARY KEY, q int NOT NULL);
CREATE TABLE pr_secret (id int PRIMARY KEY, v text);
ALTER TABLE pr_orders OWNER TO pr_owner;
ALTER TABLE pr_stock OWNER TO pr_owner;
ALTER TABLE pr_secret OWNER TO pr_owner;
INSERT INTO pr_orders VALUES (1), (2);
INSERT INTO pr_stock VALUES (1, 10), (2, 10);
INSERT INTO pr_secret VALUES (1, 'secret');
GRANT SELECT ON pr_orders, pr_stock TO pr_user;
GRANT SELECT ON pr_secret TO pr_other;
SELECT harden.fsm_define('pr_m', 'a -> b on go');
SELECT harden.fsm_attach('pr_orders', 'status', 'order');
SELECT harden.stock_attach('pr_stock', 'q');
SELECT harden.cache_watch('pr_secret');

-- pr_other's entries.
SET ROLE pr_other;
SELECT harden.cache_set('pr:other', 'theirs'::text, tags => '{pr_tag}');
SELECT harden.cache_set('pr:other:secure', 'password'::text, secure => true);
SELECT harden.cache_query('pr:other:q', 'SELECT v FROM public.pr_secret');
RESET ROLE;

SET ROLE pr_user;

-- Admin functions.
SELECT is(pg_temp.pr_state('SELECT harden.cache_flush()'), '42501', 'USAGE only: cache_flush() is refused');
SELECT is(pg_temp.pr_state('SELECT harden.cache_flush_secure()'), '42501', 'USAGE only: cache_flush_secure() is refused');
SELECT is(pg_temp.pr_state('SELECT harden.cache_invalidate(''*'')'), '42501', 'USAGE only: cache_invalidate() is refused');
SELECT is(pg_temp.pr_state('SELECT harden.cache_sweep()'), '42501', 'USAGE only: cache_sweep() is refused');
SELECT is(pg_temp.pr_state('SELECT harden.cache_stats_reset()'), '42501', 'USAGE only: cache_stats_reset() is refused');
SELECT is(pg_temp.pr_state('SELECT harden.metrics_reset()'), '42501', 'USAGE only: metrics_reset() is refused');
SELECT is(pg_temp.pr_state('SELECT harden.fsm_run_due()'), '42501', 'USAGE only: fsm_run_due() is refused');
SELECT is(pg_temp.pr_state('SELECT harden.fsm_log_prune()'), '42501', 'USAGE only: fsm_log_prune() is refused');
SELECT is(pg_temp.pr_state('SELECT harden.stock_run_due()'), '42501', 'USAGE only: stock_run_due() is refused');

-- Machines.
SELECT is(pg_temp.pr_state('SELECT harden.fsm_define(''pr_new'', ''a -> b'')'), '42501', 'USAGE only: fsm_define() of a new machine is refused');
SELECT is(pg_temp.pr_state('SELECT harden.fsm_define(''pr_m'', ''a -> b -> c'')'), '42501', 'USAGE only: redefining a machine is refused');
SELECT is(pg_temp.pr_state('SELECT harden.fsm_drop(''pr_m'')'), '42501', 'USAGE only: fsm_drop() is refused');
SELECT is(pg_temp.pr_state('INSERT INTO harden.fsm_transitions (machine, from_state, to_state, position) VALUES (''order'', ''delivered'', ''pending'', 99)'),
          '42501', 'USAGE only: no direct edit of fsm_transitions');
SELECT is(pg_temp.pr_state('UPDATE harden.fsm_states SET initial = true WHERE machine = ''order'''),
          '42501', 'USAGE only: no direct edit of fsm_states');
SELECT is(pg_temp.pr_state('DELETE FROM harden.fsm_machines WHERE machine = ''pr_m'''),
          '42501', 'USAGE only: no direct edit of fsm_machines');

-- Attach and detach.
SELECT is(pg_temp.pr_state('SELECT harden.fsm_detach(''pr_orders'')'), '42501', 'USAGE only: fsm_detach() of another role''s table is refused');
SELECT is(pg_temp.pr_state('SELECT harden.fsm_attach(''pr_stock'', ''q'', ''pr_m'')'), '42501', 'USAGE only: fsm_attach() to another role''s table is refused');
SELECT is(pg_temp.pr_state('SELECT harden.stock_detach(''pr_stock'')'), '42501', 'USAGE only: stock_detach() of another role''s table is refused');
SELECT is(pg_temp.pr_state('SELECT harden.stock_attach(''pr_orders'', ''id'')'), '42501', 'USAGE only: stock_attach() to another role''s table is refused');
SELECT is(pg_temp.pr_state('SELECT harden.cache_watch(''pr_orders'')'), '42501', 'USAGE only: cache_watch() of another role''s table is refused');
SELECT is(pg_temp.pr_state('SELECT harden.cache_unwatch(''pr_secret'')'), '42501', 'USAGE only: cache_unwatch() of another role''s table is refused');
SELECT is(pg_temp.pr_state('DELETE FROM harden.stock_tables'), '42501', 'USAGE only: no direct edit of stock_tables');
SELECT is(pg_temp.pr_state('UPDATE harden.stock_holds SET status = ''released'''), '42501', 'USAGE only: no direct edit of stock_holds');
SELECT is(pg_temp.pr_state('INSERT INTO harden.cache_policies VALUES (''pr:'', NULL, NULL, false)'), '42501', 'USAGE only: no direct edit of cache_policies');

-- Writes need the table privileges the UPDATE they replace would.
SELECT is(pg_temp.pr_state('SELECT harden.fsm_fire(''pr_orders'', ''{"id": 1}'', ''pay'')'), '42501', 'fsm_fire() without UPDATE on the table is refused');
SELECT is(pg_temp.pr_state('SELECT harden.stock_take(''pr_stock'', 1, 1)'), '42501', 'stock_take() without UPDATE on the table is refused');
SELECT is(pg_temp.pr_state('SELECT harden.stock_take_many(''pr_stock'', ARRAY[1, 2], ARRAY[1, 1]::bigint[])'), '42501', 'stock_take_many() without UPDATE is refused');
SELECT is(pg_temp.pr_state('SELECT harden.stock_reserve(''pr_stock'', ARRAY[1], ARRAY[1]::bigint[], ''1 hour'')'), '42501', 'stock_reserve() without UPDATE is refused');
SELECT is(pg_temp.pr_state('SELECT harden.stock_put(''pr_stock'', 1, 1)'), '42501', 'stock_put() without UPDATE is refused');

-- Another role's cache entries.
SELECT is(harden.cache_get_text('pr:other'), NULL, 'another role''s entry reads as missing');
SELECT is(harden.cache_exists('pr:other'), false, 'cache_exists() does not reveal it');
SELECT is(harden.cache_get_text('pr:other:secure'), NULL, 'another role''s secure value reads as missing');
SELECT is(harden.cache_ttl('pr:other:secure'), NULL, 'nor its TTL');
SELECT is((SELECT count(*)::int FROM harden.cache_entries WHERE key LIKE 'pr:%'), 0, 'cache_entries shows none of them');
SELECT is(pg_temp.pr_state('SELECT harden.cache_set(''pr:other'', ''mine''::text)'), 'ok',
          'setting the key of another role''s entry succeeds as on a free key: the caller writes its own value (no existence oracle)');
SELECT is(harden.cache_delete('pr:other'), true, 'deleting it deletes only the caller''s own value');
SELECT is(harden.cache_invalidate_tag('pr_tag'), 0::bigint, 'cache_invalidate_tag() leaves another role''s entries');
SELECT is(pg_temp.pr_state('SELECT harden.cache_query(''pr:other:q'', ''SELECT v FROM public.pr_secret'')'), '42501',
          'cache_query() does not serve another role''s result: the query runs with the caller''s privileges');
SELECT is(pg_temp.pr_state('SELECT harden.cache_get_text(''pr:other:q'')'), 'ok', 'a query result is not readable with cache_get');
SELECT is(harden.cache_get_text('pr:other:q'), NULL, '... it is missing');

-- The audit log.
SELECT is(pg_temp.pr_state('SELECT * FROM harden.fsm_log'), '42501', 'USAGE only: fsm_log is not readable');
SELECT is(pg_temp.pr_state('SELECT * FROM harden.fsm_due'), '42501', 'USAGE only: fsm_due is not readable');
RESET ROLE;
SELECT harden.fsm_fire('pr_orders', '{"id": 1}', 'pay');
GRANT SELECT ON harden.fsm_log TO pr_user;
SET ROLE pr_user;
SELECT is((SELECT count(*)::int FROM harden.fsm_log WHERE table_name = 'public.pr_orders' AND to_state = 'processing'), 1,
          'granted SELECT, fsm_log is readable');
RESET ROLE;
REVOKE SELECT ON harden.fsm_log FROM pr_user;

-- pr_other's entries are intact, and visible to pr_other.
SET ROLE pr_other;
SELECT is(harden.cache_get_text('pr:other'), 'theirs', 'the owner still reads its entry');
SELECT is((SELECT tags FROM harden.cache_entries WHERE key = 'pr:other:secure' AND type = 'text'), NULL,
          'a secure entry''s tags are not shown even to its owner');
RESET ROLE;

-- SECURITY DEFINER functions pin search_path; none is executable by PUBLIC
-- by accident.
SELECT is((SELECT coalesce(string_agg(oid::regprocedure::text, ', '), '')
             FROM pg_proc
            WHERE pronamespace = 'harden'::regnamespace AND prosecdef
              AND NOT EXISTS (SELECT FROM unnest(proconfig) c WHERE c LIKE 'search_path=%')),
          '', 'every SECURITY DEFINER function of schema harden sets search_path');
SELECT is((SELECT coalesce(string_agg(oid::regprocedure::text, ', '), '')
             FROM pg_proc
            WHERE pronamespace = 'harden'::regnamespace AND prosecdef
              AND EXISTS (SELECT FROM unnest(proconfig) c WHERE c LIKE 'search_path=%'
                            AND c !~ '^search_path=pg_catalog(, ?pg_temp)?$')),
          '', '... to pg_catalog (and pg_temp last) only');
SELECT is((SELECT coalesce(string_agg(oid::regprocedure::text, ', '), '')
             FROM pg_proc
            WHERE pronamespace = 'harden'::regnamespace AND prosecdef
              AND has_function_privilege('pr_user', oid, 'EXECUTE')),
          '', 'no SECURITY DEFINER function is executable by an ordinary role');

-- Hostile identifiers.  The schema, table and columns all carry SQL that
-- would drop the canary if spliced unquoted.
CREATE SCHEMA "s""; DROP TABLE pr_canary; --";
CREATE TABLE "s""; DROP TABLE pr_canary; --"."t""; DROP TABLE pr_canary; --" (
  "id""; DROP TABLE pr_canary; --" int PRIMARY KEY,
  "st""; DROP TABLE pr_canary; --" text NOT NULL DEFAULT 'pending',
  "q'); DROP TABLE pr_canary; --" int NOT NULL DEFAULT 10);
CREATE TEMP VIEW pr_h AS
  SELECT '"s""; DROP TABLE pr_canary; --"."t""; DROP TABLE pr_canary; --"'::regclass AS t;
INSERT INTO "s""; DROP TABLE pr_canary; --"."t""; DROP TABLE pr_canary; --" VALUES (1), (2), (3);

SELECT is(pg_temp.pr_state('SELECT harden.cache_watch((SELECT t FROM pr_h))'), 'ok', 'hostile names: cache_watch works');
SELECT is(harden.cache_query('pr:hostile',
            'SELECT "id""; DROP TABLE pr_canary; --" AS id FROM "s""; DROP TABLE pr_canary; --"."t""; DROP TABLE pr_canary; --" ORDER BY 1'),
          '[{"id": 1}, {"id": 2}, {"id": 3}]'::jsonb, 'hostile names: cache_query works');
SELECT is((SELECT deps FROM harden.cache_entries WHERE key = 'pr:hostile')::text[],
          ARRAY['"s""; DROP TABLE pr_canary; --"."t""; DROP TABLE pr_canary; --"'],
          'hostile names: cache_entries.deps names the table quoted');
DELETE FROM "s""; DROP TABLE pr_canary; --"."t""; DROP TABLE pr_canary; --" WHERE "id""; DROP TABLE pr_canary; --" = 3;
SELECT is(harden.cache_query('pr:hostile',
            'SELECT "id""; DROP TABLE pr_canary; --" AS id FROM "s""; DROP TABLE pr_canary; --"."t""; DROP TABLE pr_canary; --" ORDER BY 1'),
          '[{"id": 1}, {"id": 2}]'::jsonb, 'hostile names: a write to the watched table invalidates the result');
SELECT is(pg_temp.pr_state('SELECT harden.fsm_attach((SELECT t FROM pr_h), ''st"; DROP TABLE pr_canary; --'', ''order'')'),
          'ok', 'hostile names: fsm_attach works');
SELECT is(harden.fsm_fire((SELECT t FROM pr_h), '{"id\"; DROP TABLE pr_canary; --": 1}', 'pay'), 'processing',
          'hostile names: fsm_fire works');
SELECT is(harden.fsm_fire((SELECT t FROM pr_h), '2', 'cancel'), 'cancelled', 'hostile names: fsm_fire with a scalar key');
SELECT is(harden.fsm_can((SELECT t FROM pr_h), '{"id\"; DROP TABLE pr_canary; --": 1}', 'shipped'), true,
          'hostile names: fsm_can works');
SELECT is((SELECT string_agg(to_state, ',' ORDER BY id) FROM harden.fsm_log
            WHERE table_name = '"s""; DROP TABLE pr_canary; --"."t""; DROP TABLE pr_canary; --"'),
          'processing,cancelled', 'hostile names: the audit names the table quoted');
SELECT is(pg_temp.pr_state('SELECT harden.stock_attach((SELECT t FROM pr_h), ''q''''); DROP TABLE pr_canary; --'')'),
          'ok', 'hostile names: stock_attach works');
SELECT is(harden.stock_take((SELECT t FROM pr_h), 1, 3), 7::bigint, 'hostile names: stock_take works');
SELECT is(harden.stock_take_many((SELECT t FROM pr_h), ARRAY[2, 1], ARRAY[1, 1]::bigint[]), ARRAY[9, 6]::bigint[],
          'hostile names: stock_take_many works');
SELECT is(harden.stock_release(harden.stock_reserve((SELECT t FROM pr_h), ARRAY['1'::text], ARRAY[6]::bigint[], '1 hour',
                                                    'r''); DROP TABLE pr_canary; --')),
          true, 'hostile names: stock_reserve and stock_release work');
SELECT is(harden.stock_put((SELECT t FROM pr_h), 1, 4), 10::bigint, 'hostile names: stock_put works');
SELECT is(pg_temp.pr_state('SELECT harden.fsm_define(''m"; DROP TABLE pr_canary; --'', ''a -> b'')'), 'PH203',
          'hostile names: a hostile machine name is refused');
SELECT has_table('public', 'pr_canary', 'the canary table survived every hostile name');

SELECT pg_temp.pr_cleanup();
DROP ROLE pr_user;
DROP ROLE pr_other;
DROP ROLE pr_owner;
SELECT * FROM finish();
