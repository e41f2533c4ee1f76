-- Overrides: fsm_force past the rules, timer retry and cancel, releasing a
-- hold for someone else; who may, and what the audit trail records.
\set VERBOSITY default
SET client_min_messages = warning;
-- Later tests show ids of holds: the sequences are put back at the end.
SELECT last_value AS hold_seq, is_called AS hold_called FROM harden.stock_holds_id_seq \gset
SELECT last_value AS due_seq, is_called AS due_called FROM harden.fsm_due_id_seq \gset

CREATE ROLE pgh_ov_owner;
CREATE ROLE pgh_ov_op;
CREATE ROLE pgh_ov_nobody;
GRANT harden_operator TO pgh_ov_op;
GRANT USAGE ON SCHEMA harden TO pgh_ov_owner, pgh_ov_nobody;
SELECT rolcanlogin FROM pg_roles WHERE rolname = 'harden_operator';

CREATE TABLE ov_orders (id int PRIMARY KEY, status text NOT NULL DEFAULT 'pending');
ALTER TABLE ov_orders OWNER TO pgh_ov_owner;
SELECT harden.fsm_attach('ov_orders', 'status', 'order');
INSERT INTO ov_orders VALUES (1), (2), (3);
-- Someone who may update the table but neither owns it nor operates.
GRANT SELECT, UPDATE ON ov_orders TO pgh_ov_nobody;
-- The owner's trigger notes who it runs as.
CREATE TABLE ov_seen (who name);
GRANT INSERT ON ov_seen TO pgh_ov_owner;
CREATE FUNCTION ov_who() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO public.ov_seen VALUES (current_user);
  RETURN NEW;
END $$;
ALTER FUNCTION ov_who() OWNER TO pgh_ov_owner;
CREATE TRIGGER ov_who BEFORE UPDATE ON ov_orders FOR EACH ROW EXECUTE FUNCTION ov_who();

-- ---- fsm_force ----
-- pending -> delivered is no transition of the machine.
UPDATE ov_orders SET status = 'delivered' WHERE id = 1;
SELECT harden.fsm_force('ov_orders', '1', 'delivered', 'parcel handed over at the counter');
SELECT status FROM ov_orders WHERE id = 1;
SELECT from_state, to_state, event, actor, role, reason, forced
  FROM harden.fsm_log WHERE table_name = 'public.ov_orders' AND row_key = '{"id": 1}' ORDER BY id;
-- The row was moved as the table's owner, whoever forced it.
SELECT who FROM ov_seen;
-- Already there: nothing moves, nothing is recorded.
SELECT harden.fsm_force('ov_orders', '{"id": 1}', 'delivered', 'again');
SELECT count(*) FROM harden.fsm_log WHERE table_name = 'public.ov_orders' AND forced;
-- harden.reason does not replace the reason given.
BEGIN;
SET LOCAL harden.reason = 'not this one';
SELECT harden.fsm_force('ov_orders', '2', 'shipped', 'carrier scanned it');
COMMIT;
SELECT reason FROM harden.fsm_log WHERE row_key = '{"id": 2}' AND forced;
-- A state the machine does not have can be left by force (repair).
ALTER TABLE ov_orders DISABLE TRIGGER harden_fsm_order;
UPDATE ov_orders SET status = 'lost' WHERE id = 3;
ALTER TABLE ov_orders ENABLE TRIGGER harden_fsm_order;
UPDATE ov_orders SET status = 'cancelled' WHERE id = 3;
SELECT harden.fsm_force('ov_orders', '3', 'cancelled', 'repaired a bad import');
SELECT from_state, to_state FROM harden.fsm_log WHERE row_key = '{"id": 3}' AND forced;

-- Error paths.
SELECT harden.fsm_force('ov_orders', '1', 'teleported', 'r');
SELECT harden.fsm_force('ov_orders', '99', 'pending', 'r');
SELECT harden.fsm_force('ov_orders', '{"nope": 1}', 'pending', 'r');
SELECT harden.fsm_force('ov_orders', NULL, 'pending', 'r');
SELECT harden.fsm_force('ov_orders', '1', NULL, 'r');
SELECT harden.fsm_force('ov_orders', '1', 'pending', NULL);
SELECT harden.fsm_force('ov_orders', '1', 'pending', '');
SELECT harden.fsm_force(NULL, '1', 'pending', 'r');
SELECT harden.fsm_force('ov_orders', '1', 'pending', 'r', 'cart');
SELECT harden.fsm_force('ov_seen', '1', 'pending', 'r');
-- A disabled trigger would leave no audit row: refused.
ALTER TABLE ov_orders DISABLE TRIGGER harden_fsm_order;
SELECT harden.fsm_force('ov_orders', '1', 'pending', 'r');
ALTER TABLE ov_orders ENABLE TRIGGER harden_fsm_order;

