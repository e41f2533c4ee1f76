-- cache_query(): results never cross roles (row-level security, grants),
-- and single-flight: sessions missing the same key compute it once; when
-- the computing session fails, is cancelled or is terminated, a waiter
-- computes instead; harden.cache_wait_timeout bounds the wait.
--
-- Concurrent sessions are dblink connections to this database.  The query
-- under test takes a shared advisory lock that this session holds, so the
-- computing session stays inside its computation until we let it go; a
-- waiting session shows wait_event_type 'Extension' (the condition
-- variable), a computing one waits on the advisory 'Lock'.
--
-- Like cache_roles.sql the suite runs without a surrounding transaction and
-- cleans up after itself (keys start with 'tap:cq:').
SELECT plan(51);
SET client_min_messages = warning;

CREATE EXTENSION IF NOT EXISTS dblink;
DO $$ BEGIN PERFORM harden.cache_invalidate('tap:cq:*'); END $$;

CREATE FUNCTION pg_temp.error_of(sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  st text; m text;
BEGIN
  EXECUTE sql;
  RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, m = MESSAGE_TEXT;
  RETURN st || ': ' || m;
END $$;

-- ---------------------------------------------------------------------------
-- Row-level security and grants
-- ---------------------------------------------------------------------------
DO $$
DECLARE r name;
BEGIN
  FOR r IN SELECT rolname FROM pg_roles WHERE rolname LIKE 'pgh_cq_%' LOOP
    EXECUTE format('DROP OWNED BY %I', r);
    EXECUTE format('DROP ROLE %I', r);
  END LOOP;
END $$;
DROP TABLE IF EXISTS tap_cq_orders;
CREATE ROLE pgh_cq_a;
CREATE ROLE pgh_cq_b;
CREATE ROLE pgh_cq_member IN ROLE pgh_cq_a;
CREATE ROLE pgh_cq_nogrant;
GRANT USAGE ON SCHEMA harden TO pgh_cq_a, pgh_cq_b, pgh_cq_member, pgh_cq_nogrant;

CREATE TABLE tap_cq_orders (id int PRIMARY KEY, tenant name NOT NULL, amount int NOT NULL);
INSERT INTO tap_cq_orders VALUES (1, 'pgh_cq_a', 10), (2, 'pgh_cq_a', 20),
                                 (3, 'pgh_cq_b', 30), (4, 'pgh_cq_member', 40);
ALTER TABLE tap_cq_orders ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON tap_cq_orders USING (tenant = current_user);
GRANT SELECT ON tap_cq_orders TO pgh_cq_a, pgh_cq_b, pgh_cq_member;
SELECT harden.cache_watch('tap_cq_orders');

CREATE FUNCTION pg_temp.orders() RETURNS int[] LANGUAGE sql AS $$
  SELECT coalesce(array_agg((r->>'id')::int ORDER BY (r->>'id')::int), '{}')
    FROM jsonb_array_elements(harden.cache_query('tap:cq:orders',
           'SELECT id, amount FROM tap_cq_orders ORDER BY id')) r
$$;
CREATE FUNCTION pg_temp.hits() RETURNS bigint LANGUAGE sql AS $$
  SELECT hits FROM harden.cache_stats
$$;
GRANT EXECUTE ON FUNCTION pg_temp.orders(), pg_temp.hits() TO PUBLIC;

SET ROLE pgh_cq_a;
SELECT is(pg_temp.orders(), '{1,2}', 'role a computes its own rows under RLS');
SELECT pg_temp.hits() AS h \gset
SELECT is(pg_temp.orders(), '{1,2}', 'role a reads them again ...');
SELECT is(pg_temp.hits() - :h, 1::bigint, '... from the cache');
SET ROLE pgh_cq_b;
SELECT pg_temp.hits() AS h \gset
SELECT is(pg_temp.orders(), '{3}', 'role b under the same key gets its own rows, never a''s');
SELECT is(pg_temp.hits() - :h, 0::bigint, 'role b''s first call was a miss');
SELECT is(pg_temp.orders(), '{3}', 'role b reads its own cached rows');
SET ROLE pgh_cq_member;
SELECT is(pg_temp.orders(), '{4}', 'a member of role a gets rows computed under its own policy, not a''s result');
SET ROLE pgh_cq_nogrant;
SELECT is(pg_temp.error_of($$SELECT harden.cache_query('tap:cq:orders', 'SELECT id, amount FROM tap_cq_orders ORDER BY id')$$),
          '42501: permission denied for table tap_cq_orders',
          'a role without SELECT gets the query''s own error, though results are cached for others');
RESET ROLE;
SELECT is(pg_temp.orders(), '{1,2,3,4}', 'a superuser (bypassing RLS) computes all rows for itself');
SELECT is((SELECT array_agg(owner::text ORDER BY owner::text) FROM harden.cache_entries WHERE key = 'tap:cq:orders'),
          '{pgh_cq_a,pgh_cq_b,pgh_cq_member,postgres}',
          'one entry per role under the key');
SET ROLE pgh_cq_b;
SELECT is((SELECT array_agg(owner::text) FROM harden.cache_entries WHERE key = 'tap:cq:orders'),
          '{pgh_cq_b}', 'cache_entries shows role b only its own result');
SET ROLE pgh_cq_member;
SELECT is((SELECT array_agg(owner::text ORDER BY owner::text) FROM harden.cache_entries WHERE key = 'tap:cq:orders'),
          '{pgh_cq_member}', 'a member of role a does not see a''s query results either');
RESET ROLE;

-- A committed write to the table: every role's result is recomputed.
UPDATE tap_cq_orders SET tenant = 'pgh_cq_b' WHERE id = 2;
SET ROLE pgh_cq_a;
SELECT is(pg_temp.orders(), '{1}', 'after a committed write role a''s result is recomputed');
SET ROLE pgh_cq_b;
SELECT is(pg_temp.orders(), '{2,3}', 'and role b''s');
RESET ROLE;

-- Changing the rules of a watched table invalidates too.
ALTER POLICY tenant_rows ON tap_cq_orders USING (tenant = current_user AND amount > 20);
SET ROLE pgh_cq_b;
SELECT is(pg_temp.orders(), '{3}', 'after ALTER POLICY role b''s result follows the new policy');
RESET ROLE;
REVOKE SELECT ON tap_cq_orders FROM pgh_cq_b;
SET ROLE pgh_cq_b;
SELECT is(pg_temp.error_of($$SELECT harden.cache_query('tap:cq:orders', 'SELECT id, amount FROM tap_cq_orders ORDER BY id')$$),
          '42501: permission denied for table tap_cq_orders',
          'after REVOKE role b''s cached result is not served');
RESET ROLE;

-- Privileges that come through role membership: revoking the membership
-- invalidates (roles are not table changes).
CREATE ROLE pgh_cq_readers;
CREATE ROLE pgh_cq_reader IN ROLE pgh_cq_readers;
GRANT USAGE ON SCHEMA harden TO pgh_cq_reader;
CREATE TABLE tap_cq_secret (v text);
INSERT INTO tap_cq_secret VALUES ('salary data');
GRANT SELECT ON tap_cq_secret TO pgh_cq_readers;
SET ROLE pgh_cq_reader;
SELECT is(harden.cache_query('tap:cq:secret', 'SELECT v FROM tap_cq_secret'), '[{"v": "salary data"}]',
          'a member of a granted role computes and caches a result');
RESET ROLE;
REVOKE pgh_cq_readers FROM pgh_cq_reader;
SET ROLE pgh_cq_reader;
SELECT is(pg_temp.error_of($$SELECT harden.cache_query('tap:cq:secret', 'SELECT v FROM tap_cq_secret')$$),
          '42501: permission denied for table tap_cq_secret',
          'after REVOKE of the membership the cached result is not served');
RESET ROLE;
DROP TABLE tap_cq_secret;
REVOKE USAGE ON SCHEMA harden FROM pgh_cq_reader;
DROP ROLE pgh_cq_reader, pgh_cq_readers;

SELECT harden.cache_unwatch('tap_cq_orders');
DROP TABLE tap_cq_orders;
DO $$ BEGIN PERFORM harden.cache_invalidate('tap:cq:*'); END $$;
REVOKE USAGE ON SCHEMA harden FROM pgh_cq_a, pgh_cq_b, pgh_cq_member, pgh_cq_nogrant;
DROP ROLE pgh_cq_member, pgh_cq_a, pgh_cq_b, pgh_cq_nogrant;

-- ---------------------------------------------------------------------------
-- Single-flight
-- ---------------------------------------------------------------------------
DROP TABLE IF EXISTS tap_cq_flight;
DROP SEQUENCE IF EXISTS tap_cq_runs;
CREATE TABLE tap_cq_flight (v int);
INSERT INTO tap_cq_flight VALUES (7);
CREATE SEQUENCE tap_cq_runs;

-- The query under test, as a cache_query() call, and its number of runs.
CREATE FUNCTION pg_temp.call() RETURNS text LANGUAGE sql AS $$
  SELECT $q$SELECT harden.cache_query('tap:cq:flight',
    'SELECT v, nextval(''tap_cq_runs'') AS run FROM tap_cq_flight, LATERAL (SELECT pg_advisory_xact_lock_shared(4242)) l')::text$q$
$$;
CREATE FUNCTION pg_temp.runs() RETURNS bigint LANGUAGE sql AS $$
  SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM tap_cq_runs
$$;
CREATE FUNCTION pg_temp.coalesced() RETURNS bigint LANGUAGE sql AS $$
  SELECT coalesced FROM harden.cache_stats
$$;
\ir lib/sessions.sql
-- The result of a query sent with dblink_send_query, or its error.
CREATE FUNCTION pg_temp.result_of(conn text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE r text;
BEGIN
  SELECT t.v INTO r FROM dblink_get_result(conn, false) AS t(v text);
  IF r IS NULL THEN
    r := 'error: ' || coalesce(dblink_error_message(conn), '?');
  END IF;
  PERFORM * FROM dblink_get_result(conn, false) AS t(v text);
  RETURN r;
END $$;

SELECT pg_temp.connect('lead') AS lead_pid \gset
SELECT pg_temp.connect('wait') AS wait_pid \gset
SELECT dblink_exec('wait', 'SET harden.cache_wait_timeout = ''60s''');

-- Two misses, one run.
SELECT pg_advisory_lock(4242);
SELECT pg_temp.coalesced() AS c0 \gset
SELECT dblink_send_query('lead', pg_temp.call());
SELECT ok(pg_temp.waits_on(:lead_pid, 'Lock'), 'the first session computes (and blocks on our lock)');
SELECT dblink_send_query('wait', pg_temp.call());
SELECT ok(pg_temp.waits_on(:wait_pid, 'Extension'), 'the second session waits for it instead of running the query');
SELECT pg_advisory_unlock(4242);
SELECT is(pg_temp.result_of('lead'), '[{"v": 7, "run": 1}]', 'the first session returns its result');
SELECT is(pg_temp.result_of('wait'), '[{"v": 7, "run": 1}]', 'the second returns the same result');
SELECT is(pg_temp.runs(), 1::bigint, 'the query ran once');
SELECT is(pg_temp.coalesced() - :c0, 1::bigint, 'one coalesced wait is counted');
SELECT is(pg_temp.error_of(pg_temp.call()), 'no error', 'a later call ...');
SELECT is(pg_temp.runs(), 1::bigint, '... is a hit');

-- The computing session is cancelled: the waiter takes over.
DO $$ BEGIN PERFORM harden.cache_invalidate('tap:cq:flight'); END $$;
SELECT pg_advisory_lock(4242);
SELECT dblink_send_query('lead', pg_temp.call());
SELECT ok(pg_temp.waits_on(:lead_pid, 'Lock'), 'cancel: the first session computes');
SELECT dblink_send_query('wait', pg_temp.call());
SELECT ok(pg_temp.waits_on(:wait_pid, 'Extension'), 'cancel: the second waits');
SELECT ok(pg_cancel_backend(:lead_pid), 'cancel the computing session');
SELECT ok(pg_temp.waits_on(:wait_pid, 'Lock'), 'cancel: the waiter wakes and computes itself');
SELECT pg_advisory_unlock(4242);
SELECT alike(pg_temp.result_of('lead'), 'error: %canceling statement due to user request%', 'cancel: the first session got the cancel');
SELECT is(pg_temp.result_of('wait'), '[{"v": 7, "run": 2}]', 'cancel: the waiter returns its own result');
SELECT is(pg_temp.runs(), 2::bigint, 'cancel: the query completed once more');

-- The computing session is terminated: the waiter takes over.
DO $$ BEGIN PERFORM harden.cache_invalidate('tap:cq:flight'); END $$;
SELECT pg_advisory_lock(4242);
SELECT dblink_send_query('lead', pg_temp.call());
SELECT ok(pg_temp.waits_on(:lead_pid, 'Lock'), 'terminate: the first session computes');
SELECT dblink_send_query('wait', pg_temp.call());
SELECT ok(pg_temp.waits_on(:wait_pid, 'Extension'), 'terminate: the second waits');
SELECT ok(pg_terminate_backend(:lead_pid, 5000), 'terminate the computing session');
SELECT ok(pg_temp.waits_on(:wait_pid, 'Lock'), 'terminate: the waiter wakes and computes itself');
SELECT pg_advisory_unlock(4242);
SELECT is(pg_temp.result_of('wait'), '[{"v": 7, "run": 3}]', 'terminate: the waiter returns its own result');
SELECT is(pg_temp.runs(), 3::bigint, 'terminate: the query completed once more');
SELECT is(pg_temp.error_of(pg_temp.call()), 'no error', 'terminate: nothing stays marked as computing');
SELECT is(pg_temp.runs(), 3::bigint, 'terminate: and the result is cached');

-- The computing session fails: the waiter takes over at once.
DO $$ BEGIN PERFORM harden.cache_invalidate('tap:cq:flight'); END $$;
SELECT pg_temp.connect('lead') AS lead_pid \gset
SELECT pg_advisory_lock(4242);
SELECT dblink_send_query('lead', pg_temp.call());
SELECT ok(pg_temp.waits_on(:lead_pid, 'Lock'), 'error: the first session computes');
SELECT dblink_send_query('wait', pg_temp.call());
SELECT ok(pg_temp.waits_on(:wait_pid, 'Extension'), 'error: the second waits');
-- Dropping the sequence would block on the lead's lock; make its nextval fail instead.
ALTER SEQUENCE tap_cq_runs MAXVALUE 4;
SELECT setval('tap_cq_runs', 4);
SELECT pg_advisory_unlock(4242);
SELECT alike(pg_temp.result_of('lead'), 'error: %reached maximum value%', 'error: the first session fails');
SELECT alike(pg_temp.result_of('wait'), 'error: %reached maximum value%', 'error: the waiter ran the query itself (and met the same error)');
ALTER SEQUENCE tap_cq_runs NO MAXVALUE;
SELECT setval('tap_cq_runs', 4);

-- harden.cache_wait_timeout bounds the wait: then the waiter computes.
DO $$ BEGIN PERFORM harden.cache_invalidate('tap:cq:flight'); END $$;
SELECT dblink_exec('wait', 'SET harden.cache_wait_timeout = ''100ms''');
SELECT pg_advisory_lock(4242);
SELECT dblink_send_query('lead', pg_temp.call());
SELECT ok(pg_temp.waits_on(:lead_pid, 'Lock'), 'timeout: the first session computes');
SELECT dblink_send_query('wait', pg_temp.call());
SELECT ok(pg_temp.waits_on(:wait_pid, 'Lock'), 'timeout: after 100ms the waiter computes too');
SELECT pg_advisory_unlock(4242);
SELECT alike(pg_temp.result_of('lead'), '[{"v": 7, "run": %}]', 'timeout: the first session returns a result');
SELECT alike(pg_temp.result_of('wait'), '[{"v": 7, "run": %}]', 'timeout: so does the second');
SELECT is(pg_temp.runs(), 6::bigint, 'timeout: the query ran twice');

-- A session whose query reads its own key computes it again (no self-wait).
SELECT is(pg_temp.error_of($$SELECT harden.cache_query('tap:cq:self',
            'SELECT harden.cache_query(''tap:cq:self'', ''SELECT 1 AS one'') AS inner')$$),
          'no error', 'a nested cache_query() of the same key does not wait for itself');

SELECT dblink_disconnect('lead');
SELECT dblink_disconnect('wait');
DROP TABLE tap_cq_flight;
DROP SEQUENCE tap_cq_runs;
DO $$ BEGIN PERFORM harden.cache_invalidate('tap:cq:*'); END $$;

SELECT * FROM finish();
