-- Leases: a miss hands out a token; cache_set_leased() with it stores only
-- if nothing invalidated the key or its tags since the lease was issued
-- (else it returns false); a second lease request for a key whose lease is
-- out waits for it (at most harden.cache_wait_timeout) or is told to retry.
-- Runs without a surrounding transaction and cleans up after itself.
SELECT plan(27);
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS dblink;
DO $$ BEGIN PERFORM harden.cache_invalidate('tap:ls:*'); END $$;

\ir lib/sessions.sql

-- A miss hands out a lease; the set with it stores.
SELECT lease AS l_lease, value IS NULL AS l_novalue FROM harden.cache_lease('tap:ls:a') \gset
SELECT is(:'l_novalue'::boolean, true, 'a miss returns no value');
SELECT ok(:'l_lease'::bigint > 0, 'and a lease token');
SELECT is(harden.cache_lease('tap:ls:a'), ROW(NULL::jsonb, :'l_lease'::bigint),
          'the same session asking again gets its lease again');
SELECT is(harden.cache_set_leased('tap:ls:a', '{"v": 1}'::jsonb, :'l_lease'), true,
          'cache_set_leased with the lease stores');
SELECT is(harden.cache_get('tap:ls:a'), '{"v": 1}'::jsonb, 'the value is cached');
SELECT is(harden.cache_lease('tap:ls:a'), ROW('{"v": 1}'::jsonb, NULL::bigint),
          'a hit returns the value and no lease');
SELECT is(harden.cache_set_leased('tap:ls:b', '1'::jsonb, :'l_lease'), false,
          'a used lease stores nothing again, nor under another key');
SELECT is(harden.cache_get('tap:ls:b'), NULL, 'and nothing was stored');

-- An invalidation of the key since the lease: the set returns false.
SELECT lease AS l1 FROM harden.cache_lease('tap:ls:d') \gset
SELECT harden.cache_delete('tap:ls:d');
SELECT is(harden.cache_set_leased('tap:ls:d', '"old"'::jsonb, :l1), false,
          'after cache_delete of the key, the leased set returns false');
SELECT is(harden.cache_get('tap:ls:d'), NULL, 'and stores nothing');
SELECT lease AS l1 FROM harden.cache_lease('tap:ls:p') \gset
SELECT harden.cache_invalidate('tap:ls:p*');
SELECT is(harden.cache_set_leased('tap:ls:p', '"old"'::jsonb, :l1), false,
          'after cache_invalidate of a matching pattern, it returns false');

-- Of one of its tags (the tags are given only with the set).
SELECT lease AS l1 FROM harden.cache_lease('tap:ls:t') \gset
SELECT harden.cache_invalidate_tag('tap-ls-t');
SELECT is(harden.cache_set_leased('tap:ls:t', '"old"'::jsonb, :l1, tags => '{tap-ls-u,tap-ls-t}'), false,
          'after cache_invalidate_tag of one of its tags, it returns false');
SELECT lease AS l1 FROM harden.cache_lease('tap:ls:t') \gset
SELECT harden.cache_invalidate_tag('tap-ls-other');
SELECT is(harden.cache_set_leased('tap:ls:t', '"new"'::jsonb, :l1, tags => '{tap-ls-t}'), true,
          'an invalidation of another tag does not matter');
SELECT is(harden.cache_get('tap:ls:t'), '"new"'::jsonb, 'the value is stored');

-- Tokens that are not a live lease of the key.
SELECT lease AS l1 FROM harden.cache_lease('tap:ls:x') \gset
SELECT is(harden.cache_set_leased('tap:ls:y', '1'::jsonb, :l1), false, 'a lease of another key stores nothing');
SELECT is(harden.cache_set_leased('tap:ls:x', '1'::jsonb, 123456789), false, 'a made-up token stores nothing');
SELECT is(harden.cache_set_leased('tap:ls:x', '1'::jsonb, -1), false, 'a negative token stores nothing');
SET harden.cache_lease_ttl = '1ms';
SELECT lease AS l2 FROM harden.cache_lease('tap:ls:e') \gset
SELECT pg_sleep(0.05);
SELECT is(harden.cache_set_leased('tap:ls:e', '1'::jsonb, :l2), false, 'an expired lease stores nothing');
RESET harden.cache_lease_ttl;
SELECT throws_ok($$ SELECT harden.cache_set_leased('tap:ls:x', '1'::jsonb, NULL) $$, '22004',
                 'cache lease must not be NULL', 'a NULL lease is an error');
SELECT throws_ok($$ SELECT harden.cache_lease_text('tap:ls:a') $$, 'PH102', NULL,
                 'leasing a jsonb entry with the text function is PH102');

-- A plain set keeps today's behaviour while a lease is out.
SELECT lease AS l3 FROM harden.cache_lease('tap:ls:plain') \gset
SELECT harden.cache_set('tap:ls:plain', '"plain"'::jsonb);
SELECT is(harden.cache_get('tap:ls:plain'), '"plain"'::jsonb, 'a set without a lease stores as before');

-- A second session asking for an outstanding lease waits for the holder
-- and gets what it stored; the holder may set from another session (a
-- pooler's).  Or it is told to retry once harden.cache_wait_timeout passes.
SELECT pg_temp.connect('other') AS other_pid \gset
SELECT dblink_exec('other', 'SET harden.cache_wait_timeout = ''20s''');
SELECT lease AS l4 FROM harden.cache_lease('tap:ls:w') \gset
SELECT dblink_send_query('other', $q$SELECT (harden.cache_lease('tap:ls:w')).value::text$q$);
SELECT ok(pg_temp.waits_on(:other_pid, 'Extension'), 'a second lease request for the key waits');
SELECT pg_temp.connect('setter') AS setter_pid \gset
SELECT is((SELECT ok FROM dblink('setter', format($q$SELECT harden.cache_set_leased('tap:ls:w', '"computed"'::jsonb, %s)$q$, :l4))
             AS t(ok boolean)), true, 'the holder''s value is stored with its lease from another session');
SELECT is((SELECT v FROM dblink_get_result('other') AS t(v text)), '"computed"',
          'the waiting request returns the value the holder stored');
SELECT pg_temp.connect('other') AS other_pid \gset
SELECT dblink_exec('other', 'SET harden.cache_wait_timeout = ''200ms''');
SELECT lease AS l5 FROM harden.cache_lease('tap:ls:r') \gset
SELECT is((SELECT ROW(v, l) FROM dblink('other', $q$SELECT value::text, lease FROM harden.cache_lease('tap:ls:r')$q$)
             AS t(v text, l bigint)), ROW(NULL::text, NULL::bigint),
          'after harden.cache_wait_timeout it returns neither a value nor a lease: retry');
SELECT is(harden.cache_set_leased('tap:ls:r', '1'::jsonb, :l5), true, 'the first lease still stores');
SELECT dblink_disconnect('other');
SELECT dblink_disconnect('setter');
SELECT lives_ok($$ SELECT harden.cache_lease('tap:ls:r') $$, 'done');

DO $$ BEGIN PERFORM harden.cache_invalidate('tap:ls:*'); END $$;
SELECT * FROM finish();
