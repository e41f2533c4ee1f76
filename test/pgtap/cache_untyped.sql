-- Untyped values: an untyped literal or parameter passed to cache_set()
-- resolves to its text overload, so it is stored as text; the jsonb getters
-- return a text entry that is valid JSON as that jsonb value, so what a
-- client sent as JSON reads back as JSON.  Other text read as jsonb is
-- PH102.  Runs without a surrounding transaction and cleans up after itself.
SELECT plan(9);
DO $$ BEGIN PERFORM harden.cache_invalidate('tap:ut:*'); END $$;

-- A parameter of unspecified type, as node-postgres and psycopg send it.
PREPARE tap_ut_set AS SELECT harden.cache_set('tap:ut:p', $1);
EXECUTE tap_ut_set('{"id": 7, "tags": ["a"]}');
SELECT is((SELECT parameter_types::text FROM pg_prepared_statements WHERE name = 'tap_ut_set'), '{text}',
          'an untyped parameter resolves to the text overload');
SELECT is(harden.cache_get('tap:ut:p'), '{"id": 7, "tags": ["a"]}'::jsonb,
          'cache_get returns the JSON it holds as jsonb');
SELECT is(harden.cache_get_text('tap:ut:p'), '{"id": 7, "tags": ["a"]}', 'cache_get_text returns the text as sent');
DEALLOCATE tap_ut_set;

SELECT lives_ok($$ SELECT harden.cache_set('tap:ut:l', '[1, 2]') $$, 'an untyped literal is stored');
SELECT is(harden.cache_get('tap:ut:l'), '[1, 2]'::jsonb, 'and reads back as jsonb');
SELECT is((harden.cache_lease('tap:ut:l')).value, '[1, 2]'::jsonb, 'cache_lease reads it the same way');

SELECT harden.cache_set('tap:ut:t', 'plain words');
SELECT throws_ok($$ SELECT harden.cache_get('tap:ut:t') $$, 'PH102', 'cache entry "tap:ut:t" holds text, not jsonb',
                 'text that is not JSON read as jsonb is PH102');
SELECT harden.cache_set('tap:ut:z', '"\u0000"');
SELECT throws_ok($$ SELECT harden.cache_get('tap:ut:z') $$, 'PH102', NULL,
                 'JSON that jsonb cannot hold (\u0000) is PH102 too');
SELECT harden.cache_set('tap:ut:j', '{"a": 1}'::jsonb);
SELECT throws_ok($$ SELECT harden.cache_get_text('tap:ut:j') $$, 'PH102', NULL,
                 'a jsonb entry read as text is still PH102');

DO $$ BEGIN PERFORM harden.cache_invalidate('tap:ut:*'); END $$;
SELECT * FROM finish();
