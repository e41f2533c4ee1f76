-- pg_harden, the full script of the newest version (default_version in
-- pg_harden.control).  This is the one place to edit it: the build copies it
-- to pg_harden--<default_version>.sql, which CREATE EXTENSION runs.  Every
-- change here also goes into the newest upgrade script, and test/upgrade.sh
-- fails when an upgrade through the frozen chain and a fresh install from
-- this script differ.
\echo Use "CREATE EXTENSION pg_harden" to load this file. \quit

-- ---------------------------------------------------------------------------
-- Core: version and metrics
-- ---------------------------------------------------------------------------

CREATE FUNCTION harden.version() RETURNS text
    AS 'MODULE_PATHNAME', 'harden_version'
    LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION harden.version() IS 'pg_harden library version';

CREATE FUNCTION harden.metrics() RETURNS text
    AS 'MODULE_PATHNAME', 'harden_metrics'
    LANGUAGE C VOLATILE PARALLEL SAFE;
COMMENT ON FUNCTION harden.metrics() IS 'every pg_harden counter and gauge in Prometheus text exposition format';

CREATE FUNCTION harden.metrics_json() RETURNS jsonb
    AS 'MODULE_PATHNAME', 'harden_metrics_json'
    LANGUAGE C VOLATILE PARALLEL SAFE;
COMMENT ON FUNCTION harden.metrics_json() IS 'every pg_harden counter and gauge as jsonb';

CREATE FUNCTION harden.metrics_reset() RETURNS void
    AS 'MODULE_PATHNAME', 'harden_metrics_reset'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION harden.metrics_reset() IS 'zero the current database''s pg_harden counters';
REVOKE ALL ON FUNCTION harden.metrics_reset() FROM PUBLIC;

-- One row per series, for SQL exporters (prometheus/pg_harden.yaml).
CREATE VIEW harden.metric_rows AS
SELECT f.key AS name,
       f.value ->> 'type' AS type,
       s.value -> 'labels' AS labels,
       (s.value ->> 'value')::double precision AS value,
       f.value ->> 'help' AS help
  FROM pg_catalog.jsonb_each(harden.metrics_json() -> 'metrics') f,
       pg_catalog.jsonb_array_elements(f.value -> 'samples') s;
COMMENT ON VIEW harden.metric_rows IS 'every series of harden.metrics(), one row each: family name, type, labels, value, help';
GRANT SELECT ON harden.metric_rows TO PUBLIC;

-- ---------------------------------------------------------------------------
-- TTL policies: key prefix -> default TTL, max TTL, secure
-- ---------------------------------------------------------------------------

CREATE TABLE harden.cache_policies (
    prefix      text PRIMARY KEY
                CHECK (prefix ~ '^[A-Za-z0-9:_.-]{0,250}$'),
    default_ttl interval CHECK (default_ttl > interval '0'),
    max_ttl     interval CHECK (max_ttl > interval '0'),
    secure      boolean NOT NULL DEFAULT false,
    CHECK (default_ttl <= max_ttl)
);
COMMENT ON TABLE harden.cache_policies IS 'cache TTL policies: the longest matching key prefix applies on cache_set';
SELECT pg_catalog.pg_extension_config_dump('harden.cache_policies', '');
GRANT SELECT ON harden.cache_policies TO PUBLIC;

CREATE FUNCTION harden.cache_policies_changed() RETURNS trigger
    AS 'MODULE_PATHNAME', 'harden_cache_policies_changed'
    LANGUAGE C;
CREATE TRIGGER cache_policies_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON harden.cache_policies
    FOR EACH STATEMENT EXECUTE FUNCTION harden.cache_policies_changed();

-- ---------------------------------------------------------------------------
-- Set / get / delete
-- ---------------------------------------------------------------------------

CREATE FUNCTION harden.cache_set(key text, value jsonb, ttl interval DEFAULT NULL,
                                 tags text[] DEFAULT '{}', secure boolean DEFAULT false,
                                 public boolean DEFAULT false) RETURNS void
    AS 'MODULE_PATHNAME', 'harden_cache_set_jsonb'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
CREATE FUNCTION harden.cache_set(key text, value text, ttl interval DEFAULT NULL,
                                 tags text[] DEFAULT '{}', secure boolean DEFAULT false,
                                 public boolean DEFAULT false) RETURNS void
    AS 'MODULE_PATHNAME', 'harden_cache_set_text'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
CREATE FUNCTION harden.cache_set(key text, value bytea, ttl interval DEFAULT NULL,
                                 tags text[] DEFAULT '{}', secure boolean DEFAULT false,
                                 public boolean DEFAULT false) RETURNS void
    AS 'MODULE_PATHNAME', 'harden_cache_set_bytea'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION harden.cache_set(text, jsonb, interval, text[], boolean, boolean) IS 'store a jsonb value in the cache';
COMMENT ON FUNCTION harden.cache_set(text, text, interval, text[], boolean, boolean) IS 'store a text value in the cache';
COMMENT ON FUNCTION harden.cache_set(text, bytea, interval, text[], boolean, boolean) IS 'store a bytea value in the cache';

CREATE FUNCTION harden.cache_get(key text) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'harden_cache_get'
    LANGUAGE C VOLATILE PARALLEL RESTRICTED;
CREATE FUNCTION harden.cache_get_text(key text) RETURNS text
    AS 'MODULE_PATHNAME', 'harden_cache_get_text'
    LANGUAGE C VOLATILE PARALLEL RESTRICTED;
CREATE FUNCTION harden.cache_get_bytea(key text) RETURNS bytea
    AS 'MODULE_PATHNAME', 'harden_cache_get_bytea'
    LANGUAGE C VOLATILE PARALLEL RESTRICTED;
COMMENT ON FUNCTION harden.cache_get(text) IS 'the jsonb value cached under a key, or NULL';
COMMENT ON FUNCTION harden.cache_get_text(text) IS 'the text value cached under a key, or NULL';
COMMENT ON FUNCTION harden.cache_get_bytea(text) IS 'the bytea value cached under a key, or NULL';

CREATE FUNCTION harden.cache_exists(key text) RETURNS boolean
    AS 'MODULE_PATHNAME', 'harden_cache_exists'
    LANGUAGE C VOLATILE PARALLEL RESTRICTED;
COMMENT ON FUNCTION harden.cache_exists(text) IS 'whether a live entry the caller may read exists under a key';

CREATE FUNCTION harden.cache_ttl(key text) RETURNS interval
    AS 'MODULE_PATHNAME', 'harden_cache_ttl'
    LANGUAGE C VOLATILE PARALLEL RESTRICTED;
COMMENT ON FUNCTION harden.cache_ttl(text) IS 'time left before an entry expires; NULL if missing or without expiry';

CREATE FUNCTION harden.cache_delete(key text) RETURNS boolean
    AS 'MODULE_PATHNAME', 'harden_cache_delete'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION harden.cache_delete(text) IS 'delete one cache entry; true if it existed';

-- ---------------------------------------------------------------------------
-- Invalidation
-- ---------------------------------------------------------------------------

CREATE FUNCTION harden.cache_invalidate_tag(tag text) RETURNS bigint
    AS 'MODULE_PATHNAME', 'harden_cache_invalidate_tag'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION harden.cache_invalidate_tag(text) IS 'delete the entries carrying a tag that the caller may modify';

CREATE FUNCTION harden.cache_invalidate(pattern text) RETURNS bigint
    AS 'MODULE_PATHNAME', 'harden_cache_invalidate'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION harden.cache_invalidate(text) IS 'delete every entry of this database whose key matches a glob (* and ?)';
