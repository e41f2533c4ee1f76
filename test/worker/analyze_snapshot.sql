-- The background worker takes query-analysis snapshots only when
-- harden.analyze_snapshot_interval is set (off by default), every interval.
\set ON_ERROR_STOP 1
SET client_min_messages = warning;
SELECT plan(4);

\ir lib/wait_for.sql

SELECT is(current_setting('harden.analyze_snapshot_interval'), '0', 'snapshots are off by default');
SELECT pg_sleep(1);
SELECT is((SELECT count(*) FROM harden.analyze_snapshots), 0::bigint, 'and the worker takes none');

CREATE TABLE snap_t (id int);
ALTER SYSTEM SET harden.analyze_snapshot_interval = '300ms';
SELECT pg_reload_conf();
SELECT ok(pg_temp.wait_for($$ (SELECT count(*) FROM harden.analyze_snapshots) >= 2 $$),
          'with an interval the worker takes snapshots, one per interval');
SELECT ok(pg_temp.wait_for($$ EXISTS (SELECT FROM harden.snapshot_sizes z JOIN harden.analyze_snapshots a ON a.id = z.snapshot_id
                                       WHERE z.name = 'public.snap_t') $$),
          'each with the sizes of the tables');
ALTER SYSTEM RESET harden.analyze_snapshot_interval;
SELECT pg_reload_conf();
DROP TABLE snap_t;
SELECT * FROM finish();
