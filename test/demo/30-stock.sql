\echo '# 5. Stock that cannot be oversold'
\echo 'Attach the product table: "stock" is the quantity, the primary key the key.'
\echo 'pg_harden adds a CHECK (stock >= 0) guard, so no writer can push it below zero.'
SELECT harden.stock_attach('product', 'stock') \g /dev/null
SELECT relid, qty_column, key_column, guard FROM harden.stock_tables;

\echo 'One unit of product 42, taken under a row lock; the call returns what is left.'
SELECT harden.stock_take('product', 42, 1) AS product_42_left;

\echo
\echo 'Product 7 is nearly sold out.  A three-line order takes every line or none;'
\echo 'rows are locked in product order, so two orders never deadlock.'
UPDATE product SET stock = 3 WHERE id = 7;
BEGIN;
INSERT INTO orders (customer) VALUES ('ada') RETURNING id AS order_id \gset
INSERT INTO order_line VALUES (:order_id, 42, 2), (:order_id, 7, 1), (:order_id, 1, 5);
SELECT harden.stock_take_many('product', ARRAY[42, 7, 1], ARRAY[2, 1, 5]) AS remaining_per_line;
COMMIT;
SELECT id, name, stock FROM product WHERE id IN (1, 7, 42) ORDER BY id;

\echo
\echo 'An order asking for more than is there is refused whole, and the error lists'
\echo 'every short line at once (expected error PH301):'
SELECT * FROM pg_temp.expect_error('PH301', $$
  SELECT harden.stock_take_many('product', ARRAY[7, 1, 42], ARRAY[5, 1, 500])
$$);
SELECT id, stock FROM product WHERE id IN (1, 7, 42) ORDER BY id;

\echo
\echo 'Wait policies.  A second session (psql in the background) holds product 5''s row'
\echo 'for 1.5 seconds.  "nowait" fails at once (expected error 55P03), "skip" returns'
\echo 'NULL at once (a checkout can offer another warehouse), "block" (the default) waits.'
\echo '\\! psql -c "BEGIN; SELECT ... FROM product WHERE id = 5 FOR UPDATE; SELECT pg_sleep(1.5); COMMIT" &'
\! PGAPPNAME=holder psql -X -q -d shop -c "BEGIN; SELECT 1 FROM product WHERE id = 5 FOR UPDATE; SELECT pg_sleep(1.5); COMMIT" >/dev/null &
SELECT pg_temp.wait_for($$SELECT EXISTS (SELECT FROM pg_stat_activity
                          WHERE application_name = 'holder' AND wait_event = 'PgSleep')$$) AS row_5_locked;
SELECT * FROM pg_temp.expect_error('55P03', $$SELECT harden.stock_take('product', 5, 1, wait => 'nowait')$$);
SELECT harden.stock_take('product', 5, 1, wait => 'skip') IS NULL AS skipped;
SELECT harden.stock_take('product', 5, 1) AS product_5_left,
       clock_timestamp() - statement_timestamp() > '0.2 seconds' AS waited_for_the_lock;

\echo
\echo 'A cart holds 2 units of product 3 for one second; nobody checks out.'
SELECT harden.stock_reserve('product', ARRAY[3], ARRAY[2], ttl => '1 second', ref => 'cart:9f2c') AS hold \gset
SELECT id, ref, status, keys, qtys, units FROM harden.stock_reservations WHERE id = :hold;
SELECT stock AS product_3_while_held FROM product WHERE id = 3;
\echo 'The background worker gives the expired hold back into stock (no call needed;'
\echo 'without preloading, a cron job would call harden.stock_run_due()).'
SELECT pg_temp.wait_for($$SELECT status <> 'held' FROM harden.stock_reservations
                          WHERE ref = 'cart:9f2c'$$) AS hold_ended;
SELECT id, ref, status FROM harden.stock_reservations WHERE id = :hold;
SELECT stock AS product_3_after_expiry FROM product WHERE id = 3;

\echo
\echo 'Another cart checks out in time: commit makes the hold final; a late release'
\echo 'or expiry then changes nothing.'
SELECT harden.stock_reserve('product', ARRAY[3, 4], ARRAY[1, 1], ttl => '15 minutes', ref => 'cart:77aa') AS hold \gset
SELECT harden.stock_commit(:hold) AS committed, harden.stock_release(:hold) AS late_release;
SELECT id, stock FROM product WHERE id IN (3, 4) ORDER BY id;
SELECT line FROM regexp_split_to_table(harden.metrics(), E'\n') AS line
 WHERE line LIKE 'harden_stock_%_total{database="shop"}%';
