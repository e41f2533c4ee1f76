-- Pending cache writes of a transaction block at scale: many operations
-- neither crash the backend (no recursion over them) nor take more than
-- linear time, and savepoints still drop exactly their own operations.
--
-- Each block is opened here explicitly; pgTAP numbers its tests with a
-- sequence, so results reported inside a rolled-back block survive.
SELECT plan(16);

DO $$ BEGIN PERFORM harden.cache_invalidate('tap:xs:*'); END $$;

-- 70,000 pending invalidations by tag, then a lookup: the lookup used to
-- recurse once per pending tag operation and overflow the stack.
BEGIN;
SELECT is((SELECT count(harden.cache_invalidate_tag('tap-xs-t')) FROM generate_series(1, 70000)),
          70000::bigint, '70,000 pending cache_invalidate_tag calls in one block');
SELECT is(harden.cache_get('tap:xs:k1'), NULL, 'a cache_get after them answers (no stack overflow)');
SELECT lives_ok($$ SELECT harden.cache_set('tap:xs:k1', '1'::jsonb, tags => '{tap-xs-t}') $$,
                'a tagged set after them');
SELECT is(harden.cache_get('tap:xs:k1'), '1'::jsonb, 'is seen: it comes after the invalidations');
ROLLBACK;

-- 200,000 operations of every kind in one block, under a timeout that only
-- quadratic work could reach (each used to scan every earlier operation).
SET statement_timeout = '60s';
BEGIN;
SELECT lives_ok($$
  SELECT count(harden.cache_set('tap:xs:s:' || (i % 50000), to_jsonb(i), tags => ARRAY['tap-xs-' || (i % 7)]))
    FROM generate_series(1, 100000) i;
  SELECT count(harden.cache_delete('tap:xs:s:' || i)) FROM generate_series(1, 50000, 2) i;
  SELECT count(harden.cache_get('tap:xs:s:' || i)) FROM generate_series(1, 50000) i;
  SELECT count(harden.cache_invalidate_tag('tap-xs-' || (i % 3))) FROM generate_series(1, 25000) i;
$$, '200,000 pending operations in one block complete well within the timeout');
SELECT is(harden.cache_get('tap:xs:s:4'), '50004'::jsonb,
          'the last pending set of a key decides (its tag, 3, was not invalidated)');
SELECT is(harden.cache_get('tap:xs:s:1'), NULL, 'a pending delete hides the key');
SELECT is(harden.cache_get('tap:xs:s:2'), NULL, 'a later invalidation of its tag (1) hides a pending set');
COMMIT;
RESET statement_timeout;
SELECT is((SELECT count(*) FROM harden.cache_entries WHERE key LIKE 'tap:xs:s:%'),
          (SELECT count(*) FROM generate_series(0, 49999) i WHERE i % 2 = 0 AND (50000 + i) % 7 NOT IN (0, 1, 2)),
          'after COMMIT: exactly the surviving sets were published');
SELECT is(harden.cache_get('tap:xs:s:4'), '50004'::jsonb, 'with their last value');

-- Savepoints drop exactly their operations, also under many of them.
DO $$ BEGIN PERFORM harden.cache_invalidate('tap:xs:*'); END $$;
DO $$ BEGIN PERFORM harden.cache_set('tap:xs:sp', '"committed"'::jsonb, tags => '{tap-xs-sp}'); END $$;
BEGIN;
DO $$ BEGIN PERFORM harden.cache_set('tap:xs:sp:a', '"a"'::jsonb); END $$;
SAVEPOINT one;
DO $$
BEGIN
  PERFORM harden.cache_set('tap:xs:sp:' || i, to_jsonb(i)) FROM generate_series(1, 20000) i;
  PERFORM harden.cache_invalidate_tag('tap-xs-sp');
  PERFORM harden.cache_delete('tap:xs:sp:a');
END $$;
SAVEPOINT two;
DO $$ BEGIN PERFORM harden.cache_set('tap:xs:sp:b', '"b"'::jsonb); END $$;
RELEASE SAVEPOINT two;
SELECT is(harden.cache_get('tap:xs:sp'), NULL, 'inside the savepoint: the tag invalidation hides the entry');
SELECT is(harden.cache_get('tap:xs:sp:b'), '"b"'::jsonb, 'and a released inner savepoint''s set is seen');
ROLLBACK TO SAVEPOINT one;
SELECT is(harden.cache_get('tap:xs:sp'), '"committed"'::jsonb,
          'after ROLLBACK TO SAVEPOINT: the invalidation is gone');
SELECT is(harden.cache_get('tap:xs:sp:a'), '"a"'::jsonb, 'and so is the delete: the earlier set is seen again');
SELECT is(harden.cache_get('tap:xs:sp:b'), NULL, 'and the released inner savepoint''s set went with it');
COMMIT;
SELECT is((SELECT array_agg(key ORDER BY key) FROM harden.cache_entries WHERE key LIKE 'tap:xs:%'),
          '{tap:xs:sp,tap:xs:sp:a}', 'after COMMIT: only the operations outside the savepoint were published');

DO $$ BEGIN PERFORM harden.cache_invalidate('tap:xs:*'); END $$;
SELECT * FROM finish();
