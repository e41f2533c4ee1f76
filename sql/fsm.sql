-- State machines: rules, attach/detach, enforcement on text, varchar and
-- enum columns, audit trail, events, timers, diagrams, counters, and every
-- error a caller can cause.
\set VERBOSITY default

-- The shipped machines.
SELECT machine, shipped, rules FROM harden.fsm_machines ORDER BY machine;
SELECT machine, array_agg(state ORDER BY position) AS states,
       array_agg(state ORDER BY position) FILTER (WHERE initial) AS initial,
       array_agg(state ORDER BY position) FILTER (WHERE terminal) AS terminal
  FROM harden.fsm_states GROUP BY machine ORDER BY machine;
SELECT harden.fsm_next('payment', 'completed') AS refund_only_after_completed,
       harden.fsm_next('payment', 'pending') AS from_pending;

-- ---- the rule language ----
SELECT harden.fsm_define('doc', $$
  -- a comment runs to the end of the line
  draft -> review -> published on publish;
  review -> draft on reject;
  draft, review -> "in trash" on trash;
  published -> archived after 1w 2d 3h 4m 5s
$$);
SELECT state, position, initial, terminal FROM harden.fsm_states WHERE machine = 'doc' ORDER BY position;
SELECT from_state, to_state, event, after FROM harden.fsm_transitions WHERE machine = 'doc' ORDER BY position;
SELECT harden.fsm_next('doc', 'draft') AS from_draft, harden.fsm_next('doc', NULL) AS initial;
-- Initial states given explicitly; units are case-insensitive.
SELECT harden.fsm_define('two_starts', 'a -> b AFTER 90 Minutes; c -> b', 'a, c');
SELECT harden.fsm_next('two_starts', NULL);
SELECT after FROM harden.fsm_transitions WHERE machine = 'two_starts' AND from_state = 'a';

-- Parse errors name the offending token and its position.
SELECT harden.fsm_define('bad', 'a -> -> b');
SELECT harden.fsm_define('bad', 'a -> b c');
SELECT harden.fsm_define('bad', 'a b');
SELECT harden.fsm_define('bad', 'a -> b on');
SELECT harden.fsm_define('bad', 'a -> b after');
SELECT harden.fsm_define('bad', 'a -> b after 3 parsecs');
SELECT harden.fsm_define('bad', 'a -> b after 0 s');
SELECT harden.fsm_define('bad', 'a -> b after 99999999999 s');
SELECT harden.fsm_define('bad', 'a -> b after 40000 days');
SELECT harden.fsm_define('bad', 'a -> b on x on y');
SELECT harden.fsm_define('bad', 'a -> b after 1s after 2s');
SELECT harden.fsm_define('bad', 'a -> b; a -> b');
SELECT harden.fsm_define('bad', 'a -> a');
SELECT harden.fsm_define('bad', 'a -> b on go; a -> c on go');
SELECT harden.fsm_define('bad', 'a -> b after 1h; a -> c after 2h');
SELECT harden.fsm_define('bad', 'a -> "unterminated');
SELECT harden.fsm_define('bad', 'a -> ""');
SELECT harden.fsm_define('bad', 'a -> ' || repeat('x', 64));
SELECT harden.fsm_define('bad', 'a -> b # c');
SELECT harden.fsm_define('bad', 'ä -> b; b -> ! ');
SELECT harden.fsm_define('bad', '');
SELECT harden.fsm_define('bad', ' ; -- only a comment');
SELECT harden.fsm_define('bad', 'a -> b', 'c');
SELECT harden.fsm_define('bad', 'a -> b', 'a b');
SELECT harden.fsm_define('bad', 'a -> b', '');
SELECT harden.fsm_define('bad', repeat('a -> b; ', 200000));
-- The initial states have the same limit; names are looked up by hash.
SELECT harden.fsm_define('bad', 'a -> b', repeat('s1000,', 3000000));
SELECT harden.fsm_define('bad', 'a -> b', repeat('a,', 524287) || 'x');
SELECT harden.fsm_define('bad machine', 'a -> b');
SELECT harden.fsm_define('1bad', 'a -> b');
SELECT harden.fsm_define(repeat('m', 49), 'a -> b');
SELECT harden.fsm_define(NULL, 'a -> b');
SELECT harden.fsm_define('bad', NULL);
SELECT count(*) AS nothing_defined FROM harden.fsm_machines WHERE machine = 'bad';

-- Shipped machines are read-only.
SELECT harden.fsm_define('order', 'a -> b');
SELECT harden.fsm_drop('order');

