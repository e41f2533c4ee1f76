-- The cache's role rules and secure entries.
--
-- An entry records the role that wrote it.  Another role reads it only with
-- the privileges of that role (has_privs_of_role: INHERIT membership, or
-- superuser) unless it was written with public => true; replacing or
-- deleting a live entry needs those privileges even then (42501).  A role
-- that may not read an entry learns nothing about it: the key behaves as a
-- free one, and the role's own writes to it go to its shadow of the key,
-- which only it reads (no existence oracle).  Secure entries never show
-- their tags, their TTL is capped by harden.cache_secure_max_ttl, and
-- cache_flush_secure() removes only them.
--
-- Cache writes inside a transaction block are published on commit, so the
-- suite runs without a surrounding transaction: each statement commits on
-- its own, so every cache write is published before the next statement
-- runs (the views show committed entries only).  The last part opens
-- transaction blocks explicitly to check the role rules on pending writes.
-- Nothing is rolled back for us, so the suite cleans up after itself: every
-- key starts with 'tap:roles:' and they are invalidated at the start and at
-- the end; the roles (and their grants) and the policy row are dropped at
-- the start, in case an earlier run stopped half-way, and at the end.
SELECT plan(157);

DO $$ BEGIN PERFORM harden.cache_invalidate('tap:roles:*'); END $$;
DELETE FROM harden.cache_policies WHERE prefix LIKE 'tap:roles:%';

-- SQLSTATE, message, detail and hint of the error a statement raises.
CREATE FUNCTION pg_temp.error_of(sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  st text; m text; d text; h text;
BEGIN
  EXECUTE sql;
  RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, m = MESSAGE_TEXT,
                          d = PG_EXCEPTION_DETAIL, h = PG_EXCEPTION_HINT;
  RETURN st || ': ' || m || ' / ' || coalesce(d, '') || ' / ' || coalesce(h, '');
END $$;

-- Keys of this suite's entries the current role sees in cache_entries.
CREATE FUNCTION pg_temp.visible_keys() RETURNS text[] LANGUAGE sql AS $$
  SELECT coalesce(array_agg(key ORDER BY key), '{}')
    FROM harden.cache_entries WHERE key LIKE 'tap:roles:%'
$$;

-- Roles are cluster-wide: drop any left over from an earlier run.  DROP
-- OWNED BY also revokes their privileges in this database.
DO $$
DECLARE
  r name;
BEGIN
  FOREACH r IN ARRAY ARRAY['pgh_tr_noinh', 'pgh_tr_member', 'pgh_tr_other', 'pgh_tr_owner']::name[] LOOP
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = r) THEN
      EXECUTE format('DROP OWNED BY %I', r);
    END IF;
  END LOOP;
END $$;
SET client_min_messages = warning;
DROP ROLE IF EXISTS pgh_tr_noinh, pgh_tr_member, pgh_tr_other, pgh_tr_owner;
RESET client_min_messages;

CREATE ROLE pgh_tr_owner;
CREATE ROLE pgh_tr_other;
CREATE ROLE pgh_tr_member IN ROLE pgh_tr_owner;
CREATE ROLE pgh_tr_noinh NOINHERIT IN ROLE pgh_tr_owner;
GRANT USAGE ON SCHEMA harden TO pgh_tr_owner, pgh_tr_other, pgh_tr_member, pgh_tr_noinh;

SELECT ok(pg_has_role('pgh_tr_member', 'pgh_tr_owner', 'USAGE'),
          'setup: the member role has the privileges of the owner');
SELECT ok(pg_has_role('pgh_tr_noinh', 'pgh_tr_owner', 'MEMBER')
          AND NOT pg_has_role('pgh_tr_noinh', 'pgh_tr_owner', 'USAGE'),
          'setup: the NOINHERIT role is a member without the owner''s privileges');

-- ---------------------------------------------------------------------------
-- The owner
-- ---------------------------------------------------------------------------
SET ROLE pgh_tr_owner;
SELECT lives_ok($$ SELECT harden.cache_set('tap:roles:own', '{"v": 1}'::jsonb, ttl => '1 hour',
                                           tags => '{tap-roles-t}') $$,
                'owner sets a private entry');
SELECT lives_ok($$ SELECT harden.cache_set('tap:roles:pub', 'public value'::text,
                                           tags => '{tap-roles-t}', public => true) $$,
                'owner sets a public entry');
