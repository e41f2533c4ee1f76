-- test/stress/shop.sql: the sample shop of `make stress`, in the current
-- database.  The shipped machines attached to sample tables, stock attached,
-- watched tables, cache entries and query results, reservations, an audit.
SET client_min_messages = warning;
CREATE TABLE product (id int PRIMARY KEY, name text NOT NULL, price numeric(10,2) NOT NULL,
                      stock int NOT NULL);
INSERT INTO product SELECT i, 'product ' || i, 1 + i % 50, 100000 FROM generate_series(1, 50) AS i;
CREATE TABLE product_initial AS SELECT id, stock FROM product;
SELECT harden.stock_attach('product', 'stock');
SELECT harden.cache_watch('product');

CREATE TABLE shop_order (id int PRIMARY KEY, customer int NOT NULL,
                         status text NOT NULL DEFAULT 'pending',
                         payment text NOT NULL DEFAULT 'pending');
INSERT INTO shop_order SELECT i, i % 97 FROM generate_series(1, 500) AS i;
SELECT harden.fsm_attach('shop_order', 'status', 'order');
SELECT harden.fsm_attach('shop_order', 'payment', 'payment');
SELECT harden.cache_watch('shop_order');

CREATE TYPE cart_state AS ENUM ('pending', 'submitted', 'converted', 'abandoned');
CREATE TABLE cart (id int PRIMARY KEY, status cart_state NOT NULL DEFAULT 'pending');
INSERT INTO cart SELECT generate_series(1, 200);
SELECT harden.fsm_attach('cart', 'status', 'cart');

CREATE TABLE breaker (name text PRIMARY KEY, state text NOT NULL DEFAULT 'closed');
INSERT INTO breaker SELECT 'svc' || i FROM generate_series(1, 20) AS i;
SELECT harden.fsm_attach('breaker', 'state', 'circuit_breaker');

-- A machine of the shop's own, with a short timed exit.
SELECT harden.fsm_define('ticket', 'new -> open on start; open -> done on close; open -> stale after 2 seconds');
CREATE TABLE ticket (id bigint PRIMARY KEY, status varchar(10) NOT NULL DEFAULT 'new');
INSERT INTO ticket SELECT generate_series(1, 200);
SELECT harden.fsm_attach('ticket', 'status', 'ticket');

-- Units taken by the workload, recorded in the transaction that took them.
CREATE TABLE stock_taken (id int NOT NULL, units bigint NOT NULL);

-- Cache contents.
SELECT harden.cache_set('product:' || i, jsonb_build_object('id', i, 'name', 'product ' || i),
                        ttl => '1 hour', tags => ARRAY['products'])
  FROM generate_series(1, 50) AS i;
SELECT harden.cache_set('session:' || i, 'user=' || i, secure => true) FROM generate_series(1, 20) AS i;
SELECT harden.cache_set('flags', '{"beta": true}'::jsonb, public => true);
SELECT harden.cache_query('products:cheap', 'SELECT id, name, price FROM product WHERE price < $1 ORDER BY id', NULL, 10);
SELECT harden.stock_reserve('product', ARRAY[1, 2], ARRAY[1, 1]::bigint[], '1 hour', 'cart:seed');
UPDATE shop_order SET status = 'processing' WHERE id <= 50;
