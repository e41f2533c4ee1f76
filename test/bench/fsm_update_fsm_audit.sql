\set id random(1, 100000)
UPDATE bench_fsm_fsm_audit SET status = CASE status WHEN 'a' THEN 'b' WHEN 'b' THEN 'c' ELSE 'a' END WHERE id = :id;