SELECT lives_ok($$ SELECT harden.cache_set('tap:roles:tagged', '\x0102'::bytea,
                                           tags => '{tap-roles-t}') $$,
                'owner sets a bytea entry');
SELECT is(harden.cache_get('tap:roles:own'), '{"v": 1}'::jsonb, 'owner reads its own entry');
SELECT is(harden.cache_get_bytea('tap:roles:tagged'), '\x0102'::bytea, 'owner reads its own bytea entry');
SELECT is(harden.cache_exists('tap:roles:own'), true, 'owner: cache_exists is true');
SELECT ok(harden.cache_ttl('tap:roles:own') BETWEEN interval '59 minutes' AND interval '1 hour',
          'owner: cache_ttl shows the TTL');
SELECT is((SELECT owner::text FROM harden.cache_entries WHERE key = 'tap:roles:own'),
          'pgh_tr_owner', 'cache_entries records the writing role as owner');
SELECT is(pg_temp.visible_keys(), '{tap:roles:own,tap:roles:pub,tap:roles:tagged}',
          'owner lists all of its entries');

-- ---------------------------------------------------------------------------
-- An unrelated role: the private entries are missing to it
-- ---------------------------------------------------------------------------
SET ROLE pgh_tr_other;
SELECT is(harden.cache_get('tap:roles:own'), NULL, 'unrelated role: cache_get returns NULL');
SELECT is(harden.cache_get_text('tap:roles:own'), NULL,
          'unrelated role: a getter of the wrong type is a miss as well, not PH102');
SELECT is(harden.cache_get_bytea('tap:roles:tagged'), NULL, 'unrelated role: cache_get_bytea returns NULL');
SELECT is(harden.cache_exists('tap:roles:own'), false, 'unrelated role: cache_exists is false');
SELECT is(harden.cache_ttl('tap:roles:own'), NULL, 'unrelated role: cache_ttl is NULL');
SELECT is(harden.cache_delete('tap:roles:own'), false, 'unrelated role: cache_delete returns false');
SELECT is((SELECT count(*) FROM harden.cache_entries WHERE key = 'tap:roles:own'), 0::bigint,
          'unrelated role: the entry is not in cache_entries');
SELECT is(pg_temp.visible_keys(), '{tap:roles:pub}', 'unrelated role lists only the public entry');
SELECT lives_ok($$ SELECT harden.cache_set('tap:roles:own', '"mine"'::jsonb) $$,
                'unrelated role: cache_set of the key succeeds as on a free key (no existence oracle)');
SELECT is(harden.cache_get('tap:roles:own'), '"mine"'::jsonb, 'unrelated role reads its own value under the key');
SELECT is(harden.cache_delete('tap:roles:own'), true, 'unrelated role deletes its own value');
SELECT is(harden.cache_get('tap:roles:own'), NULL, 'and the key is missing to it again');
RESET ROLE;
SELECT is(harden.cache_get('tap:roles:own'), '{"v": 1}'::jsonb,
          'the entry survived the unrelated role''s delete and set unchanged');
SELECT is((SELECT owner::text FROM harden.cache_entries WHERE key = 'tap:roles:own'),
          'pgh_tr_owner', 'and its owner is unchanged');

-- ---------------------------------------------------------------------------
-- A member with INHERIT has the owner's privileges
-- ---------------------------------------------------------------------------
SET ROLE pgh_tr_member;
SELECT is(harden.cache_get('tap:roles:own'), '{"v": 1}'::jsonb, 'member reads the owner''s entry');
SELECT is(harden.cache_get_bytea('tap:roles:tagged'), '\x0102'::bytea, 'member reads the owner''s bytea entry');
SELECT is(harden.cache_exists('tap:roles:own'), true, 'member: cache_exists is true');
SELECT ok(harden.cache_ttl('tap:roles:own') IS NOT NULL, 'member: cache_ttl is shown');
SELECT is(pg_temp.visible_keys(), '{tap:roles:own,tap:roles:pub,tap:roles:tagged}',
          'member lists all of the owner''s entries');
RESET ROLE;