-- ---- attach: errors ----
CREATE TABLE orders (
    id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer text NOT NULL,
    status   text NOT NULL DEFAULT 'pending',
    amount   integer NOT NULL DEFAULT 0
);
SELECT harden.fsm_attach('orders', 'amount', 'order');
SELECT harden.fsm_attach('orders', 'nope', 'order');
SELECT harden.fsm_attach('orders', 'ctid', 'order');
SELECT harden.fsm_attach('orders', 'status', 'no_such_machine');
SELECT harden.fsm_attach('orders', 'status', NULL);
SELECT harden.fsm_attach(NULL, 'status', 'order');
SELECT harden.fsm_attach('orders', NULL, 'order');
CREATE TABLE no_pk (status text);
SELECT harden.fsm_attach('no_pk', 'status', 'order');
CREATE VIEW orders_view AS SELECT * FROM orders;
SELECT harden.fsm_attach('orders_view', 'status', 'order');
-- Existing rows must already be in states of the machine.
INSERT INTO orders (customer, status) VALUES ('x', 'weird'), ('y', 'weird'), ('z', 'lost');
SELECT harden.fsm_attach('orders', 'status', 'order');
DELETE FROM orders;

-- ---- enforcement on a text column ----
SELECT harden.fsm_attach('orders', 'status', 'order');
SELECT harden.fsm_attach('orders', 'status', 'order');
SELECT table_name, column_name, machine, audit, enabled FROM harden.fsm_attachments;
INSERT INTO orders (customer) VALUES ('ann'), ('bob'), ('cy');
SELECT id, status FROM orders ORDER BY id;
-- INSERT must use an initial state.
INSERT INTO orders (customer, status) VALUES ('dan', 'shipped');
INSERT INTO orders (customer, status) VALUES ('dan', 'shiped');
-- A status column that allowed NULL would still refuse it.
ALTER TABLE orders ALTER COLUMN status DROP NOT NULL;
INSERT INTO orders (customer, status) VALUES ('dan', NULL);
UPDATE orders SET status = NULL WHERE id = 4;
-- Allowed, refused, unknown.
UPDATE orders SET status = 'processing' WHERE id = 4;
UPDATE orders SET status = 'delivered' WHERE id = 4;
UPDATE orders SET status = 'teleported' WHERE id = 4;
UPDATE orders SET status = 'shipped' WHERE id = 4;
UPDATE orders SET status = 'cancelled' WHERE id = 4;
-- Terminal states have no exit.
UPDATE orders SET status = 'delivered' WHERE id = 4;
UPDATE orders SET status = 'pending' WHERE id = 4;
-- Setting the same state, or updating other columns, is not a transition.
UPDATE orders SET status = 'delivered', amount = 5 WHERE id = 4;
UPDATE orders SET amount = 6 WHERE id = 4;
-- One bad row fails the whole statement.
UPDATE orders SET status = 'processing';
SELECT id, status FROM orders ORDER BY id;
-- The error carries table and column fields.
DO $$
DECLARE s text; t text; c text; st text;
BEGIN
  UPDATE orders SET status = 'pending' WHERE id = 4;
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, s = SCHEMA_NAME, t = TABLE_NAME, c = COLUMN_NAME;
  RAISE NOTICE 'sqlstate % schema % table % column %', st, s, t, c;
END $$;

-- ---- audit trail and reason ----
BEGIN;
SET LOCAL harden.reason = 'customer called';
UPDATE orders SET status = 'cancelled' WHERE id = 5;
COMMIT;
SELECT current_setting('harden.reason') AS reason_after_commit;
SELECT machine, table_name, row_key, from_state, to_state, event, actor, role, reason
  FROM harden.fsm_log ORDER BY id;
-- txid is the writing transaction; at is when the row moved.
BEGIN;
UPDATE orders SET status = 'processing' WHERE id = 6;
UPDATE orders SET status = 'cancelled' WHERE id = 6;
SELECT array_agg(to_state ORDER BY id) AS moves, bool_and(txid = pg_current_xact_id()) AS this_txid,
       bool_and(at BETWEEN now() AND clock_timestamp()) AS at_now
  FROM harden.fsm_log WHERE row_key = '{"id": 6}' AND from_state IS NOT NULL;
ROLLBACK;
-- A rolled-back transition leaves no audit row.
SELECT to_state FROM harden.fsm_log WHERE row_key = '{"id": 6}' ORDER BY id;
-- Plain roles need no privilege on the audit trail to be audited, and cannot read it.
CREATE ROLE fsm_clerk;
GRANT USAGE ON SCHEMA harden TO fsm_clerk;
GRANT SELECT, UPDATE ON orders TO fsm_clerk;
SET ROLE fsm_clerk;
UPDATE orders SET status = 'processing' WHERE id = 6;
SELECT count(*) FROM harden.fsm_log;
SELECT harden.fsm_fire('orders', '6', 'ship');
SELECT harden.fsm_attach('orders', 'customer', 'cart');
RESET ROLE;
SELECT row_key, from_state, to_state, event, actor, role FROM harden.fsm_log WHERE role = 'fsm_clerk' ORDER BY id;

