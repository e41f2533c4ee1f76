\echo
\echo '# 2. Cache the product list'
\echo 'The API caches its product page for 5 minutes under a key, tagged "products".'
SELECT harden.cache_stats_reset() \g /dev/null
CREATE FUNCTION product_page(page int) RETURNS jsonb LANGUAGE sql AS $$
  SELECT coalesce(harden.cache_get('products:page:' || page), (
    WITH rows AS (
      SELECT jsonb_agg(jsonb_build_object('id', id, 'name', name, 'price', price) ORDER BY id) AS v
        FROM (SELECT * FROM product ORDER BY id LIMIT 20 OFFSET (page - 1) * 20) p
    ), stored AS (
      SELECT v, harden.cache_set('products:page:' || page, v, ttl => '5 minutes',
                                 tags => '{products}') FROM rows
    )
    SELECT v FROM stored))
$$;
\echo 'Ten page views and one more read: only the first computes the page.'
SELECT count(product_page(1)) AS page_views FROM generate_series(1, 10);
SELECT product_page(1)->0 AS first_product;
SELECT hits, misses, round(hit_ratio::numeric, 2) AS hit_ratio, sets, entries FROM harden.cache_stats;
SELECT key, type, bytes, hits, tags, ttl <= '5 minutes' AS ttl_5m FROM harden.cache_entries;

\echo 'A price change invalidates every cached page tagged "products".'
UPDATE product SET price = price + 1 WHERE id = 1;
SELECT harden.cache_invalidate_tag('products') AS pages_invalidated;
SELECT product_page(1)->0->'price' AS new_price;
SELECT hits, misses, sets FROM harden.cache_stats;

\echo 'Keys can also be invalidated by a glob pattern (an admin call): every page at once.'
SELECT count(product_page(p)) AS pages_cached FROM generate_series(1, 3) AS p;
SELECT harden.cache_invalidate('products:page:*') AS pages_invalidated;
SELECT harden.cache_exists('products:page:2') AS page_2_still_cached;

\echo 'Cache writes publish on commit: a transaction that rolls back leaves the cache untouched.'
BEGIN;
SELECT harden.cache_set('products:page:1', '"half-finished page"'::jsonb) \g /dev/null
SELECT harden.cache_get('products:page:1') AS inside_the_transaction;
ROLLBACK;
SELECT product_page(1)->0->'name' AS after_rollback;

\echo 'Session tokens go in secure entries: no value or tags in any view, TTL capped.'
SELECT harden.cache_set('session:9f2c', 'user=42'::text, ttl => '1 day', secure => true) \g /dev/null
SELECT key, secure, tags, ttl <= '1 hour' AS ttl_capped FROM harden.cache_entries WHERE key LIKE 'session:%';

\echo 'A policy gives a key prefix its default and longest TTL: no TTL in the call, 5 minutes;'
\echo 'asking for a day, cut to the policy''s hour.'
INSERT INTO harden.cache_policies VALUES ('api:', '5 minutes', '1 hour', false);
SELECT harden.cache_set('api:home', '{"banner": "sale"}'::jsonb),
       harden.cache_set('api:menu', '["shoes", "hats"]'::jsonb, ttl => '1 day') \g /dev/null
SELECT key, ttl <= '5 minutes' AS within_5m, ttl > '55 minutes' AS about_1h
  FROM harden.cache_entries WHERE key LIKE 'api:%' ORDER BY key;
SELECT line FROM regexp_split_to_table(harden.metrics(), E'\n') AS line
 WHERE line LIKE 'harden_cache_%_total{database="shop"}%';