-- ---------------------------------------------------------------------------
-- A NOINHERIT member does not (has_privs_of_role, not is_member_of_role)
-- ---------------------------------------------------------------------------
SET ROLE pgh_tr_noinh;
SELECT is(harden.cache_get('tap:roles:own'), NULL, 'NOINHERIT member: cache_get returns NULL');
SELECT is(harden.cache_exists('tap:roles:own'), false, 'NOINHERIT member: cache_exists is false');
SELECT is(harden.cache_ttl('tap:roles:own'), NULL, 'NOINHERIT member: cache_ttl is NULL');
SELECT is(harden.cache_delete('tap:roles:own'), false, 'NOINHERIT member: cache_delete returns false');
SELECT is(pg_temp.visible_keys(), '{tap:roles:pub}', 'NOINHERIT member lists only the public entry');
SELECT lives_ok($$ SELECT harden.cache_set('tap:roles:own', '"mine"'::jsonb) $$,
                'NOINHERIT member: cache_set of the key succeeds as on a free key');
SELECT is(harden.cache_get('tap:roles:own'), '"mine"'::jsonb, 'NOINHERIT member reads its own value');
SELECT is(harden.cache_delete('tap:roles:own'), true, 'NOINHERIT member deletes its own value');
RESET ROLE;
SELECT is(harden.cache_get('tap:roles:own'), '{"v": 1}'::jsonb,
          'the entry survived the NOINHERIT member''s delete and set unchanged');

-- ---------------------------------------------------------------------------
-- public => true: anyone reads it, only the owner's privileges change it
-- ---------------------------------------------------------------------------
SET ROLE pgh_tr_other;
SELECT is(harden.cache_get_text('tap:roles:pub'), 'public value', 'unrelated role reads a public entry');
SELECT is(harden.cache_exists('tap:roles:pub'), true, 'unrelated role: cache_exists is true for a public entry');
SELECT is((SELECT ARRAY[owner::text, public::text, tags::text] FROM harden.cache_entries
            WHERE key = 'tap:roles:pub'),
          ARRAY['pgh_tr_owner', 'true', '{tap-roles-t}'],
          'unrelated role sees the public entry in cache_entries, with its owner and tags');
SELECT throws_ok($$ SELECT harden.cache_set('tap:roles:pub', 'hijacked'::text) $$, '42501',
                 'permission denied for cache key "tap:roles:pub"',
                 'unrelated role cannot overwrite a public entry');
SELECT throws_ok($$ SELECT harden.cache_set('tap:roles:pub', 'hijacked'::text, public => true) $$,
                 '42501', 'permission denied for cache key "tap:roles:pub"',
                 'unrelated role cannot overwrite a public entry with another public one');
SELECT throws_ok($$ SELECT harden.cache_delete('tap:roles:pub') $$, '42501',
                 'permission denied for cache key "tap:roles:pub"',
                 'unrelated role cannot delete a public entry');
SELECT is(harden.cache_get_text('tap:roles:pub'), 'public value',
          'the public entry''s value is unchanged');
SELECT is((SELECT owner::text FROM harden.cache_entries WHERE key = 'tap:roles:pub'),
          'pgh_tr_owner', 'the public entry''s owner is unchanged');
SET ROLE pgh_tr_noinh;
SELECT is(harden.cache_get_text('tap:roles:pub'), 'public value', 'NOINHERIT member reads a public entry');
SELECT throws_ok($$ SELECT harden.cache_delete('tap:roles:pub') $$, '42501',
                 'permission denied for cache key "tap:roles:pub"',
                 'NOINHERIT member cannot delete a public entry');
RESET ROLE;
SELECT is(harden.cache_get_text('tap:roles:pub'), 'public value',
          'the public entry is still there with its value');

-- ---------------------------------------------------------------------------
-- The superuser reads everything
-- ---------------------------------------------------------------------------
SELECT is(harden.cache_get('tap:roles:own'), '{"v": 1}'::jsonb, 'superuser reads a private entry');
SELECT is(harden.cache_get_bytea('tap:roles:tagged'), '\x0102'::bytea, 'superuser reads a private bytea entry');
SELECT is(harden.cache_exists('tap:roles:own'), true, 'superuser: cache_exists is true');
SELECT is(pg_temp.visible_keys(), '{tap:roles:own,tap:roles:pub,tap:roles:tagged}',
          'superuser lists every entry');

-- ---------------------------------------------------------------------------
-- Replacing moves ownership to the writer; members may delete
-- ---------------------------------------------------------------------------
SET ROLE pgh_tr_owner;
SELECT lives_ok($$ SELECT harden.cache_set('tap:roles:mem', 'by owner'::text);
                   SELECT harden.cache_set('tap:roles:del', 'by owner'::text) $$,
                'owner sets two more entries');
SET ROLE pgh_tr_member;
SELECT lives_ok($$ SELECT harden.cache_set('tap:roles:mem', 'by member'::text) $$,
                'member replaces the owner''s entry');
