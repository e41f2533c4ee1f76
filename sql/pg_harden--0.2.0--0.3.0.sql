-- pg_harden 0.2.0 -> 0.3.0: query-result caching (cache_query, watched
-- tables, single-flight; dependencies and coalesced waits in the views),
-- state machines (definitions, enforcement trigger, audit trail, events,
-- timed transitions, diagrams) and stock-row locking (take, take_many, put,
-- reservations)
\echo Use "ALTER EXTENSION pg_harden UPDATE TO '0.3.0'" to load this file. \quit

-- ---------------------------------------------------------------------------
-- Query results
-- ---------------------------------------------------------------------------

CREATE FUNCTION harden.cache_query(key text, sql text, ttl interval DEFAULT NULL)
    RETURNS jsonb
    AS 'MODULE_PATHNAME', 'harden_cache_query'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
CREATE FUNCTION harden.cache_query(key text, sql text, ttl interval, VARIADIC params "any")
    RETURNS jsonb
    AS 'MODULE_PATHNAME', 'harden_cache_query'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION harden.cache_query(text, text, interval) IS 'the rows of a read-only query as a jsonb array, cached per role until a watched table it reads changes or its TTL ends';
COMMENT ON FUNCTION harden.cache_query(text, text, interval, "any") IS 'the same, with parameters bound to $1..$n';

-- ---------------------------------------------------------------------------
-- Watched tables
-- ---------------------------------------------------------------------------

CREATE FUNCTION harden.cache_watch_trigger() RETURNS trigger
    AS 'MODULE_PATHNAME', 'harden_cache_watch_trigger'
    LANGUAGE C;
COMMENT ON FUNCTION harden.cache_watch_trigger() IS 'statement trigger installed by cache_watch(): moves the table''s generation at commit';

CREATE FUNCTION harden.cache_watch("table" regclass) RETURNS boolean
    AS 'MODULE_PATHNAME', 'harden_cache_watch'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION harden.cache_watch(regclass) IS 'invalidate cached query results reading this table (and its partitions) when a write to it commits';

CREATE FUNCTION harden.cache_unwatch("table" regclass) RETURNS boolean
    AS 'MODULE_PATHNAME', 'harden_cache_unwatch'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION harden.cache_unwatch(regclass) IS 'stop watching a table: results reading it are then bounded by their TTL only';

-- ---------------------------------------------------------------------------
-- Views: coalesced waits; dependencies of query results
-- ---------------------------------------------------------------------------

DROP VIEW harden.cache_stats;
DROP FUNCTION harden.cache_stats_row();
CREATE FUNCTION harden.cache_stats_row(
    OUT hits bigint, OUT misses bigint, OUT hit_ratio double precision,
    OUT sets bigint, OUT evictions bigint, OUT expirations bigint,
    OUT invalidations bigint, OUT entries bigint, OUT bytes_used bigint,
    OUT bytes_limit bigint, OUT coalesced bigint)
    AS 'MODULE_PATHNAME', 'harden_cache_stats'
    LANGUAGE C VOLATILE PARALLEL RESTRICTED;
CREATE VIEW harden.cache_stats AS SELECT * FROM harden.cache_stats_row();
COMMENT ON VIEW harden.cache_stats IS 'cache counters of this database; entries and bytes of the whole cache';
GRANT SELECT ON harden.cache_stats TO PUBLIC;

DROP VIEW harden.cache_entries;
DROP FUNCTION harden.cache_entries_rows();
CREATE FUNCTION harden.cache_entries_rows(
    OUT key text, OUT type text, OUT bytes bigint, OUT expires_at timestamptz,
    OUT ttl interval, OUT hits bigint, OUT tags text[], OUT owner regrole,
    OUT secure boolean, OUT public boolean, OUT deps regclass[],
    OUT unwatched regclass[])
    RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'harden_cache_entries'
    LANGUAGE C VOLATILE PARALLEL RESTRICTED ROWS 1000;
CREATE VIEW harden.cache_entries AS SELECT * FROM harden.cache_entries_rows();
COMMENT ON VIEW harden.cache_entries IS 'cache entries of this database the caller may read (never values; no tags of secure entries); deps is set for cache_query() results';
GRANT SELECT ON harden.cache_entries TO PUBLIC;


-- ---------------------------------------------------------------------------
-- Definitions.  Shipped machines are recreated by CREATE EXTENSION, so the
-- dump keeps only the user's own.
-- ---------------------------------------------------------------------------

