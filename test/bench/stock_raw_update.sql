\set id random(1, 10)
UPDATE bench_stock SET q = q - 1 WHERE id = :id AND q >= 1;
