\echo
\echo '# 3. Query results that follow the data'
\echo 'cache_query() caches a query''s rows; cache_watch() ties them to the table''s writes.'
SELECT harden.cache_stats_reset();
SELECT harden.cache_watch('product') AS watching_product;
CREATE FUNCTION product_list() RETURNS jsonb LANGUAGE sql AS $$
  SELECT harden.cache_query('products:list',
    'SELECT id, name, price FROM product ORDER BY id LIMIT 3', ttl => '10 minutes')
$$;
\echo 'Ten calls run the query once.'
SELECT count(product_list()) AS calls FROM generate_series(1, 10);
SELECT product_list() AS product_list;
SELECT key, deps, unwatched, hits FROM harden.cache_entries WHERE key = 'products:list';

\echo 'A committed price update makes the cached list stale: no invalidation code.'
UPDATE product SET price = price * 2 WHERE id = 1;
SELECT product_list()->0 AS first_product_after_update;

\echo 'A price update that rolls back leaves the cached list in place.'
BEGIN;
UPDATE product SET price = 0 WHERE id = 1;
ROLLBACK;
SELECT product_list()->0 AS first_product_after_rollback;
SELECT hits, misses, invalidations FROM harden.cache_stats;

\echo 'Parameters bind as $1, never spliced into the SQL.'
SELECT harden.cache_query('products:one:2', 'SELECT name, price FROM product WHERE id = $1',
                          NULL, 2) AS product_2;
SELECT harden.cache_unwatch('product') AS unwatched;