-- ---- events ----
SELECT harden.fsm_fire('orders', '{"id": 6}', 'deliver') AS delivered;
SELECT harden.fsm_fire('orders', '6', 'cancel');
SELECT harden.fsm_fire('orders', '6', 'no_such_event');
SELECT harden.fsm_fire('orders', '999', 'pay');
-- A regclass of a relation that does not exist (any more).
SELECT harden.fsm_fire(0::oid::regclass, '1', 'pay');
SELECT harden.fsm_can(4000000000::oid::regclass, '1', 'shipped');
SELECT harden.fsm_fire('orders', '{"nope": 1}', 'pay');
SELECT harden.fsm_fire('orders', '[1]', 'pay');
SELECT harden.fsm_fire('orders', '{"id": null}', 'pay');
SELECT harden.fsm_fire('orders', NULL, 'pay');
SELECT harden.fsm_fire('orders', '6', NULL);
SELECT harden.fsm_fire(NULL, '6', 'pay');
SELECT harden.fsm_fire('orders', '6', 'pay', 'cart');
SELECT harden.fsm_fire('no_pk', '1', 'pay');
SELECT row_key, from_state, to_state, event, actor FROM harden.fsm_log WHERE row_key = '{"id": 6}' ORDER BY id;

-- ---- fsm_can / fsm_next ----
INSERT INTO orders (customer) VALUES ('eve') RETURNING id;
SELECT harden.fsm_can('orders', '10', 'processing') AS can_process,
       harden.fsm_can('orders', '10', 'delivered') AS can_deliver,
       harden.fsm_can('orders', '10', 'pending') AS can_stay,
       harden.fsm_can('orders', '{"id": 6}', 'cancelled') AS can_cancel_delivered;
SELECT harden.fsm_can('orders', '10', 'teleported');
SELECT harden.fsm_can('orders', '10', NULL);
SELECT harden.fsm_can('orders', NULL, 'pending');
SELECT harden.fsm_can('orders', '999', 'processing');
SELECT harden.fsm_next('order', 'delivered') AS from_terminal;
SELECT harden.fsm_next('order', 'nope');
SELECT harden.fsm_next('nope', 'pending');
SELECT harden.fsm_next(NULL, 'pending');
SELECT harden.fsm_next(repeat('x', 100), 'pending');

-- ---- two machines on one table, an enum column and a varchar column ----
CREATE TYPE pay_state AS ENUM ('pending', 'completed', 'failed', 'refunded', 'disputed');
CREATE TABLE shop_order (
    id       integer PRIMARY KEY,
    region   text,
    status   varchar(20) NOT NULL DEFAULT 'pending',
    payment  pay_state NOT NULL DEFAULT 'pending'
);
SELECT harden.fsm_attach('shop_order', 'status', 'order');
SELECT harden.fsm_attach('shop_order', 'payment', 'payment', audit => false);
SELECT table_name, column_name, machine, audit FROM harden.fsm_attachments ORDER BY 1, 3;
INSERT INTO shop_order (id) VALUES (1), (2);
INSERT INTO shop_order (id, payment) VALUES (3, 'completed');
UPDATE shop_order SET payment = 'refunded' WHERE id = 1;
UPDATE shop_order SET payment = 'disputed' WHERE id = 1;
UPDATE shop_order SET payment = 'completed', status = 'processing' WHERE id = 1;
UPDATE shop_order SET payment = 'refunded', status = 'delivered' WHERE id = 1;
-- Events need the machine when both machines have them.
SELECT harden.fsm_fire('shop_order', '1', 'ship') AS status_now;
SELECT harden.fsm_fire('shop_order', '1', 'refund') AS payment_now;
SELECT harden.fsm_can('shop_order', '2', 'pending');
SELECT harden.fsm_can('shop_order', '2', 'pending', 'payment') AS pay_pending,
       harden.fsm_can('shop_order', '2', 'completed') AS can_complete,
       harden.fsm_can('shop_order', '2', 'processing') AS can_process;
SELECT harden.fsm_fire('shop_order', '2', 'nothing');
SELECT id, status, payment FROM shop_order ORDER BY id;
-- The payment machine is not audited; the order machine is.
SELECT machine, row_key, from_state, to_state, event FROM harden.fsm_log
 WHERE table_name = 'public.shop_order' ORDER BY id;
-- A composite primary key is the row key; quoted identifiers work.
CREATE TABLE "Line Item" ("Order" integer, "No" integer, "The State" text DEFAULT 'pending',
                          PRIMARY KEY ("Order", "No"));
SELECT harden.fsm_attach('"Line Item"', 'The State', 'cart');
INSERT INTO "Line Item" VALUES (1, 1), (1, 2);
SELECT harden.fsm_fire('"Line Item"', '{"Order": 1, "No": 2}', 'submit');
SELECT harden.fsm_fire('"Line Item"', '{"Order": 1}', 'submit');
SELECT harden.fsm_fire('"Line Item"', '1', 'submit');
SELECT table_name, row_key, to_state FROM harden.fsm_log WHERE machine = 'cart' ORDER BY id;

-- ---- timed transitions ----
CREATE TABLE breaker (name text PRIMARY KEY, state text NOT NULL DEFAULT 'closed');
SELECT harden.fsm_attach('breaker', 'state', 'circuit_breaker');
INSERT INTO breaker VALUES ('api'), ('db'), ('mail'), ('queue');
UPDATE breaker SET state = 'open';
SELECT machine, table_name, row_key, from_state, to_state,
       due_at - created_at AS delay, attempts, last_error
  FROM harden.fsm_due ORDER BY id;
