-- pg_harden 0.3.0 -> 0.4.0
\echo Use "ALTER EXTENSION pg_harden UPDATE TO '0.4.0'" to load this file. \quit

-- ---------------------------------------------------------------------------
-- overrides and worker failures
-- ---------------------------------------------------------------------------

-- Members of harden_operator may force states, retry and cancel timers and
-- force-release holds on every table, as its owner may on its own.  A role
-- belongs to the cluster, not to the extension: created if missing, left in
-- place by DROP EXTENSION.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) 'harden_operator') THEN
        CREATE ROLE harden_operator NOLOGIN;
    END IF;
END $$;
-- Operators call pg_harden's functions and read its audit trail.
GRANT USAGE ON SCHEMA harden TO harden_operator;

-- Forced moves are audited like any other, flagged and with their reason.
ALTER TABLE harden.fsm_log ADD COLUMN forced boolean NOT NULL DEFAULT false;
ALTER TABLE harden.fsm_log DROP CONSTRAINT fsm_log_actor_check;
ALTER TABLE harden.fsm_log ADD CONSTRAINT fsm_log_actor_check
    CHECK (actor IN ('sql', 'event', 'timer', 'force'));
COMMENT ON COLUMN harden.fsm_log.forced IS 'moved by harden.fsm_force(), past the transition rules';

-- A failing timer or hold expiry is retried at next_try (NULL: not failing).
ALTER TABLE harden.fsm_due ADD COLUMN next_try timestamptz;
CREATE INDEX fsm_due_next_try ON harden.fsm_due ((coalesce(next_try, due_at)));
CREATE INDEX fsm_due_failing ON harden.fsm_due (id) WHERE attempts > 0;
COMMENT ON COLUMN harden.fsm_due.next_try IS 'when a failing timer is tried again (exponential backoff with jitter); NULL: it has not failed';
ALTER TABLE harden.stock_holds ADD COLUMN next_try timestamptz;
CREATE INDEX stock_holds_failing ON harden.stock_holds (id) WHERE status = 'held' AND attempts > 0;
COMMENT ON COLUMN harden.stock_holds.next_try IS 'when a hold whose expiry failed is tried again (exponential backoff with jitter); NULL: it has not failed';

CREATE OR REPLACE VIEW harden.stock_reservations WITH (security_barrier) AS
SELECT h.id, h.relid AS "table", h.ref, h.status, h.keys, h.qtys,
       (SELECT sum(q) FROM unnest(h.qtys) AS q)::bigint AS units,
       h.created_at, h.expires_at,
       CASE WHEN h.status = 'held' THEN greatest(h.expires_at - clock_timestamp(), interval '0') END AS ttl,
       h.closed_at, h.owner, h.attempts, h.last_error, h.next_try
  FROM harden.stock_holds h
 WHERE has_table_privilege(h.relid, 'SELECT');

-- Administrative actions that are not transitions: retrying and cancelling
-- timers, releasing holds for someone else.
CREATE TABLE harden.admin_log (
    id         bigserial PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    action     text NOT NULL CHECK (action IN ('timer_retry', 'timer_cancel', 'hold_release')),
    table_name text NOT NULL,
    item       jsonb NOT NULL,
    outcome    text NOT NULL,
    role       text NOT NULL,
    reason     text,
    txid       xid8 NOT NULL
);
CREATE INDEX admin_log_at ON harden.admin_log USING brin (at);
COMMENT ON TABLE harden.admin_log IS 'audit of timer retries and cancellations and of holds released by someone other than the role that made them';
SELECT pg_catalog.pg_extension_config_dump('harden.admin_log', '');
SELECT pg_catalog.pg_extension_config_dump('harden.admin_log_id_seq', '');
GRANT SELECT ON harden.admin_log, harden.fsm_log TO harden_operator;

CREATE FUNCTION harden.fsm_force(table_name regclass, key jsonb, to_state text, reason text,
                                 machine text DEFAULT NULL) RETURNS boolean
    AS 'MODULE_PATHNAME', 'harden_fsm_force'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION harden.fsm_force(regclass, jsonb, text, text, text) IS 'move a row to any state of its machine, past the rules, audited as forced (table owner or harden_operator); false if it was already there';

-- Timers of the tables the caller may read (all of them for harden_operator).
CREATE VIEW harden.fsm_timers WITH (security_barrier) AS
SELECT d.id, d.machine, d.relid AS table_name, d.row_key, d.from_state AS state, d.to_state,
       d.due_at, d.attempts, d.next_try, d.last_error, d.created_at
  FROM harden.fsm_due d
 WHERE has_table_privilege(d.relid, 'SELECT')
    OR EXISTS (SELECT 1 FROM pg_catalog.pg_roles r
                WHERE r.rolname = 'harden_operator' AND pg_has_role(r.oid, 'USAGE'));
COMMENT ON VIEW harden.fsm_timers IS 'timed transitions waiting for their deadline, with failed attempts, backoff and last error';
GRANT SELECT ON harden.fsm_timers TO PUBLIC;

CREATE FUNCTION harden.fsm_timer_retry(id bigint, reason text) RETURNS text
    AS 'MODULE_PATHNAME', 'harden_fsm_timer_retry'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION harden.fsm_timer_retry(bigint, text) IS 'apply a due timer now, past its backoff; returns applied, dropped or failed (table owner or harden_operator; audited in harden.admin_log)';

CREATE FUNCTION harden.fsm_timer_cancel(id bigint, reason text) RETURNS void
    AS 'MODULE_PATHNAME', 'harden_fsm_timer_cancel'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION harden.fsm_timer_cancel(bigint, text) IS 'delete a timer, leaving its row in its state (table owner or harden_operator; audited in harden.admin_log)';

CREATE FUNCTION harden.stock_force_release(id bigint, reason text) RETURNS boolean
    AS 'MODULE_PATHNAME', 'harden_stock_force_release'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION harden.stock_force_release(bigint, text) IS 'give a held reservation''s stock back as the table''s owner (table owner or harden_operator; audited in harden.admin_log); false if it was not held';

-- worker_status gains the failures of single items (timers, holds).
DROP VIEW harden.worker_status;
DROP FUNCTION harden.worker_status_rows();
CREATE FUNCTION harden.worker_status_rows(
        OUT database name, OUT pid integer, OUT state text,
        OUT started_at timestamptz, OUT last_run timestamptz,
        OUT runs bigint, OUT transitions bigint, OUT holds_released bigint,
        OUT errors bigint, OUT last_error text, OUT last_error_at timestamptz,
        OUT next_start timestamptz,
        OUT item_errors bigint, OUT last_item_error text, OUT last_item_error_at timestamptz,
        OUT items_in_backoff bigint)
    RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'harden_worker_status'
    LANGUAGE C VOLATILE PARALLEL RESTRICTED;
CREATE VIEW harden.worker_status AS SELECT * FROM harden.worker_status_rows();
COMMENT ON VIEW harden.worker_status IS 'the background worker of every database the launcher knows; other databases'' errors only for pg_read_all_stats';
GRANT SELECT ON harden.worker_status TO PUBLIC;
