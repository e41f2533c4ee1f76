-- pg_harden 0.1.0 -> 0.2.0: the result cache (store, TTL policies, views)
\echo Use "ALTER EXTENSION pg_harden UPDATE TO '0.2.0'" to load this file. \quit

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
    OUT bytes_limit bigint)
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
    OUT secure boolean, OUT public boolean)
    RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'harden_cache_entries'
    LANGUAGE C VOLATILE PARALLEL RESTRICTED ROWS 1000;
CREATE VIEW harden.cache_entries AS SELECT * FROM harden.cache_entries_rows();
COMMENT ON VIEW harden.cache_entries IS 'cache entries of this database the caller may read (never values; no tags of secure entries)';
GRANT SELECT ON harden.cache_entries TO PUBLIC;
