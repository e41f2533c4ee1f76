\echo
\echo '# 2b. Roles and leases'
\echo 'Two application roles share the cache.  An entry records the role that wrote it.'
CREATE ROLE shop_web NOLOGIN;
CREATE ROLE shop_admin NOLOGIN;
GRANT USAGE ON SCHEMA harden TO shop_web, shop_admin;
SET ROLE shop_admin;
SELECT harden.cache_set('report:revenue', '{"today": 1234.50}'::jsonb) \g /dev/null
SET ROLE shop_web;
\echo 'To shop_web the admin''s entry is simply missing: NULL, not "permission denied",'
\echo 'so no role can learn which keys exist.'
SELECT harden.cache_get('report:revenue') IS NULL AS missing_to_web,
       harden.cache_exists('report:revenue') AS exists_to_web;
\echo 'Its write goes to its own shadow of the key; neither role sees the other''s value.'
SELECT harden.cache_set('report:revenue', '"web: nothing to report"'::jsonb) \g /dev/null
SELECT harden.cache_get('report:revenue') AS web_reads;
SET ROLE shop_admin;
SELECT harden.cache_get('report:revenue') AS admin_reads;
RESET ROLE;
\echo 'A superuser has the privileges of both, and sees whose entry is whose:'
SELECT key, owner, type, bytes FROM harden.cache_entries WHERE key = 'report:revenue' ORDER BY owner::text;

\echo
\echo 'Leases: a miss hands out a token; only its holder stores, and a set whose'
\echo 'key was invalidated meanwhile is refused, so a stale value never lands.'
SELECT value IS NULL AS miss, lease IS NOT NULL AS got_lease FROM harden.cache_lease('product:7');
SELECT lease FROM harden.cache_lease('product:7') \gset
SELECT harden.cache_set_leased('product:7', '{"price": 19.99}'::jsonb, :lease,
                               ttl => '5 minutes', tags => '{products}') AS stored;
SELECT value, lease IS NULL AS no_lease_on_a_hit FROM harden.cache_lease('product:7');
SELECT harden.cache_delete('product:7') AS deleted;
SELECT lease FROM harden.cache_lease('product:7') \gset
\echo 'The price changes while the value is being computed:'
SELECT harden.cache_invalidate_tag('products') AS invalidated;
SELECT harden.cache_set_leased('product:7', '{"price": 19.99}'::jsonb, :lease,
                               tags => '{products}') AS stale_value_stored;
