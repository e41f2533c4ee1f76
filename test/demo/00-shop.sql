\echo '# 0. The shop'
\echo 'A small shop schema: products, orders and order lines.'
CREATE TABLE product (
    id         bigint PRIMARY KEY,
    name       text NOT NULL,
    price      numeric(10,2) NOT NULL,
    stock      integer NOT NULL,
    category   integer NOT NULL
);
CREATE TABLE orders (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer   text NOT NULL,
    status     text NOT NULL DEFAULT 'pending',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE order_line (
    order_id   bigint NOT NULL REFERENCES orders,
    product_id bigint NOT NULL REFERENCES product,
    qty        integer NOT NULL,
    PRIMARY KEY (order_id, product_id)
);
INSERT INTO product
SELECT i, 'Product ' || i, (i % 50) + 0.99, 100, i % 10
  FROM generate_series(1, 1000) AS i;
SELECT count(*) AS products, sum(stock) AS units_in_stock FROM product;

\echo
\echo '# 1. pg_harden is installed and preloaded'
SELECT harden.version() AS version,
       harden.metrics_json()->'preloaded' AS preloaded;
\echo 'metrics() is ready for a Prometheus scrape (first lines):'
SELECT line FROM regexp_split_to_table(harden.metrics(), E'\n') AS line LIMIT 8;