SELECT is((SELECT owner::text FROM harden.cache_entries WHERE key = 'tap:roles:mem'),
          'pgh_tr_member', 'the replaced entry is owned by the member now');
SELECT is(harden.cache_delete('tap:roles:del'), true, 'member deletes the owner''s entry');
SELECT is(harden.cache_exists('tap:roles:del'), false, 'the deleted entry is gone');
SET ROLE pgh_tr_owner;
SELECT is(harden.cache_get_text('tap:roles:mem'), NULL,
          'the owner lacks the member''s privileges: the member''s entry is missing to it');
SELECT lives_ok($$ SELECT harden.cache_set('tap:roles:mem', 'by owner again'::text) $$,
                'the owner''s cache_set of the key goes to its own shadow');
SELECT is(harden.cache_get_text('tap:roles:mem'), 'by owner again', 'the owner reads its own value');
SELECT is(harden.cache_delete('tap:roles:mem'), true, 'and deletes it');
SET ROLE pgh_tr_member;
SELECT is(harden.cache_get_text('tap:roles:mem'), 'by member', 'the member''s value is unchanged');
SELECT is(harden.cache_delete('tap:roles:mem'), true, 'member deletes its own entry');
RESET ROLE;

-- ---------------------------------------------------------------------------
-- cache_invalidate_tag deletes only entries the caller may modify
-- ---------------------------------------------------------------------------
SET ROLE pgh_tr_other;
SELECT lives_ok($$ SELECT harden.cache_set('tap:roles:other1', 'other''s'::text, tags => '{tap-roles-t}') $$,
                'unrelated role sets an entry with the same tag');
SELECT is(harden.cache_invalidate_tag('tap-roles-t'), 1::bigint,
          'unrelated role''s cache_invalidate_tag deletes only its own entry');
SELECT is(harden.cache_exists('tap:roles:other1'), false, 'its own tagged entry is gone');
SELECT is(harden.cache_get_text('tap:roles:pub'), 'public value',
          'the owner''s public tagged entry, readable but not modifiable, is kept');
SET ROLE pgh_tr_noinh;
SELECT is(harden.cache_invalidate_tag('tap-roles-t'), 0::bigint,
          'NOINHERIT member''s cache_invalidate_tag deletes nothing');
RESET ROLE;
SELECT is((SELECT array_agg(key ORDER BY key) FROM harden.cache_entries
            WHERE key LIKE 'tap:roles:%' AND 'tap-roles-t' = ANY (tags)),
          '{tap:roles:own,tap:roles:pub,tap:roles:tagged}',
          'the owner''s tagged entries are all still there');
SET ROLE pgh_tr_member;
SELECT is(harden.cache_invalidate_tag('tap-roles-t'), 3::bigint,
          'member''s cache_invalidate_tag deletes the owner''s tagged entries');
RESET ROLE;
SELECT is(pg_temp.visible_keys(), '{}', 'no entry of the suite is left');

-- ---------------------------------------------------------------------------
-- Admin functions, policies and the secure GUC are not for plain roles
-- ---------------------------------------------------------------------------
SET ROLE pgh_tr_other;
SELECT throws_ok($$ SELECT harden.cache_invalidate('tap:roles:*') $$, '42501',
                 'permission denied for function cache_invalidate',
                 'a plain role may not call cache_invalidate');
SELECT throws_ok($$ SELECT harden.cache_flush() $$, '42501',
                 'permission denied for function cache_flush',
                 'a plain role may not call cache_flush');
SELECT throws_ok($$ SELECT harden.cache_flush_secure() $$, '42501',
                 'permission denied for function cache_flush_secure',
                 'a plain role may not call cache_flush_secure');
SELECT throws_ok($$ SELECT harden.cache_sweep() $$, '42501',
                 'permission denied for function cache_sweep',
                 'a plain role may not call cache_sweep');
SELECT throws_ok($$ SELECT harden.cache_stats_reset() $$, '42501',
                 'permission denied for function cache_stats_reset',
                 'a plain role may not call cache_stats_reset');
SELECT throws_ok($$ INSERT INTO harden.cache_policies (prefix, secure) VALUES ('tap:roles:', false) $$,
                 '42501', 'permission denied for table cache_policies',
                 'a plain role may not write cache_policies');
