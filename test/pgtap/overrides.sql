-- Overrides and their role rules: fsm_force, fsm_timer_retry,
-- fsm_timer_cancel and stock_force_release are for the table's owner (and
-- roles with its privileges) and for members of harden_operator (with its
-- privileges), nobody else; harden_operator is created by the extension and
-- outlives it.
BEGIN;
SELECT plan(36);

CREATE ROLE ov_owner;
CREATE ROLE ov_owner_member IN ROLE ov_owner;
CREATE ROLE ov_owner_noinherit NOINHERIT IN ROLE ov_owner;
CREATE ROLE ov_op IN ROLE harden_operator;
CREATE ROLE ov_op_noinherit NOINHERIT IN ROLE harden_operator;
CREATE ROLE ov_writer;
GRANT USAGE ON SCHEMA harden TO ov_owner, ov_owner_member, ov_owner_noinherit, ov_op_noinherit, ov_writer;

-- ---- the role ----
SELECT ok(EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'harden_operator'), 'harden_operator exists');
SELECT is((SELECT ARRAY[rolcanlogin, rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls]
             FROM pg_roles WHERE rolname = 'harden_operator'),
          ARRAY[false, false, false, false, false, false],
          'harden_operator cannot log in and has no attribute');
SELECT ok(has_schema_privilege('harden_operator', 'harden', 'USAGE'), 'harden_operator may use schema harden');
SELECT ok(has_table_privilege('harden_operator', t, 'SELECT') AND NOT has_table_privilege('harden_operator', t, 'INSERT')
          AND NOT has_table_privilege('harden_operator', t, 'DELETE'),
          'harden_operator reads ' || t || ' and cannot change it')
  FROM unnest(ARRAY['harden.fsm_log', 'harden.admin_log']) AS t;
SELECT ok(NOT has_table_privilege('public', 'harden.admin_log', 'SELECT'), 'PUBLIC cannot read harden.admin_log');
SELECT ok(has_function_privilege('public', f, 'EXECUTE'), f || ' is callable by PUBLIC (it checks the caller itself)')
  FROM unnest(ARRAY['harden.fsm_force(regclass,jsonb,text,text,text)', 'harden.fsm_timer_retry(bigint,text)',
                    'harden.fsm_timer_cancel(bigint,text)', 'harden.stock_force_release(bigint,text)']) AS f;
SELECT is((SELECT count(*) FROM pg_depend d JOIN pg_authid a ON a.oid = d.objid
            WHERE d.classid = 'pg_authid'::regclass AND a.rolname = 'harden_operator'), 0::bigint,
          'the role is no member of the extension (DROP EXTENSION leaves it)');

-- ---- fixtures: a table of ov_owner with a machine, a timer and stock ----
CREATE TABLE public.ov_t (id int PRIMARY KEY, status text NOT NULL DEFAULT 'pending', qty int NOT NULL DEFAULT 10);
ALTER TABLE public.ov_t OWNER TO ov_owner;
SELECT harden.fsm_attach('public.ov_t', 'status', 'cart');
SELECT harden.stock_attach('public.ov_t', 'qty');
GRANT SELECT, UPDATE ON public.ov_t TO ov_writer;
INSERT INTO public.ov_t SELECT generate_series(1, 10);
UPDATE public.ov_t SET status = 'submitted';
UPDATE harden.fsm_due SET due_at = now() - interval '1 minute' WHERE relid = 'public.ov_t'::regclass;

-- role -> the outcome of each override on the row of id n (ok or the SQLSTATE).
CREATE FUNCTION pg_temp.try(r name, n int) RETURNS text[] LANGUAGE plpgsql AS $$
DECLARE
  out text[] := '{}';
  t bigint := (SELECT id FROM harden.fsm_due WHERE relid = 'public.ov_t'::regclass AND row_key = jsonb_build_object('id', n));
  h bigint := harden.stock_reserve('public.ov_t', ARRAY[n], ARRAY[1], '1 hour', 'ov');
  q text;
BEGIN
  FOREACH q IN ARRAY ARRAY[
      format('SELECT harden.fsm_force(''public.ov_t'', %L, ''pending'', ''tap'')', n),
      format('SELECT harden.fsm_timer_retry(%s, ''tap'')', t),
      format('SELECT harden.fsm_timer_cancel(%s, ''tap'')', t),
      format('SELECT harden.stock_force_release(%s, ''tap'')', h)] LOOP
    BEGIN
      EXECUTE format('SET LOCAL ROLE %I', r);
      EXECUTE q;
      RESET ROLE;
      out := out || 'ok'::text;
    EXCEPTION WHEN OTHERS THEN
      RESET ROLE;
      out := out || SQLSTATE::text;
    END;
  END LOOP;
  RETURN out;
END $$;

SELECT is(pg_temp.try('ov_writer', 1), ARRAY['42501', '42501', '42501', '42501'],
          'a role that may update the table but does not own it is refused everything');
-- After the forced move the timer no longer applies: the retry drops it,
-- and then there is nothing to cancel.
SELECT is(pg_temp.try('ov_owner', 2), ARRAY['ok', 'ok', 'PH214', 'ok'],
          'the owner forces, retries, force-releases');
SELECT is(pg_temp.try('ov_owner_member', 3), ARRAY['ok', 'ok', 'PH214', 'ok'],
          'a member of the owner that inherits its privileges may too');
SELECT is(pg_temp.try('ov_owner_noinherit', 4), ARRAY['42501', '42501', '42501', '42501'],
          'a NOINHERIT member of the owner may not');
