-- GUCs: defaults, contexts, and that every harden.* setting is documented.
SELECT name, boot_val, unit, context, min_val, max_val
  FROM pg_settings WHERE name LIKE 'harden.%' ORDER BY name;
-- The test cluster runs with a smaller cache.
SELECT current_setting('harden.cache_memory') AS cache_memory;

SELECT count(*) AS undocumented
  FROM pg_settings
 WHERE name LIKE 'harden.%' AND coalesce(short_desc, '') = '';

-- Postmaster-context settings cannot change at run time.
SET harden.max_databases = 5;
SET harden.cache_memory = '1GB';
-- Superuser-only settings.
CREATE ROLE pgh_guc_plain;
SET ROLE pgh_guc_plain;
SET harden.cache_max_entry_size = '100MB';
SET harden.cache_secure_max_ttl = '1d';
SET harden.cache_default_ttl = '1min';
RESET harden.cache_default_ttl;
RESET ROLE;
DROP ROLE pgh_guc_plain;
-- Unknown names under the reserved prefix are rejected.
SET harden.no_such_setting = 1;
