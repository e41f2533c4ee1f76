\echo
\echo '# 7. Nobody has to call it: the background worker'
\echo 'A cart left in "submitted" is abandoned after a while.  Here the while is'
\echo '2 seconds (the demo server runs the worker every 200ms; the default is 1s).'
SELECT harden.fsm_define('demo_cart',
  'open -> submitted on submit; submitted -> paid on pay; submitted -> abandoned after 2 seconds') \g /dev/null
CREATE TABLE cart (id int PRIMARY KEY, customer text NOT NULL, status text NOT NULL DEFAULT 'open');
SELECT harden.fsm_attach('cart', 'status', 'demo_cart') \g /dev/null
INSERT INTO cart (id, customer) VALUES (1, 'ada'), (2, 'bob');
SELECT harden.fsm_fire('cart', '1', 'submit') AS ada, harden.fsm_fire('cart', '2', 'submit') AS bob;
\echo 'Bob pays in time; Ada does not.  The deadlines are rows:'
SELECT harden.fsm_fire('cart', '2', 'pay') AS bob;
SELECT row_key, from_state, to_state, due_at - created_at AS after FROM harden.fsm_due ORDER BY id;

\echo 'Wait for the worker; no *_run_due() call is made.'
SELECT pg_temp.wait_for($$SELECT status = 'abandoned' FROM cart WHERE id = 1$$) AS abandoned;

\echo
\echo 'Without a single call, Ada''s cart was abandoned; Bob''s timer was dropped.'
SELECT id, customer, status FROM cart ORDER BY id;
SELECT row_key, from_state, to_state, actor FROM harden.fsm_log
 WHERE machine = 'demo_cart' AND actor = 'timer';
SELECT count(*) AS timers_left FROM harden.fsm_due WHERE machine = 'demo_cart';
\echo 'The worker of this database, as harden.worker_status shows it:'
SELECT database, state, runs > 0 AS has_run, transitions, errors FROM harden.worker_status
 WHERE database = current_database();
