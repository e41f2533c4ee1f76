-- demo: restart the server before this chapter
\echo '... and after the restart the entry is back, still tagged, its TTL still'
\echo 'counting; the secure one is gone.'
SELECT pg_temp.wait_for($$SELECT harden.cache_get('home:banner') IS NOT NULL$$) \g /dev/null
SELECT harden.cache_get('home:banner') AS banner,
       harden.cache_ttl('home:banner') < interval '1 hour' AS ttl_kept_counting,
       harden.cache_get('session:42') IS NULL AS secure_entry_not_kept;
SELECT key, tags FROM harden.cache_entries WHERE key = 'home:banner';
