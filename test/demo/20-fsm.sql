\echo
\echo '# 4. Order status as a state machine'
\echo 'pg_harden ships an "order" machine; its rules, and what each state may become:'
SELECT rules FROM harden.fsm_machines WHERE machine = 'order';
SELECT state, harden.fsm_next('order', state) AS next_states
  FROM harden.fsm_states WHERE machine = 'order' ORDER BY position;

\echo 'Attach it to orders.status: every writer -- API, batch job, psql -- now goes through it.'
SELECT harden.fsm_attach('orders', 'status', 'order') \g /dev/null
INSERT INTO orders (customer) VALUES ('alice') RETURNING id, status;

\echo 'Move the order through its life: events, and a plain UPDATE with a reason.'
SELECT harden.fsm_fire('orders', '1', 'pay') AS after_pay;
BEGIN;
SET LOCAL harden.reason = 'picked and packed by warehouse 3';
UPDATE orders SET status = 'shipped' WHERE id = 1;
COMMIT;
SELECT harden.fsm_can('orders', '1', 'cancelled') AS can_still_cancel,
       harden.fsm_can('orders', '1', 'delivered') AS can_deliver;

\echo 'A shipped order cannot be cancelled -- not even by a raw UPDATE (expected error PH201):'
SELECT * FROM pg_temp.expect_error('PH201', $$UPDATE orders SET status = 'cancelled' WHERE id = 1$$);

SELECT harden.fsm_fire('orders', '1', 'deliver') AS after_deliver;

\echo 'Bob''s parcel was handed over at the counter: it was never "shipped".  The table'
\echo 'owner (or a member of harden_operator) forces it past the rules, on the record.'
INSERT INTO orders (customer) VALUES ('bob') RETURNING id, status;
SELECT harden.fsm_force('orders', '{"id": 2}', 'delivered', 'handed over at the counter, ticket 1234') AS forced;

\echo 'The audit trail, written in the same transactions:'
SELECT id, row_key, from_state, to_state, event, actor, forced, role, reason
  FROM harden.fsm_log WHERE table_name = 'public.orders' ORDER BY id;

\echo 'The machine as a Mermaid diagram (paste into any Markdown that renders Mermaid):'
\pset format unaligned
\pset tuples_only on
SELECT harden.fsm_diagram('order', 'mermaid');
\pset format aligned
\pset tuples_only off
SELECT machine, transitions, rejections FROM harden.fsm_stats WHERE machine = 'order';