SELECT lives_ok($$ SELECT count(*) FROM harden.cache_policies $$, 'a plain role may read cache_policies');
SELECT throws_ok($$ SET harden.cache_secure_max_ttl = 86400 $$, '42501',
                 'permission denied to set parameter "harden.cache_secure_max_ttl"',
                 'a plain role may not set harden.cache_secure_max_ttl');
RESET ROLE;
SELECT ok(NOT has_function_privilege('public', 'harden.cache_invalidate(text)', 'EXECUTE'),
          'cache_invalidate is revoked from PUBLIC');
SELECT ok(NOT has_function_privilege('public', 'harden.cache_flush()', 'EXECUTE'),
          'cache_flush is revoked from PUBLIC');
SELECT ok(NOT has_function_privilege('public', 'harden.cache_flush_secure()', 'EXECUTE'),
          'cache_flush_secure is revoked from PUBLIC');
SELECT ok(NOT has_function_privilege('public', 'harden.cache_sweep()', 'EXECUTE'),
          'cache_sweep is revoked from PUBLIC');
SELECT ok(NOT has_function_privilege('public', 'harden.cache_stats_reset()', 'EXECUTE'),
          'cache_stats_reset is revoked from PUBLIC');

-- ---------------------------------------------------------------------------
-- Secure entries
-- ---------------------------------------------------------------------------
SELECT columns_are('harden', 'cache_entries',
                   ARRAY['key', 'type', 'bytes', 'expires_at', 'ttl', 'hits', 'tags',
                         'owner', 'secure', 'public', 'deps', 'unwatched']::name[],
                   'cache_entries has exactly its documented columns');
SELECT hasnt_column('harden', 'cache_entries', 'value', 'cache_entries has no value column');
SELECT is((SELECT count(*) FROM pg_attribute
            WHERE attrelid = 'harden.cache_entries'::regclass AND attnum > 0
              AND atttypid IN ('jsonb'::regtype, 'bytea'::regtype)),
          0::bigint, 'no column of cache_entries can hold a value (jsonb or bytea)');
SELECT ok(NOT 'value' = ANY (proargnames), 'the function behind cache_entries has no value column either')
  FROM pg_proc WHERE oid = 'harden.cache_entries_rows'::regproc;

SET harden.cache_secure_max_ttl = 60;
SET ROLE pgh_tr_owner;
SELECT lives_ok($$ SELECT harden.cache_set('tap:roles:sec:day', 'secret-day-Zq7'::text, ttl => '1 day',
                                           tags => '{tap-roles-s}', secure => true) $$,
                'owner sets a secure entry with a TTL of a day');
SELECT lives_ok($$ SELECT harden.cache_set('tap:roles:sec:none', '{"secret": "none-Zq7"}'::jsonb,
                                           tags => '{tap-roles-s}', secure => true) $$,
                'owner sets a secure entry without a TTL');
SELECT lives_ok($$ SELECT harden.cache_set('tap:roles:plain:day', 'plain-day'::text, ttl => '1 day',
                                           tags => '{tap-roles-s}') $$,
                'owner sets a plain entry with a TTL of a day');
SELECT ok(harden.cache_ttl('tap:roles:sec:day') > interval '0' AND
          harden.cache_ttl('tap:roles:sec:day') <= interval '60 seconds',
          'a secure entry''s TTL of a day is capped at harden.cache_secure_max_ttl');
SELECT ok(harden.cache_ttl('tap:roles:sec:none') > interval '0' AND
          harden.cache_ttl('tap:roles:sec:none') <= interval '60 seconds',
          'a secure entry set without a TTL gets harden.cache_secure_max_ttl');
SELECT ok(harden.cache_ttl('tap:roles:plain:day') > interval '23 hours',
          'a plain entry''s TTL is not capped');
SELECT is(harden.cache_get_text('tap:roles:sec:day'), 'secret-day-Zq7', 'owner reads its secure entry');
SELECT results_eq(
  $$ SELECT key, secure, tags FROM harden.cache_entries WHERE key LIKE 'tap:roles:%' ORDER BY key $$,
  $$ VALUES ('tap:roles:plain:day', false, '{tap-roles-s}'::text[]),
            ('tap:roles:sec:day', true, NULL),
            ('tap:roles:sec:none', true, NULL) $$,
  'owner: cache_entries marks secure entries and shows no tags for them');
SELECT is((SELECT count(*) FROM harden.cache_entries e WHERE e::text ~ 'secret|Zq7'), 0::bigint,
          'owner: no column of cache_entries shows a secure value');
