-- test/docs/fixture.sql: the tables and functions the SQL examples of the
-- docs/ pages refer to, created before a page's examples run (README.md's
-- walk-through makes its own).
CREATE EXTENSION pg_harden;
CREATE EXTENSION pg_trgm;
DO $$BEGIN CREATE ROLE app; EXCEPTION WHEN duplicate_object THEN NULL; END$$;
GRANT USAGE ON SCHEMA harden TO app;

CREATE TABLE product (id int PRIMARY KEY, name text NOT NULL, price numeric NOT NULL DEFAULT 5,
                      stock int NOT NULL DEFAULT 100);
INSERT INTO product (id, name, stock)
VALUES (1, 'Cup', 100), (3, 'Pot', 100), (4, 'Tea', 100), (7, 'Lid', 2), (42, 'Mug', 100);
CREATE FUNCTION load_product(int) RETURNS jsonb LANGUAGE sql STABLE
    AS $$SELECT to_jsonb(p) FROM product p WHERE id = $1$$;

CREATE TABLE products (id int PRIMARY KEY, name text NOT NULL, price numeric NOT NULL,
                       category_id int NOT NULL);
INSERT INTO products SELECT i, 'item ' || i, i, i % 10 FROM generate_series(1, 100) i;

CREATE TABLE orders (id int PRIMARY KEY, status text NOT NULL DEFAULT 'pending');
INSERT INTO orders VALUES (1, 'shipped'), (2, 'processing');
CREATE TABLE order_line (id int PRIMARY KEY, order_id int NOT NULL REFERENCES orders,
                         product_id int NOT NULL, qty int NOT NULL);

CREATE TABLE shop_order (id int PRIMARY KEY, payment text NOT NULL DEFAULT 'pending');
INSERT INTO shop_order VALUES (1);

CREATE TABLE sku (code text PRIMARY KEY, on_hand int NOT NULL);
INSERT INTO sku VALUES ('mug-red', 10);