REVOKE ALL ON FUNCTION harden.cache_invalidate(text) FROM PUBLIC;

CREATE FUNCTION harden.cache_flush() RETURNS bigint
    AS 'MODULE_PATHNAME', 'harden_cache_flush'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION harden.cache_flush() IS 'delete every cache entry of this database';
REVOKE ALL ON FUNCTION harden.cache_flush() FROM PUBLIC;

CREATE FUNCTION harden.cache_flush_secure() RETURNS bigint
    AS 'MODULE_PATHNAME', 'harden_cache_flush_secure'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION harden.cache_flush_secure() IS 'delete every secure cache entry of this database';
REVOKE ALL ON FUNCTION harden.cache_flush_secure() FROM PUBLIC;

CREATE FUNCTION harden.cache_sweep() RETURNS bigint
    AS 'MODULE_PATHNAME', 'harden_cache_sweep'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION harden.cache_sweep() IS 'free expired cache entries of every database now';
REVOKE ALL ON FUNCTION harden.cache_sweep() FROM PUBLIC;

-- ---------------------------------------------------------------------------
-- Views
-- ---------------------------------------------------------------------------

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

CREATE FUNCTION harden.cache_stats_reset() RETURNS void
    AS 'MODULE_PATHNAME', 'harden_cache_stats_reset'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION harden.cache_stats_reset() IS 'zero this database''s cache counters';
REVOKE ALL ON FUNCTION harden.cache_stats_reset() FROM PUBLIC;

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
SELECT pg_catalog.pg_extension_config_dump('harden.fsm_due',
    'WHERE relid <> ''harden.breaker_states''::pg_catalog.regclass');
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
-- Not the extension's own attachment of harden.breaker_states (CREATE
-- EXTENSION makes it), nor that table's timers: a restore would duplicate them.
SELECT pg_catalog.pg_extension_config_dump('harden.fsm_attached',
    'WHERE relid <> ''harden.breaker_states''::pg_catalog.regclass');
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
       t.tgenabled <> 'D' AS enabled,
       f.attached_at,
       f.attached_by
  FROM pg_catalog.pg_trigger t
  JOIN pg_catalog.pg_attribute a ON a.attrelid = t.tgrelid AND a.attnum = t.tgattr[0]
  LEFT JOIN harden.fsm_attached f
    ON f.relid = t.tgrelid AND f.machine = split_part(encode(t.tgargs, 'escape'), '\000', 1)
 WHERE t.tgfoid = 'harden.fsm_enforce()'::pg_catalog.regprocedure
   AND t.tgparentid = 0;
COMMENT ON VIEW harden.fsm_attachments IS 'which machine is enforced on which column, since when and by whom';
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
    attempts    integer NOT NULL DEFAULT 0,
    last_error  text,
    CHECK (cardinality(keys) = cardinality(qtys) AND cardinality(keys) > 0),
    CHECK ((status = 'held') = (closed_at IS NULL))
);
COMMENT ON TABLE harden.stock_holds IS 'stock reservations: the lines a hold deducted, its state and expiry; attempts and last_error: failed expiries';
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

-- A dropped table takes its attachments and timers with it (its audit rows
-- stay: they name the table as text); else their regclass would dangle, and
-- a dump would restore the bare OID, naming whatever table gets it later.
CREATE FUNCTION harden.fsm_tables_dropped() RETURNS event_trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM harden.fsm_attached a
     USING pg_event_trigger_dropped_objects() d
     WHERE d.classid = 'pg_class'::regclass AND d.objsubid = 0 AND a.relid = d.objid;
    DELETE FROM harden.fsm_due t
     USING pg_event_trigger_dropped_objects() d
     WHERE d.classid = 'pg_class'::regclass AND d.objsubid = 0 AND t.relid = d.objid;
END $$;
REVOKE ALL ON FUNCTION harden.fsm_tables_dropped() FROM PUBLIC;
CREATE EVENT TRIGGER harden_fsm_tables_dropped ON sql_drop
    EXECUTE FUNCTION harden.fsm_tables_dropped();

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

-- security_barrier: the caller's own conditions run after the privilege
-- filter, so a leaky function cannot see holds on tables it may not read.
CREATE VIEW harden.stock_reservations WITH (security_barrier) AS
SELECT h.id, h.relid AS "table", h.ref, h.status, h.keys, h.qtys,
       (SELECT sum(q) FROM unnest(h.qtys) AS q)::bigint AS units,
       h.created_at, h.expires_at,
       CASE WHEN h.status = 'held' THEN greatest(h.expires_at - clock_timestamp(), interval '0') END AS ttl,
       h.closed_at, h.owner, h.attempts, h.last_error
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

-- ===========================================================================
-- Query analysis: index, size, bloat, vacuum and activity views,
-- query_check() and health_report().  The views read the catalogs and the
-- statistics views only; they cover the relations of user schemas that no
-- extension owns.
-- ===========================================================================

CREATE VIEW harden._relations AS
SELECT c.oid AS relid, n.nspname, c.relname, c.relkind, c.relispartition,
       c.reltuples, c.relpages, c.reloptions, c.reltoastrelid
  FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p', 'm')
   AND n.nspname <> ALL (ARRAY['pg_catalog', 'information_schema'])
   AND n.nspname !~ '^pg_(toast|temp_)'
   AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend d
                    WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                      AND d.objid = c.oid AND d.deptype = 'e');
COMMENT ON VIEW harden._relations IS 'tables, partitioned tables and materialized views the analysis views look at';

-- A relation's name, quoted and schema-qualified whatever the search_path.
CREATE FUNCTION harden._qualified(rel pg_catalog.oid) RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT pg_catalog.format('%I.%I', n.nspname, c.relname)
      FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid = rel;
END;

CREATE FUNCTION harden._index_same_expr(a pg_catalog.oid, b pg_catalog.oid) RETURNS boolean
    AS 'MODULE_PATHNAME', 'harden_index_same_expr'
    LANGUAGE C STABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION harden._index_same_expr(pg_catalog.oid, pg_catalog.oid) IS 'true when index a''s expressions are the leading expressions of index b and their predicates are equal, compared as trees';

-- ---------------------------------------------------------------------------
-- Indexes
-- ---------------------------------------------------------------------------

