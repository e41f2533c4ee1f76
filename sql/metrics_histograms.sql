-- Latency histograms in metrics() and metrics_json(): they move by the number
-- of calls that ran, sums are positive, buckets are cumulative and end in +Inf.
SET client_min_messages = warning;
SELECT harden.metrics_reset();

-- This database's samples of a histogram family: le (NULL for _sum/_count).
CREATE FUNCTION pg_temp.hist(family text)
RETURNS TABLE (series text, le text, value float8) LANGUAGE sql AS $$
  SELECT name, labels ->> 'le', value FROM harden.metric_rows
   WHERE name LIKE family || '\_%' AND type = 'histogram'
     AND labels ->> 'database' = current_database() $$;
CREATE FUNCTION pg_temp.hist_count(family text) RETURNS float8 LANGUAGE sql AS $$
  SELECT coalesce(sum(value), 0) FROM pg_temp.hist(family) WHERE series = family || '_count' $$;

-- Every family: histogram type, 17 buckets with the documented bounds, then
-- _sum and _count; in the text format the same, with +Inf last.
SELECT name, count(*) FILTER (WHERE labels ? 'le') AS buckets,
       string_agg(labels ->> 'le', ' ' ORDER BY (labels ->> 'le')::float8) FILTER (WHERE labels ? 'le') AS bounds
  FROM harden.metric_rows
 WHERE type = 'histogram' AND labels ->> 'database' = current_database()
 GROUP BY name ORDER BY name;
SELECT line FROM regexp_split_to_table(harden.metrics(), E'\n') AS line
 WHERE line LIKE '# TYPE %histogram';
SELECT regexp_replace(line, '\d+$', 'N') AS line
  FROM regexp_split_to_table(harden.metrics(), E'\n') WITH ORDINALITY AS t(line, n)
 WHERE line ~ ('^harden_stock_take_duration_seconds_(bucket\{database="' || current_database() || '",le="(10|\+Inf)"|sum|count)')
 ORDER BY n;
-- The family's JSON samples carry their series' names.
SELECT DISTINCT s ->> 'name' AS name
  FROM jsonb_array_elements(harden.metrics_json() -> 'metrics' -> 'harden_fsm_transition_duration_seconds' -> 'samples') s
 ORDER BY 1;

-- After a reset they are empty.
SELECT pg_temp.hist_count('harden_cache_query_duration_seconds') AS cq,
       pg_temp.hist_count('harden_stock_take_duration_seconds') AS st,
       pg_temp.hist_count('harden_fsm_transition_duration_seconds') AS fsm;

-- cache_query: misses (three) are observed, hits are not.
SELECT harden.cache_flush() >= 0 AS flushed;
SELECT harden.cache_query('hist:' || g, 'SELECT pg_sleep(0.002), ' || g || ' AS g') IS NOT NULL AS miss
  FROM generate_series(1, 3) g;
SELECT harden.cache_query('hist:1', 'SELECT pg_sleep(0.002), 1 AS g') IS NOT NULL AS hit;
SELECT pg_temp.hist_count('harden_cache_query_duration_seconds') AS cache_query_count;
-- Each took at least 2 ms: nothing in the buckets up to 1 ms, all three by 10 s.
SELECT le, value FROM pg_temp.hist('harden_cache_query_duration_seconds')
 WHERE le IN ('0.001', '10', '+Inf') ORDER BY le::float8;
SELECT value >= 0.006 AS sum_at_least_6ms FROM pg_temp.hist('harden_cache_query_duration_seconds')
 WHERE series LIKE '%\_sum';

