-- The background worker, with harden.worker_interval = 200ms (test/run.sh).
-- Nothing here calls fsm_run_due() or stock_run_due(): every change is the
-- worker's.  Statements commit one by one so the worker sees them; waits
-- poll with a timeout, and only what they wait for is asserted.
\set ON_ERROR_STOP 1
SET client_min_messages = warning;
SELECT plan(26);

\ir lib/wait_for.sql

SELECT is(current_setting('harden.worker_interval'), '200ms', 'the test cluster runs the worker every 200ms');

-- ---- the worker runs in this database and says so ----
SELECT ok(pg_temp.wait_for($$ EXISTS (SELECT 1 FROM pg_stat_activity
            WHERE datname = current_database() AND backend_type = 'pg_harden worker'
              AND application_name = 'pg_harden worker') $$),
  'the database''s worker shows in pg_stat_activity with its application_name');
SELECT ok(pg_temp.wait_for($$ (SELECT runs > 0 AND state IN ('idle', 'running') AND pid IS NOT NULL
            FROM harden.worker_status WHERE database = current_database()) $$),
  'worker_status shows it running');
SELECT ok(EXISTS (SELECT 1 FROM pg_stat_activity WHERE backend_type = 'pg_harden launcher'),
  'the launcher shows in pg_stat_activity');

-- ---- a timed transition fires without a call ----
SELECT harden.fsm_define('wk_cart', 'open -> submitted on submit; submitted -> paid on pay; '
                                    'submitted -> abandoned after 1 second');
CREATE TABLE wk_cart (id int PRIMARY KEY, status text NOT NULL DEFAULT 'open');
SELECT harden.fsm_attach('wk_cart', 'status', 'wk_cart');
INSERT INTO wk_cart VALUES (1), (2);
UPDATE wk_cart SET status = 'submitted';
CREATE TEMP TABLE wk_due AS
  SELECT row_key->>'id' AS id, due_at FROM harden.fsm_due WHERE machine = 'wk_cart';
-- Cart 2 is paid before its deadline: its timer must be dropped, not applied.
UPDATE wk_cart SET status = 'paid' WHERE id = 2;
SELECT is((SELECT count(*) FROM wk_due), 2::bigint, 'both carts got a timer');

SELECT ok(pg_temp.wait_for($$ (SELECT status = 'abandoned' FROM wk_cart WHERE id = 1) $$),
  'the submitted cart is abandoned by the worker');
SELECT ok((SELECT l.at - d.due_at <= 2 * current_setting('harden.worker_interval')::interval
             FROM harden.fsm_log l JOIN wk_due d ON d.id = l.row_key->>'id'
            WHERE l.machine = 'wk_cart' AND l.actor = 'timer' AND d.id = '1'),
  'within twice the interval of its deadline');
SELECT results_eq($$ SELECT from_state, to_state, actor FROM harden.fsm_log
                      WHERE machine = 'wk_cart' AND row_key = '{"id": 1}' AND actor = 'timer' $$,
  $$ VALUES ('submitted', 'abandoned', 'timer') $$,
  'it went through the machine and the audit log, with the timer as actor, once');
SELECT ok(pg_temp.wait_for($$ NOT EXISTS (SELECT 1 FROM harden.fsm_due WHERE machine = 'wk_cart') $$),
  'both timers are gone');
SELECT is((SELECT status FROM wk_cart WHERE id = 2), 'paid',
  'the cart that left the state before its deadline was not moved');

-- ---- an expired hold returns to stock ----
CREATE TABLE wk_product (id int PRIMARY KEY, stock int NOT NULL);
INSERT INTO wk_product VALUES (1, 10), (2, 10);
SELECT harden.stock_attach('wk_product', 'stock');
SELECT harden.stock_reserve('wk_product', ARRAY[1], ARRAY[3], '300 ms', 'wk-1') AS hold_short \gset
SELECT harden.stock_reserve('wk_product', ARRAY[1], ARRAY[2], '1 hour', 'wk-2') AS hold_long \gset
SELECT is((SELECT stock FROM wk_product WHERE id = 1), 5, 'both holds took their stock');
SELECT ok(pg_temp.wait_for(format($$ (SELECT status = 'expired' FROM harden.stock_reservations WHERE id = %s) $$,
                                  :hold_short)),
  'the worker expires the short hold');
SELECT is((SELECT stock FROM wk_product WHERE id = 1), 8, 'its stock is back, the long hold''s is not');

-- ---- a failing give-back is recorded, retried, and does not stop the rest ----
-- Every give-back to wk_product raises: its expired hold stays held with the
-- error and is retried, while another table's hold still expires and
-- taking stock still works.
CREATE FUNCTION wk_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'wk_product is frozen';
END $$;
CREATE TRIGGER wk_refuse BEFORE UPDATE ON wk_product FOR EACH ROW
  WHEN (NEW.stock > OLD.stock) EXECUTE FUNCTION wk_refuse();
CREATE TABLE wk_other (id int PRIMARY KEY, stock int NOT NULL);
INSERT INTO wk_other VALUES (1, 10);
SELECT harden.stock_attach('wk_other', 'stock');
SELECT harden.stock_reserve('wk_product', ARRAY[2], ARRAY[4], '100 ms', 'wk-3') AS hold_frozen \gset
SELECT harden.stock_reserve('wk_other', ARRAY[1], ARRAY[4], '100 ms', 'wk-4') AS hold_other \gset
SELECT ok(pg_temp.wait_for(format($$ (SELECT status = 'held' AND attempts > 0
                                             AND last_error LIKE '%%wk_product is frozen%%'
            FROM harden.stock_reservations WHERE id = %s) $$, :hold_frozen)),
  'the hold whose give-back fails stays held, with its error, for a later attempt');
