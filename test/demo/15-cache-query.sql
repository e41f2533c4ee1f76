\echo
\echo '# 3. Query results that follow the data'
\echo 'cache_query() caches a query''s rows and notes the tables it read.'
SELECT harden.cache_stats_reset() \g /dev/null
CREATE FUNCTION product_list() RETURNS jsonb LANGUAGE sql AS $$
  SELECT harden.cache_query('products:list',
    'SELECT id, name, price FROM product ORDER BY id LIMIT 3', ttl => '10 minutes')
$$;
\echo 'Ten calls run the query once.'
SELECT count(product_list()) AS calls FROM generate_series(1, 10);
SELECT product_list() AS product_list;
SELECT key, deps, hits FROM harden.cache_entries WHERE key = 'products:list';

\echo 'A committed price update makes the cached list stale: no invalidation code,'
\echo 'no cache_watch -- every write through this server is seen.'
UPDATE product SET price = price * 2 WHERE id = 1;
SELECT product_list()->0 AS first_product_after_update;

\echo 'A price update that rolls back leaves the cached list in place.'
BEGIN;
UPDATE product SET price = 0 WHERE id = 1;
ROLLBACK;
SELECT product_list()->0 AS first_product_after_rollback;
SELECT hits, misses, invalidations FROM harden.cache_stats;

\echo
\echo 'Per-value dependencies: watched by category, a listing pinned to one category'
\echo 'is invalidated only by writes to that category.  Parameters bind as $1.'
SELECT harden.cache_watch('product', by => 'category') AS watching_by_category;
CREATE FUNCTION category_count(c int) RETURNS jsonb LANGUAGE sql AS $$
  SELECT harden.cache_query('category:' || c,
    'SELECT count(*) AS products, min(price) AS cheapest FROM product WHERE category = $1', NULL, c)
$$;
SELECT category_count(3) AS category_3, category_count(4) AS category_4;
\echo 'A price update of product 13, in category 3:'
UPDATE product SET price = 0.49 WHERE id = 13;
SELECT harden.cache_stats_reset() \g /dev/null
SELECT category_count(3) AS category_3_recomputed, category_count(4) AS category_4_still_cached;
SELECT hits, misses FROM harden.cache_stats;
SELECT harden.cache_unwatch('product') AS unwatched;

\echo
\echo 'Single-flight: a slow query missed by two sessions at once runs once.  A second'
\echo 'psql starts it in the background; this session asks for the same key meanwhile,'
\echo 'waits for it, and gets the background session''s result.'
SELECT harden.cache_stats_reset() \g /dev/null
\echo '\\! psql -c "SELECT harden.cache_query(''report:slow'', ...)" &    -- in the background'
\! PGAPPNAME=background psql -X -q -d shop -c "SELECT harden.cache_query('report:slow', 'SELECT current_setting(''application_name'') AS computed_by, pg_sleep(1.5)::text AS slept')" >/dev/null &
SELECT pg_temp.wait_for($$SELECT EXISTS (SELECT FROM pg_stat_activity
                          WHERE application_name = 'background' AND wait_event = 'PgSleep')$$) AS background_computing;
SELECT harden.cache_query('report:slow', 'SELECT current_setting(''application_name'') AS computed_by, pg_sleep(1.5)::text AS slept') AS result_here;
\echo 'Both calls missed; one waited (coalesced) and the query ran once:'
SELECT coalesced, misses FROM harden.cache_stats;
SELECT line FROM regexp_split_to_table(harden.metrics(), E'\n') AS line
 WHERE line LIKE 'harden_cache_%_total{database="shop"}%' AND line ~ '(queries|coalesced)';
