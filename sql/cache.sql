-- The cache: set/get of each type, TTL, tags, invalidation, policies,
-- views, counters, and every error a caller can cause.
SELECT harden.cache_flush() >= 0 AS flushed;
SELECT harden.cache_stats_reset();

-- Values of each type round-trip unchanged.
SELECT harden.cache_set('product:1', '{"id": 1, "name": "Mug", "tags": ["a", "b"]}'::jsonb);
SELECT harden.cache_get('product:1');
SELECT harden.cache_set('greeting', 'héllo wörld'::text);
SELECT harden.cache_get_text('greeting');
SELECT harden.cache_set('blob', '\x00ff10'::bytea);
SELECT harden.cache_get_bytea('blob');
SELECT harden.cache_set('empty-text', ''::text);
SELECT harden.cache_get_text('empty-text') = '' AS empty_text_kept;
SELECT harden.cache_set('big', jsonb_build_object('data', repeat('x', 100000)));
SELECT length(harden.cache_get('big')->>'data') AS big_length;

-- A set replaces the value (and its type).
SELECT harden.cache_set('product:1', '{"id": 1, "name": "Cup"}'::jsonb);
SELECT harden.cache_get('product:1')->>'name' AS replaced;
SELECT harden.cache_set('product:1', 'now text'::text);
SELECT harden.cache_get_text('product:1');

-- Missing keys are NULL, not errors.
SELECT harden.cache_get('no:such:key') IS NULL AS missing_jsonb,
       harden.cache_get_text('no:such:key') IS NULL AS missing_text,
       harden.cache_get_bytea('no:such:key') IS NULL AS missing_bytea;

-- Reading with the wrong getter is an error, never garbage.
SELECT harden.cache_get('greeting');
SELECT harden.cache_get_text('blob');
SELECT harden.cache_get_bytea('product:1');

-- exists / ttl / delete
SELECT harden.cache_exists('greeting') AS exists, harden.cache_exists('nope') AS not_exists;
SELECT harden.cache_ttl('greeting') IS NULL AS no_expiry;
SELECT harden.cache_set('short', '1'::jsonb, ttl => '1 hour');
SELECT harden.cache_ttl('short') BETWEEN '59 minutes' AND '1 hour' AS ttl_left;
SELECT harden.cache_ttl('nope') IS NULL AS ttl_missing;
SELECT harden.cache_delete('short') AS deleted, harden.cache_delete('short') AS deleted_again;
SELECT harden.cache_get('short') IS NULL AS gone;

-- Entries expire: a read after the TTL is a miss and counts an expiration.
SELECT harden.cache_set('fleeting', '"soon gone"'::jsonb, ttl => '150 milliseconds');
SELECT harden.cache_get('fleeting') AS before_expiry;
SELECT pg_sleep(0.3);
SELECT harden.cache_get('fleeting') IS NULL AS after_expiry,
       harden.cache_exists('fleeting') AS still_exists;
SELECT expirations FROM harden.cache_stats;

-- cache_sweep() frees expired entries without waiting for a read.
SELECT count(harden.cache_set('sweep:' || i, 'x'::text, ttl => '100 milliseconds')) AS set
  FROM generate_series(1, 5) AS i;
SELECT pg_sleep(0.2);
SELECT harden.cache_sweep() AS swept;
SELECT count(*) AS sweep_left FROM harden.cache_entries WHERE key LIKE 'sweep:%';

-- Tags and invalidation.
SELECT harden.cache_set('list:p1', '[1]'::jsonb, tags => '{products, page1}');
SELECT harden.cache_set('list:p2', '[2]'::jsonb, tags => '{products}');
SELECT harden.cache_set('list:u1', '[3]'::jsonb, tags => '{users}');
SELECT key, tags FROM harden.cache_entries WHERE key LIKE 'list:%' ORDER BY key;
SELECT harden.cache_invalidate_tag('products') AS invalidated;
SELECT harden.cache_invalidate_tag('products') AS invalidated_again;
SELECT key FROM harden.cache_entries WHERE key LIKE 'list:%' ORDER BY key;