CREATE VIEW harden.unused_indexes AS
WITH leaf AS (
    SELECT CASE WHEN ic.relispartition THEN pg_catalog.pg_partition_root(s.indexrelid)
                ELSE s.indexrelid END AS indexrelid,
           s.indexrelid AS leaf, s.idx_scan
      FROM pg_catalog.pg_stat_all_indexes s
      JOIN pg_catalog.pg_class ic ON ic.oid = s.indexrelid
), per_index AS (
    SELECT indexrelid, pg_catalog.sum(idx_scan)::bigint AS idx_scan, pg_catalog.array_agg(leaf) AS leaves
      FROM leaf GROUP BY indexrelid
), db AS (
    SELECT d.stats_reset FROM pg_catalog.pg_stat_database d
     WHERE d.datname = pg_catalog.current_database()
), unused AS (
    -- never one that enforces something (unique, primary key, exclusion,
    -- any constraint), the replica identity, or an invalid one
    SELECT p.indexrelid, p.idx_scan, p.leaves, i.indrelid, i.indexprs, c.relkind
      FROM per_index p
      JOIN pg_catalog.pg_index i ON i.indexrelid = p.indexrelid
      JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
      JOIN harden._relations r ON r.relid = i.indrelid
     WHERE p.idx_scan = 0
       AND NOT (i.indisunique OR i.indisprimary OR i.indisexclusion OR i.indisreplident)
       AND i.indisvalid
       -- (a hashed subplan: pg_constraint has no index on conindid)
       AND i.indexrelid NOT IN (SELECT k.conindid FROM pg_catalog.pg_constraint k WHERE k.conindid <> 0)
)
SELECT u.indrelid::pg_catalog.regclass AS "table", u.indexrelid::pg_catalog.regclass AS index,
       b.bytes AS index_bytes, pg_catalog.pg_size_pretty(b.bytes) AS index_size,
       u.idx_scan, db.stats_reset, pg_catalog.pg_is_in_recovery() AS standby,
       CASE WHEN pg_catalog.pg_is_in_recovery() THEN 'low'
            WHEN db.stats_reset > pg_catalog.now() - interval '7 days' THEN 'low'
            WHEN db.stats_reset IS NULL THEN 'medium'
            ELSE 'high' END AS confidence,
       CASE WHEN u.indexprs IS NOT NULL
            THEN 'expression index: the planner may use the statistics ANALYZE keeps on its expressions' END AS note,
       pg_catalog.format('DROP INDEX %s%s;', CASE WHEN u.relkind = 'i' THEN 'CONCURRENTLY ' ELSE '' END,
                         harden._qualified(u.indexrelid)) AS drop_sql
  FROM unused u
 CROSS JOIN db
 CROSS JOIN LATERAL (SELECT pg_catalog.sum(pg_catalog.pg_relation_size(l))::bigint AS bytes
                       FROM pg_catalog.unnest(u.leaves) AS l) b;
COMMENT ON VIEW harden.unused_indexes IS 'indexes never scanned since statistics were reset (partitioned indexes summed over their partitions); never unique, primary key, constraint, replica-identity or invalid ones';

