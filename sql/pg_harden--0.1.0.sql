-- pg_harden 0.1.0
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