-- Not due yet: nothing happens.
SELECT * FROM harden.fsm_run_due();
-- db leaves "open" before its deadline; mail leaves and comes back (its first timer is stale).
UPDATE breaker SET state = 'half_open' WHERE name IN ('db', 'mail');
UPDATE breaker SET state = 'open' WHERE name = 'mail';
-- queue's row is gone.
DELETE FROM breaker WHERE name = 'queue';
SELECT count(*) AS timers FROM harden.fsm_due;
UPDATE harden.fsm_due SET due_at = now() - interval '1 second';
SELECT * FROM harden.fsm_run_due();
SELECT * FROM breaker ORDER BY name;
SELECT row_key, from_state, to_state, event, actor FROM harden.fsm_log
 WHERE machine = 'circuit_breaker' AND actor = 'timer' ORDER BY id;
SELECT count(*) AS timers_left FROM harden.fsm_due;
-- The cart timer of the line item was due too.
SELECT "No", "The State" FROM "Line Item" ORDER BY 1;
-- max_rows limits one run (earliest deadline first); a timer whose
-- transition fails stays, with its error, for a later attempt.
UPDATE breaker SET state = 'open';
SELECT count(*) AS timers FROM harden.fsm_due;
UPDATE harden.fsm_due SET due_at = now() - CASE row_key->>'name' WHEN 'api' THEN interval '3 s'
                                               WHEN 'db' THEN interval '2 s' ELSE interval '1 s' END;
SELECT * FROM harden.fsm_run_due(1);
SELECT * FROM breaker ORDER BY name;
ALTER TABLE breaker ADD CONSTRAINT mail_stays CHECK (name <> 'mail' OR state <> 'half_open');
-- (Its WARNING names the timer's id, which depends on the tests before:
-- fsm_force.sql checks the message.)
SET client_min_messages = error;
SELECT * FROM harden.fsm_run_due();
RESET client_min_messages;
-- The deadline stays; the next attempt waits for next_try (backoff).
SELECT row_key, attempts, last_error, next_try > now() AS postponed, due_at < now() AS was_due
  FROM harden.fsm_due;
SELECT * FROM breaker ORDER BY name;
-- In its backoff the timer is not tried again.
SELECT * FROM harden.fsm_run_due();
-- Once the delay has passed it is, and the same error is not reported again.
SET harden.worker_retry_base = '10ms';
UPDATE harden.fsm_due SET next_try = clock_timestamp() - interval '1 ms';
SELECT * FROM harden.fsm_run_due();
SELECT attempts, next_try > now() AS postponed FROM harden.fsm_due;
RESET harden.worker_retry_base;
SELECT * FROM harden.fsm_run_due(0);
SELECT * FROM harden.fsm_run_due(-1);
ALTER TABLE breaker DROP CONSTRAINT mail_stays;
DELETE FROM harden.fsm_due;
-- Inserting into an initial state with a timed exit sets a timer too.
SELECT harden.fsm_define('ticket', 'new -> stale after 2 days; new -> done on close');
CREATE TABLE ticket (id int PRIMARY KEY, s text DEFAULT 'new');
SELECT harden.fsm_attach('ticket', 's', 'ticket', false);
INSERT INTO ticket VALUES (1);
SELECT row_key, from_state, to_state, due_at - created_at AS delay FROM harden.fsm_due;
-- Redefining away the timed transition drops the timer.
SELECT harden.fsm_define('ticket', 'new -> stale; new -> done on close');
UPDATE harden.fsm_due SET due_at = now() - interval '1 second';
SELECT * FROM harden.fsm_run_due();
SELECT * FROM ticket;

-- ---- redefining and dropping attached machines ----
SELECT harden.fsm_define('ticket', 'open -> done');
-- Rows must be checked with a snapshot taken after locking them.
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT harden.fsm_define('ticket', 'new -> done; new -> stale; stale -> done', 'new');
ROLLBACK;
SELECT harden.fsm_define('ticket', 'new -> done; new -> stale; stale -> done', 'new');
SELECT harden.fsm_next('ticket', 'stale');
-- The backend's compiled copy follows the redefinition at once.
UPDATE ticket SET s = 'stale';
UPDATE ticket SET s = 'done';
SELECT harden.fsm_drop('ticket');
SELECT harden.fsm_detach('ticket', 'order');
SELECT harden.fsm_detach('ticket');
SELECT harden.fsm_detach('ticket');
UPDATE ticket SET s = 'anything';
SELECT harden.fsm_drop('ticket');
SELECT harden.fsm_drop('ticket');
SELECT harden.fsm_drop(NULL);
SELECT harden.fsm_detach(NULL);
SELECT harden.fsm_detach('shop_order', 'payment');
SELECT table_name, column_name, machine FROM harden.fsm_attachments ORDER BY 1, 3;
-- A detached column takes any value; re-attaching checks the rows again.
UPDATE shop_order SET payment = 'disputed' WHERE id = 2;
SELECT harden.fsm_attach('shop_order', 'payment', 'payment');
UPDATE shop_order SET payment = 'pending' WHERE id = 2;
-- Direct edits of the definition tables are seen too.
SELECT harden.fsm_define('mini', 'a -> b');
CREATE TABLE mini (id int PRIMARY KEY, s text DEFAULT 'a');
SELECT harden.fsm_attach('mini', 's', 'mini');
INSERT INTO mini VALUES (1);
INSERT INTO harden.fsm_states (machine, state, position) VALUES ('mini', 'c', 3);
INSERT INTO harden.fsm_transitions (machine, from_state, to_state, position) VALUES ('mini', 'a', 'c', 2);
UPDATE mini SET s = 'c';
SELECT s FROM mini;
-- A trigger made by hand rather than fsm_attach is refused.
CREATE TABLE handmade (id int PRIMARY KEY, s text);
CREATE TRIGGER t BEFORE INSERT ON handmade FOR EACH ROW EXECUTE FUNCTION harden.fsm_enforce();
INSERT INTO handmade VALUES (1, 'a');
DROP TABLE handmade;
SELECT harden.fsm_enforce();

