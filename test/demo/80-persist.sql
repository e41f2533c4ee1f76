\echo
\echo '# 11. A cache that survives a restart'
\echo 'At a clean shutdown the persistence worker writes the non-secure entries'
\echo '(value, remaining TTL, tags, owner) to a file in the data directory and'
\echo 'loads it at the next start; secure entries are never written anywhere.'
SELECT harden.cache_set('home:banner', '{"text": "Free shipping this week"}'::jsonb,
                        ttl => '1 hour', tags => '{home}') \g /dev/null
SELECT harden.cache_set('session:42', '{"user": 7}'::jsonb, secure => true) \g /dev/null
SELECT key, secure, tags FROM harden.cache_entries WHERE key IN ('home:banner', 'session:42') ORDER BY key;
\echo 'The demo now restarts the server (pg_ctl restart) ...'
