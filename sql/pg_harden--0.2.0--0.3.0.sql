-- pg_harden 0.2.0 -> 0.3.0: stock-row locking (take, take_many, put, reservations)
\echo Use "ALTER EXTENSION pg_harden UPDATE TO '0.3.0'" to load this file. \quit

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
