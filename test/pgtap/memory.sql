-- Memory pressure.
--
-- The cache overfilled ten times, with small entries and with entries at the
-- largest allowed size: every set succeeds (a full cache evicts) and
-- bytes_used stays within harden.cache_memory.  Then a mixed workload of
-- cache_set, cache_get, cache_query hits, state-machine transitions,
-- stock_take and stock_take_many runs :mem_calls times (default 100,000;
-- `make stress` runs 1,000,000) in a procedure that commits every 1000
-- iterations, and the backend's memory (the sum of total_bytes of
-- pg_backend_memory_contexts) must not grow beyond a small slack between a
-- point after warm-up and the end, inside the procedure and across
-- statements.
--
-- Runs without a surrounding transaction (cache writes in a block would be
-- pending in the backend); cleans up at the start and at the end.
\if :{?mem_calls}
\else
\set mem_calls 100000
\endif
SET client_min_messages = warning;
SELECT plan(13);

DO $$ BEGIN PERFORM harden.cache_invalidate('mem:*'); END $$;
DROP TABLE IF EXISTS mem_fsm, mem_stock, mem_watch, mem_measure;
DO $$ BEGIN
  IF EXISTS (SELECT FROM harden.fsm_machines WHERE machine = 'mem_m') THEN
    PERFORM harden.fsm_drop('mem_m');
  END IF;
END $$;

-- 10x overfill with 200-byte values: as many sets as ten full caches of
-- such entries hold (an entry costs more than its value, so this is more).
CREATE TEMP TABLE mem_fill AS
  SELECT (SELECT bytes_limit FROM harden.cache_stats) * 10 / 200 AS n;
DO $$
DECLARE
  n bigint := (SELECT n FROM mem_fill);
  v text := repeat('v', 200);
BEGIN
  FOR i IN 1..n LOOP
    PERFORM harden.cache_set('mem:small:' || i, v);
  END LOOP;
END $$;
SELECT ok((SELECT bytes_used <= bytes_limit AND entries > 0 FROM harden.cache_stats),
          '10x overfill with small entries: bytes_used within harden.cache_memory');
SELECT ok((SELECT evictions > 0 FROM harden.cache_stats), '... the cache evicted');
SELECT is(harden.cache_get_text('mem:small:' || (SELECT n FROM mem_fill)), repeat('v', 200),
          '... the newest entry is there');

-- Entries of exactly the largest size, ten cache sizes' worth.
CREATE TEMP TABLE mem_max AS
  SELECT pg_size_bytes(current_setting('harden.cache_max_entry_size')) AS size,
         (SELECT bytes_limit FROM harden.cache_stats) AS lim;
SELECT lives_ok($$
  DO $do$
  DECLARE
    sz bigint := (SELECT least(size, lim / 8) FROM mem_max);
    v text := repeat('m', sz::int);
  BEGIN
    FOR i IN 1..(SELECT 10 * lim / sz FROM mem_max) LOOP
      PERFORM harden.cache_set('mem:max:' || i, v);
    END LOOP;
  END $do$ $$, '10x overfill with entries at harden.cache_max_entry_size: no error');
SELECT ok((SELECT bytes_used <= bytes_limit FROM harden.cache_stats),
          '... bytes_used within harden.cache_memory');
SELECT is(length(harden.cache_get_text('mem:max:' || (SELECT 10 * lim / least(size, lim / 8) FROM mem_max))),
          (SELECT least(size, lim / 8)::int FROM mem_max), '... the newest one is there, whole');
SELECT throws_ok($$ SELECT harden.cache_set('mem:max:over', repeat('m', (SELECT least(size, lim / 8)::int + 1 FROM mem_max))) $$,
                 'PH103', NULL, 'one byte more is PH103');
DO $$ BEGIN PERFORM harden.cache_invalidate('mem:*'); END $$;

-- The workload.
SELECT harden.fsm_define('mem_m', 'a -> b on go; b -> a on back');
CREATE TABLE mem_fsm (id int PRIMARY KEY, status text NOT NULL DEFAULT 'a');
INSERT INTO mem_fsm SELECT generate_series(1, 1000);
SELECT harden.fsm_attach('mem_fsm', 'status', 'mem_m', audit => false);
CREATE TABLE mem_stock (id int PRIMARY KEY, q bigint NOT NULL);
INSERT INTO mem_stock SELECT i, 1000000000 FROM generate_series(1, 100) AS i;
SELECT harden.stock_attach('mem_stock', 'q');
CREATE TABLE mem_watch (id int PRIMARY KEY, v text);
INSERT INTO mem_watch SELECT i, 'v' || i FROM generate_series(1, 10) AS i;
SELECT harden.cache_watch('mem_watch');
CREATE TABLE mem_measure (at text PRIMARY KEY, bytes bigint);

