-- pg_harden 0.2.0 -> 0.3.0: query-result caching (cache_query, watched
-- tables, single-flight); dependencies and coalesced waits in the views
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