CREATE VIEW harden.duplicate_indexes AS
WITH idx AS (
    SELECT i.indexrelid, i.indrelid, c.relam, i.indnkeyatts, i.indexprs, i.indpred,
           (i.indkey)[0:i.indnkeyatts - 1] AS keys,
           (i.indkey)[i.indnkeyatts:i.indnatts - 1] AS include,
           (i.indclass)[0:i.indnkeyatts - 1] AS opclasses,
           (i.indcollation)[0:i.indnkeyatts - 1] AS collations,
           (i.indoption)[0:i.indnkeyatts - 1] AS options,
           -- never drop one that enforces something or is the replica
           -- identity; a partition's index goes with its parent's
           NOT (i.indisunique OR i.indisprimary OR i.indisexclusion OR i.indisreplident
                OR c.relispartition
                OR i.indexrelid IN (SELECT k.conindid FROM pg_catalog.pg_constraint k WHERE k.conindid <> 0))
               AS droppable
      FROM pg_catalog.pg_index i
      JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
      JOIN harden._relations r ON r.relid = i.indrelid
     WHERE i.indisvalid AND i.indisready AND i.indislive
), pairs AS (
    SELECT d.indexrelid AS drop_index, k.indexrelid AS keep_index, d.indrelid,
           d.indnkeyatts = k.indnkeyatts AND d.include <@ k.include AND k.include <@ d.include AS exact
      FROM idx d
      JOIN idx k ON k.indrelid = d.indrelid AND k.indexrelid <> d.indexrelid AND k.relam = d.relam
     WHERE d.droppable
       AND d.indnkeyatts <= k.indnkeyatts
       AND (d.indnkeyatts = k.indnkeyatts
            OR d.relam = (SELECT oid FROM pg_catalog.pg_am WHERE amname = 'btree'))
       AND k.keys[1:d.indnkeyatts] = d.keys
       AND k.opclasses[1:d.indnkeyatts] = d.opclasses
       AND k.collations[1:d.indnkeyatts] = d.collations
       AND k.options[1:d.indnkeyatts] = d.options
       AND d.include <@ (k.keys || k.include)
       AND ((d.indexprs IS NULL AND d.indpred IS NULL AND k.indpred IS NULL)
            OR harden._index_same_expr(d.indexrelid, k.indexrelid))
       -- operator-class options (a trigram index's signature length, say)
       AND NOT EXISTS (SELECT FROM pg_catalog.pg_attribute ad
                         JOIN pg_catalog.pg_attribute ak ON ak.attrelid = k.indexrelid AND ak.attnum = ad.attnum
                        WHERE ad.attrelid = d.indexrelid AND ad.attnum <= d.indnkeyatts
                          AND ad.attoptions IS DISTINCT FROM ak.attoptions)
       -- of two interchangeable indexes, only the newer one is reported
       AND NOT (k.droppable AND d.indnkeyatts = k.indnkeyatts
                AND k.include <@ (d.keys || d.include) AND d.indexrelid < k.indexrelid)
)
SELECT DISTINCT ON (p.drop_index)
       p.indrelid::pg_catalog.regclass AS "table", p.drop_index::pg_catalog.regclass AS index,
       p.keep_index::pg_catalog.regclass AS covered_by,
       CASE WHEN p.exact THEN 'exact' ELSE 'prefix' END AS kind,
       CASE WHEN c.relkind = 'I'
            THEN (SELECT pg_catalog.sum(pg_catalog.pg_relation_size(t.relid))
                    FROM pg_catalog.pg_partition_tree(p.drop_index) t WHERE t.isleaf)
            ELSE pg_catalog.pg_relation_size(p.drop_index) END::bigint AS index_bytes,
       pg_catalog.format('DROP INDEX %s%s;',
                         CASE WHEN c.relkind = 'i' THEN 'CONCURRENTLY ' ELSE '' END,
                         harden._qualified(p.drop_index)) AS drop_sql
  FROM pairs p JOIN pg_catalog.pg_class c ON c.oid = p.drop_index
 ORDER BY p.drop_index, p.exact DESC, p.keep_index;
COMMENT ON VIEW harden.duplicate_indexes IS 'indexes whose every use another valid index serves: same method, key columns (or a btree prefix of them), operator classes, collations, sort options, expressions and predicate; INCLUDE columns covered';

CREATE VIEW harden.missing_fk_indexes AS
WITH fk AS (
    SELECT con.conname, con.conrelid, con.confrelid, con.conkey, r.relispartition,
           greatest(r.reltuples, 0) AS reltuples
      FROM pg_catalog.pg_constraint con
      JOIN harden._relations r ON r.relid = con.conrelid
      LEFT JOIN pg_catalog.pg_constraint parent ON parent.oid = con.conparentid
     WHERE con.contype = 'f' AND r.relkind = 'r'
       -- a partitioned referenced table adds one row per referenced partition
       AND (parent.oid IS NULL OR parent.conrelid <> con.conrelid)
       AND NOT EXISTS (
           SELECT FROM pg_catalog.pg_index i
             JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
             JOIN pg_catalog.pg_am am ON am.oid = ic.relam
            WHERE i.indrelid = con.conrelid AND am.amname = 'btree'
              AND i.indisvalid AND i.indpred IS NULL
              AND i.indnkeyatts >= pg_catalog.cardinality(con.conkey)
              AND (SELECT pg_catalog.array_agg(k ORDER BY k)
                     FROM pg_catalog.unnest((i.indkey)[0:pg_catalog.cardinality(con.conkey) - 1]) AS k)
                = (SELECT pg_catalog.array_agg(k ORDER BY k) FROM pg_catalog.unnest(con.conkey) AS k))
), named AS (
    SELECT CASE WHEN fk.relispartition THEN pg_catalog.pg_partition_root(fk.conrelid)
                ELSE fk.conrelid END AS root,
           coalesce(pg_catalog.pg_partition_root(fk.confrelid), fk.confrelid) AS referenced,
           fk.conname, fk.relispartition, fk.reltuples,
           ARRAY(SELECT a.attname FROM pg_catalog.unnest(fk.conkey) WITH ORDINALITY AS u(attnum, ord)
                   JOIN pg_catalog.pg_attribute a ON a.attrelid = fk.conrelid AND a.attnum = u.attnum
                  ORDER BY u.ord) AS columns
      FROM fk
)
SELECT root::pg_catalog.regclass AS "table", conname AS constraint_name, columns,
       referenced::pg_catalog.regclass AS referenced,
       CASE WHEN pg_catalog.bool_or(relispartition) THEN pg_catalog.count(*) END::integer AS partitions,
       pg_catalog.sum(reltuples)::bigint AS rows,
       pg_catalog.format('CREATE INDEX ON %s (%s);', harden._qualified(root),
                         (SELECT pg_catalog.string_agg(pg_catalog.quote_ident(c), ', ') FROM pg_catalog.unnest(columns) AS c))
           AS create_sql
  FROM named
 GROUP BY root, referenced, conname, columns;
COMMENT ON VIEW harden.missing_fk_indexes IS 'foreign keys no index serves: no valid, non-partial btree whose leading key columns are the key''s columns in any order; partitions are checked one by one and reported under their root with the number lacking one';

CREATE VIEW harden.invalid_indexes AS
SELECT i.indrelid::pg_catalog.regclass AS "table", i.indexrelid::pg_catalog.regclass AS index,
       pg_catalog.pg_relation_size(i.indexrelid) AS index_bytes,
       EXISTS (SELECT FROM pg_catalog.pg_stat_progress_create_index p
                WHERE p.index_relid = i.indexrelid) AS building,
       pg_catalog.format('REINDEX INDEX %s%s;', CASE WHEN c.relkind = 'i' THEN 'CONCURRENTLY ' ELSE '' END,
                         harden._qualified(i.indexrelid)) AS fix_sql
  FROM pg_catalog.pg_index i
  JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
  JOIN harden._relations r ON r.relid = i.indrelid
 WHERE NOT i.indisvalid;
COMMENT ON VIEW harden.invalid_indexes IS 'indexes left invalid by a failed CREATE INDEX CONCURRENTLY (building: one is running now), or partitioned indexes missing on a partition';

-- ---------------------------------------------------------------------------
-- Sizes and bloat
-- ---------------------------------------------------------------------------

CREATE VIEW harden.table_sizes AS
WITH sized AS (
    SELECT r.relid, r.relkind,
           CASE WHEN r.relkind = 'p'
                THEN (SELECT pg_catalog.sum(greatest(c.reltuples, 0))
                        FROM pg_catalog.pg_partition_tree(r.relid) t
                        JOIN pg_catalog.pg_class c ON c.oid = t.relid WHERE t.isleaf)
                ELSE greatest(r.reltuples, 0) END AS rows,
           CASE WHEN r.relkind = 'p'
                THEN (SELECT pg_catalog.sum(pg_catalog.pg_total_relation_size(t.relid))
                        FROM pg_catalog.pg_partition_tree(r.relid) t WHERE t.isleaf)
                ELSE pg_catalog.pg_total_relation_size(r.relid) END AS total,
           CASE WHEN r.relkind = 'p'
                THEN (SELECT pg_catalog.sum(pg_catalog.pg_indexes_size(t.relid))
                        FROM pg_catalog.pg_partition_tree(r.relid) t WHERE t.isleaf)
                ELSE pg_catalog.pg_indexes_size(r.relid) END AS indexes,
           CASE WHEN r.relkind = 'p'
                THEN (SELECT pg_catalog.sum(pg_catalog.pg_total_relation_size(c.reltoastrelid))
                        FROM pg_catalog.pg_partition_tree(r.relid) t
                        JOIN pg_catalog.pg_class c ON c.oid = t.relid WHERE t.isleaf AND c.reltoastrelid <> 0)
                WHEN r.reltoastrelid <> 0 THEN pg_catalog.pg_total_relation_size(r.reltoastrelid)
                END AS toast
      FROM harden._relations r
)
SELECT relid::pg_catalog.regclass AS "table",
       CASE relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'partitioned table' ELSE 'materialized view' END AS kind,
       rows::bigint AS rows,
       coalesce(total, 0)::bigint AS total_bytes,
       (coalesce(total, 0) - coalesce(indexes, 0) - coalesce(toast, 0))::bigint AS table_bytes,
       coalesce(indexes, 0)::bigint AS index_bytes,
       coalesce(toast, 0)::bigint AS toast_bytes,
       pg_catalog.pg_size_pretty(coalesce(total, 0)::bigint) AS total_size
  FROM sized;
COMMENT ON VIEW harden.table_sizes IS 'size of each table with its indexes and TOAST; a partitioned table sums its partitions';

CREATE VIEW harden.index_sizes AS
SELECT i.indrelid::pg_catalog.regclass AS "table", i.indexrelid::pg_catalog.regclass AS index,
       b.bytes, pg_catalog.pg_size_pretty(b.bytes) AS size, s.idx_scan,
       i.indisunique AS is_unique, i.indisprimary AS is_primary, i.indisvalid AS is_valid
  FROM pg_catalog.pg_index i
  JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
  JOIN harden._relations r ON r.relid = i.indrelid
  LEFT JOIN pg_catalog.pg_stat_all_indexes s ON s.indexrelid = i.indexrelid
 CROSS JOIN LATERAL (
    SELECT CASE WHEN c.relkind = 'I'
                THEN (SELECT pg_catalog.sum(pg_catalog.pg_relation_size(t.relid))
                        FROM pg_catalog.pg_partition_tree(i.indexrelid) t WHERE t.isleaf)
                ELSE pg_catalog.pg_relation_size(i.indexrelid) END::bigint AS bytes) b;
COMMENT ON VIEW harden.index_sizes IS 'size and scans of each index; a partitioned index sums its partitions (and has no scan count of its own)';

-- Estimated from pg_class and the column widths ANALYZE recorded, without
-- reading the relations: fast on any catalog, approximate by nature.
-- Relations with a column ANALYZE has not seen are left out rather than
-- guessed.
CREATE VIEW harden.bloat AS
WITH consts AS (
    SELECT pg_catalog.current_setting('block_size')::numeric AS bs
), tables AS (
    SELECT r.relid, r.relpages, r.reltuples,
           coalesce((SELECT o.option_value::numeric FROM pg_catalog.pg_options_to_table(r.reloptions) o
                                 WHERE o.option_name = 'fillfactor'), 100) AS fillfactor,
           w.width, w.ncols,
           (SELECT pg_catalog.count(*) FROM pg_catalog.pg_attribute a
             WHERE a.attrelid = r.relid AND a.attnum > 0 AND NOT a.attisdropped) AS natts
      FROM harden._relations r
      JOIN (SELECT s.starelid, pg_catalog.sum(s.stawidth * (1 - s.stanullfrac)) AS width,
                   pg_catalog.count(*) AS ncols
              FROM pg_catalog.pg_statistic s WHERE NOT s.stainherit
             GROUP BY s.starelid) w ON w.starelid = r.relid
     WHERE r.relkind IN ('r', 'm') AND r.relpages > 0 AND r.reltuples >= 0
), table_est AS (
    SELECT t.relid, NULL::pg_catalog.oid AS indexrelid, t.relpages,
           -- tuple header (with null bitmap), data, line pointer
           pg_catalog.ceil(t.reltuples * (8 * pg_catalog.ceil((23 + pg_catalog.ceil(t.natts / 8.0)) / 8) + t.width + 4)
                           / ((c.bs - 24) * t.fillfactor / 100))::numeric AS expected_pages
      FROM tables t, consts c
     WHERE t.ncols >= t.natts
), indexes AS (
    SELECT i.indexrelid, i.indrelid, ic.relpages, ic.reltuples,
           coalesce((SELECT o.option_value::numeric FROM pg_catalog.pg_options_to_table(ic.reloptions) o
                                 WHERE o.option_name = 'fillfactor'), 90) AS fillfactor,
           w.width, w.analysed
      FROM pg_catalog.pg_index i
      JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
      JOIN pg_catalog.pg_am am ON am.oid = ic.relam AND am.amname = 'btree'
      JOIN harden._relations r ON r.relid = i.indrelid AND r.relkind IN ('r', 'm')
     CROSS JOIN LATERAL (
        SELECT pg_catalog.sum(s.stawidth * (1 - s.stanullfrac)) AS width,
               pg_catalog.count(s.stawidth) = pg_catalog.count(*) AS analysed
          FROM pg_catalog.unnest(i.indkey) AS k(attnum)
          LEFT JOIN pg_catalog.pg_statistic s
                 ON s.starelid = i.indrelid AND s.staattnum = k.attnum AND NOT s.stainherit) w
     WHERE ic.relpages > 1 AND ic.reltuples >= 0 AND i.indexprs IS NULL AND i.indisvalid
), index_est AS (
    -- index tuple header, data, line pointer; plus the metapage and ~1% upper levels
    SELECT x.indrelid AS relid, x.indexrelid, x.relpages,
           1 + pg_catalog.ceil(1.01 * x.reltuples * (8 * pg_catalog.ceil((8 + x.width) / 8) + 4)
                               / ((c.bs - 24 - 16) * x.fillfactor / 100))::numeric AS expected_pages
      FROM indexes x, consts c
     WHERE x.analysed
), est AS (
    SELECT * FROM table_est UNION ALL SELECT * FROM index_est
)
SELECT CASE WHEN e.indexrelid IS NULL THEN 'table' ELSE 'index' END AS kind,
       e.relid::pg_catalog.regclass AS "table", e.indexrelid::pg_catalog.regclass AS index,
       (e.relpages * c.bs)::bigint AS bytes,
       (least(e.expected_pages, e.relpages) * c.bs)::bigint AS expected_bytes,
       (greatest(e.relpages - e.expected_pages, 0) * c.bs)::bigint AS bloat_bytes,
       pg_catalog.round(greatest(e.relpages - e.expected_pages, 0) / e.relpages, 3) AS bloat_ratio
  FROM est e, consts c;
COMMENT ON VIEW harden.bloat IS 'estimated wasted space of tables and btree indexes (from pg_class and ANALYZE''s column widths, without reading them); needs ANALYZE';

-- ---------------------------------------------------------------------------
-- Scans and cache
-- ---------------------------------------------------------------------------

CREATE VIEW harden.seq_scan_tables AS
SELECT s.relid::pg_catalog.regclass AS "table", greatest(r.reltuples, 0)::bigint AS rows,
       s.seq_scan, s.seq_tup_read, (s.seq_tup_read / s.seq_scan)::bigint AS rows_per_scan,
       s.idx_scan,
       pg_catalog.round(s.seq_scan::numeric / (s.seq_scan + coalesce(s.idx_scan, 0)), 3) AS seq_scan_share
  FROM pg_catalog.pg_stat_all_tables s
  JOIN harden._relations r ON r.relid = s.relid
 WHERE s.seq_scan > 0;
COMMENT ON VIEW harden.seq_scan_tables IS 'tables read by sequential scans, with how many rows each scan read on average';

CREATE VIEW harden.cache_hit_ratio AS
SELECT 'table' AS kind, pg_catalog.sum(heap_blks_hit)::bigint AS hits, pg_catalog.sum(heap_blks_read)::bigint AS reads,
       pg_catalog.round(pg_catalog.sum(heap_blks_hit) / nullif(pg_catalog.sum(heap_blks_hit + heap_blks_read), 0), 4) AS ratio
  FROM pg_catalog.pg_statio_user_tables
UNION ALL
SELECT 'index', pg_catalog.sum(idx_blks_hit)::bigint, pg_catalog.sum(idx_blks_read)::bigint,
       pg_catalog.round(pg_catalog.sum(idx_blks_hit) / nullif(pg_catalog.sum(idx_blks_hit + idx_blks_read), 0), 4)
  FROM pg_catalog.pg_statio_user_indexes;
COMMENT ON VIEW harden.cache_hit_ratio IS 'share of table and index block reads served from shared buffers in this database';

-- ---------------------------------------------------------------------------
-- Queries and locks
-- ---------------------------------------------------------------------------

-- pg_stat_statements is optional: without it (or when it is installed but
-- not preloaded, or of a version without these columns) there are no rows.
CREATE FUNCTION harden.slow_queries_rows(
    OUT queryid bigint, OUT query text, OUT calls bigint, OUT total_ms double precision,
    OUT mean_ms double precision, OUT rows bigint, OUT share double precision)
    RETURNS SETOF record
    LANGUAGE plpgsql STABLE PARALLEL RESTRICTED
    SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    nsp name;
BEGIN
    SELECT n.nspname INTO nsp
      FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
     WHERE e.extname = 'pg_stat_statements';
    IF nsp IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY EXECUTE format(
        'SELECT s.queryid, s.query, s.calls, s.total_exec_time, s.mean_exec_time, s.rows,
                s.total_exec_time / nullif(sum(s.total_exec_time) OVER (), 0)
           FROM %I.pg_stat_statements s
          WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
          ORDER BY s.total_exec_time DESC LIMIT 100', nsp);
EXCEPTION WHEN OTHERS THEN
    RETURN;
END $$;
COMMENT ON FUNCTION harden.slow_queries_rows() IS 'rows of harden.slow_queries';

CREATE VIEW harden.slow_queries AS SELECT * FROM harden.slow_queries_rows();
COMMENT ON VIEW harden.slow_queries IS 'the 100 statements of this database with the most execution time (pg_stat_statements; empty without it)';

CREATE VIEW harden.blocking_locks AS
WITH RECURSIVE activity AS (
    SELECT a.pid, a.datname, a.usename, a.state, a.wait_event_type, a.wait_event,
           a.xact_start, a.query_start, a.query, pg_catalog.pg_blocking_pids(a.pid) AS blocked_by
      FROM pg_catalog.pg_stat_activity a
     WHERE a.pid IS NOT NULL
), waiting AS (
    SELECT * FROM activity WHERE pg_catalog.cardinality(blocked_by) > 0
), roots AS (
    -- blockers that wait for nobody; 0 stands for a prepared transaction
    SELECT DISTINCT b.pid
      FROM waiting w, pg_catalog.unnest(w.blocked_by) AS b(pid)
     WHERE b.pid NOT IN (SELECT pid FROM waiting)
), tree AS (
    SELECT r.pid, r.pid AS root_pid, 0 AS depth, ARRAY[r.pid] AS path FROM roots r
    UNION ALL
    SELECT w.pid, t.root_pid, t.depth + 1, t.path || w.pid
      FROM tree t JOIN waiting w ON t.pid = ANY (w.blocked_by)
     WHERE w.pid <> ALL (t.path)
)
SELECT t.root_pid, t.pid, t.depth, t.path,
       coalesce(a.blocked_by, '{}') AS blocked_by, a.datname, a.usename, a.state,
       a.wait_event_type, a.wait_event,
       (SELECT pg_catalog.string_agg(l.mode || ' on ' ||
                 CASE l.locktype
                      WHEN 'relation' THEN 'relation ' || l.relation::pg_catalog.regclass::text
                      WHEN 'extend' THEN 'extension of ' || l.relation::pg_catalog.regclass::text
                      WHEN 'page' THEN pg_catalog.format('page %s of %s', l.page, l.relation::pg_catalog.regclass)
                      WHEN 'tuple' THEN pg_catalog.format('row (%s,%s) of %s', l.page, l.tuple, l.relation::pg_catalog.regclass)
                      WHEN 'transactionid' THEN 'transaction ' || l.transactionid::text
                      WHEN 'virtualxid' THEN 'virtual transaction ' || l.virtualxid
                      WHEN 'advisory' THEN pg_catalog.format('advisory lock %s:%s:%s', l.classid, l.objid, l.objsubid)
                      ELSE pg_catalog.format('%s %s:%s:%s', l.locktype, l.classid, l.objid, l.objsubid)
                 END, '; ')
          FROM pg_catalog.pg_locks l WHERE l.pid = t.pid AND NOT l.granted) AS waiting_for,
       pg_catalog.now() - a.xact_start AS xact_age, pg_catalog.now() - a.query_start AS query_age,
       CASE WHEN t.pid = 0 THEN '(a prepared transaction)' ELSE a.query END AS query
  FROM tree t LEFT JOIN activity a ON a.pid = t.pid;
COMMENT ON VIEW harden.blocking_locks IS 'sessions waiting for a lock, as trees under the session holding it (depth 0), for every lock type';

CREATE VIEW harden.long_running_queries AS
SELECT a.pid, a.datname, a.usename, a.application_name, a.state,
       pg_catalog.now() - a.query_start AS duration, pg_catalog.now() - a.xact_start AS xact_age,
       a.wait_event_type, a.wait_event, a.query
  FROM pg_catalog.pg_stat_activity a
 WHERE a.backend_type = 'client backend' AND a.pid <> pg_catalog.pg_backend_pid()
   AND a.state IS DISTINCT FROM 'idle'
   AND greatest(pg_catalog.now() - a.query_start, pg_catalog.now() - a.xact_start)
       >= coalesce(pg_catalog.current_setting('harden.health_long_query', true), '5min')::interval;
COMMENT ON VIEW harden.long_running_queries IS 'statements running, or transactions open, for harden.health_long_query or longer (other sessions)';

-- ---------------------------------------------------------------------------
-- Vacuum
-- ---------------------------------------------------------------------------

CREATE VIEW harden.vacuum_health AS
WITH opts AS (
    SELECT r.relid, r.reltuples,
           pg_catalog.max(o.option_value) FILTER (WHERE o.option_name = 'autovacuum_enabled') AS enabled,
           pg_catalog.max(o.option_value) FILTER (WHERE o.option_name = 'autovacuum_vacuum_threshold') AS vac_threshold,
           pg_catalog.max(o.option_value) FILTER (WHERE o.option_name = 'autovacuum_vacuum_scale_factor') AS vac_scale,
           pg_catalog.max(o.option_value) FILTER (WHERE o.option_name = 'autovacuum_analyze_threshold') AS anl_threshold,
           pg_catalog.max(o.option_value) FILTER (WHERE o.option_name = 'autovacuum_analyze_scale_factor') AS anl_scale,
           pg_catalog.max(o.option_value) FILTER (WHERE o.option_name = 'autovacuum_freeze_max_age') AS freeze_max_age
      FROM harden._relations r
      LEFT JOIN LATERAL pg_catalog.pg_options_to_table(r.reloptions) o ON true
     WHERE r.relkind IN ('r', 'm')
     GROUP BY r.relid, r.reltuples
), limits AS (
    SELECT o.relid,
           coalesce(o.enabled::boolean, true)
               AND pg_catalog.current_setting('autovacuum')::boolean AS autovacuum_enabled,
           coalesce(o.vac_threshold, pg_catalog.current_setting('autovacuum_vacuum_threshold'))::numeric
               + coalesce(o.vac_scale, pg_catalog.current_setting('autovacuum_vacuum_scale_factor'))::numeric
                 * greatest(o.reltuples, 0) AS vacuum_at,
           coalesce(o.anl_threshold, pg_catalog.current_setting('autovacuum_analyze_threshold'))::numeric
               + coalesce(o.anl_scale, pg_catalog.current_setting('autovacuum_analyze_scale_factor'))::numeric
                 * greatest(o.reltuples, 0) AS analyze_at,
           coalesce(o.freeze_max_age, pg_catalog.current_setting('autovacuum_freeze_max_age'))::bigint AS freeze_max_age
      FROM opts o
)
SELECT s.relid::pg_catalog.regclass AS "table", s.n_live_tup AS live_tuples, s.n_dead_tup AS dead_tuples,
       pg_catalog.round(s.n_dead_tup::numeric / nullif(s.n_live_tup + s.n_dead_tup, 0), 3) AS dead_ratio,
       greatest(s.last_vacuum, s.last_autovacuum) AS last_vacuum,
       greatest(s.last_analyze, s.last_autoanalyze) AS last_analyze,
       l.autovacuum_enabled,
       s.n_dead_tup > l.vacuum_at AS vacuum_due,
       s.n_mod_since_analyze > l.analyze_at AS analyze_due,
       pg_catalog.age(c.relfrozenxid) AS xid_age,
       pg_catalog.mxid_age(c.relminmxid) AS mxid_age,
       pg_catalog.age(c.relfrozenxid) > l.freeze_max_age AS freeze_due
  FROM limits l
  JOIN pg_catalog.pg_stat_all_tables s ON s.relid = l.relid
  JOIN pg_catalog.pg_class c ON c.oid = l.relid;
COMMENT ON VIEW harden.vacuum_health IS 'dead tuples, whether autovacuum is due (by the table''s own settings), and transaction ID age of each table';

GRANT SELECT ON harden.unused_indexes, harden.duplicate_indexes, harden.missing_fk_indexes,
    harden.invalid_indexes, harden.table_sizes, harden.index_sizes, harden.bloat,
    harden.seq_scan_tables, harden.cache_hit_ratio, harden.slow_queries, harden.blocking_locks,
    harden.long_running_queries, harden.vacuum_health TO PUBLIC;

-- ---------------------------------------------------------------------------
-- query_check() and health_report()
-- ---------------------------------------------------------------------------

CREATE FUNCTION harden.query_check(sql text,
    OUT severity text, OUT node text, OUT relation regclass, OUT message text, OUT suggestion text)
    RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'harden_query_check'
    LANGUAGE C VOLATILE PARALLEL UNSAFE ROWS 10;
COMMENT ON FUNCTION harden.query_check(text) IS 'plan a statement without running it ($1..$n allowed, generic plan) and report seq scans on large tables, LIKE/ILIKE no index serves, sorts and hashes past work_mem, nested loops over large unindexed tables and foreign-key joins without an index, each with suggested SQL';

-- The checks behind health_report(), each reading its thresholds.
CREATE FUNCTION harden._health_rows(
    OUT "check" text, OUT severity text, OUT object text, OUT detail text, OUT suggestion text)
    RETURNS SETOF record
    LANGUAGE sql STABLE PARALLEL RESTRICTED
BEGIN ATOMIC
WITH settings AS (
    SELECT coalesce(pg_catalog.current_setting('harden.analyze_min_rows', true), '10000')::float8 AS min_rows,
           pg_catalog.pg_size_bytes(coalesce(pg_catalog.current_setting('harden.health_min_size', true), '10MB')) AS min_size,
           coalesce(pg_catalog.current_setting('harden.health_bloat_ratio', true), '0.5')::numeric AS bloat_ratio,
           coalesce(pg_catalog.current_setting('harden.health_xid_age', true), '500000000')::bigint AS xid_age,
           coalesce(pg_catalog.current_setting('harden.health_slow_query', true), '1s')::interval AS slow_query,
           coalesce(pg_catalog.current_setting('harden.health_cache_hit_ratio', true), '0.95')::numeric AS hit_ratio
), findings AS (
    SELECT 'invalid_index' AS "check", 'warning' AS severity, harden._qualified(v.index) AS object,
           pg_catalog.format('index on %s is invalid: it is maintained on every write but never used', harden._qualified(v."table")) AS detail,
           v.fix_sql AS suggestion
      FROM harden.invalid_indexes v WHERE NOT v.building
    UNION ALL
    SELECT 'duplicate_index', 'warning', harden._qualified(v.index),
           pg_catalog.format('%s duplicate of %s (%s)', v.kind, harden._qualified(v.covered_by),
                             pg_catalog.pg_size_pretty(v.index_bytes)),
           v.drop_sql
      FROM harden.duplicate_indexes v
    UNION ALL
    SELECT 'unused_index', CASE WHEN v.confidence = 'high' THEN 'warning' ELSE 'info' END,
           harden._qualified(v.index),
           pg_catalog.format('never scanned (%s; confidence %s%s)', v.index_size, v.confidence,
                             CASE WHEN v.note IS NOT NULL THEN '; ' || v.note ELSE '' END),
           v.drop_sql
      FROM harden.unused_indexes v, settings s WHERE v.index_bytes >= s.min_size
    UNION ALL
    SELECT 'missing_fk_index', CASE WHEN v.rows >= s.min_rows THEN 'warning' ELSE 'info' END,
           harden._qualified(v."table"),
           pg_catalog.format('foreign key %I (%s) references %s and has no index%s', v.constraint_name,
                             pg_catalog.array_to_string(v.columns, ', '), harden._qualified(v.referenced),
                             CASE WHEN v.partitions IS NOT NULL THEN pg_catalog.format(' on %s partitions', v.partitions) ELSE '' END),
           v.create_sql
      FROM harden.missing_fk_indexes v, settings s
    UNION ALL
    SELECT 'bloat', 'warning', harden._qualified(coalesce(v.index, v."table")),
           pg_catalog.format('%s: ~%s of %s wasted (estimate)', v.kind, pg_catalog.pg_size_pretty(v.bloat_bytes),
                             pg_catalog.pg_size_pretty(v.bytes)),
           CASE WHEN v.kind = 'index' THEN pg_catalog.format('REINDEX INDEX CONCURRENTLY %s;', harden._qualified(v.index))
                ELSE pg_catalog.format('VACUUM FULL %s;  -- takes an exclusive lock; pg_repack avoids it', harden._qualified(v."table")) END
      FROM harden.bloat v, settings s
     WHERE v.bloat_ratio >= s.bloat_ratio AND v.bloat_bytes >= s.min_size
    UNION ALL
    SELECT 'seq_scan', 'warning', harden._qualified(v."table"),
           pg_catalog.format('%s sequential scans read ~%s rows each (%s index scans)', v.seq_scan, v.rows_per_scan,
                             coalesce(v.idx_scan, 0)),
           -- the statements that read it, to pass to query_check()
           pg_catalog.format('SELECT queryid, query FROM harden.slow_queries WHERE query ~* %L;',
                             '\m' || c.relname || '\M')
      FROM harden.seq_scan_tables v
      JOIN pg_catalog.pg_class c ON c.oid = v."table", settings s
     WHERE v.rows >= s.min_rows AND v.rows_per_scan >= s.min_rows AND v.seq_scan > coalesce(v.idx_scan, 0)
    UNION ALL
    SELECT 'cache_hit_ratio', 'warning', v.kind || ' blocks',
           pg_catalog.format('%s%% of %s block reads hit shared buffers', pg_catalog.round(v.ratio * 100, 1), v.hits + v.reads),
           '-- a larger shared_buffers, or fewer blocks read: see harden.slow_queries and harden.seq_scan_tables'
      FROM harden.cache_hit_ratio v, settings s
     WHERE v.ratio < s.hit_ratio AND v.hits + v.reads >= 10000
    UNION ALL
    SELECT 'vacuum', CASE WHEN v.autovacuum_enabled THEN 'info' ELSE 'warning' END, harden._qualified(v."table"),
           pg_catalog.format('%s dead tuples (%s%%), autovacuum %s; last vacuum %s', v.dead_tuples,
                             pg_catalog.round(v.dead_ratio * 100, 1),
                             CASE WHEN v.autovacuum_enabled THEN 'due' ELSE 'disabled' END,
                             coalesce(v.last_vacuum::text, 'never')),
           pg_catalog.format('VACUUM (ANALYZE) %s;', harden._qualified(v."table"))
      FROM harden.vacuum_health v, settings s
     WHERE v.vacuum_due AND v.live_tuples + v.dead_tuples >= s.min_rows
    UNION ALL
    SELECT 'xid_age', CASE WHEN v.xid_age >= 1500000000 THEN 'critical' ELSE 'warning' END,
           harden._qualified(v."table"),
           pg_catalog.format('transaction ID age %s (wraparound at 2147483647)', v.xid_age),
           pg_catalog.format('VACUUM (FREEZE) %s;', harden._qualified(v."table"))
      FROM harden.vacuum_health v, settings s WHERE v.xid_age >= s.xid_age
    UNION ALL
    SELECT 'long_running_query', 'warning', 'pid ' || v.pid,
           pg_catalog.format('%s for %s (transaction open %s): %s', v.state,
                             pg_catalog.date_trunc('second', v.duration), pg_catalog.date_trunc('second', v.xact_age),
                             pg_catalog.left(v.query, 200)),
           pg_catalog.format('SELECT pg_cancel_backend(%s);', v.pid)
      FROM harden.long_running_queries v WHERE v.datname = pg_catalog.current_database()
    UNION ALL
    SELECT 'blocking_lock', 'warning', 'pid ' || v.pid,
           pg_catalog.format('blocks %s sessions: %s', (SELECT pg_catalog.count(DISTINCT w.pid) FROM harden.blocking_locks w
                                                          WHERE w.root_pid = v.pid AND w.depth > 0),
                             coalesce(pg_catalog.left(v.query, 200), '')),
           pg_catalog.format('SELECT pg_terminate_backend(%s);', v.pid)
      FROM harden.blocking_locks v WHERE v.depth = 0 AND v.pid <> 0
    UNION ALL
    SELECT 'slow_query', 'warning', 'query ' || v.queryid,
           pg_catalog.format('mean %s ms over %s calls (%s%% of the time): %s', pg_catalog.round(v.mean_ms::numeric, 1),
                             v.calls, pg_catalog.round((v.share * 100)::numeric, 1), pg_catalog.left(v.query, 200)),
           -- pg_stat_statements shows constants as $n, which query_check() takes
           CASE WHEN v.query ~* '^\s*(select|insert|update|delete|merge|with)\M'
                THEN pg_catalog.format('SELECT * FROM harden.query_check(%L);', v.query) END
      FROM harden.slow_queries v, settings s
     WHERE v.mean_ms * interval '1 ms' >= s.slow_query
)
SELECT f."check", f.severity, f.object, f.detail, f.suggestion
  FROM findings f
 ORDER BY CASE f.severity WHEN 'critical' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END, f."check", f.object;
END;

CREATE FUNCTION harden.health_report(
    OUT "check" text, OUT severity text, OUT object text, OUT detail text, OUT suggestion text)
    RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'harden_health_report'
    LANGUAGE C VOLATILE PARALLEL UNSAFE ROWS 50;
COMMENT ON FUNCTION harden.health_report() IS 'every analysis check with its thresholds (harden.analyze_min_rows, harden.health_*): check, severity (critical, warning, info), object, detail and suggested SQL; the counts by check and severity go to metrics()';

-- ---------------------------------------------------------------------------
-- breakers and redaction
-- ---------------------------------------------------------------------------

-- Definitions, kept by pg_dump.  Written by harden.breaker_define() and
-- harden.breaker_drop() as the extension's owner.
CREATE SEQUENCE harden.breakers_id_seq;
CREATE TABLE harden.breakers (
    name              text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9_.:-]{1,63}$'),
    -- Stays when a breaker is redefined: a new id is a new breaker.
    id                bigint NOT NULL UNIQUE DEFAULT nextval('harden.breakers_id_seq'),
    failure_threshold integer NOT NULL DEFAULT 5 CHECK (failure_threshold > 0),
    failure_rate      double precision CHECK (failure_rate > 0 AND failure_rate <= 1),
    min_calls         integer NOT NULL DEFAULT 10 CHECK (min_calls > 0),
    failure_window    interval NOT NULL DEFAULT '1 minute' CHECK (failure_window > interval '0'),
    cooldown          interval NOT NULL DEFAULT '30 seconds' CHECK (cooldown > interval '0'),
    half_open_probes  integer NOT NULL DEFAULT 1 CHECK (half_open_probes BETWEEN 1 AND 1000000),
    defined_at        timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE harden.breakers IS 'circuit breakers: trip after failure_threshold failures (or, with failure_rate, that share of at least min_calls calls) within failure_window; stay open for cooldown; close after half_open_probes successful probes';
ALTER SEQUENCE harden.breakers_id_seq OWNED BY harden.breakers.id;
SELECT pg_catalog.pg_extension_config_dump('harden.breakers', '');
SELECT pg_catalog.pg_extension_config_dump('harden.breakers_id_seq', '');
GRANT SELECT ON harden.breakers TO PUBLIC;

-- One row per breaker, moved by the shipped circuit_breaker machine: every
-- state change is checked by its trigger and audited in harden.fsm_log.
-- Not dumped: a restored database starts with closed breakers.
CREATE TABLE harden.breaker_states (
    name  text PRIMARY KEY REFERENCES harden.breakers ON DELETE CASCADE,
    state text NOT NULL DEFAULT 'closed',
    since timestamptz NOT NULL DEFAULT clock_timestamp()
);
COMMENT ON TABLE harden.breaker_states IS 'the recorded state of each breaker (the live state is in shared memory: harden.breaker_status)';
GRANT SELECT ON harden.breaker_states TO PUBLIC;
SELECT harden.fsm_attach('harden.breaker_states', 'state', 'circuit_breaker');
-- CREATE EXTENSION makes this attachment and the timers of its rows: a dump
-- must not restore them again (see harden.fsm_attached and harden.fsm_due).

-- Direct edits of the definitions reach shared memory at commit.
CREATE FUNCTION harden.breakers_changed() RETURNS trigger
    AS 'MODULE_PATHNAME', 'harden_breakers_changed'
    LANGUAGE C;
REVOKE ALL ON FUNCTION harden.breakers_changed() FROM PUBLIC;
CREATE TRIGGER breakers_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON harden.breakers
    FOR EACH STATEMENT EXECUTE FUNCTION harden.breakers_changed();
-- Sessions forget breakers of an earlier installation (DROP EXTENSION) at commit.
DELETE FROM harden.breakers;

CREATE FUNCTION harden.breaker_define(name text, failure_threshold integer DEFAULT 5,
                                      failure_window interval DEFAULT '1 minute',
                                      cooldown interval DEFAULT '30 seconds',
                                      half_open_probes integer DEFAULT 1,
                                      failure_rate double precision DEFAULT NULL,
                                      min_calls integer DEFAULT 10) RETURNS void
    AS 'MODULE_PATHNAME', 'harden_breaker_define'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION harden.breaker_define(text, integer, interval, interval, integer, double precision, integer) IS 'define a circuit breaker, or change a defined one''s settings (its state stays)';
REVOKE ALL ON FUNCTION harden.breaker_define(text, integer, interval, interval, integer, double precision, integer) FROM PUBLIC;

CREATE FUNCTION harden.breaker_drop(name text) RETURNS boolean
    AS 'MODULE_PATHNAME', 'harden_breaker_drop'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION harden.breaker_drop(text) IS 'drop a circuit breaker; false if there was none of that name';
REVOKE ALL ON FUNCTION harden.breaker_drop(text) FROM PUBLIC;

CREATE FUNCTION harden.breaker_allow(name text) RETURNS boolean
    AS 'MODULE_PATHNAME', 'harden_breaker_allow'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION harden.breaker_allow(text) IS 'whether a call may go ahead: true while closed, and for the probe calls of half-open';

CREATE FUNCTION harden.breaker_record(name text, success boolean) RETURNS text
    AS 'MODULE_PATHNAME', 'harden_breaker_record'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION harden.breaker_record(text, boolean) IS 'record the outcome of a call; returns the breaker''s state afterwards';

CREATE FUNCTION harden.breaker_sync(name text DEFAULT NULL) RETURNS integer
    AS 'MODULE_PATHNAME', 'harden_breaker_sync'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION harden.breaker_sync(text) IS 'bring harden.breaker_states (and the audit trail) up to the live state of one or every breaker; returns how many rows moved';

CREATE FUNCTION harden.breaker_status_rows(
    OUT name text, OUT state text, OUT since timestamptz,
    OUT window_calls bigint, OUT window_failures bigint,
    OUT allowed bigint, OUT rejected bigint, OUT successes bigint,
    OUT failures bigint, OUT opens bigint,
    OUT recorded_state text, OUT synced boolean,
    OUT failure_threshold integer, OUT failure_rate double precision, OUT min_calls integer,
    OUT failure_window interval, OUT cooldown interval, OUT half_open_probes integer)
    RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'harden_breaker_status'
    LANGUAGE C VOLATILE PARALLEL RESTRICTED;
CREATE VIEW harden.breaker_status AS SELECT * FROM harden.breaker_status_rows();
COMMENT ON VIEW harden.breaker_status IS 'each breaker of this database: live state and counters (since the breaker was loaded into shared memory), the recorded state, and its settings';
GRANT SELECT ON harden.breaker_status TO PUBLIC;

CREATE FUNCTION harden.redact(value jsonb) RETURNS jsonb
    AS 'MODULE_PATHNAME', 'harden_redact_jsonb'
    LANGUAGE C STABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION harden.redact(jsonb) IS 'the document with personal data masked: values of sensitive keys (harden.redact_keys) and e-mails, phone numbers, card numbers and national ids in strings';

CREATE FUNCTION harden.redact(value text) RETURNS text
    AS 'MODULE_PATHNAME', 'harden_redact_text'
    LANGUAGE C STABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION harden.redact(text) IS 'the text with e-mails, phone numbers, card numbers and national ids masked';