-- Who may: the owner and operators, not someone who can only update it.
SET ROLE pgh_ov_nobody;
SELECT harden.fsm_force('ov_orders', '1', 'pending', 'I can UPDATE it');
RESET ROLE;
SET ROLE pgh_ov_owner;
SELECT harden.fsm_force('ov_orders', '1', 'pending', 'the owner undoes it');
RESET ROLE;
SET ROLE pgh_ov_op;
SELECT harden.fsm_force('ov_orders', '1', 'cancelled', 'operator on duty');
RESET ROLE;
SELECT to_state, role, reason FROM harden.fsm_log
 WHERE row_key = '{"id": 1}' AND forced ORDER BY id;

-- Attached without audit, a forced move is still recorded.
CREATE TABLE ov_quiet (id int PRIMARY KEY, status text NOT NULL DEFAULT 'pending');
SELECT harden.fsm_attach('ov_quiet', 'status', 'payment', false);
INSERT INTO ov_quiet VALUES (1);
UPDATE ov_quiet SET status = 'completed';
SELECT harden.fsm_force('ov_quiet', '1', 'pending', 'payment reversed by the bank');
SELECT from_state, to_state, actor, forced FROM harden.fsm_log WHERE table_name = 'public.ov_quiet';

-- ---- timers: list, retry, cancel ----
-- Timer ids in messages do not depend on the tests before this one.
SELECT setval('harden.fsm_due_id_seq', 1000, false) AS first_timer_id;
CREATE TABLE ov_carts (id int PRIMARY KEY, status text NOT NULL DEFAULT 'pending');
ALTER TABLE ov_carts OWNER TO pgh_ov_owner;
SELECT harden.fsm_attach('ov_carts', 'status', 'cart');
INSERT INTO ov_carts VALUES (1), (2);
UPDATE ov_carts SET status = 'submitted';
SELECT id AS t1 FROM harden.fsm_due WHERE relid = 'ov_carts'::regclass AND row_key = '{"id": 1}' \gset
SELECT id AS t2 FROM harden.fsm_due WHERE relid = 'ov_carts'::regclass AND row_key = '{"id": 2}' \gset
SELECT machine, table_name, row_key, state, to_state, attempts, next_try, last_error
  FROM harden.fsm_timers WHERE table_name = 'ov_carts'::regclass ORDER BY id;
-- The list shows only tables the caller may read; operators see all.
SET ROLE pgh_ov_nobody;
SELECT count(*) FROM harden.fsm_timers WHERE table_name = 'ov_carts'::regclass;
RESET ROLE;
SET ROLE pgh_ov_op;
SELECT count(*) FROM harden.fsm_timers WHERE table_name = 'ov_carts'::regclass;
RESET ROLE;

-- Not due yet: retrying would move the row early.
SELECT harden.fsm_timer_retry(:t1, 'too early');
UPDATE harden.fsm_due SET due_at = now() - interval '1 second' WHERE relid = 'ov_carts'::regclass;
-- Cart 1 cannot be abandoned yet: its timer fails and backs off.
CREATE FUNCTION ov_stuck() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.id = 1 AND NEW.status = 'abandoned' THEN RAISE EXCEPTION 'cart is locked by checkout'; END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER ov_stuck BEFORE UPDATE ON ov_carts FOR EACH ROW EXECUTE FUNCTION ov_stuck();
SELECT harden.fsm_timer_retry(:t1, 'customer says the cart is still there');
SELECT attempts, last_error, next_try > now() AS in_backoff FROM harden.fsm_timers WHERE id = :t1;
-- Retry does not wait for the backoff; the same error is not reported again.
SELECT harden.fsm_timer_retry(:t1, 'second look');
SELECT attempts FROM harden.fsm_timers WHERE id = :t1;
DROP TRIGGER ov_stuck ON ov_carts;
SET ROLE pgh_ov_owner;
SELECT harden.fsm_timer_retry(:t1, 'checkout lock released');
RESET ROLE;
SELECT status FROM ov_carts WHERE id = 1;
SELECT count(*) FROM harden.fsm_timers WHERE id = :t1;
SELECT actor, from_state, to_state FROM harden.fsm_log WHERE table_name = 'public.ov_carts' AND row_key = '{"id": 1}' AND actor = 'timer';
-- Cancel: the timer goes, the row stays submitted.
SET ROLE pgh_ov_nobody;
SELECT harden.fsm_timer_cancel(:t2, 'not mine');
SELECT harden.fsm_timer_retry(:t2, 'not mine');
RESET ROLE;
SET ROLE pgh_ov_op;
SELECT harden.fsm_timer_cancel(:t2, 'customer asked to keep the cart');
RESET ROLE;
SELECT status FROM ov_carts WHERE id = 2;
SELECT count(*) FROM harden.fsm_due WHERE relid = 'ov_carts'::regclass;
-- Error paths.
SELECT harden.fsm_timer_cancel(:t2, 'again');
SELECT harden.fsm_timer_retry(:t2, 'again');
SELECT harden.fsm_timer_retry(NULL, 'r');
SELECT harden.fsm_timer_cancel(NULL, 'r');
SELECT harden.fsm_timer_cancel(:t2, NULL);
SELECT harden.fsm_timer_retry(:t2, '');
-- The audit trail of the timer actions.
SELECT action, table_name, item - 'timer' AS item, outcome, role, reason
  FROM harden.admin_log WHERE table_name = 'public.ov_carts' ORDER BY id;

