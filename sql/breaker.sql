-- Circuit breakers: live state in shared memory, definitions in
-- harden.breakers, every state change recorded in harden.breaker_states by
-- the shipped circuit_breaker machine and audited in harden.fsm_log; and
-- every error a caller can cause.
\set VERBOSITY default

-- The state table is moved by the shipped machine.
SELECT table_name, column_name, machine, audit FROM harden.fsm_attachments
 WHERE table_name = 'harden.breaker_states'::regclass;

-- Short names for what the tests look at.
CREATE FUNCTION brk_log(b text) RETURNS TABLE (from_state text, to_state text)
  LANGUAGE sql AS $$
  SELECT from_state, to_state FROM harden.fsm_log
   WHERE table_name = 'harden.breaker_states' AND row_key = jsonb_build_object('name', b)
   ORDER BY id $$;
-- The events breaker calls record, with their reasons (the worker's timer
-- may record open -> half_open first, as a timer without an event).
CREATE FUNCTION brk_events(b text) RETURNS TABLE (from_state text, to_state text, event text, actor text, reason text)
  LANGUAGE sql AS $$
  SELECT from_state, to_state, event, actor, reason FROM harden.fsm_log
   WHERE table_name = 'harden.breaker_states' AND row_key = jsonb_build_object('name', b)
     AND event IS DISTINCT FROM 'probe' AND actor <> 'timer'
   ORDER BY id $$;
CREATE FUNCTION brk(b text) RETURNS TABLE (state text, recorded_state text, synced boolean,
    window_calls bigint, window_failures bigint, allowed bigint, rejected bigint,
    successes bigint, failures bigint, opens bigint)
  LANGUAGE sql AS $$
  SELECT state, recorded_state, synced, window_calls, window_failures, allowed, rejected,
         successes, failures, opens
    FROM harden.breaker_status WHERE name = b $$;

-- ---- defining ----
SELECT harden.breaker_define('payments-api');
SELECT name, failure_threshold, failure_rate, min_calls, failure_window, cooldown, half_open_probes
  FROM harden.breakers;
SELECT * FROM brk('payments-api');
-- Defining inserts the row in the machine's initial state.
SELECT * FROM brk_log('payments-api');

-- ---- closed: failures within the window trip it, exactly at the threshold ----
SELECT harden.breaker_define('mail', failure_threshold => 3, cooldown => '1 hour');
SELECT harden.breaker_allow('mail');
SELECT harden.breaker_record('mail', false) AS first, harden.breaker_record('mail', true) AS success,
       harden.breaker_record('mail', false) AS second;
SELECT * FROM brk('mail');
SELECT harden.breaker_record('mail', false) AS third;
SELECT harden.breaker_allow('mail') AS allowed_while_open;
-- Outcomes of calls let through earlier change nothing while open.
SELECT harden.breaker_record('mail', false), harden.breaker_record('mail', true);
SELECT * FROM brk('mail');
SELECT * FROM brk_events('mail');
-- The machine's timer out of "open" is due when the cooldown ends.
SELECT from_state, to_state, due_at = (SELECT since FROM harden.breaker_states WHERE name = 'mail') + interval '1 hour' AS at_cooldown_end
  FROM harden.fsm_due WHERE relid = 'harden.breaker_states'::regclass AND row_key = '{"name": "mail"}';

-- ---- failures older than the window do not count ----
SELECT harden.breaker_define('slow', failure_threshold => 2, failure_window => '1 second');
SELECT harden.breaker_record('slow', false);
SELECT pg_sleep(1.2);
SELECT harden.breaker_record('slow', false) AS after_window;
SELECT harden.breaker_record('slow', false) AS within_window;

-- ---- rate mode: a share of at least min_calls calls ----
SELECT harden.breaker_define('search', failure_rate => 0.5, min_calls => 4, cooldown => '1 hour');
SELECT harden.breaker_record('search', false), harden.breaker_record('search', false),
       harden.breaker_record('search', true) AS three_calls_are_too_few;
SELECT harden.breaker_record('search', true) AS two_of_four_on_a_success;
SELECT harden.breaker_record('search', false) AS three_of_five;
SELECT * FROM brk_events('search');

-- ---- half-open: probes after the cooldown ----
SELECT harden.breaker_define('geo', failure_threshold => 1, cooldown => '1 second', half_open_probes => 2);
SELECT harden.breaker_record('geo', false);
SELECT harden.breaker_allow('geo') AS during_cooldown;
SELECT pg_sleep(1.1);
-- Two probe calls go through, the third waits.
SELECT harden.breaker_allow('geo') AS probe1, harden.breaker_allow('geo') AS probe2,
       harden.breaker_allow('geo') AS probe3;
