-- The stock invariant after a randomized workload: for every key,
--   initial + put = on hand + taken + held
-- where taken counts successful takes and committed reservations, and held
-- the lines of reservations still held.  The workload (seeded, so every run
-- is the same) mixes single and multi-line takes that often run short,
-- reservations with short and long TTLs, commits, releases (also repeated
-- and after expiry), release by ref, expiry and restocking.  Errors are
-- caught per call; a failed call must change nothing.
BEGIN;
SELECT plan(12);

CREATE TABLE tap_stock (id int PRIMARY KEY, q int NOT NULL);
INSERT INTO tap_stock SELECT i, 100 FROM generate_series(1, 12) AS i;
SELECT harden.stock_attach('tap_stock', 'q');
CREATE TEMP TABLE tap_initial AS SELECT id, q FROM tap_stock;
-- What the workload did: kind is take, put or a call outcome.
CREATE TEMP TABLE tap_ledger (kind text NOT NULL, id int, units bigint);

CREATE FUNCTION pg_temp.workload(ops int) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  op float8;
  n int;
  keys int[];
  qtys bigint[];
  hold bigint;
  st text;
BEGIN
  FOR i IN 1..ops LOOP
    op := random();
    n := 1 + floor(random() * 5)::int;
    SELECT array_agg(1 + floor(random() * 12)::int), array_agg(1 + floor(random() * 6)::bigint)
      INTO keys, qtys FROM generate_series(1, n);
    BEGIN
      IF op < 0.30 THEN
        PERFORM harden.stock_take_many('tap_stock', keys, qtys);
        INSERT INTO tap_ledger SELECT 'take', k, q FROM unnest(keys, qtys) AS u(k, q);
      ELSIF op < 0.45 THEN
        PERFORM harden.stock_take('tap_stock', keys[1], qtys[1]);
        INSERT INTO tap_ledger VALUES ('take', keys[1], qtys[1]);
      ELSIF op < 0.70 THEN
        hold := harden.stock_reserve('tap_stock', keys, qtys,
                                     CASE WHEN random() < 0.5 THEN interval '1 microsecond'
                                          ELSE interval '1 hour' END,
                                     'tap-cart-' || (i % 7));
        INSERT INTO tap_ledger VALUES ('reserved', NULL, hold);
      ELSIF op < 0.78 THEN
        SELECT id INTO hold FROM harden.stock_holds ORDER BY random() LIMIT 1;
        IF hold IS NOT NULL THEN
          INSERT INTO tap_ledger VALUES ('commit ' || harden.stock_commit(hold), NULL, hold);
        END IF;
      ELSIF op < 0.88 THEN
        SELECT id INTO hold FROM harden.stock_holds ORDER BY random() LIMIT 1;
        IF hold IS NOT NULL THEN
          INSERT INTO tap_ledger VALUES ('release ' || harden.stock_release(hold), NULL, hold);
        END IF;
      ELSIF op < 0.92 THEN
        INSERT INTO tap_ledger VALUES ('release_ref', NULL,
                                       harden.stock_release_ref('tap-cart-' || floor(random() * 7)));
      ELSIF op < 0.96 THEN
        INSERT INTO tap_ledger VALUES ('run_due', NULL, harden.stock_run_due(5));
      ELSE
        PERFORM harden.stock_put('tap_stock', keys[1], qtys[1]);
        INSERT INTO tap_ledger VALUES ('put', keys[1], qtys[1]);
      END IF;
    EXCEPTION WHEN OTHERS THEN
      GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE;
      INSERT INTO tap_ledger VALUES ('error ' || st, NULL, NULL);
    END;
  END LOOP;
END $$;