SELECT is(pg_temp.try('ov_op', 5), ARRAY['ok', 'ok', 'PH214', 'ok'],
          'a member of harden_operator may, without any privilege on the table');
SELECT is(pg_temp.try('ov_op_noinherit', 6), ARRAY['42501', '42501', '42501', '42501'],
          'a NOINHERIT member of harden_operator may not');
SELECT is(pg_temp.try('postgres', 7), ARRAY['ok', 'ok', 'PH214', 'ok'], 'a superuser may');

-- Timers on their own, without the forced move taking them.
CREATE FUNCTION pg_temp.try_timer(r name, n int, what text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  t bigint := (SELECT id FROM harden.fsm_due WHERE relid = 'public.ov_t'::regclass AND row_key = jsonb_build_object('id', n));
BEGIN
  EXECUTE format('SET LOCAL ROLE %I', r);
  IF what = 'retry' THEN
    PERFORM harden.fsm_timer_retry(t, 'tap');
  ELSE
    PERFORM harden.fsm_timer_cancel(t, 'tap');
  END IF;
  RESET ROLE;
  RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
  RESET ROLE;
  RETURN SQLSTATE;
END $$;
SELECT is(pg_temp.try_timer('ov_writer', 8, 'retry'), '42501', 'a writer cannot retry a timer');
SELECT is(pg_temp.try_timer('ov_writer', 8, 'cancel'), '42501', 'a writer cannot cancel a timer');
SELECT is(pg_temp.try_timer('ov_owner', 8, 'retry'), 'ok', 'the owner retries its timer');
SELECT is((SELECT status FROM public.ov_t WHERE id = 8), 'abandoned', 'the retried timer moved the row');
SELECT is(pg_temp.try_timer('ov_op', 9, 'cancel'), 'ok', 'an operator cancels a timer');
SELECT is((SELECT status FROM public.ov_t WHERE id = 9), 'submitted', 'the cancelled timer left the row where it was');
SELECT is(pg_temp.try_timer('ov_owner_member', 10, 'cancel'), 'ok', 'an inheriting member of the owner cancels');

-- ---- what was recorded ----
SELECT is((SELECT array_agg(role ORDER BY role) FROM harden.fsm_log
            WHERE table_name = 'public.ov_t' AND forced),
          ARRAY['ov_op', 'ov_owner', 'ov_owner_member', 'postgres'],
          'every forced move is in fsm_log with the role that made it, and only those');
SELECT is((SELECT array_agg(action || ' ' || role ORDER BY id) FROM harden.admin_log
            WHERE table_name = 'public.ov_t'),
          ARRAY['timer_retry ov_owner', 'hold_release ov_owner',
                'timer_retry ov_owner_member', 'hold_release ov_owner_member',
                'timer_retry ov_op', 'hold_release ov_op', 'timer_retry postgres', 'hold_release postgres',
                'timer_retry ov_owner', 'timer_cancel ov_op', 'timer_cancel ov_owner_member'],
          'every release and timer action is in admin_log with its role, refused ones are not');
SELECT ok((SELECT bool_and(reason = 'tap' AND txid = pg_current_xact_id()) FROM harden.admin_log
            WHERE table_name = 'public.ov_t'),
          'with the reason given and the transaction');

-- ---- harden.fsm_timers shows what the caller may read ----
INSERT INTO public.ov_t VALUES (11);
UPDATE public.ov_t SET status = 'submitted' WHERE id = 11;
CREATE FUNCTION pg_temp.timers_seen(r name) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
  n bigint;
BEGIN
  EXECUTE format('SET LOCAL ROLE %I', r);
  SELECT count(*) INTO n FROM harden.fsm_timers WHERE table_name = 'public.ov_t'::regclass;
  RESET ROLE;
  RETURN n;
END $$;
REVOKE SELECT ON public.ov_t FROM ov_writer;
SELECT is(pg_temp.timers_seen('ov_writer'), 0::bigint, 'a role that cannot read the table sees none of its timers');
-- Left: the timers of rows 1, 4 and 6 (refused above) and of row 11.
SELECT is(pg_temp.timers_seen('ov_owner'), 4::bigint, 'the owner sees its timers');
SELECT is(pg_temp.timers_seen('ov_op'), 4::bigint, 'an operator sees every timer');
SELECT is(pg_temp.timers_seen('ov_op_noinherit'), 0::bigint, 'a NOINHERIT member of harden_operator does not');

-- ---- the role outlives the extension ----
GRANT harden_operator TO ov_writer;
-- (pgTAP records results in tables: the checks made between SAVEPOINT and
-- ROLLBACK TO are kept in psql variables and reported after it.)
SAVEPOINT dropped;
SET LOCAL client_min_messages = warning;
DROP EXTENSION pg_harden CASCADE;
SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'harden_operator') AS role_after_drop,
       pg_has_role('ov_writer', 'harden_operator', 'MEMBER') AS member_after_drop \gset
CREATE EXTENSION pg_harden;
SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'harden_operator') AS role_after_create,
       pg_has_role('ov_writer', 'harden_operator', 'MEMBER') AS member_after_create \gset
ROLLBACK TO SAVEPOINT dropped;
SELECT ok(:'role_after_drop'::boolean, 'DROP EXTENSION leaves harden_operator');
SELECT ok(:'member_after_drop'::boolean, 'with its members');
SELECT ok(:'role_after_create'::boolean, 'CREATE EXTENSION with the role already there works');
SELECT ok(:'member_after_create'::boolean, 'and keeps its members');

SELECT * FROM finish();
ROLLBACK;