SELECT state FROM brk('geo');
SELECT harden.breaker_record('geo', true) AS one_probe_ok;
SELECT harden.breaker_record('geo', true) AS both_probes_ok;
SELECT harden.breaker_allow('geo') AS closed_again;
SELECT harden.breaker_sync('geo') >= 0 AS synced;
SELECT * FROM brk_log('geo');
SELECT * FROM brk_events('geo');
-- A failed probe opens it again, for another cooldown.
SELECT harden.breaker_record('geo', false);
SELECT pg_sleep(1.1);
SELECT harden.breaker_allow('geo') AS probe;
SELECT harden.breaker_record('geo', false) AS probe_failed;
SELECT harden.breaker_allow('geo') AS allowed;
SELECT harden.breaker_sync('geo') >= 0 AS synced;
SELECT * FROM brk_log('geo');
SELECT reason FROM brk_events('geo') ORDER BY 1;
SELECT state, recorded_state, synced, opens FROM brk('geo');

-- ---- a rolled-back transaction loses its audit rows; the next call restores them ----
SELECT harden.breaker_define('ledger', failure_threshold => 2, cooldown => '1 hour');
BEGIN;
SELECT harden.breaker_record('ledger', false), harden.breaker_record('ledger', false);
SELECT recorded_state FROM brk('ledger');
ROLLBACK;
-- The breaker stays open: it counts calls to another system, not rows.
SELECT state, recorded_state, synced FROM brk('ledger');
SELECT harden.breaker_allow('ledger');
SELECT harden.breaker_record('ledger', false);
SELECT state, recorded_state, synced FROM brk('ledger');
SELECT * FROM brk_events('ledger');
-- Likewise for a rolled-back savepoint.
SELECT harden.breaker_define('queue', failure_threshold => 1, cooldown => '1 hour');
BEGIN;
SAVEPOINT s;
SELECT harden.breaker_record('queue', false);
ROLLBACK TO SAVEPOINT s;
COMMIT;
SELECT state, recorded_state, synced FROM brk('queue');
SELECT harden.breaker_sync('queue') AS moved;
SELECT state, recorded_state, synced FROM brk('queue');

-- ---- read-only and REPEATABLE READ transactions ----
SELECT harden.breaker_define('replica', failure_threshold => 1, cooldown => '1 hour');
BEGIN READ ONLY;
SELECT harden.breaker_allow('replica'), harden.breaker_record('replica', false);
SELECT harden.breaker_sync('replica');
ROLLBACK;
SELECT state, recorded_state, synced FROM brk('replica');
SELECT harden.breaker_sync() AS moved;
SELECT state, recorded_state, synced FROM brk('replica');
SELECT harden.breaker_define('rr', failure_threshold => 1, cooldown => '1 hour');
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT recorded_state FROM brk('rr');
SELECT harden.breaker_record('rr', false);
COMMIT;
SELECT state, recorded_state, synced FROM brk('rr');

