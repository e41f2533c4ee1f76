\echo
\echo '# 10. The same cache over the Redis protocol'
\if :redis
\echo 'The demo server listens for Redis clients on a unix socket (harden.resp_listen).'
\echo 'A role with a password sets a value in SQL; redis-cli reads it as that role.'
CREATE ROLE api LOGIN PASSWORD 'secret';
GRANT USAGE ON SCHEMA harden TO api;
SET ROLE api;
SELECT harden.cache_set('product:1', '{"id": 1, "name": "Product 1"}'::jsonb, ttl => '5 minutes') \g /dev/null
RESET ROLE;
SELECT pg_temp.wait_for($$SELECT count(*) > 0 FROM pg_stat_activity
                          WHERE backend_type = 'pg_harden resp' AND datname = 'shop'$$) AS endpoint_up;
\echo '$ redis-cli -s $PGH_DEMO_RESP_SOCK --user api --pass secret get product:1'
\! redis-cli -s "$PGH_DEMO_RESP_SOCK" --user api --pass secret --no-auth-warning get product:1
\echo '$ redis-cli -s $PGH_DEMO_RESP_SOCK --user api --pass secret ttl product:1'
\! redis-cli -s "$PGH_DEMO_RESP_SOCK" --user api --pass secret --no-auth-warning ttl product:1
\else
\echo 'redis-cli is not installed: this chapter is skipped.'
\endif
