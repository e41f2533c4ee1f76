-- State machines: privileges, dump configuration, and for every shipped
-- machine on text, varchar, enum and domain columns, every insert and every
-- (from, to) update accepted exactly when the definition allows it.
BEGIN;
SELECT plan(39);

SELECT ok(NOT has_function_privilege('public', p, 'EXECUTE'), p || ' is revoked from PUBLIC')
  FROM unnest(ARRAY['harden.fsm_define(text,text,text)', 'harden.fsm_drop(text)',
                    'harden.fsm_attach(regclass,name,text,boolean)', 'harden.fsm_detach(regclass,text)',
                    'harden.fsm_run_due(integer)', 'harden.fsm_log_prune()', 'harden.fsm_enforce()']) AS p;
SELECT ok(has_function_privilege('public', p, 'EXECUTE'), p || ' is granted to PUBLIC')
  FROM unnest(ARRAY['harden.fsm_fire(regclass,jsonb,text,text)', 'harden.fsm_can(regclass,jsonb,text,text)',
                    'harden.fsm_next(text,text)', 'harden.fsm_diagram(text,text)']) AS p;
SELECT ok(has_table_privilege('public', t, 'SELECT'), t || ' is readable by PUBLIC')
  FROM unnest(ARRAY['harden.fsm_machines', 'harden.fsm_states', 'harden.fsm_transitions',
                    'harden.fsm_attachments', 'harden.fsm_attached', 'harden.fsm_stats']) AS t;
SELECT ok(NOT has_table_privilege('public', t, 'SELECT'), t || ' is not readable by PUBLIC')
  FROM unnest(ARRAY['harden.fsm_log', 'harden.fsm_due']) AS t;
SELECT ok(NOT has_table_privilege('public', t, 'INSERT'), t || ' is not writable by PUBLIC')
  FROM unnest(ARRAY['harden.fsm_machines', 'harden.fsm_states', 'harden.fsm_transitions']) AS t;

-- pg_dump keeps definitions (not the shipped ones), the audit trail and the
-- timers; not the attachment CREATE EXTENSION makes (breakers) nor its timers.
SELECT is((SELECT array_agg(c::regclass::text || coalesce(': ' || nullif(cond, ''), '') ORDER BY c::regclass::text)
             FROM pg_extension e, unnest(e.extconfig, e.extcondition) AS u(c, cond)
            WHERE e.extname = 'pg_harden' AND c::regclass::text LIKE 'harden.fsm%'),
          ARRAY['harden.fsm_attached: WHERE relid <> ''harden.breaker_states''::pg_catalog.regclass', 'harden.fsm_due: WHERE relid <> ''harden.breaker_states''::pg_catalog.regclass', 'harden.fsm_due_id_seq', 'harden.fsm_log', 'harden.fsm_log_id_seq',
                'harden.fsm_machines: WHERE NOT shipped',
                'harden.fsm_states: WHERE machine NOT IN (SELECT machine FROM harden.fsm_machines WHERE shipped)',
                'harden.fsm_transitions: WHERE machine NOT IN (SELECT machine FROM harden.fsm_machines WHERE shipped)'],
          'fsm tables are dumped, shipped machines excluded');

CREATE SCHEMA fsm_tap;
-- Every insert and every update between two states of machine m on a
-- column of type coltype; returns the cases where the trigger disagrees
-- with harden.fsm_states / fsm_transitions.
CREATE FUNCTION fsm_tap.mismatches(m text, coltype text) RETURNS text[] LANGUAGE plpgsql AS $$
DECLARE
  f text;
  t text;
  accepted boolean;
  bad text[] := '{}';
BEGIN
  EXECUTE format('CREATE TABLE fsm_tap.t (id int PRIMARY KEY, s %s)', coltype);
  PERFORM harden.fsm_attach('fsm_tap.t', 's', m, false);
  FOR f IN SELECT state FROM harden.fsm_states WHERE machine = m ORDER BY position LOOP
    BEGIN
      EXECUTE format('INSERT INTO fsm_tap.t VALUES (0, %L)', f);
      accepted := true;
    EXCEPTION WHEN SQLSTATE 'PH205' THEN
      accepted := false;
    END;
    IF accepted IS DISTINCT FROM (SELECT initial FROM harden.fsm_states WHERE machine = m AND state = f) THEN
      bad := bad || ('insert ' || f);
    END IF;
    DELETE FROM fsm_tap.t;
    FOR t IN SELECT state FROM harden.fsm_states WHERE machine = m AND state <> f ORDER BY position LOOP
      ALTER TABLE fsm_tap.t DISABLE TRIGGER USER;
      DELETE FROM fsm_tap.t;
      EXECUTE format('INSERT INTO fsm_tap.t VALUES (1, %L)', f);
      ALTER TABLE fsm_tap.t ENABLE TRIGGER USER;
      BEGIN
        EXECUTE format('UPDATE fsm_tap.t SET s = %L', t);
        accepted := true;
      EXCEPTION WHEN SQLSTATE 'PH201' THEN
        accepted := false;
      END;
      IF accepted IS DISTINCT FROM EXISTS (SELECT 1 FROM harden.fsm_transitions
                                            WHERE machine = m AND from_state = f AND to_state = t) THEN
        bad := bad || (f || ' -> ' || t);
      END IF;
    END LOOP;
  END LOOP;
  DROP TABLE fsm_tap.t;
  RETURN bad;
END $$;

CREATE DOMAIN fsm_tap.state_text AS text CHECK (VALUE <> '');
DO $$
DECLARE m text;
BEGIN
  FOR m IN SELECT machine FROM harden.fsm_machines WHERE shipped LOOP
    EXECUTE format('CREATE TYPE fsm_tap.%I AS ENUM (%s)', m || '_state',
                   (SELECT string_agg(quote_literal(state), ', ' ORDER BY position)
                      FROM harden.fsm_states WHERE machine = m));
  END LOOP;
END $$;

SELECT is(fsm_tap.mismatches(m, ty), '{}'::text[], m || ' on ' || ty || ': every transition as defined')
  FROM (SELECT machine FROM harden.fsm_machines WHERE shipped ORDER BY machine) AS ms(m),
       LATERAL unnest(ARRAY['text', 'varchar(20)', format('fsm_tap.%I', m || '_state'), 'fsm_tap.state_text']) AS ty;

SELECT * FROM finish();
ROLLBACK;
