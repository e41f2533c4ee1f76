-- pg_harden 0.3.0 -> 0.4.0
\echo Use "ALTER EXTENSION pg_harden UPDATE TO '0.4.0'" to load this file. \quit

-- ---------------------------------------------------------------------------
-- cache tracking: writes invalidate without a watch; watching by a column
-- ---------------------------------------------------------------------------

COMMENT ON FUNCTION harden.cache_query(text, text, interval) IS 'the rows of a read-only query as a jsonb array, cached per role until a committed write to a relation it reads (or a change to its privileges) or the end of its TTL';
COMMENT ON FUNCTION harden.cache_watch(regclass) IS 'also invalidate on writes the server''s hooks do not see (logical replication apply, with the trigger ENABLE ALWAYS)';
COMMENT ON FUNCTION harden.cache_unwatch(regclass) IS 'remove cache_watch()''s triggers; writes through this server still invalidate';

CREATE FUNCTION harden.cache_watch_by_trigger() RETURNS trigger
    AS 'MODULE_PATHNAME', 'harden_cache_watch_by_trigger'
    LANGUAGE C;
COMMENT ON FUNCTION harden.cache_watch_by_trigger() IS 'row trigger installed by cache_watch(table, by): moves the generations of the old and new value of the column at commit';

CREATE FUNCTION harden.cache_watch("table" regclass, "by" name) RETURNS boolean
    AS 'MODULE_PATHNAME', 'harden_cache_watch'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION harden.cache_watch(regclass, name) IS 'per-value dependencies: a cache_query() result whose WHERE pins the column to a value is invalidated only by writes of that value';

-- ---------------------------------------------------------------------------
-- cache tracking: untyped parameters (node-postgres, psycopg)
-- ---------------------------------------------------------------------------

-- Chosen by the parser when every parameter is untyped (a literal, or a
-- client's parameter of unknown type): the query decides their types.
CREATE FUNCTION harden.cache_query(key text, sql text, ttl interval, VARIADIC params text[])
    RETURNS jsonb
    AS 'MODULE_PATHNAME', 'harden_cache_query_untyped'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION harden.cache_query(text, text, interval, text[]) IS 'the same, with untyped parameters: each gets the type the query gives it';
