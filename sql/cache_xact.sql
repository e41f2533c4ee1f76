-- Publish on commit: writes inside a transaction block are pending until
-- COMMIT (other sessions: see test/specs/cache_concurrent.spec); here, what
-- the writing session itself sees, savepoints, and invalidations.
SELECT harden.cache_flush() >= 0 AS flushed;
SELECT harden.cache_set('x:a', '"a"'::jsonb, tags => '{grp}');
SELECT harden.cache_set('x:b', '"b"'::jsonb, tags => '{grp}');
SELECT harden.cache_set('x:c', '"c"'::jsonb, secure => true);

-- Own pending writes are read back; views show committed entries only.
BEGIN;
SELECT harden.cache_set('x:new', '"pending"'::jsonb);
SELECT harden.cache_get('x:new') AS own_pending, harden.cache_exists('x:new') AS exists;
SELECT count(*) AS committed_new FROM harden.cache_entries WHERE key = 'x:new';
SELECT harden.cache_set('x:new', 'now text'::text);
SELECT harden.cache_get_text('x:new') AS replaced_pending;
SELECT harden.cache_delete('x:new') AS deleted_pending, harden.cache_get_text('x:new') IS NULL AS gone;
SELECT harden.cache_set('x:new', 'text again'::text);
SELECT harden.cache_get('x:new');
ROLLBACK;
SELECT harden.cache_get('x:new') IS NULL AS rolled_back;

-- Invalidations: pending, seen by the writer, counted against committed entries.
BEGIN;
SELECT harden.cache_invalidate_tag('grp') AS tag_matches;
SELECT harden.cache_get('x:a') IS NULL AS a_hidden, harden.cache_get('x:c') AS c_untagged;
SELECT harden.cache_set('x:a', '"a2"'::jsonb, tags => '{grp}');
SELECT harden.cache_get('x:a') AS a_set_after;
SELECT harden.cache_invalidate('x:?') AS pattern_matches;
SELECT harden.cache_get('x:a') IS NULL AS a_hidden_again, harden.cache_get('x:c') IS NULL AS c_hidden;
SELECT harden.cache_flush_secure() AS secure_matches;
ROLLBACK;
SELECT key FROM harden.cache_entries ORDER BY key;

-- Savepoints keep the outer writes and drop the inner ones.
BEGIN;
SELECT harden.cache_set('x:outer', '1'::jsonb);
SAVEPOINT s1;
SELECT harden.cache_set('x:inner', '2'::jsonb);
SELECT harden.cache_delete('x:a') AS deleted_a;
SAVEPOINT s2;
SELECT harden.cache_flush() AS flush_matches;
SELECT harden.cache_get('x:outer') IS NULL AS all_hidden;
ROLLBACK TO SAVEPOINT s2;
SELECT harden.cache_get('x:outer') AS outer_back, harden.cache_get('x:inner') AS inner_back;
ROLLBACK TO SAVEPOINT s1;
SELECT harden.cache_get('x:inner') IS NULL AS inner_gone, harden.cache_get('x:a') AS a_back;
RELEASE SAVEPOINT s1;
COMMIT;
SELECT key FROM harden.cache_entries ORDER BY key;

-- An error inside the block aborts it: nothing is published.
BEGIN;
SELECT harden.cache_set('x:doomed', '1'::jsonb);
SELECT 1 / 0;
COMMIT;
SELECT harden.cache_get('x:doomed') IS NULL AS not_published;

-- A committed flush removes everything, including entries set earlier in it.
BEGIN;
SELECT harden.cache_set('x:last', '1'::jsonb);
SELECT harden.cache_flush() AS flush_matches;
SELECT harden.cache_set('x:after', '2'::jsonb);
COMMIT;
SELECT key FROM harden.cache_entries ORDER BY key;
SELECT harden.cache_flush() AS flushed;