-- stock_take and stock_take_many: every call that returns, a skip included;
-- a refused call (an error) is not observed.
CREATE TABLE hist_product (id int PRIMARY KEY, stock int NOT NULL);
INSERT INTO hist_product VALUES (1, 10), (2, 10);
SELECT harden.stock_attach('hist_product', 'stock');
SELECT harden.stock_take('hist_product', 1, 1);
SELECT harden.stock_take('hist_product', 2, 1, wait => 'skip');
SELECT harden.stock_take_many('hist_product', ARRAY[1, 2], ARRAY[1, 1]);
DO $$ BEGIN PERFORM harden.stock_take('hist_product', 1, 1000);
EXCEPTION WHEN OTHERS THEN NULL; END $$;
SELECT pg_temp.hist_count('harden_stock_take_duration_seconds') AS stock_take_count;
SELECT value > 0 AS sum_positive FROM pg_temp.hist('harden_stock_take_duration_seconds')
 WHERE series LIKE '%\_sum';

-- State transitions: accepted ones (audited), not a rejected one nor an
-- update that leaves the state.
CREATE TABLE hist_orders (id int PRIMARY KEY, status text NOT NULL DEFAULT 'pending', note text);
SELECT harden.fsm_attach('hist_orders', 'status', 'order');
INSERT INTO hist_orders (id) VALUES (1), (2);
SELECT harden.fsm_fire('hist_orders', '1', 'pay');
UPDATE hist_orders SET note = 'same state' WHERE id = 1;
DO $$ BEGIN UPDATE hist_orders SET status = 'shipped' WHERE id = 2;
EXCEPTION WHEN OTHERS THEN NULL; END $$;
SELECT count(*) AS audited FROM harden.fsm_log WHERE table_name LIKE '%hist_orders';
SELECT pg_temp.hist_count('harden_fsm_transition_duration_seconds') AS fsm_count,
       (SELECT value FROM harden.metric_rows WHERE name = 'harden_fsm_transitions_total'
           AND labels ->> 'database' = current_database()) AS transitions_total;

-- In every family and database: buckets never decrease, the +Inf bucket is
-- _count, and the sum is positive once something was observed.
WITH b AS (
  SELECT name, labels ->> 'database' AS db, (labels ->> 'le')::float8 AS le, value,
         lag(value) OVER (PARTITION BY name, labels ->> 'database' ORDER BY (labels ->> 'le')::float8) AS prev
    FROM harden.metric_rows WHERE type = 'histogram' AND labels ? 'le'
)
SELECT bool_and(prev IS NULL OR value >= prev) AS monotone,
       bool_and(le <> 'Infinity' OR value = (SELECT c.value FROM harden.metric_rows c
                                   WHERE c.name = replace(b.name, '_bucket', '_count')
                                     AND c.labels ->> 'database' = b.db)) AS inf_is_count,
       bool_and(le <> 'Infinity' OR value = 0 OR (SELECT s.value FROM harden.metric_rows s
                                   WHERE s.name = replace(b.name, '_bucket', '_sum')
                                     AND s.labels ->> 'database' = b.db) > 0) AS sum_positive
  FROM b;

-- With harden.metrics_histograms off nothing is timed; the values stay.
SET harden.metrics_histograms = off;
SELECT harden.stock_take('hist_product', 1, 1);
SELECT pg_temp.hist_count('harden_stock_take_duration_seconds') AS stock_take_count_off;
RESET harden.metrics_histograms;
SELECT harden.stock_take('hist_product', 1, 1);
SELECT pg_temp.hist_count('harden_stock_take_duration_seconds') AS stock_take_count_on;
-- Only a superuser may turn it off.
CREATE ROLE pgh_hist_user;
SET ROLE pgh_hist_user;
SET harden.metrics_histograms = off;
RESET ROLE;
DROP ROLE pgh_hist_user;

-- metrics_reset() zeroes them too.
SELECT harden.metrics_reset();
SELECT pg_temp.hist_count('harden_cache_query_duration_seconds') AS cq,
       pg_temp.hist_count('harden_stock_take_duration_seconds') AS st,
       pg_temp.hist_count('harden_fsm_transition_duration_seconds') AS fsm;
DROP TABLE hist_orders, hist_product;