SELECT count(harden.cache_set(k, '0'::jsonb)) AS set
  FROM unnest(ARRAY['user:1:cart', 'user:2:cart', 'user:10:cart', 'user:1:profile']) AS k;
SELECT harden.cache_invalidate('user:?:cart') AS one_digit_carts;
SELECT key FROM harden.cache_entries WHERE key LIKE 'user:%' ORDER BY key;
SELECT harden.cache_invalidate('user:*') AS all_users;
SELECT harden.cache_invalidate('no-match*') AS none;
SELECT harden.cache_invalidate('*') > 0 AS everything;
SELECT count(*) AS left_after_star FROM harden.cache_entries;

-- cache_entries: one row per entry, never a value.
SELECT harden.cache_set('view:j', '{"a": 1}'::jsonb, tags => '{t1, t2}');
SELECT harden.cache_set('view:s', 'secret'::text, ttl => '10 minutes', secure => true, tags => '{hidden}');
SELECT harden.cache_set('view:p', '\x01'::bytea, public => true);
SELECT harden.cache_get('view:j') IS NOT NULL AS read_once;
SELECT key, type, bytes, hits, tags, owner, secure, public,
       expires_at IS NOT NULL AS expires, ttl <= '10 minutes' AS ttl_ok
  FROM harden.cache_entries ORDER BY key;
SELECT harden.cache_flush_secure() AS secure_flushed;
SELECT key FROM harden.cache_entries ORDER BY key;
SELECT harden.cache_flush() AS flushed;

-- TTL policies: the longest matching prefix gives default and max TTL.
INSERT INTO harden.cache_policies (prefix, default_ttl, max_ttl) VALUES
  ('api:', '5 minutes', '1 hour'),
  ('api:slow:', '2 hours', '1 day');
SELECT harden.cache_set('api:a', '1'::jsonb);
SELECT harden.cache_set('api:b', '1'::jsonb, ttl => '1 week');
SELECT harden.cache_set('api:slow:c', '1'::jsonb);
SELECT harden.cache_set('other', '1'::jsonb);
SELECT key, ttl BETWEEN '4 minutes' AND '5 minutes' AS default_5m,
       ttl BETWEEN '59 minutes' AND '1 hour' AS capped_1h,
       ttl BETWEEN '119 minutes' AND '2 hours' AS default_2h,
       ttl IS NULL AS no_ttl
  FROM harden.cache_entries ORDER BY key;
-- A policy can make entries secure; changing policies takes effect at once.
INSERT INTO harden.cache_policies (prefix, secure) VALUES ('token:', true);
SELECT harden.cache_set('token:1', 'abc'::text);
SELECT key, secure, ttl <= '1 hour' AS capped FROM harden.cache_entries WHERE key = 'token:1';
DELETE FROM harden.cache_policies WHERE prefix = 'api:';
SELECT harden.cache_set('api:a', '1'::jsonb);
SELECT ttl IS NULL AS no_policy_no_ttl FROM harden.cache_entries WHERE key = 'api:a';
-- Policy rows are checked.
INSERT INTO harden.cache_policies (prefix) VALUES ('bad prefix');
INSERT INTO harden.cache_policies (prefix, default_ttl, max_ttl) VALUES ('x:', '2 hours', '1 hour');
INSERT INTO harden.cache_policies (prefix, default_ttl) VALUES ('y:', '-1 minute');
TRUNCATE harden.cache_policies;
-- The session default TTL applies when neither the call nor a policy gives one.
SET harden.cache_default_ttl = '30s';
SELECT harden.cache_set('defaulted', '1'::jsonb);
SELECT ttl BETWEEN '29 seconds' AND '30 seconds' AS default_ttl_applied
  FROM harden.cache_entries WHERE key = 'defaulted';
RESET harden.cache_default_ttl;
SELECT harden.cache_flush() >= 0 AS flushed;