SELECT ok(pg_temp.wait_for(format($$ (SELECT status = 'expired' FROM harden.stock_reservations WHERE id = %s) $$,
                                  :hold_other)),
  'meanwhile another table''s expired hold is given back');
-- Meanwhile timed transitions go on, including one whose own trigger fails.
CREATE FUNCTION wk_cart_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.id = 13 THEN RAISE EXCEPTION 'cart 13 is stuck'; END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER wk_cart_guard BEFORE UPDATE ON wk_cart FOR EACH ROW
  WHEN (NEW.status = 'abandoned') EXECUTE FUNCTION wk_cart_guard();
INSERT INTO wk_cart VALUES (12), (13);
UPDATE wk_cart SET status = 'submitted' WHERE id IN (12, 13);
SELECT ok(pg_temp.wait_for($$ (SELECT status = 'abandoned' FROM wk_cart WHERE id = 12) $$),
  'a timed transition still fires while the stock batch fails');
SELECT ok(pg_temp.wait_for($$ (SELECT attempts > 0 AND last_error LIKE '%cart 13 is stuck%'
            FROM harden.fsm_due WHERE row_key = '{"id": 13}') $$),
  'the timer whose transition fails stays, with its error, for a later attempt');
SELECT is((SELECT status FROM wk_cart WHERE id = 13), 'submitted', 'that cart did not move');
-- Once the trigger is gone the retried batch gives the frozen hold back.
DROP TRIGGER wk_refuse ON wk_product;
SELECT ok(pg_temp.wait_for(format($$ (SELECT status = 'expired' FROM harden.stock_reservations WHERE id = %s) $$,
                                  :hold_frozen), '90 s'),
  'after the failure is fixed, the retry gives the hold back');

-- ---- user code cannot steer the worker's own queries ----
-- A trigger run by the worker sets search_path for the rest of the session,
-- to a schema holding a now() that counts its calls.  fsm_run_due reads
-- now() in every run (to prune harden.fsm_log); if the setting outlived the
-- step, every later run would call this now() with the worker's rights.
CREATE TABLE wk_calls (usr name, app text);
CREATE FUNCTION public.now() RETURNS timestamptz LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO public.wk_calls VALUES (current_user, pg_catalog.current_setting('application_name'));
  RETURN pg_catalog.now();
END $$;
CREATE FUNCTION wk_sp_trap() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_catalog.set_config('search_path', 'public, pg_catalog', false);
  RETURN NEW;
END $$;
CREATE TABLE wk_sp (id int PRIMARY KEY, status text NOT NULL DEFAULT 'open');
SELECT harden.fsm_attach('wk_sp', 'status', 'wk_cart');
CREATE TRIGGER wk_sp_trap BEFORE UPDATE ON wk_sp FOR EACH ROW
  WHEN (NEW.status = 'abandoned') EXECUTE FUNCTION wk_sp_trap();
INSERT INTO wk_sp VALUES (1);
UPDATE wk_sp SET status = 'submitted';
SELECT ok(pg_temp.wait_for($$ (SELECT status = 'abandoned' FROM wk_sp WHERE id = 1) $$),
  'the worker applies a timer whose table has a trigger that changes search_path');
-- Calls made in the trigger's own step are the function's business; from
-- the next runs on there must be none.
SELECT runs AS wk_runs FROM harden.worker_status WHERE database = current_database() \gset
SELECT ok(pg_temp.wait_for(format($$ (SELECT runs >= %s + 3 FROM harden.worker_status
            WHERE database = current_database()) $$, :wk_runs)),
  'the worker carries on after it');
SELECT count(*) AS wk_calls_then FROM wk_calls \gset
SELECT ok(pg_temp.wait_for(format($$ (SELECT runs >= %s + 8 FROM harden.worker_status
            WHERE database = current_database()) $$, :wk_runs)),
  'five more runs');
SELECT is((SELECT count(*) FROM wk_calls), :wk_calls_then::bigint,
  'a search_path set by user code does not outlive the worker''s step');
DROP FUNCTION public.now();

-- ---- counters ----
SELECT ok((SELECT count(*) = 4 FROM regexp_split_to_table(harden.metrics(), E'\n') AS line
            WHERE line ~ ('^harden_worker_(runs|transitions|holds_released)_total\{database="'
                          || current_database() || '"\} [1-9][0-9]*$')
               OR line ~ ('^harden_worker_errors_total\{database="'
                          || current_database() || '"\} [0-9]+$')),
  'metrics() counts runs, transitions, released holds and errors of this database');
SELECT ok(harden.metrics() ~ ('harden_worker_last_run_timestamp_seconds\{database="'
                              || current_database() || '"\} [0-9.e+]+'),
  'metrics() has the last run as a timestamp');

-- ---- DROP EXTENSION while the worker runs ----
DROP EXTENSION pg_harden CASCADE;
SELECT ok(pg_temp.wait_for($$ NOT EXISTS (SELECT 1 FROM pg_stat_activity
            WHERE datname = current_database() AND backend_type = 'pg_harden worker') $$),
  'after DROP EXTENSION the worker leaves the database');

SELECT * FROM finish();