SET ROLE pgh_tr_member;
SELECT is(harden.cache_get_text('tap:roles:sec:day'), 'secret-day-Zq7', 'member reads the secure entry');
SET ROLE pgh_tr_other;
SELECT is(harden.cache_get_text('tap:roles:sec:day'), NULL, 'unrelated role: a secure entry is missing');
SELECT is(pg_temp.visible_keys(), '{}', 'unrelated role lists none of the owner''s secure entries');
SELECT is(pg_temp.error_of($$ SELECT harden.cache_set('tap:roles:sec:day', 'x'::text) $$),
          'no error', 'unrelated role: cache_set of a secure entry''s key succeeds as on a free key');
SELECT is(harden.cache_get_text('tap:roles:sec:day'), 'x', 'unrelated role reads its own value, not the secret');
SELECT is(harden.cache_delete('tap:roles:sec:day'), true, 'unrelated role deletes its own value');
RESET ROLE;
SELECT is(harden.cache_get_text('tap:roles:sec:day'), 'secret-day-Zq7', 'superuser reads a secure entry');
SELECT is((SELECT tags FROM harden.cache_entries WHERE key = 'tap:roles:sec:day'), NULL,
          'superuser: no tags for a secure entry either');
SELECT is((SELECT count(*) FROM harden.cache_entries e WHERE e::text ~ 'secret|Zq7'), 0::bigint,
          'superuser: no column of cache_entries shows a secure value');

-- Errors about a secure entry name the key, never the value.
SELECT matches(pg_temp.error_of($$ SELECT harden.cache_get('tap:roles:sec:day') $$),
               '^PH102: cache entry "tap:roles:sec:day" holds text, not jsonb',
               'wrong-type get of a secure text entry raises PH102');
SELECT doesnt_match(pg_temp.error_of($$ SELECT harden.cache_get('tap:roles:sec:day') $$),
                    'secret|Zq7', 'that error does not contain the value');
SELECT matches(pg_temp.error_of($$ SELECT harden.cache_get_bytea('tap:roles:sec:none') $$),
               '^PH102: cache entry "tap:roles:sec:none" holds jsonb, not bytea',
               'wrong-type get of a secure jsonb entry raises PH102');
SELECT doesnt_match(pg_temp.error_of($$ SELECT harden.cache_get_bytea('tap:roles:sec:none') $$),
                    'secret|Zq7', 'that error does not contain the value');
SET harden.cache_max_entry_size = 64;
SELECT matches(pg_temp.error_of($$ SELECT harden.cache_set('tap:roles:sec:big', repeat('secret-Zq7', 20),
                                                           secure => true) $$),
               '^PH103: cache value for key "tap:roles:sec:big" is too large',
               'a secure value over harden.cache_max_entry_size raises PH103');
SELECT doesnt_match(pg_temp.error_of($$ SELECT harden.cache_set('tap:roles:sec:big', repeat('secret-Zq7', 20),
                                                                secure => true) $$),
                    'secret|Zq7', 'that error does not contain the value');
RESET harden.cache_max_entry_size;

-- cache_flush_secure removes the secure entries only.
SELECT ok(harden.cache_flush_secure() >= 2, 'cache_flush_secure reports the secure entries it removed');
SELECT is(harden.cache_exists('tap:roles:sec:day'), false, 'the secure entry with a TTL is gone');
SELECT is(harden.cache_exists('tap:roles:sec:none'), false, 'the secure entry without a TTL is gone');
SELECT is(harden.cache_get_text('tap:roles:plain:day'), 'plain-day', 'the plain entry is kept');

-- A policy with secure = true makes the keys under its prefix secure.
INSERT INTO harden.cache_policies (prefix, secure) VALUES ('tap:roles:pol:', true);
SET ROLE pgh_tr_owner;
SELECT lives_ok($$ SELECT harden.cache_set('tap:roles:pol:a', 'policy-secret-Zq7'::text, ttl => '1 day',
                                           tags => '{tap-roles-p}') $$,
                'owner sets an entry under a secure policy, without secure => true');
SELECT lives_ok($$ SELECT harden.cache_set('tap:roles:polx', 'not covered'::text, ttl => '1 day',
                                           tags => '{tap-roles-p}') $$,
                'owner sets an entry outside the policy''s prefix');
SELECT results_eq(
  $$ SELECT key, secure, tags FROM harden.cache_entries WHERE key LIKE 'tap:roles:pol%' ORDER BY key $$,
  $$ VALUES ('tap:roles:pol:a', true, NULL::text[]),
            ('tap:roles:polx', false, '{tap-roles-p}') $$,
  'the policy made its key secure (no tags shown), not the other');
