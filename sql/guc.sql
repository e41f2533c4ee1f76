-- GUCs: defaults, contexts, and that every harden.* setting is documented.
SELECT name, setting, unit, context, min_val, max_val
  FROM pg_settings WHERE name = 'harden.max_databases';

SELECT count(*) AS undocumented
  FROM pg_settings
 WHERE name LIKE 'harden.%' AND coalesce(short_desc, '') = '';

-- Postmaster-context settings cannot change at run time.
SET harden.max_databases = 5;
-- Unknown names under the reserved prefix are rejected.
SET harden.no_such_setting = 1;