CREATE TABLE harden.fsm_machines (
    machine    text PRIMARY KEY
               CHECK (machine ~ '^[A-Za-z_][A-Za-z0-9_]{0,47}$'),
    rules      text NOT NULL,
    shipped    boolean NOT NULL DEFAULT false,
    defined_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE harden.fsm_machines IS 'state machines: the rules as written to harden.fsm_define()';

CREATE TABLE harden.fsm_states (
    machine  text NOT NULL REFERENCES harden.fsm_machines ON DELETE CASCADE,
    state    text NOT NULL CHECK (octet_length(state) BETWEEN 1 AND 63),
    position integer NOT NULL,
    initial  boolean NOT NULL DEFAULT false,
    terminal boolean NOT NULL DEFAULT false,
    PRIMARY KEY (machine, state)
);
COMMENT ON TABLE harden.fsm_states IS 'states of each machine; initial states start rows, terminal states have no exit';

CREATE TABLE harden.fsm_transitions (
    machine    text NOT NULL,
    from_state text NOT NULL,
    to_state   text NOT NULL,
    event      text CHECK (octet_length(event) BETWEEN 1 AND 63),
    after      interval CHECK (after > interval '0'),
    position   integer NOT NULL,
    PRIMARY KEY (machine, from_state, to_state),
    UNIQUE (machine, from_state, event),
    FOREIGN KEY (machine, from_state) REFERENCES harden.fsm_states ON DELETE CASCADE,
    FOREIGN KEY (machine, to_state) REFERENCES harden.fsm_states ON DELETE CASCADE,
    CHECK (from_state <> to_state)
);
CREATE UNIQUE INDEX fsm_transitions_one_timed_exit
    ON harden.fsm_transitions (machine, from_state) WHERE after IS NOT NULL;
COMMENT ON TABLE harden.fsm_transitions IS 'allowed transitions; event names fsm_fire() events, after makes the transition timed';

SELECT pg_catalog.pg_extension_config_dump('harden.fsm_machines', 'WHERE NOT shipped');
SELECT pg_catalog.pg_extension_config_dump('harden.fsm_states',
    'WHERE machine NOT IN (SELECT machine FROM harden.fsm_machines WHERE shipped)');
SELECT pg_catalog.pg_extension_config_dump('harden.fsm_transitions',
    'WHERE machine NOT IN (SELECT machine FROM harden.fsm_machines WHERE shipped)');
GRANT SELECT ON harden.fsm_machines, harden.fsm_states, harden.fsm_transitions TO PUBLIC;

-- Any change to the definitions makes every backend recompile its machines.
CREATE FUNCTION harden.fsm_definitions_changed() RETURNS trigger
    AS 'MODULE_PATHNAME', 'harden_fsm_definitions_changed'
    LANGUAGE C;
CREATE TRIGGER fsm_definitions_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON harden.fsm_machines
    FOR EACH STATEMENT EXECUTE FUNCTION harden.fsm_definitions_changed();
CREATE TRIGGER fsm_definitions_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON harden.fsm_states
    FOR EACH STATEMENT EXECUTE FUNCTION harden.fsm_definitions_changed();
CREATE TRIGGER fsm_definitions_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON harden.fsm_transitions
    FOR EACH STATEMENT EXECUTE FUNCTION harden.fsm_definitions_changed();

-- ---------------------------------------------------------------------------
-- Audit trail and timers: written by the trigger directly (no SQL per row).
-- ---------------------------------------------------------------------------

CREATE SEQUENCE harden.fsm_log_id_seq;
CREATE TABLE harden.fsm_log (
    id         bigint PRIMARY KEY DEFAULT nextval('harden.fsm_log_id_seq'),
    at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    machine    text NOT NULL,
    table_name text NOT NULL,
    row_key    jsonb NOT NULL,
    from_state text,
    to_state   text NOT NULL,
    event      text,
    actor      text NOT NULL CHECK (actor IN ('sql', 'event', 'timer')),
    role       text NOT NULL,
    txid       xid8 NOT NULL,
    reason     text
);
ALTER SEQUENCE harden.fsm_log_id_seq OWNED BY harden.fsm_log.id;
CREATE INDEX fsm_log_at ON harden.fsm_log USING brin (at);
COMMENT ON TABLE harden.fsm_log IS 'every state-machine transition (from_state NULL: the row was inserted); kept for harden.fsm_log_retention';
SELECT pg_catalog.pg_extension_config_dump('harden.fsm_log', '');
SELECT pg_catalog.pg_extension_config_dump('harden.fsm_log_id_seq', '');

CREATE SEQUENCE harden.fsm_due_id_seq;
CREATE TABLE harden.fsm_due (
    id         bigint PRIMARY KEY DEFAULT nextval('harden.fsm_due_id_seq'),
    due_at     timestamptz NOT NULL,
    machine    text NOT NULL,
    relid      regclass NOT NULL,
    table_name text NOT NULL,
    row_key    jsonb NOT NULL,
    from_state text NOT NULL,
    to_state   text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    attempts   integer NOT NULL DEFAULT 0,
    last_error text
);
ALTER SEQUENCE harden.fsm_due_id_seq OWNED BY harden.fsm_due.id;
CREATE INDEX fsm_due_due_at ON harden.fsm_due (due_at);
CREATE INDEX fsm_due_row ON harden.fsm_due (relid, row_key, machine);
COMMENT ON TABLE harden.fsm_due IS 'timed transitions waiting for their deadline; harden.fsm_run_due() applies them';
SELECT pg_catalog.pg_extension_config_dump('harden.fsm_due', '');
SELECT pg_catalog.pg_extension_config_dump('harden.fsm_due_id_seq', '');

-- ---------------------------------------------------------------------------
-- Define, attach, enforce
-- ---------------------------------------------------------------------------

CREATE FUNCTION harden.fsm_define(machine text, rules text, initial text DEFAULT NULL) RETURNS void
    AS 'MODULE_PATHNAME', 'harden_fsm_define'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION harden.fsm_define(text, text, text) IS 'define or redefine a state machine from rules such as ''a -> b on go; b -> c after 1h''';
REVOKE ALL ON FUNCTION harden.fsm_define(text, text, text) FROM PUBLIC;

CREATE FUNCTION harden.fsm_drop(machine text) RETURNS void
    AS 'MODULE_PATHNAME', 'harden_fsm_drop'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION harden.fsm_drop(text) IS 'drop a state machine that is attached nowhere';
REVOKE ALL ON FUNCTION harden.fsm_drop(text) FROM PUBLIC;

CREATE FUNCTION harden.fsm_enforce() RETURNS trigger
    AS 'MODULE_PATHNAME', 'harden_fsm_enforce'
    LANGUAGE C;
COMMENT ON FUNCTION harden.fsm_enforce() IS 'the trigger fsm_attach() installs: validates, audits, schedules timers';
-- Only fsm_attach creates the trigger (as the extension's owner), and the
-- trigger runs only where harden.fsm_attached records it.
REVOKE ALL ON FUNCTION harden.fsm_enforce() FROM PUBLIC;

CREATE TABLE harden.fsm_attached (
    relid       regclass NOT NULL,
    machine     text NOT NULL,
    attached_at timestamptz NOT NULL DEFAULT now(),
    attached_by regrole NOT NULL,
    PRIMARY KEY (relid, machine)
);
COMMENT ON TABLE harden.fsm_attached IS 'attachments made by harden.fsm_attach(); the trigger refuses to run on any other table';
SELECT pg_catalog.pg_extension_config_dump('harden.fsm_attached', '');
GRANT SELECT ON harden.fsm_attached TO PUBLIC;
CREATE TRIGGER fsm_definitions_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON harden.fsm_attached
    FOR EACH STATEMENT EXECUTE FUNCTION harden.fsm_definitions_changed();

CREATE FUNCTION harden.fsm_attach(table_name regclass, column_name name, machine text,
                                  audit boolean DEFAULT true) RETURNS void
    AS 'MODULE_PATHNAME', 'harden_fsm_attach'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION harden.fsm_attach(regclass, name, text, boolean) IS 'enforce a state machine on a text, varchar or enum column';
REVOKE ALL ON FUNCTION harden.fsm_attach(regclass, name, text, boolean) FROM PUBLIC;

CREATE FUNCTION harden.fsm_detach(table_name regclass, machine text DEFAULT NULL) RETURNS integer
    AS 'MODULE_PATHNAME', 'harden_fsm_detach'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION harden.fsm_detach(regclass, text) IS 'stop enforcing one (or every) state machine on a table; returns how many were detached';
REVOKE ALL ON FUNCTION harden.fsm_detach(regclass, text) FROM PUBLIC;

CREATE VIEW harden.fsm_attachments AS
SELECT t.tgrelid::regclass AS table_name,
       a.attname AS column_name,
       split_part(encode(t.tgargs, 'escape'), '\000', 1) AS machine,
       split_part(encode(t.tgargs, 'escape'), '\000', 2) <> 'noaudit' AS audit,
       t.tgenabled <> 'D' AS enabled
  FROM pg_catalog.pg_trigger t
  JOIN pg_catalog.pg_attribute a ON a.attrelid = t.tgrelid AND a.attnum = t.tgattr[0]
 WHERE t.tgfoid = 'harden.fsm_enforce()'::pg_catalog.regprocedure
   AND t.tgparentid = 0;
COMMENT ON VIEW harden.fsm_attachments IS 'which machine is enforced on which column';
GRANT SELECT ON harden.fsm_attachments TO PUBLIC;

-- ---------------------------------------------------------------------------
-- Events and questions
-- ---------------------------------------------------------------------------

CREATE FUNCTION harden.fsm_fire(table_name regclass, key jsonb, event text, machine text DEFAULT NULL) RETURNS text
    AS 'MODULE_PATHNAME', 'harden_fsm_fire'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION harden.fsm_fire(regclass, jsonb, text, text) IS 'move the row with this primary key along the transition its event names; returns the new state';

CREATE FUNCTION harden.fsm_can(table_name regclass, key jsonb, to_state text, machine text DEFAULT NULL) RETURNS boolean
    AS 'MODULE_PATHNAME', 'harden_fsm_can'
    LANGUAGE C STABLE PARALLEL RESTRICTED;
COMMENT ON FUNCTION harden.fsm_can(regclass, jsonb, text, text) IS 'whether the row with this primary key may move to a state now';

CREATE FUNCTION harden.fsm_next(machine text, state text) RETURNS text[]
    AS 'MODULE_PATHNAME', 'harden_fsm_next'
    LANGUAGE C STABLE PARALLEL RESTRICTED;
COMMENT ON FUNCTION harden.fsm_next(text, text) IS 'the states reachable from a state in one step (state NULL: the initial states)';

CREATE FUNCTION harden.fsm_diagram(machine text, format text DEFAULT 'mermaid') RETURNS text
    AS 'MODULE_PATHNAME', 'harden_fsm_diagram'
    LANGUAGE C STABLE PARALLEL RESTRICTED;
COMMENT ON FUNCTION harden.fsm_diagram(text, text) IS 'a machine as a Mermaid state diagram or a Graphviz dot graph';

-- ---------------------------------------------------------------------------
-- Timers, retention, counters
-- ---------------------------------------------------------------------------

CREATE FUNCTION harden.fsm_run_due(max_rows integer DEFAULT 1000,
    OUT applied bigint, OUT dropped bigint, OUT failed bigint, OUT pruned bigint)
    AS 'MODULE_PATHNAME', 'harden_fsm_run_due'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION harden.fsm_run_due(integer) IS 'apply due timed transitions, drop stale timers, prune harden.fsm_log';
REVOKE ALL ON FUNCTION harden.fsm_run_due(integer) FROM PUBLIC;

CREATE FUNCTION harden.fsm_log_prune() RETURNS bigint
    AS 'MODULE_PATHNAME', 'harden_fsm_log_prune'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION harden.fsm_log_prune() IS 'delete harden.fsm_log rows older than harden.fsm_log_retention';
REVOKE ALL ON FUNCTION harden.fsm_log_prune() FROM PUBLIC;

CREATE FUNCTION harden.fsm_stats_rows(OUT machine text, OUT transitions bigint, OUT rejections bigint)
    RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'harden_fsm_stats'
    LANGUAGE C VOLATILE PARALLEL RESTRICTED;
CREATE VIEW harden.fsm_stats AS SELECT * FROM harden.fsm_stats_rows();
COMMENT ON VIEW harden.fsm_stats IS 'per-machine transition and rejection counts of this database (empty without shared_preload_libraries)';
GRANT SELECT ON harden.fsm_stats TO PUBLIC;

-- ---------------------------------------------------------------------------
-- Shipped machines
-- ---------------------------------------------------------------------------

SELECT harden.fsm_define('order',
    'pending -> processing on pay; processing -> shipped on ship; shipped -> delivered on deliver; '
    'pending, processing -> cancelled on cancel');
SELECT harden.fsm_define('cart',
    'pending -> submitted on submit; submitted -> converted on convert; '
    'submitted -> abandoned on abandon after 24 hours');
SELECT harden.fsm_define('payment',
    'pending -> completed on complete; pending -> failed on fail; completed -> refunded on refund');
SELECT harden.fsm_define('circuit_breaker',
    'closed -> open on trip; open -> half_open on probe after 30 seconds; '
    'half_open -> closed on reset; half_open -> open on trip');
UPDATE harden.fsm_machines SET shipped = true
 WHERE machine IN ('order', 'cart', 'payment', 'circuit_breaker');


-- ---------------------------------------------------------------------------
-- Attached tables and holds.  Written only by the functions below (as the
-- extension's owner); readable by everyone, kept by pg_dump.
-- ---------------------------------------------------------------------------

CREATE TABLE harden.stock_tables (
    relid       regclass PRIMARY KEY,
    qty_column  name NOT NULL,
    key_column  name NOT NULL,
    guard       name,
    attached_at timestamptz NOT NULL DEFAULT now(),
    attached_by regrole NOT NULL
);
COMMENT ON TABLE harden.stock_tables IS 'tables attached with stock_attach; guard is the CHECK constraint stock_attach added (NULL: the table had one)';
SELECT pg_catalog.pg_extension_config_dump('harden.stock_tables', '');
GRANT SELECT ON harden.stock_tables TO PUBLIC;

CREATE TABLE harden.stock_holds (
    id          bigserial PRIMARY KEY,
    relid       regclass NOT NULL,
    ref         text,
    keys        text[] NOT NULL,
    qtys        bigint[] NOT NULL,
    status      text NOT NULL DEFAULT 'held'
                CHECK (status IN ('held', 'committed', 'released', 'expired')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    closed_at   timestamptz,
    owner       regrole NOT NULL,
    CHECK (cardinality(keys) = cardinality(qtys) AND cardinality(keys) > 0),
    CHECK ((status = 'held') = (closed_at IS NULL))
);
COMMENT ON TABLE harden.stock_holds IS 'stock reservations: the lines a hold deducted, its state and expiry';
CREATE INDEX stock_holds_due ON harden.stock_holds (expires_at) WHERE status = 'held';
CREATE INDEX stock_holds_ref ON harden.stock_holds (ref) WHERE status = 'held';
CREATE INDEX stock_holds_closed ON harden.stock_holds (closed_at) WHERE status <> 'held';
-- Held stock is missing from the stock tables: a dump must keep the holds.
SELECT pg_catalog.pg_extension_config_dump('harden.stock_holds', '');
SELECT pg_catalog.pg_extension_config_dump('harden.stock_holds_id_seq', '');

-- A dropped table takes its configuration and holds with it.
CREATE FUNCTION harden.stock_tables_dropped() RETURNS event_trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM harden.stock_tables s
     USING pg_event_trigger_dropped_objects() d
     WHERE d.classid = 'pg_class'::regclass AND d.objsubid = 0 AND s.relid = d.objid;
    DELETE FROM harden.stock_holds h
     USING pg_event_trigger_dropped_objects() d
     WHERE d.classid = 'pg_class'::regclass AND d.objsubid = 0 AND h.relid = d.objid;
END $$;
REVOKE ALL ON FUNCTION harden.stock_tables_dropped() FROM PUBLIC;
CREATE EVENT TRIGGER harden_stock_tables_dropped ON sql_drop
    EXECUTE FUNCTION harden.stock_tables_dropped();

-- ---------------------------------------------------------------------------
-- Attach / detach (admin: also needs ownership of the table)
-- ---------------------------------------------------------------------------

CREATE FUNCTION harden.stock_attach(tbl regclass, qty_column name, key_column name DEFAULT NULL)
    RETURNS void
    AS 'MODULE_PATHNAME', 'harden_stock_attach'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION harden.stock_attach(regclass, name, name) IS 'attach a stock table: quantity column, unique key column (default: the primary key); adds CHECK (qty >= 0) if absent';
REVOKE ALL ON FUNCTION harden.stock_attach(regclass, name, name) FROM PUBLIC;

CREATE FUNCTION harden.stock_detach(tbl regclass) RETURNS boolean
    AS 'MODULE_PATHNAME', 'harden_stock_detach'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION harden.stock_detach(regclass) IS 'detach a stock table and drop the guard stock_attach added; false if it was not attached';
REVOKE ALL ON FUNCTION harden.stock_detach(regclass) FROM PUBLIC;

-- ---------------------------------------------------------------------------
-- Take / put (the caller's privileges: SELECT and UPDATE on the table)
-- ---------------------------------------------------------------------------

CREATE FUNCTION harden.stock_take(tbl regclass, key anyelement, qty bigint, wait text DEFAULT 'block')
    RETURNS bigint
    AS 'MODULE_PATHNAME', 'harden_stock_take'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION harden.stock_take(regclass, anyelement, bigint, text) IS 'deduct qty from one row; returns what remains (NULL when wait => skip found it locked)';

CREATE FUNCTION harden.stock_take_many(tbl regclass, keys anyarray, qtys bigint[], wait text DEFAULT 'block')
    RETURNS bigint[]
    AS 'MODULE_PATHNAME', 'harden_stock_take_many'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION harden.stock_take_many(regclass, anyarray, bigint[], text) IS 'deduct every line or none, locking rows in key order; returns what remains per line';

CREATE FUNCTION harden.stock_put(tbl regclass, key anyelement, qty bigint) RETURNS bigint
    AS 'MODULE_PATHNAME', 'harden_stock_put'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION harden.stock_put(regclass, anyelement, bigint) IS 'add qty to one row; returns the new quantity';

-- ---------------------------------------------------------------------------
-- Reservations
-- ---------------------------------------------------------------------------

CREATE FUNCTION harden.stock_reserve(tbl regclass, keys anyarray, qtys bigint[], ttl interval,
                                     ref text DEFAULT NULL, wait text DEFAULT 'block')
    RETURNS bigint
    AS 'MODULE_PATHNAME', 'harden_stock_reserve'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION harden.stock_reserve(regclass, anyarray, bigint[], interval, text, text) IS 'deduct every line now and hold it for ttl; returns the reservation id';

CREATE FUNCTION harden.stock_commit(id bigint) RETURNS boolean
    AS 'MODULE_PATHNAME', 'harden_stock_commit'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION harden.stock_commit(bigint) IS 'make a reservation final; false if it already was';

CREATE FUNCTION harden.stock_release(id bigint) RETURNS boolean
    AS 'MODULE_PATHNAME', 'harden_stock_release'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION harden.stock_release(bigint) IS 'give a held reservation''s stock back; false if it was not held';

CREATE FUNCTION harden.stock_release_ref(ref text) RETURNS integer
    AS 'MODULE_PATHNAME', 'harden_stock_release_ref'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION harden.stock_release_ref(text) IS 'give back every held reservation with this ref; returns how many';

CREATE FUNCTION harden.stock_run_due(max_holds integer DEFAULT 1000) RETURNS integer
    AS 'MODULE_PATHNAME', 'harden_stock_run_due'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION harden.stock_run_due(integer) IS 'give back expired reservations (skipping locked ones) and purge old finished ones; returns how many expired';
REVOKE ALL ON FUNCTION harden.stock_run_due(integer) FROM PUBLIC;

CREATE VIEW harden.stock_reservations AS
SELECT h.id, h.relid AS "table", h.ref, h.status, h.keys, h.qtys,
       (SELECT sum(q) FROM unnest(h.qtys) AS q)::bigint AS units,
       h.created_at, h.expires_at,
       CASE WHEN h.status = 'held' THEN greatest(h.expires_at - clock_timestamp(), interval '0') END AS ttl,
       h.closed_at, h.owner
  FROM harden.stock_holds h
 WHERE has_table_privilege(h.relid, 'SELECT');
COMMENT ON VIEW harden.stock_reservations IS 'reservations on the stock tables the caller may read';
GRANT SELECT ON harden.stock_reservations TO PUBLIC;

-- ---------------------------------------------------------------------------
-- Background worker: status of the per-database workers
-- ---------------------------------------------------------------------------

CREATE FUNCTION harden.worker_status_rows(
        OUT database name, OUT pid integer, OUT state text,
        OUT started_at timestamptz, OUT last_run timestamptz,
        OUT runs bigint, OUT transitions bigint, OUT holds_released bigint,
        OUT errors bigint, OUT last_error text, OUT last_error_at timestamptz,
        OUT next_start timestamptz)
    RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'harden_worker_status'
    LANGUAGE C VOLATILE PARALLEL RESTRICTED;
CREATE VIEW harden.worker_status AS SELECT * FROM harden.worker_status_rows();
COMMENT ON VIEW harden.worker_status IS 'the background worker of every database the launcher knows; other databases'' errors only for pg_read_all_stats';
GRANT SELECT ON harden.worker_status TO PUBLIC;
