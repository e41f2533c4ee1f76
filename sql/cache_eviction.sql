-- A full cache evicts instead of failing: overfill it tenfold, with a
-- change of value size half-way, and check memory stays within the limit.
SELECT harden.cache_flush() >= 0 AS flushed;
SELECT harden.cache_stats_reset();
SELECT size AS shmem_before FROM pg_shmem_allocations WHERE name = 'pg_harden cache' \gset

-- A key that is read often keeps a high CLOCK usage count and survives.
SELECT harden.cache_set('evict:hot', '"hot"'::jsonb);

-- 10x the cache in 4kB values, reading the hot key every 20 sets.
SELECT count(harden.cache_set('evict:big:' || i, repeat('v', 4000)::text)) AS big_sets,
       count(CASE WHEN i % 20 = 0 THEN harden.cache_get('evict:hot') END) AS hot_reads
  FROM generate_series(1, (SELECT (10 * bytes_limit / 4000)::int FROM harden.cache_stats)) AS i;

SELECT evictions > 0 AS evicted,
       bytes_used <= bytes_limit AS within_limit,
       entries > 0 AS has_entries
  FROM harden.cache_stats;
SELECT harden.cache_get('evict:hot') AS hot_survived;
-- The newest entry is always there.
SELECT length(harden.cache_get_text('evict:big:' ||
         (SELECT (10 * bytes_limit / 4000)::int FROM harden.cache_stats))) AS newest_kept;

-- Now small values: space held by the big values' size class is reclaimed.
SELECT count(harden.cache_set('evict:small:' || i, repeat('s', 50)::text)) AS small_sets
  FROM generate_series(1, 100000) AS i;
SELECT bytes_used <= bytes_limit AS within_limit,
       entries > 1000 AS many_small_entries
  FROM harden.cache_stats;
SELECT harden.cache_get_text('evict:small:100000') AS newest_small;

-- The shared memory segment never grows.
SELECT size = :shmem_before AS same_shmem FROM pg_shmem_allocations WHERE name = 'pg_harden cache';

SELECT harden.cache_flush() > 0 AS flushed;
SELECT entries, bytes_used FROM harden.cache_stats;
