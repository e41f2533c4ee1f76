\set id random(1, 10)
SELECT harden.stock_take('bench_stock', :id::int, 1);