SELECT ok(harden.cache_ttl('tap:roles:pol:a') <= interval '60 seconds',
          'the policy-secure entry''s TTL is capped too');
SELECT ok(harden.cache_ttl('tap:roles:polx') > interval '23 hours',
          'the entry outside the policy keeps its TTL');
RESET ROLE;
SELECT ok(harden.cache_flush_secure() >= 1, 'cache_flush_secure removes the policy-secure entry');
SELECT is(pg_temp.visible_keys(), '{tap:roles:plain:day,tap:roles:polx}',
          'only the plain entries are left');
RESET harden.cache_secure_max_ttl;

DO $$ BEGIN PERFORM harden.cache_invalidate('tap:roles:*'); END $$;
SELECT is(pg_temp.visible_keys(), '{}', 'cache_invalidate outside a block removes the entries at once');

-- ---------------------------------------------------------------------------
-- Inside a transaction block writes wait for the commit, but the role rules
-- are checked at call time, against committed and pending entries alike
-- ---------------------------------------------------------------------------
SET ROLE pgh_tr_owner;
SELECT lives_ok($$ SELECT harden.cache_set('tap:roles:tx:own', 'committed'::text);
                   SELECT harden.cache_set('tap:roles:tx:pub', 'committed public'::text, public => true);
                   SELECT harden.cache_set('tap:roles:tx:mem', 'committed'::text) $$,
                'owner sets three entries outside a transaction block');
RESET ROLE;
SELECT results_eq(
  $$ SELECT key, owner::text FROM harden.cache_entries WHERE key LIKE 'tap:roles:tx:%' ORDER BY key $$,
  $$ VALUES ('tap:roles:tx:mem', 'pgh_tr_owner'), ('tap:roles:tx:own', 'pgh_tr_owner'),
            ('tap:roles:tx:pub', 'pgh_tr_owner') $$,
  'they are committed at once, owned by the owner');

BEGIN;
SET ROLE pgh_tr_other;
SELECT is(harden.cache_delete('tap:roles:tx:own'), false,
          'in a block, cache_delete of a committed entry the role cannot read returns false');
SELECT lives_ok($$ SELECT harden.cache_set('tap:roles:tx:own', 'shadowed'::text) $$,
                'in a block, an unrelated role''s cache_set of another role''s committed entry succeeds');
SELECT is(harden.cache_get_text('tap:roles:tx:own'), 'shadowed', 'and it reads its pending value');
SELECT throws_ok($$ SELECT harden.cache_set('tap:roles:tx:pub', 'hijacked'::text, public => true) $$, '42501',
                 'permission denied for cache key "tap:roles:tx:pub"',
                 'in a block, an unrelated role cannot overwrite a committed public entry either');
SELECT throws_ok($$ SELECT harden.cache_delete('tap:roles:tx:pub') $$, '42501',
                 'permission denied for cache key "tap:roles:tx:pub"',
                 'in a block, an unrelated role''s cache_delete of a committed public entry raises 42501');
SET ROLE pgh_tr_noinh;
SELECT is(harden.cache_get_text('tap:roles:tx:own'), NULL,
          'in a block, the NOINHERIT member reads neither the committed entry nor the other role''s pending one');
SET ROLE pgh_tr_member;
SELECT lives_ok($$ SELECT harden.cache_set('tap:roles:tx:mem', 'by member'::text) $$,
                'in a block, the member may replace the owner''s committed entry');
SELECT is(harden.cache_get_text('tap:roles:tx:mem'), 'by member', 'the member sees its pending value');
SELECT is((SELECT owner::text FROM harden.cache_entries WHERE key = 'tap:roles:tx:mem'), 'pgh_tr_owner',
          'cache_entries still shows the committed entry of the owner');
RESET ROLE;
COMMIT;
SELECT results_eq(
  $$ SELECT key, owner::text, harden.cache_get_text(key) FROM harden.cache_entries
      WHERE key LIKE 'tap:roles:tx:%' ORDER BY key, owner::text $$,
  $$ VALUES ('tap:roles:tx:mem', 'pgh_tr_member', 'by member'),
            ('tap:roles:tx:own', 'pgh_tr_other', 'committed'),
            ('tap:roles:tx:own', 'pgh_tr_owner', 'committed'),
            ('tap:roles:tx:pub', 'pgh_tr_owner', 'committed public') $$,
  'after COMMIT: the member''s replacement was published, and the unrelated role''s value as its own');