-- ---- stock holds released for someone else ----
CREATE FUNCTION pg_temp.err(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE q;
  RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
  RETURN SQLSTATE || ': ' || regexp_replace(SQLERRM, '[0-9]+', 'N', 'g');
END $$;
CREATE TABLE ov_stock (id int PRIMARY KEY, qty int NOT NULL);
INSERT INTO ov_stock VALUES (1, 10), (2, 10);
ALTER TABLE ov_stock OWNER TO pgh_ov_owner;
SELECT harden.stock_attach('ov_stock', 'qty');
GRANT SELECT, UPDATE ON ov_stock TO pgh_ov_nobody;
SET ROLE pgh_ov_nobody;
SELECT harden.stock_reserve('ov_stock', ARRAY[1], ARRAY[3], '1 hour', 'basket-1') AS h1 \gset
SELECT harden.stock_reserve('ov_stock', ARRAY[2], ARRAY[2], '1 hour', 'basket-2') AS h2 \gset
SELECT harden.stock_reserve('ov_stock', ARRAY[2], ARRAY[1], '1 hour', 'basket-3') AS h3 \gset
-- Its own release is not an override: no audit row.
SELECT harden.stock_release(:h3);
-- (Hold ids depend on the tests before: the error is shown without them.)
SELECT pg_temp.err(format('SELECT harden.stock_force_release(%s, %L)', :h1, 'I reserved it'));
RESET ROLE;
-- The table's owner releases another role's hold: recorded with harden.reason.
SET ROLE pgh_ov_owner;
BEGIN;
SET LOCAL harden.reason = 'order cancelled by phone';
SELECT harden.stock_release(:h1);
COMMIT;
RESET ROLE;
-- An operator force-releases without any privilege on the table.
SET ROLE pgh_ov_op;
SELECT harden.stock_force_release(:h2, 'hold stuck after a crash of the shop');
SELECT harden.stock_force_release(:h2, 'again');
RESET ROLE;
SELECT id, qty FROM ov_stock ORDER BY id;
SELECT action, table_name, item - 'reservation' AS item, outcome, role, reason
  FROM harden.admin_log WHERE table_name = 'public.ov_stock' ORDER BY id;
SELECT harden.stock_force_release(NULL, 'r');
SELECT harden.stock_force_release(-1, 'r');
SELECT harden.stock_force_release(:h2, NULL);

-- Nobody writes the audit trail directly.
SET ROLE pgh_ov_op;
INSERT INTO harden.admin_log (action, table_name, item, outcome, role, txid)
  VALUES ('timer_cancel', 'x', '{}', 'x', 'x', pg_current_xact_id());
SELECT count(*) > 0 FROM harden.admin_log;
RESET ROLE;

DROP TABLE ov_orders, ov_quiet, ov_carts, ov_seen;
DROP FUNCTION ov_who(), ov_stuck();
SELECT harden.stock_detach('ov_stock');
DROP TABLE ov_stock;
DELETE FROM harden.admin_log;
DELETE FROM harden.fsm_log WHERE table_name LIKE 'public.ov\_%';
DELETE FROM harden.stock_holds WHERE ref LIKE 'basket-%';
REVOKE USAGE ON SCHEMA harden FROM pgh_ov_owner, pgh_ov_nobody;
DROP ROLE pgh_ov_owner, pgh_ov_op, pgh_ov_nobody;
SELECT setval('harden.stock_holds_id_seq', :hold_seq, :'hold_called') IS NOT NULL AS hold_ids_put_back;
SELECT setval('harden.fsm_due_id_seq', :due_seq, :'due_called') IS NOT NULL AS timer_ids_put_back;