CREATE FUNCTION pg_temp.violations() RETURNS TABLE (id int, expected bigint, actual bigint)
LANGUAGE sql AS $$
  WITH held AS (
    SELECT k::int AS id, sum(q) AS units
      FROM harden.stock_holds h, unnest(h.keys, h.qtys) AS u(k, q)
     WHERE h.relid = 'tap_stock'::regclass AND h.status = 'held' GROUP BY 1
  ), committed AS (
    SELECT k::int AS id, sum(q) AS units
      FROM harden.stock_holds h, unnest(h.keys, h.qtys) AS u(k, q)
     WHERE h.relid = 'tap_stock'::regclass AND h.status = 'committed' GROUP BY 1
  ), taken AS (
    SELECT id, sum(units) AS units FROM tap_ledger WHERE kind = 'take' GROUP BY 1
  ), put AS (
    SELECT id, sum(units) AS units FROM tap_ledger WHERE kind = 'put' GROUP BY 1
  )
  SELECT i.id, i.q + coalesce(p.units, 0),
         s.q + coalesce(t.units, 0) + coalesce(c.units, 0) + coalesce(h.units, 0)
    FROM tap_initial i JOIN tap_stock s USING (id)
    LEFT JOIN put p USING (id) LEFT JOIN taken t USING (id)
    LEFT JOIN committed c USING (id) LEFT JOIN held h USING (id)
   WHERE i.q + coalesce(p.units, 0)
      <> s.q + coalesce(t.units, 0) + coalesce(c.units, 0) + coalesce(h.units, 0)
$$;

SELECT setseed(0.42);
SELECT pg_temp.workload(600);

SELECT is_empty('SELECT * FROM pg_temp.violations()', 'invariant holds for every key after the workload');
SELECT is((SELECT count(*) FROM tap_stock WHERE q < 0), 0::bigint, 'no row went negative');

-- The workload reached every path it is meant to check.
SELECT cmp_ok((SELECT count(*) FROM tap_ledger WHERE kind = 'error PH301'), '>', 20::bigint,
              'many calls were refused for insufficient stock');
SELECT is((SELECT count(*) FROM tap_ledger WHERE kind LIKE 'error%' AND kind NOT IN ('error PH301', 'error PH304')),
          0::bigint, 'no other errors than shortages and commits of given-back holds');
SELECT cmp_ok((SELECT count(*) FROM tap_ledger WHERE kind = 'error PH304'), '>', 0::bigint,
              'some commits came after a release or expiry');
SELECT cmp_ok((SELECT count(*) FROM tap_ledger WHERE kind = 'release false'), '>', 0::bigint,
              'some releases found the hold already closed');
SELECT results_eq(
  $$ SELECT s FROM unnest('{held,committed,released,expired}'::text[]) AS s
      WHERE EXISTS (SELECT 1 FROM harden.stock_holds WHERE status = s) $$,
  $$ VALUES ('held'), ('committed'), ('released'), ('expired') $$,
  'holds ended in every state');

-- Every hold closed twice more: release, commit and expiry change nothing.
DO $$
DECLARE h bigint;
BEGIN
  FOR h IN SELECT id FROM harden.stock_holds WHERE status <> 'held' LOOP
    PERFORM harden.stock_release(h);
    BEGIN
      PERFORM harden.stock_commit(h);
    EXCEPTION WHEN sqlstate 'PH304' THEN NULL;
    END;
  END LOOP;
END $$;
SELECT is_empty('SELECT * FROM pg_temp.violations()', 'repeated release and commit of closed holds change nothing');

-- Expire everything still held with a short TTL, then release the rest.
SELECT pg_sleep(0.01);
SELECT cmp_ok(harden.stock_run_due(100000), '>=', 0, 'stock_run_due runs');
SELECT is((SELECT count(*) FROM harden.stock_holds h
            WHERE status = 'held' AND expires_at <= clock_timestamp()), 0::bigint, 'no due hold left');
SELECT is_empty('SELECT * FROM pg_temp.violations()', 'invariant holds after expiry');
DO $$ BEGIN PERFORM harden.stock_release(id) FROM harden.stock_holds WHERE status = 'held'; END $$;
SELECT is_empty(
  $$ SELECT i.id FROM tap_initial i JOIN tap_stock s USING (id)
      WHERE s.q <> i.q + coalesce((SELECT sum(units) FROM tap_ledger l WHERE l.kind = 'put' AND l.id = i.id), 0)
                   - coalesce((SELECT sum(units) FROM tap_ledger l WHERE l.kind = 'take' AND l.id = i.id), 0)
                   - coalesce((SELECT sum(q) FROM harden.stock_holds h, unnest(h.keys, h.qtys) AS u(k, q)
                                WHERE h.status = 'committed' AND k::int = i.id), 0) $$,
  'with every hold released, on hand = initial + put - taken - committed');

SELECT * FROM finish();
ROLLBACK;