-- ---- diagrams ----
SELECT harden.fsm_diagram('order');
SELECT harden.fsm_diagram('doc', 'mermaid');
SELECT harden.fsm_diagram('doc', 'DOT');
SELECT harden.fsm_diagram('doc', 'svg');
SELECT harden.fsm_diagram('doc', NULL);
SELECT harden.fsm_diagram('nope');

-- ---- retention ----
SELECT count(*) > 0 AS has_log FROM harden.fsm_log;
UPDATE harden.fsm_log SET at = now() - interval '100 days' WHERE table_name = 'public.orders';
SELECT harden.fsm_log_prune() > 0 AS pruned_old_rows;
SELECT count(*) AS orders_rows_left FROM harden.fsm_log WHERE table_name = 'public.orders';
SET harden.fsm_log_retention = 0;
UPDATE harden.fsm_log SET at = now() - interval '100 years';
SELECT harden.fsm_log_prune() AS pruned_with_retention_off;
RESET harden.fsm_log_retention;
SET ROLE fsm_clerk;
SET harden.fsm_log_retention = '1d';
SELECT harden.fsm_log_prune();
SELECT harden.fsm_run_due();
SELECT harden.fsm_define('x', 'a -> b');
SELECT harden.fsm_drop('doc');
SELECT harden.fsm_detach('orders');
RESET ROLE;

-- ---- counters (shared memory: rejections are counted though they roll back) ----
SELECT machine, transitions > 0 AS has_transitions, rejections > 0 AS has_rejections
  FROM harden.fsm_stats WHERE machine IN ('order', 'payment') ORDER BY machine;
SELECT rejections AS before FROM harden.fsm_stats WHERE machine = 'order' \gset
UPDATE orders SET status = 'pending' WHERE id = 4;
SELECT rejections - :before AS one_more_rejection FROM harden.fsm_stats WHERE machine = 'order';
SELECT count(*) AS per_machine_samples
  FROM regexp_split_to_table(harden.metrics(), E'\n') AS line
 WHERE line ~ ('^harden_fsm_machine_(transitions|rejections)_total\{database="'
               || current_database() || '",machine="order"\} [0-9]+$');

-- ---- table shapes: domains, generated columns, inheritance, partitions ----
-- Events and questions read only the key columns: other columns' domains do not matter.
CREATE DOMAIN nn_label AS text NOT NULL;
CREATE TABLE labelled (id int PRIMARY KEY, label nn_label DEFAULT 'x', s text NOT NULL DEFAULT 'pending');
SELECT harden.fsm_attach('labelled', 's', 'order', false);
INSERT INTO labelled VALUES (1);
SELECT harden.fsm_can('labelled', '1', 'processing') AS can_pay;
SELECT harden.fsm_fire('labelled', '1', 'pay') AS paid;
DROP TABLE labelled;
DROP DOMAIN nn_label;
-- A generated column is computed after the trigger ran.
CREATE TABLE gen (id int PRIMARY KEY, n int, s text GENERATED ALWAYS AS (CASE WHEN n > 0 THEN 'processing' ELSE 'pending' END) STORED);
SELECT harden.fsm_attach('gen', 's', 'order');
DROP TABLE gen;
-- Row triggers do not fire for inheritance children.
CREATE TABLE parent_t (id int PRIMARY KEY, s text NOT NULL DEFAULT 'pending');
CREATE TABLE child_t () INHERITS (parent_t);
SELECT harden.fsm_attach('parent_t', 's', 'order');
-- A child added later is not enforced, and its rows do not hold back a redefinition.
DROP TABLE child_t;
SELECT harden.fsm_define('parent_m', 'pending -> done');
SELECT harden.fsm_attach('parent_t', 's', 'parent_m');
CREATE TABLE child_t () INHERITS (parent_t);
INSERT INTO child_t VALUES (1, 'anything');
SELECT harden.fsm_define('parent_m', 'pending -> done -> archived');
SELECT harden.fsm_detach('parent_t');
SELECT harden.fsm_drop('parent_m');
DROP TABLE parent_t CASCADE;
-- A partitioned table: every partition enforces and audits, timers find the partition.
CREATE TABLE parted (id int, region text, s text NOT NULL DEFAULT 'closed', PRIMARY KEY (id, region))
  PARTITION BY LIST (region);