SET ROLE pgh_tr_other;
SELECT is(harden.cache_get_text('tap:roles:tx:own'), 'shadowed', 'the unrelated role reads its committed value');
SELECT is(harden.cache_delete('tap:roles:tx:own'), true, 'and deletes it');
RESET ROLE;
SELECT is(harden.cache_get_text('tap:roles:tx:own'), 'committed', 'the owner''s entry is unchanged');

-- pgTAP numbers its tests with a sequence, so the results reported inside
-- this block survive its ROLLBACK.
BEGIN;
SET ROLE pgh_tr_owner;
SELECT lives_ok($$ SELECT harden.cache_set('tap:roles:tx:new', '{"pending": 1}'::jsonb);
                   SELECT harden.cache_set('tap:roles:tx:newpub', 'pending public'::text, public => true);
                   SELECT harden.cache_set('tap:roles:tx:own', 'pending replacement'::text) $$,
                'in a block, the owner sets two new keys and replaces its committed entry');
SELECT is(harden.cache_get('tap:roles:tx:new'), '{"pending": 1}'::jsonb, 'the owner sees its pending entry');
SELECT is(harden.cache_get_text('tap:roles:tx:own'), 'pending replacement',
          'and its pending replacement');
SELECT is((SELECT count(*) FROM harden.cache_entries WHERE key IN ('tap:roles:tx:new', 'tap:roles:tx:newpub')),
          0::bigint, 'pending entries are not in cache_entries');
SET ROLE pgh_tr_other;
SELECT is(harden.cache_get('tap:roles:tx:new'), NULL,
          'unrelated role in the same block: cache_get of the owner''s pending entry returns NULL');
SELECT is(harden.cache_exists('tap:roles:tx:new'), false, 'and cache_exists is false');
SELECT throws_ok($$ SELECT harden.cache_set('tap:roles:tx:new', 'hijacked'::text) $$, '42501',
                 'permission denied for cache key "tap:roles:tx:new"',
                 'unrelated role cannot set a key the owner has a pending entry under');
SELECT is(harden.cache_get_text('tap:roles:tx:newpub'), 'pending public',
          'unrelated role reads the owner''s pending public entry');
SELECT throws_ok($$ SELECT harden.cache_set('tap:roles:tx:newpub', 'hijacked'::text, public => true) $$, '42501',
                 'permission denied for cache key "tap:roles:tx:newpub"',
                 'but cannot overwrite it');
SELECT throws_ok($$ SELECT harden.cache_delete('tap:roles:tx:newpub') $$, '42501',
                 'permission denied for cache key "tap:roles:tx:newpub"',
                 'nor delete it');
SET ROLE pgh_tr_member;
SELECT is(harden.cache_get('tap:roles:tx:new'), '{"pending": 1}'::jsonb,
          'the member reads the owner''s pending entry');
RESET ROLE;
ROLLBACK;
SET ROLE pgh_tr_owner;
SELECT is(harden.cache_get('tap:roles:tx:new'), NULL, 'after ROLLBACK: the pending entry was not published');
SELECT is(harden.cache_get_text('tap:roles:tx:newpub'), NULL,
          'after ROLLBACK: nor the pending public entry');
SELECT is(harden.cache_get_text('tap:roles:tx:own'), 'committed',
          'after ROLLBACK: the owner reads the earlier committed value');
RESET ROLE;
SELECT is(pg_temp.visible_keys(), '{tap:roles:tx:mem,tap:roles:tx:own,tap:roles:tx:pub}',
          'after ROLLBACK: cache_entries holds the committed entries only');

-- ---------------------------------------------------------------------------
-- Cleanup: nothing was rolled back for us
-- ---------------------------------------------------------------------------
DO $$ BEGIN PERFORM harden.cache_invalidate('tap:roles:*'); END $$;
SELECT is(pg_temp.visible_keys(), '{}', 'cleaned up: no entry of the suite is left');
DELETE FROM harden.cache_policies WHERE prefix LIKE 'tap:roles:%';
REVOKE USAGE ON SCHEMA harden FROM pgh_tr_owner, pgh_tr_other, pgh_tr_member, pgh_tr_noinh;
DROP ROLE pgh_tr_noinh, pgh_tr_member, pgh_tr_other, pgh_tr_owner;

SELECT * FROM finish();
