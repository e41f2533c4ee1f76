\echo Use "ALTER EXTENSION pg_harden UPDATE TO '0.4.0'" to load this file. \quit

-- pg_harden 0.3.0 -> 0.4.0

-- ---------------------------------------------------------------------------
-- cache: leases (a miss hands out a token; a set with it stores only if
-- nothing invalidated the key or its tags since)
-- ---------------------------------------------------------------------------

CREATE FUNCTION harden.cache_lease(key text, OUT value jsonb, OUT lease bigint) RETURNS record
    AS 'MODULE_PATHNAME', 'harden_cache_lease'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
CREATE FUNCTION harden.cache_lease_text(key text, OUT value text, OUT lease bigint) RETURNS record
    AS 'MODULE_PATHNAME', 'harden_cache_lease_text'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
CREATE FUNCTION harden.cache_lease_bytea(key text, OUT value bytea, OUT lease bigint) RETURNS record
    AS 'MODULE_PATHNAME', 'harden_cache_lease_bytea'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION harden.cache_lease(text) IS 'the jsonb value cached under a key, or on a miss a lease token for cache_set_leased';
COMMENT ON FUNCTION harden.cache_lease_text(text) IS 'the text value cached under a key, or on a miss a lease token for cache_set_leased';
COMMENT ON FUNCTION harden.cache_lease_bytea(text) IS 'the bytea value cached under a key, or on a miss a lease token for cache_set_leased';

CREATE FUNCTION harden.cache_set_leased(key text, value jsonb, lease bigint, ttl interval DEFAULT NULL,
                                        tags text[] DEFAULT '{}', secure boolean DEFAULT false,
                                        public boolean DEFAULT false) RETURNS boolean
    AS 'MODULE_PATHNAME', 'harden_cache_set_leased_jsonb'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
CREATE FUNCTION harden.cache_set_leased(key text, value text, lease bigint, ttl interval DEFAULT NULL,
                                        tags text[] DEFAULT '{}', secure boolean DEFAULT false,
                                        public boolean DEFAULT false) RETURNS boolean
    AS 'MODULE_PATHNAME', 'harden_cache_set_leased_text'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
CREATE FUNCTION harden.cache_set_leased(key text, value bytea, lease bigint, ttl interval DEFAULT NULL,
                                        tags text[] DEFAULT '{}', secure boolean DEFAULT false,
                                        public boolean DEFAULT false) RETURNS boolean
    AS 'MODULE_PATHNAME', 'harden_cache_set_leased_bytea'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION harden.cache_set_leased(text, jsonb, bigint, interval, text[], boolean, boolean) IS 'store a jsonb value with a lease: false if the lease expired or the key or its tags were invalidated since';
COMMENT ON FUNCTION harden.cache_set_leased(text, text, bigint, interval, text[], boolean, boolean) IS 'store a text value with a lease: false if the lease expired or the key or its tags were invalidated since';
COMMENT ON FUNCTION harden.cache_set_leased(text, bytea, bigint, interval, text[], boolean, boolean) IS 'store a bytea value with a lease: false if the lease expired or the key or its tags were invalidated since';

-- ---------------------------------------------------------------------------
-- cache: array forms of cache_delete and cache_invalidate_tag
-- ---------------------------------------------------------------------------

CREATE FUNCTION harden.cache_delete(keys text[]) RETURNS bigint
    AS 'MODULE_PATHNAME', 'harden_cache_delete_many'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION harden.cache_delete(text[]) IS 'delete the entries under several keys; returns how many existed';
CREATE FUNCTION harden.cache_invalidate_tag(tags text[]) RETURNS bigint
    AS 'MODULE_PATHNAME', 'harden_cache_invalidate_tags'
    LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION harden.cache_invalidate_tag(text[]) IS 'delete the entries carrying any of several tags, among those the caller may modify';
