-- Never early: an explicit invalidation by a transaction that wrote rows
-- must not let a session that read the old rows refill the old value
-- before that transaction's commit is visible.
--
-- The commit is held between its commit record and its visibility: the
-- cluster names a synchronous standby that never connects, and only the
-- writing session commits with synchronous_commit = on (every other
-- session commits locally).  While it is held, this session reads the old
-- row and sets the old value; after the commit returns, the old value must
-- not be served.  Runs without a surrounding transaction (each statement
-- commits on its own) and cleans up after itself.
SELECT plan(23);
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS dblink;

\ir lib/sessions.sql
-- Whether backend p waits for synchronous replication within secs seconds.
CREATE FUNCTION pg_temp.in_syncrep(p int, secs float8) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
  FOR i IN 1 .. greatest(1, (secs * 50)::int) LOOP
    PERFORM pg_stat_clear_snapshot();
    IF EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = p AND wait_event = 'SyncRep') THEN
      RETURN true;
    END IF;
    PERFORM pg_sleep(0.02);
  END LOOP;
  RETURN false;
END $$;
-- Whether commits asking for a synchronous standby are held now: a probe
-- session's commit of a row is (then it is terminated; its commit stays
-- local).  A transaction that wrote no WAL before its commit record never
-- waits.
CREATE FUNCTION pg_temp.commits_held() RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE p int;
BEGIN
  FOR i IN 1 .. 50 LOOP
    p := pg_temp.connect('probe');
    PERFORM dblink_exec('probe', 'SET synchronous_commit = on');
    PERFORM dblink_send_query('probe', 'INSERT INTO tap_ne_probe VALUES (1) RETURNING 1');
    IF pg_temp.in_syncrep(p, 0.5) THEN
      PERFORM pg_terminate_backend(p, 10000);
      PERFORM dblink_disconnect('probe');
      RETURN true;
    END IF;
    PERFORM * FROM dblink_get_result('probe') AS t(x text);
    PERFORM dblink_disconnect('probe');
  END LOOP;
  RETURN false;
END $$;
-- Whether the held commit of backend p went through within 20 s.
CREATE FUNCTION pg_temp.released(p int) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
  FOR i IN 1 .. 1000 LOOP
    PERFORM pg_stat_clear_snapshot();
    IF NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = p AND wait_event = 'SyncRep') THEN
      RETURN true;
    END IF;
    PERFORM pg_sleep(0.02);
  END LOOP;
  RETURN false;
END $$;

DROP TABLE IF EXISTS tap_ne_rows, tap_ne_probe;
CREATE TABLE tap_ne_rows (id int PRIMARY KEY, v int NOT NULL);
CREATE TABLE tap_ne_probe (x int);
INSERT INTO tap_ne_rows VALUES (1, 1);
DO $$ BEGIN PERFORM harden.cache_invalidate('tap:ne:*'); END $$;
-- The writer: a fresh session per case, so no result of the last one is left.
CREATE FUNCTION pg_temp.writer() RETURNS int LANGUAGE plpgsql AS $$
DECLARE p int;
BEGIN
  p := pg_temp.connect('w');
  PERFORM dblink_exec('w', 'SET synchronous_commit = on');
  RETURN p;
END $$;

ALTER SYSTEM SET synchronous_commit = 'local';
SELECT pg_reload_conf();

-- 1. cache_invalidate_tag
SELECT harden.cache_set('tap:ne:tagged', to_jsonb(v), tags => '{tap-ne-t}') FROM tap_ne_rows;
ALTER SYSTEM SET synchronous_standby_names = 'pgh_never_connects';
SELECT pg_reload_conf();
SELECT ok(pg_temp.commits_held(), 'tag: commits asking for a synchronous standby are held');
SELECT pg_temp.writer() AS w_pid \gset
SELECT dblink_send_query('w', $q$BEGIN; UPDATE tap_ne_rows SET v = v + 1;
  SELECT harden.cache_invalidate_tag('tap-ne-t'); COMMIT$q$);
SELECT ok(pg_temp.in_syncrep(:w_pid, 20), 'tag: the writer''s COMMIT is held');
SELECT is((SELECT v FROM tap_ne_rows), 1, 'tag: meanwhile a reader sees the old row');
SELECT harden.cache_set('tap:ne:tagged', to_jsonb(v), tags => '{tap-ne-t}') FROM tap_ne_rows;
SELECT is(harden.cache_get('tap:ne:tagged'), NULL,
          'tag: and the old value it sets is not kept while the commit is pending');
ALTER SYSTEM RESET synchronous_standby_names;
SELECT pg_reload_conf();
SELECT ok(pg_temp.released(:w_pid), 'tag: the COMMIT goes through');
SELECT is((SELECT v FROM tap_ne_rows), 2, 'tag: the new row is visible');
SELECT is(harden.cache_get('tap:ne:tagged'), NULL, 'tag: the old value set during the commit is not served');

