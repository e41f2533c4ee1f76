-- The tag index: cache_invalidate_tag finds a tag's entries through it, so
-- it must stay consistent when entries are replaced, deleted, expire or are
-- evicted, and it must not cost the size of the cache.  Runs without a
-- surrounding transaction and cleans up after itself.
SELECT plan(18);
DO $$ BEGIN PERFORM harden.cache_invalidate('tap:tg:*'); END $$;

CREATE FUNCTION pg_temp.tagged(tag text) RETURNS bigint LANGUAGE sql AS $$
  SELECT count(*) FROM harden.cache_entries WHERE key LIKE 'tap:tg:%' AND tag = ANY (tags)
$$;

DO $$
BEGIN
  PERFORM harden.cache_set('tap:tg:' || i, to_jsonb(i), tags => ARRAY['tap-tg-a', 'tap-tg-' || (i % 2)])
    FROM generate_series(1, 10) i;
  -- Replaced without the tag, replaced with it, deleted, expiring.
  PERFORM harden.cache_set('tap:tg:1', '"untagged"'::jsonb);
  PERFORM harden.cache_set('tap:tg:2', '"retagged"'::jsonb, tags => '{tap-tg-a}');
  PERFORM harden.cache_delete('tap:tg:3');
  PERFORM harden.cache_set('tap:tg:4', '"expiring"'::jsonb, ttl => '1 millisecond', tags => '{tap-tg-a}');
END $$;
SELECT pg_sleep(0.05);
SELECT is(pg_temp.tagged('tap-tg-a'), 7::bigint, 'seven live entries carry the tag');
SELECT is(harden.cache_invalidate_tag('tap-tg-0'), 3::bigint,
          'invalidating a second tag removes its live entries (6, 8, 10)');
SELECT is(harden.cache_invalidate_tag('tap-tg-a'), 4::bigint,
          'invalidating the first removes the rest: not the replaced, deleted or expired ones');
SELECT is(harden.cache_get('tap:tg:1'), '"untagged"'::jsonb, 'the entry replaced without the tag stays');
SELECT is(pg_temp.tagged('tap-tg-a'), 0::bigint, 'no entry carries the tag any more');
SELECT is(harden.cache_invalidate_tag('tap-tg-a'), 0::bigint, 'a second invalidation finds nothing');

-- A tag is per database: another database's entries with it are not found.
SELECT is(harden.cache_invalidate_tag('tap-tg-none'), 0::bigint, 'an unknown tag finds nothing');

-- Eviction: fill the cache past its size with tagged entries; the index
-- must lose exactly the evicted ones.
SELECT evictions AS ev0 FROM harden.cache_stats \gset
DO $$
BEGIN
  PERFORM harden.cache_set('tap:tg:e:' || i, to_jsonb(repeat('x', 200)), tags => ARRAY['tap-tg-e', 'tap-tg-e' || (i % 10)])
    FROM generate_series(1, (SELECT (2 * bytes_limit / 400)::int FROM harden.cache_stats)) i;
END $$;
SELECT ok((SELECT evictions FROM harden.cache_stats) > :ev0, 'the cache evicted');
SELECT pg_temp.tagged('tap-tg-e3') AS live3 \gset
SELECT is(harden.cache_invalidate_tag('tap-tg-e3'), :live3::bigint,
          'invalidating a tag removes exactly its entries that were not evicted');
SELECT pg_temp.tagged('tap-tg-e') AS live \gset
SELECT is(harden.cache_invalidate_tag('tap-tg-e'), :live::bigint, 'and the same for the tag all of them had');
SELECT is(pg_temp.tagged('tap-tg-e'), 0::bigint, 'none is left');

-- The index answers without scanning: 10 tagged entries among many.
DO $$
BEGIN
  PERFORM harden.cache_set('tap:tg:bulk:' || i, '1'::jsonb) FROM generate_series(1, 20000) i;
  PERFORM harden.cache_set('tap:tg:few:' || i, '1'::jsonb, tags => '{tap-tg-few}') FROM generate_series(1, 10) i;
END $$;
SELECT is(harden.cache_invalidate_tag('tap-tg-few'), 10::bigint, 'ten tagged entries among 20,000 are found');

-- Array forms.
DO $$
BEGIN
  PERFORM harden.cache_set('tap:tg:m:' || i, '1'::jsonb, tags => ARRAY['tap-tg-m' || (i % 3)])
    FROM generate_series(1, 9) i;
END $$;
SELECT is(harden.cache_delete(ARRAY['tap:tg:m:1', 'tap:tg:m:2', 'tap:tg:m:nope', 'tap:tg:m:1']), 2::bigint,
          'cache_delete(text[]) returns how many of the keys had an entry');
SELECT is(harden.cache_get('tap:tg:m:1'), NULL, 'and they are gone');
SELECT is(harden.cache_invalidate_tag(ARRAY['tap-tg-m0', 'tap-tg-m1']), 5::bigint,
          'cache_invalidate_tag(text[]) removes the entries of every tag given');
SELECT is((SELECT count(*) FROM harden.cache_entries WHERE key LIKE 'tap:tg:m:%'), 2::bigint,
          'only the third tag''s entries are left');
SELECT throws_ok($$ SELECT harden.cache_delete(ARRAY['tap:tg:m:5', 'bad key']) $$, 'PH101', NULL,
                 'an invalid key in the array is PH101 ...');
SELECT is(harden.cache_get('tap:tg:m:5'), '1'::jsonb, '... and nothing was deleted');

DO $$ BEGIN PERFORM harden.cache_invalidate('tap:tg:*'); END $$;
SELECT * FROM finish();