CREATE TABLE parted_eu PARTITION OF parted FOR VALUES IN ('eu');
SELECT harden.fsm_attach('parted', 'region', 'circuit_breaker');
SELECT harden.fsm_attach('parted', 's', 'circuit_breaker');
CREATE TABLE parted_us PARTITION OF parted FOR VALUES IN ('us');
INSERT INTO parted VALUES (1, 'eu'), (2, 'us');
INSERT INTO parted VALUES (3, 'us', 'open');
UPDATE parted SET s = 'open' WHERE id = 1;
SELECT harden.fsm_fire('parted', '{"id": 2, "region": "us"}', 'trip');
UPDATE harden.fsm_due SET due_at = now() - interval '1 second' WHERE relid::text LIKE 'parted%';
SELECT applied, dropped, failed FROM harden.fsm_run_due();
SELECT * FROM parted ORDER BY id;
SELECT table_name, row_key, from_state, to_state, actor FROM harden.fsm_log
 WHERE table_name LIKE 'public.parted%' ORDER BY id;
SELECT harden.fsm_detach('parted_eu');
SELECT harden.fsm_detach('parted');
DROP TABLE parted;

-- ---- errors a user can cause carry their own SQLSTATE ----
-- A trigger on a column that cannot hold a state (made by hand, registered as a restore would).
CREATE TABLE int_state (id int PRIMARY KEY, s int);
INSERT INTO harden.fsm_attached (relid, machine, attached_by) VALUES ('int_state', 'order', current_user::regrole);
CREATE TRIGGER harden_fsm_order BEFORE INSERT OR UPDATE OF s ON int_state
  FOR EACH ROW EXECUTE FUNCTION harden.fsm_enforce('order');
\set VERBOSITY sqlstate
INSERT INTO int_state VALUES (1, 1);
\set VERBOSITY default
INSERT INTO int_state VALUES (1, 1);
DELETE FROM harden.fsm_attached WHERE relid = 'int_state'::regclass;
DROP TABLE int_state;
-- Another BEFORE trigger that skips the row: the event did not happen.
CREATE TABLE skipper (id int PRIMARY KEY, s text NOT NULL DEFAULT 'pending');
SELECT harden.fsm_attach('skipper', 's', 'order', false);
INSERT INTO skipper VALUES (1);
CREATE FUNCTION skip_row() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
CREATE TRIGGER a_skip BEFORE UPDATE ON skipper FOR EACH ROW EXECUTE FUNCTION skip_row();
\set VERBOSITY sqlstate
SELECT harden.fsm_fire('skipper', '1', 'pay');
\set VERBOSITY default
SELECT harden.fsm_fire('skipper', '1', 'pay');
DROP TABLE skipper;
DROP FUNCTION skip_row();
-- Values quoted in messages are cut at 64 bytes.
SELECT harden.fsm_fire('orders', '6', repeat('e', 100));
SELECT harden.fsm_fire('orders', jsonb_build_object('id', 6, 'x', repeat('k', 100)), 'pay');
SELECT harden.fsm_can('orders', '6', repeat('s', 100));
UPDATE orders SET status = repeat('z', 100) WHERE id = 4;

-- ---- an UPDATE that changes the key and the state records the new key ----
CREATE TABLE rekey (id int PRIMARY KEY, s text NOT NULL DEFAULT 'closed');
SELECT harden.fsm_attach('rekey', 's', 'circuit_breaker');
INSERT INTO rekey VALUES (1);
UPDATE rekey SET id = 2, s = 'open';
SELECT row_key, from_state, to_state FROM harden.fsm_log WHERE table_name = 'public.rekey' ORDER BY id;
SELECT row_key, from_state, to_state FROM harden.fsm_due WHERE relid = 'rekey'::regclass;
UPDATE harden.fsm_due SET due_at = now() - interval '1 second' WHERE relid = 'rekey'::regclass;
SELECT applied, dropped, failed FROM harden.fsm_run_due();
SELECT * FROM rekey;
SELECT harden.fsm_detach('rekey');
DROP TABLE rekey;

-- ---- row keys of every JSON kind, and cached names that follow renames ----
CREATE SCHEMA fsm_keys;
CREATE TABLE fsm_keys.k (a int2, b bigint, n numeric, f float8, t text, bo boolean, j jsonb,
                         s text NOT NULL DEFAULT 'closed', PRIMARY KEY (a, b, n, f, t, bo, j));
SELECT harden.fsm_attach('fsm_keys.k', 's', 'circuit_breaker');
INSERT INTO fsm_keys.k VALUES (1, 9007199254740993, 1.50, 0.1, 'x"y', true, '{"z": [1, null]}'),
                              (2, -1, 'NaN', '-Infinity', '', false, '"s"');
SELECT row_key, row_key = jsonb_build_object('a', a, 'b', b, 'n', n, 'f', f, 't', t, 'bo', bo, 'j', j) AS same
  FROM harden.fsm_log l JOIN fsm_keys.k ON l.row_key->>'a' = k.a::text
 WHERE l.table_name = 'fsm_keys.k' ORDER BY l.id;
