\echo '# 6. Query analysis'
\echo 'The catalogue has grown to 50,000 products.  The health report runs every'
\echo 'check over the shop (indexes, bloat, vacuum, locks, slow queries), with'
\echo 'thresholds from the harden.* settings:'
INSERT INTO product
SELECT i, 'Product ' || i, (i % 50) + 0.99, 100, i % 10 FROM generate_series(1001, 50000) AS i;
ANALYZE;
SELECT "check", severity, object, detail, suggestion
  FROM harden.health_report()
 WHERE "check" NOT IN ('cache_hit_ratio', 'seq_scan');
\echo 'metrics() now carries the counts of that run:'
SELECT line FROM regexp_split_to_table(harden.metrics(), E'\n') AS line
 WHERE line LIKE 'harden_health_findings{database="shop"%';

\echo
\echo 'The index views: order_line''s foreign key to product has no index (each product'
\echo 'delete would scan order_line), and an index someone added duplicates the key''s prefix.'
CREATE INDEX order_line_order_idx ON order_line (order_id);
SELECT "table", constraint_name, columns, create_sql FROM harden.missing_fk_indexes;
SELECT index, covered_by, kind, verdict, drop_sql FROM harden.duplicate_indexes;

\echo
\echo 'The shop''s product search, as the API sends it.  query_check() plans it'
\echo 'without running it ($1 is the search box) and walks the plan:'
SELECT severity, node, relation, message, suggestion
  FROM harden.query_check($$SELECT id, name, price FROM product
                            WHERE name ILIKE '%' || $1 || '%' ORDER BY name LIMIT 20$$);

\echo
\echo 'Create the index it suggests, and check again: nothing left to say, and'
\echo 'the plan reads the trigram index.'
SELECT suggestion
  FROM harden.query_check($$SELECT id, name, price FROM product
                            WHERE name ILIKE '%' || $1 || '%' ORDER BY name LIMIT 20$$)
 WHERE suggestion LIKE 'CREATE INDEX%' \gexec
ANALYZE product;
SELECT count(*) AS advice
  FROM harden.query_check($$SELECT id, name, price FROM product
                            WHERE name ILIKE '%' || $1 || '%' ORDER BY name LIMIT 20$$);
EXPLAIN (COSTS OFF)
SELECT id, name, price FROM product WHERE name ILIKE '%duct 42%' ORDER BY name LIMIT 5;
SELECT id, name, price FROM product WHERE name ILIKE '%duct 42%' ORDER BY name LIMIT 5;