-- ---- a row that cannot move: the breaker works, one WARNING says why ----
SELECT harden.breaker_define('stuck', failure_threshold => 1, cooldown => '1 hour');
ALTER TABLE harden.breaker_states ADD CONSTRAINT stuck_stays CHECK (name <> 'stuck' OR state = 'closed');
SELECT harden.breaker_record('stuck', false);
SELECT harden.breaker_record('stuck', false) AS no_second_warning;
SELECT harden.breaker_allow('stuck');
SELECT state, recorded_state, synced FROM brk('stuck');
-- breaker_sync raises the error (terse: its DETAIL has the row's timestamp).
\set VERBOSITY terse
SELECT harden.breaker_sync('stuck');
\set VERBOSITY default
ALTER TABLE harden.breaker_states DROP CONSTRAINT stuck_stays;
SELECT harden.breaker_sync('stuck') AS moved;
SELECT state, recorded_state, synced FROM brk('stuck');

-- ---- redefining keeps the state; dropping ----
SELECT harden.breaker_define('mail', failure_threshold => 10, cooldown => '2 hours');
SELECT state, failure_threshold, cooldown FROM harden.breaker_status WHERE name = 'mail';
SELECT harden.breaker_allow('mail');
SELECT harden.breaker_drop('mail') AS dropped, harden.breaker_drop('mail') AS again;
SELECT harden.breaker_allow('mail');
SELECT count(*) AS state_rows FROM harden.breaker_states WHERE name = 'mail';
-- The audit trail stays.
SELECT count(*) > 0 AS audited FROM harden.fsm_log WHERE row_key = '{"name": "mail"}';
-- Editing the table directly reaches the other backends at commit too.
DELETE FROM harden.breakers WHERE name = 'slow';
SELECT harden.breaker_allow('slow');
INSERT INTO harden.breakers (name, failure_threshold) VALUES ('slow', 1);
SELECT harden.breaker_allow('slow'), harden.breaker_record('slow', false);
SELECT state, recorded_state FROM brk('slow');

-- ---- the machine's rules hold for the state table too ----
UPDATE harden.breaker_states SET state = 'half_open' WHERE name = 'payments-api';
UPDATE harden.breaker_states SET state = 'broken' WHERE name = 'payments-api';

-- ---- metrics ----
SELECT regexp_replace(line, 'database="[^"]*"', 'database="db"') AS line
  FROM regexp_split_to_table(harden.metrics(), E'\n') AS line
 WHERE line ~ '^harden_breaker_(state|opens_total)\{database="[^"]*",breaker="(ledger|geo)"\}'
 ORDER BY line;
SELECT harden.metrics_json()->'metrics'->'harden_breaker_opens_total'->>'type' AS opens_type;

-- ---- errors a caller can cause ----
SELECT harden.breaker_allow('no-such');
SELECT harden.breaker_record('no-such', true);
SELECT harden.breaker_sync('no-such');
SELECT harden.breaker_allow(NULL);
SELECT harden.breaker_record(NULL, true);
SELECT harden.breaker_record('payments-api', NULL);
SELECT harden.breaker_define(NULL);
SELECT harden.breaker_drop(NULL);
SELECT harden.breaker_allow('');
SELECT harden.breaker_allow('two words');
SELECT harden.breaker_allow('ünïcode');
SELECT harden.breaker_allow(repeat('x', 64));
SELECT harden.breaker_define(repeat('x', 63));
SELECT harden.breaker_allow(repeat('x', 63)) AS sixty_three_characters;
SELECT harden.breaker_allow(E'nul\\000');
SELECT harden.breaker_define('bad', failure_threshold => 0);
SELECT harden.breaker_define('bad', failure_threshold => -5);
SELECT harden.breaker_define('bad', failure_threshold => NULL);
SELECT harden.breaker_define('bad', failure_window => '0 s');
SELECT harden.breaker_define('bad', failure_window => NULL);
SELECT harden.breaker_define('bad', cooldown => '-1 minute');
SELECT harden.breaker_define('bad', half_open_probes => 0);
SELECT harden.breaker_define('bad', half_open_probes => 1000001);
SELECT harden.breaker_define('bad', failure_rate => 0);
SELECT harden.breaker_define('bad', failure_rate => 1.5);
SELECT harden.breaker_define('bad', failure_rate => 'NaN');
SELECT harden.breaker_define('bad', min_calls => 0);
SELECT count(*) AS none_defined FROM harden.breakers WHERE name = 'bad';
-- Huge intervals are capped, not overflowed.
SELECT harden.breaker_define('long', failure_window => '100000 years', cooldown => '1000000 years');
SELECT harden.breaker_record('long', false), harden.breaker_allow('long');

-- ---- privileges ----
CREATE ROLE pgh_brk_app;
GRANT USAGE ON SCHEMA harden TO pgh_brk_app;
SELECT harden.breaker_define('app', failure_threshold => 1, cooldown => '1 hour');
SET ROLE pgh_brk_app;
SELECT harden.breaker_allow('payments-api'), harden.breaker_record('payments-api', true);
-- Any role may record outcomes; the row moves as the extension's owner.
-- The caller's harden.reason goes with it.
BEGIN;
SET LOCAL harden.reason = 'smtp relay down';
SELECT harden.breaker_record('app', false);
COMMIT;
SHOW harden.reason;
SELECT harden.breaker_define('mine');
SELECT harden.breaker_drop('payments-api');
UPDATE harden.breaker_states SET state = 'open';
INSERT INTO harden.breakers (name) VALUES ('mine');
SELECT count(*) > 0 AS can_read FROM harden.breaker_status;
RESET ROLE;
SELECT role, reason FROM harden.fsm_log WHERE row_key = '{"name": "app"}' AND event = 'trip';
REVOKE USAGE ON SCHEMA harden FROM pgh_brk_app;
DROP ROLE pgh_brk_app;

SELECT harden.breaker_drop(name) FROM harden.breakers ORDER BY name;
DROP FUNCTION brk_log(text), brk_events(text), brk(text);
-- Leave the audit trail and the timers as the other tests expect them.
DELETE FROM harden.fsm_log WHERE table_name = 'harden.breaker_states';
DELETE FROM harden.fsm_due WHERE relid = 'harden.breaker_states'::regclass;