CREATE ROLE fsm_renamed;
GRANT USAGE ON SCHEMA fsm_keys TO fsm_renamed;
GRANT SELECT, UPDATE ON fsm_keys.k TO fsm_renamed;
ALTER SCHEMA fsm_keys RENAME TO fsm_keys2;
SET ROLE fsm_renamed;
UPDATE fsm_keys2.k SET s = 'open' WHERE a = 1;
RESET ROLE;
ALTER TABLE fsm_keys2.k RENAME TO k2;
ALTER ROLE fsm_renamed RENAME TO fsm_renamed2;
SET ROLE fsm_renamed2;
UPDATE fsm_keys2.k2 SET s = 'open' WHERE a = 2;
RESET ROLE;
SELECT table_name, row_key->'a' AS a, role FROM harden.fsm_log WHERE table_name LIKE 'fsm_keys%' AND from_state IS NOT NULL ORDER BY id;
SELECT harden.fsm_detach('fsm_keys2.k2');
DROP SCHEMA fsm_keys2 CASCADE;
DROP ROLE fsm_renamed2;
DELETE FROM harden.fsm_due;

-- ---- re-entry: a nested trigger call that recompiles leaves the outer call's machine intact ----
SELECT harden.fsm_define('re_m', 'x -> y');
CREATE TABLE re_a (id int PRIMARY KEY, s text NOT NULL DEFAULT 'closed');
CREATE TABLE re_b (id int PRIMARY KEY, s text NOT NULL DEFAULT 'x');
SELECT harden.fsm_attach('re_a', 's', 'circuit_breaker');
SELECT harden.fsm_attach('re_b', 's', 're_m', false);
INSERT INTO re_a VALUES (1);
INSERT INTO re_b VALUES (1);
-- A CHECK constraint of fsm_log redefines a machine and moves a row of another attached table.
CREATE FUNCTION re_enter(m text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
  IF m = 'circuit_breaker' THEN
    PERFORM harden.fsm_define('re_m', 'x -> y; y -> z; z -> w; w -> v; v -> u; u -> t; t -> s; s -> r');
    UPDATE re_b SET s = 'y';
  END IF;
  RETURN true;
END $$;
ALTER TABLE harden.fsm_log ADD CONSTRAINT re_enter CHECK (re_enter(machine));
UPDATE re_a SET s = 'open';
ALTER TABLE harden.fsm_log DROP CONSTRAINT re_enter;
SELECT machine, table_name, from_state, to_state, due_at - created_at AS delay FROM harden.fsm_due
 WHERE relid = 're_a'::regclass;
SELECT s FROM re_b;
SELECT harden.fsm_detach('re_a'), harden.fsm_detach('re_b');
DROP TABLE re_a, re_b;
DROP FUNCTION re_enter(text);
SELECT harden.fsm_drop('re_m');
DELETE FROM harden.fsm_due;

-- ---- the audit trail and timers must keep the layout the trigger writes ----
CREATE TABLE layout (id int PRIMARY KEY, s text NOT NULL DEFAULT 'closed');
SELECT harden.fsm_attach('layout', 's', 'circuit_breaker');
INSERT INTO layout VALUES (1);
BEGIN;
ALTER TABLE harden.fsm_log ALTER COLUMN id TYPE text;
INSERT INTO layout VALUES (2);
ROLLBACK;
BEGIN;
ALTER TABLE harden.fsm_log ALTER COLUMN reason TYPE integer USING NULL;
INSERT INTO layout VALUES (2);
ROLLBACK;
BEGIN;
ALTER TABLE harden.fsm_log DROP COLUMN reason, ADD COLUMN reason text;
INSERT INTO layout VALUES (2);
ROLLBACK;
BEGIN;
ALTER TABLE harden.fsm_due ALTER COLUMN table_name TYPE varchar;
UPDATE layout SET s = 'open';
ROLLBACK;
-- CHECK constraints an administrator adds hold, and deferred checks are refused.
BEGIN;
ALTER TABLE harden.fsm_log ADD CONSTRAINT only_events CHECK (actor <> 'sql') NOT VALID;
\set VERBOSITY terse
INSERT INTO layout VALUES (2);
\set VERBOSITY default
ROLLBACK;
-- The compiled constraint is used from then on, also after a caught violation.
BEGIN;
ALTER TABLE harden.fsm_log ADD CONSTRAINT only_events CHECK (actor <> 'sql') NOT VALID;
SAVEPOINT s;
INSERT INTO layout VALUES (2);
ROLLBACK TO SAVEPOINT s;
DO $$ BEGIN INSERT INTO layout VALUES (2); EXCEPTION WHEN check_violation THEN RAISE NOTICE 'refused: %', SQLERRM; END $$;
ALTER TABLE harden.fsm_log DROP CONSTRAINT only_events;
INSERT INTO layout VALUES (2);
SELECT count(*) AS audited_in_xact FROM harden.fsm_log WHERE table_name = 'public.layout' AND row_key = '{"id": 2}';
ROLLBACK;
BEGIN;
ALTER TABLE harden.fsm_log ADD CONSTRAINT id_unique UNIQUE (id, txid) DEFERRABLE INITIALLY DEFERRED;
INSERT INTO layout VALUES (2);
ROLLBACK;
BEGIN;
ALTER TABLE harden.fsm_due ADD CONSTRAINT short CHECK (due_at < created_at + interval '1 second');
\set VERBOSITY terse
UPDATE layout SET s = 'open';
\set VERBOSITY default
ROLLBACK;
-- Restored, it works again.
INSERT INTO layout VALUES (2);
SELECT count(*) AS audited FROM harden.fsm_log WHERE table_name = 'public.layout';
SELECT harden.fsm_detach('layout');
DROP TABLE layout;

-- ---- privileges: a table's owner cannot turn the trigger against fsm_run_due ----
CREATE ROLE fsm_mallory;
GRANT USAGE ON SCHEMA harden TO fsm_mallory;
CREATE SCHEMA fsm_m AUTHORIZATION fsm_mallory;
SET ROLE fsm_mallory;
CREATE TABLE fsm_m.t (id int PRIMARY KEY, s text);
CREATE FUNCTION fsm_m.escalate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE NOTICE 'owner trigger runs as %', current_user;
  IF current_user <> 'fsm_mallory' THEN
    ALTER ROLE fsm_mallory SUPERUSER;
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER escalate BEFORE UPDATE ON fsm_m.t FOR EACH ROW EXECUTE FUNCTION fsm_m.escalate();
-- Only fsm_attach may create the trigger.
CREATE TRIGGER harden_fsm_circuit_breaker BEFORE INSERT OR UPDATE OF s ON fsm_m.t
  FOR EACH ROW EXECUTE FUNCTION harden.fsm_enforce('circuit_breaker');
RESET ROLE;
-- A trigger made any other way (here by a superuser) refuses to run.
CREATE TRIGGER harden_fsm_circuit_breaker BEFORE INSERT OR UPDATE OF s ON fsm_m.t
  FOR EACH ROW EXECUTE FUNCTION harden.fsm_enforce('circuit_breaker');
SET ROLE fsm_mallory;
INSERT INTO fsm_m.t VALUES (1, 'closed');
RESET ROLE;
DROP TRIGGER harden_fsm_circuit_breaker ON fsm_m.t;
-- A caller granted fsm_attach needs only TRIGGER on the table.
GRANT EXECUTE ON FUNCTION harden.fsm_attach(regclass, name, text, boolean),
                          harden.fsm_detach(regclass, text) TO fsm_mallory;
SET ROLE fsm_mallory;
SELECT harden.fsm_attach('orders', 'customer', 'cart');
SELECT harden.fsm_attach('fsm_m.t', 's', 'circuit_breaker');
INSERT INTO fsm_m.t VALUES (1, 'closed');
UPDATE fsm_m.t SET s = 'open';
RESET ROLE;
SELECT relid, machine, attached_by FROM harden.fsm_attached WHERE relid = 'fsm_m.t'::regclass;
-- The timer moves the row as its owner, in a restricted context.
UPDATE harden.fsm_due SET due_at = now() - interval '1 second' WHERE relid = 'fsm_m.t'::regclass;
SELECT applied, dropped, failed FROM harden.fsm_run_due();
SELECT rolsuper AS mallory_is_superuser FROM pg_roles WHERE rolname = 'fsm_mallory';
SELECT s FROM fsm_m.t;
SELECT from_state, to_state, actor, role FROM harden.fsm_log WHERE table_name = 'fsm_m.t' ORDER BY id;
-- The timer's table is its oid: a renamed table keeps its timers.
SET ROLE fsm_mallory;
UPDATE fsm_m.t SET s = 'open';
ALTER TABLE fsm_m.t RENAME TO t2;
RESET ROLE;
UPDATE harden.fsm_due SET due_at = now() - interval '1 second' WHERE relid = 'fsm_m.t2'::regclass;
SELECT applied, dropped, failed FROM harden.fsm_run_due();
SELECT s FROM fsm_m.t2;
SET ROLE fsm_mallory;
SELECT harden.fsm_detach('fsm_m.t2');
RESET ROLE;
SELECT count(*) AS registered FROM harden.fsm_attached WHERE relid = 'fsm_m.t2'::regclass;
DROP SCHEMA fsm_m CASCADE;
REVOKE ALL ON FUNCTION harden.fsm_attach(regclass, name, text, boolean),
                       harden.fsm_detach(regclass, text) FROM fsm_mallory;
REVOKE USAGE ON SCHEMA harden FROM fsm_mallory;
DROP ROLE fsm_mallory;

-- ---- clean up ----
SELECT harden.fsm_detach(t) FROM unnest(ARRAY['orders', 'shop_order', '"Line Item"', 'breaker', 'mini']::regclass[]) t;
DROP TABLE orders, shop_order, "Line Item", breaker, ticket, mini, no_pk CASCADE;
DROP TYPE pay_state;
SELECT harden.fsm_drop(m) FROM unnest(ARRAY['doc', 'two_starts', 'mini']) m;
DELETE FROM harden.fsm_log;
REVOKE USAGE ON SCHEMA harden FROM fsm_clerk;
DROP ROLE fsm_clerk;