CREATE FUNCTION pg_temp.mem_bytes() RETURNS bigint LANGUAGE sql AS $$
  SELECT sum(total_bytes)::bigint FROM pg_backend_memory_contexts
$$;
-- The queries cache_query ran in this database (its misses).
CREATE FUNCTION pg_temp.mem_queries() RETURNS bigint LANGUAGE sql AS $$
  SELECT (s->>'value')::bigint
    FROM jsonb_array_elements(harden.metrics_json()->'metrics'->'harden_cache_queries_total'->'samples') s
   WHERE s->'labels'->>'database' = current_database()
$$;

-- One iteration: a set, two gets (one miss), a cache_query hit, a
-- transition by UPDATE and one by fsm_fire, a take, and every tenth
-- iteration a take_many.  Commits every 1000 iterations.
CREATE PROCEDURE pg_temp.mem_work(n int, label text) LANGUAGE plpgsql AS $$
DECLARE
  k int;
  r text;
  v jsonb := '{"a": 1, "b": "two"}';
BEGIN
  FOR i IN 1..n LOOP
    k := i % 1000;
    PERFORM harden.cache_set('mem:k:' || k, v, ttl => '1 hour', tags => '{mem}');
    PERFORM harden.cache_get('mem:k:' || k);
    PERFORM harden.cache_get('mem:missing:' || k);
    PERFORM harden.cache_query('mem:q', 'SELECT id, v FROM mem_watch WHERE id <= $1', NULL, 5);
    UPDATE mem_fsm SET status = CASE status WHEN 'a' THEN 'b' ELSE 'a' END WHERE id = k + 1;
    SELECT status INTO r FROM mem_fsm WHERE id = 1000 - k;
    PERFORM harden.fsm_fire('mem_fsm', to_jsonb(1000 - k), CASE r WHEN 'a' THEN 'go' ELSE 'back' END);
    PERFORM harden.stock_take('mem_stock', 1 + i % 100, 1);
    IF i % 10 = 0 THEN
      PERFORM harden.stock_take_many('mem_stock', ARRAY[1 + i % 100, 1 + (i + 7) % 100], ARRAY[1, 2]::bigint[]);
    END IF;
    IF i % 1000 = 0 THEN
      COMMIT;
    END IF;
  END LOOP;
  COMMIT;
  IF label IS NOT NULL THEN
    INSERT INTO mem_measure VALUES (label, pg_temp.mem_bytes());
  END IF;
END $$;

-- Warm-up (plans, caches), then the measured run.
CALL pg_temp.mem_work(3000, NULL);
CALL pg_temp.mem_work(2000, 'start');
INSERT INTO mem_measure VALUES ('before', pg_temp.mem_bytes());
CREATE TEMP TABLE mem_queries AS SELECT pg_temp.mem_queries() AS n;
CALL pg_temp.mem_work(:mem_calls, 'end');
INSERT INTO mem_measure VALUES ('after', pg_temp.mem_bytes());

SELECT is((SELECT count(*)::int FROM mem_measure), 4, 'the workload ran to its end');
SELECT cmp_ok((SELECT e.bytes - s.bytes FROM mem_measure s, mem_measure e WHERE s.at = 'start' AND e.at = 'end'),
              '<=', 262144::bigint,
              format('backend memory inside the procedure grows by at most 256kB over %s iterations', :mem_calls));
SELECT cmp_ok((SELECT a.bytes - b.bytes FROM mem_measure b, mem_measure a WHERE b.at = 'before' AND a.at = 'after'),
              '<=', 262144::bigint,
              format('backend memory across statements grows by at most 256kB over %s iterations', :mem_calls));
SELECT diag(format('backend memory: %s', (SELECT string_agg(at || ' ' || bytes, ', ' ORDER BY bytes) FROM mem_measure)));
SELECT is((SELECT sum(1000000000 - q) FROM mem_stock),
          (SELECT (5000 + :mem_calls) + 3 * ((5000 + :mem_calls) / 10))::numeric,
          'every take took exactly what it asked for');
SELECT ok((SELECT bytes_used <= bytes_limit FROM harden.cache_stats), 'bytes_used within harden.cache_memory at the end');
SELECT cmp_ok(pg_temp.mem_queries() - (SELECT n FROM mem_queries), '<', 10::bigint,
              'the cache_query calls were hits (at most a few computed their query)');

DO $$ BEGIN PERFORM harden.cache_invalidate('mem:*'); END $$;
SELECT harden.cache_unwatch('mem_watch');
DROP TABLE mem_fsm, mem_stock, mem_watch, mem_measure;
SELECT harden.fsm_drop('mem_m');
SELECT * FROM finish();