-- Keys: 1..250 bytes of [A-Za-z0-9:_.-].
SELECT harden.cache_set(repeat('k', 250), '1'::jsonb);
SELECT harden.cache_get(repeat('k', 250));
SELECT harden.cache_set('Aa0:_.-', '1'::jsonb);
SELECT harden.cache_set('', '1'::jsonb);
SELECT harden.cache_set(repeat('k', 251), '1'::jsonb);
SELECT harden.cache_get(repeat('k', 1000000));
SELECT harden.cache_set(NULL, '1'::jsonb);
SELECT harden.cache_get(NULL);
SELECT harden.cache_delete(NULL);
SELECT harden.cache_set('has space', '1'::jsonb);
SELECT harden.cache_set('ünïcode', '1'::jsonb);
SELECT harden.cache_get(E'tab\there');
SELECT harden.cache_exists('star*');
SELECT harden.cache_invalidate('bad pattern*');
SELECT harden.cache_invalidate(NULL);
SELECT harden.cache_invalidate('');

-- Values, TTLs and tags are checked.
SELECT harden.cache_set('k', NULL::jsonb);
SELECT harden.cache_set('k', '1'::jsonb, ttl => '-1 second');
SELECT harden.cache_set('k', '1'::jsonb, ttl => '0');
SELECT harden.cache_set('k', '1'::jsonb, ttl => '1000 years');
SELECT harden.cache_set('k', '1'::jsonb, tags => ARRAY['ok', NULL]);
SELECT harden.cache_set('k', '1'::jsonb, tags => '{"not ok"}');
SELECT harden.cache_set('k', '1'::jsonb, tags => '{{a,b},{c,d}}');
SELECT harden.cache_set('k', '1'::jsonb, tags => array_agg('t' || i)) FROM generate_series(1, 33) AS i;
SELECT harden.cache_set('k', '1'::jsonb, tags => NULL);
SELECT harden.cache_invalidate_tag(NULL);
SELECT harden.cache_invalidate_tag('');
SET harden.cache_max_entry_size = '1kB';
SELECT harden.cache_set('k', repeat('x', 1024)::text);
SELECT harden.cache_set('k', repeat('x', 1025)::text);
RESET harden.cache_max_entry_size;

-- A secret cannot be public; a failed overwrite names the writer only of a
-- public entry (one the caller could read anyway).  A key holding an entry
-- the caller may not read behaves as a free one: the caller's set goes to
-- its own shadow of the key (no existence oracle).
SELECT harden.cache_set('k', 's'::text, secure => true, public => true);
CREATE ROLE pgh_cache_a;
CREATE ROLE pgh_cache_b;
GRANT USAGE ON SCHEMA harden TO pgh_cache_a, pgh_cache_b;
SET ROLE pgh_cache_a;
SELECT harden.cache_set('roles:private', 'a'::text);
SELECT harden.cache_set('roles:public', 'a'::text, public => true);
SET ROLE pgh_cache_b;
SELECT harden.cache_get_text('roles:private') IS NULL AS private_hidden,
       harden.cache_get_text('roles:public') AS public_read;
SELECT harden.cache_set('roles:private', 'b'::text);
SELECT harden.cache_set('roles:public', 'b'::text);
RESET ROLE;
SELECT harden.cache_invalidate('roles:*') AS role_entries;
REVOKE USAGE ON SCHEMA harden FROM pgh_cache_a, pgh_cache_b;
DROP ROLE pgh_cache_a;
DROP ROLE pgh_cache_b;

-- Counters: this file's reads, sets and invalidations, in cache_stats and metrics().
SELECT hits > 0 AS hits, misses > 0 AS misses, sets > 0 AS sets, invalidations > 0 AS invalidations,
       hit_ratio BETWEEN 0 AND 1 AS ratio_ok, bytes_limit
  FROM harden.cache_stats;
SELECT count(*) AS cache_families
  FROM regexp_split_to_table(harden.metrics(), E'\n') AS line
 WHERE line ~ '^# TYPE harden_cache_[a-z]+_total counter$';
SELECT harden.cache_stats_reset();
SELECT hits, misses, sets, evictions, expirations, invalidations FROM harden.cache_stats;
SELECT harden.cache_flush() >= 0 AS flushed;