-- 2. cache_delete
SELECT harden.cache_set('tap:ne:key', to_jsonb(v)) FROM tap_ne_rows;
ALTER SYSTEM SET synchronous_standby_names = 'pgh_never_connects';
SELECT pg_reload_conf();
SELECT ok(pg_temp.commits_held(), 'delete: commits are held');
SELECT pg_temp.writer() AS w_pid \gset
SELECT dblink_send_query('w', $q$BEGIN; UPDATE tap_ne_rows SET v = v + 1;
  SELECT harden.cache_delete('tap:ne:key'); COMMIT$q$);
SELECT ok(pg_temp.in_syncrep(:w_pid, 20), 'delete: the writer''s COMMIT is held');
SELECT harden.cache_set('tap:ne:key', to_jsonb(v)) FROM tap_ne_rows;
SELECT is(harden.cache_get('tap:ne:key'), NULL, 'delete: a reader''s refill of the old value is not kept');
ALTER SYSTEM RESET synchronous_standby_names;
SELECT pg_reload_conf();
SELECT ok(pg_temp.released(:w_pid), 'delete: the COMMIT goes through');
SELECT is(harden.cache_get('tap:ne:key'), NULL, 'delete: the old value is not served after it');

-- 3. cache_invalidate (a pattern), with the old value set under another key
-- of the pattern and by a transaction that started before the writer's
SELECT harden.cache_set('tap:ne:p:1', to_jsonb(v)) FROM tap_ne_rows;
ALTER SYSTEM SET synchronous_standby_names = 'pgh_never_connects';
SELECT pg_reload_conf();
SELECT ok(pg_temp.commits_held(), 'pattern: commits are held');
SELECT pg_temp.writer() AS w_pid \gset
SELECT dblink_send_query('w', $q$BEGIN; UPDATE tap_ne_rows SET v = v + 1;
  SELECT harden.cache_invalidate('tap:ne:p:*'); COMMIT$q$);
SELECT ok(pg_temp.in_syncrep(:w_pid, 20), 'pattern: the writer''s COMMIT is held');
SELECT harden.cache_set('tap:ne:p:2', to_jsonb(v)) FROM tap_ne_rows;
SELECT is(harden.cache_get('tap:ne:p:2'), NULL, 'pattern: a reader''s set of an old value under the pattern is not kept');
ALTER SYSTEM RESET synchronous_standby_names;
SELECT pg_reload_conf();
SELECT ok(pg_temp.released(:w_pid), 'pattern: the COMMIT goes through');
SELECT is(harden.cache_get('tap:ne:p:1'), NULL, 'pattern: the entry committed before is gone');

-- 4. Outside a transaction block: one statement writes the row and
-- invalidates at once (applied as it runs, long before its commit)
SELECT harden.cache_set('tap:ne:now', to_jsonb(v), tags => '{tap-ne-now}') FROM tap_ne_rows;
ALTER SYSTEM SET synchronous_standby_names = 'pgh_never_connects';
SELECT pg_reload_conf();
SELECT ok(pg_temp.commits_held(), 'one statement: commits are held');
SELECT pg_temp.writer() AS w_pid \gset
SELECT dblink_send_query('w', $q$WITH u AS (UPDATE tap_ne_rows SET v = v + 1 RETURNING v)
  SELECT harden.cache_invalidate_tag('tap-ne-now') FROM u$q$);
SELECT ok(pg_temp.in_syncrep(:w_pid, 20), 'one statement: its COMMIT is held');
SELECT harden.cache_set('tap:ne:now', to_jsonb(v), tags => '{tap-ne-now}') FROM tap_ne_rows;
SELECT is(harden.cache_get('tap:ne:now'), NULL, 'one statement: a reader''s refill of the old value is not kept');
ALTER SYSTEM RESET synchronous_standby_names;
SELECT pg_reload_conf();
SELECT ok(pg_temp.released(:w_pid), 'one statement: the COMMIT goes through');
SELECT is(harden.cache_get('tap:ne:now'), NULL, 'one statement: the old value is not served after it');

-- After the commit is visible, a set from a fresh snapshot stands.
SELECT harden.cache_set('tap:ne:tagged', to_jsonb(v), tags => '{tap-ne-t}') FROM tap_ne_rows;
SELECT is(harden.cache_get('tap:ne:tagged'), '5'::jsonb, 'a set that saw the commit is kept');

ALTER SYSTEM RESET synchronous_commit;
SELECT pg_reload_conf();
SELECT dblink_disconnect('w');
DROP TABLE tap_ne_rows, tap_ne_probe;
DO $$ BEGIN PERFORM harden.cache_invalidate('tap:ne:*'); END $$;
SELECT * FROM finish();
