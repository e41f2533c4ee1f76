-- Stock-row locking: attach, take, take_many, put, reservations, and every
-- error a caller can cause, with its SQLSTATE.
SET client_min_messages = warning;

-- err(sql): 'ok', or the SQLSTATE, message and DETAIL of the error it raised.
CREATE FUNCTION pg_temp.err(sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  st text; msg text; det text;
BEGIN
  EXECUTE sql;
  RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL;
  RETURN st || ': ' || msg || coalesce(' | ' || nullif(replace(det, E'\n', ' / '), ''), '');
END $$;

CREATE TABLE product (id bigint PRIMARY KEY, name text NOT NULL, stock integer NOT NULL);
INSERT INTO product SELECT i, 'product ' || i, 10 FROM generate_series(1, 6) AS i;

-- ---- attach ----
SELECT harden.stock_attach('product', 'stock');
SELECT relid, qty_column, key_column, guard, attached_by FROM harden.stock_tables;
SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint
 WHERE conrelid = 'product'::regclass AND contype = 'c';
-- The guard holds for every writer.
SELECT pg_temp.err($$ UPDATE product SET stock = -1 WHERE id = 1 $$);
-- Attaching again with the same columns changes nothing.
SELECT harden.stock_attach('product', 'stock', 'id');
SELECT count(*) AS guards FROM pg_constraint WHERE conrelid = 'product'::regclass AND contype = 'c';

-- ---- take ----
SELECT harden.stock_take('product', 1, 3) AS remaining;
SELECT harden.stock_take('product', 1::int, 7) AS remaining_int_key;
SELECT harden.stock_take('product', '2'::text, 1) AS remaining_text_key;
-- A key that an assignment cast would round is refused, not taken from
-- the row it rounds to.
SELECT pg_temp.err($$ SELECT harden.stock_take('product', 1.5, 1) $$) AS numeric_key;
SELECT pg_temp.err($$ SELECT harden.stock_take('product', 2.7::float8, 1) $$) AS float_key;
SELECT pg_temp.err($$ SELECT harden.stock_take_many('product', ARRAY[1.0, 2.5], ARRAY[1, 1]) $$) AS numeric_keys;
SELECT harden.stock_put('product', 2.0, 1) AS whole_numeric_key,
       harden.stock_take('product', 2.0::float8, 1) AS whole_float_key;
SELECT harden.stock_take('product', 2, 1, 'nowait') AS nowait,
       harden.stock_take('product', 2, 1, 'skip') AS skip,
       harden.stock_take('product', 2, 1, '200ms') AS timeout,
       harden.stock_take('product', 2, 1, 'BLOCK') AS block;
-- A lock timeout applies to the call only.
SHOW lock_timeout;
SELECT pg_temp.err($$ SELECT harden.stock_take('product', 1, 1) $$);
SELECT pg_temp.err($$ SELECT harden.stock_take('product', 2, 6) $$);
SELECT pg_temp.err($$ SELECT harden.stock_take('product', 2, 5, 'nowait') $$);
SELECT pg_temp.err($$ SELECT harden.stock_take('product', 99, 1) $$);
SELECT pg_temp.err($$ SELECT harden.stock_take('product', 99, 1, 'skip') $$);
SELECT pg_temp.err($$ SELECT harden.stock_take('product', 2, 0) $$);
SELECT pg_temp.err($$ SELECT harden.stock_take('product', 2, -4) $$);
SELECT pg_temp.err($$ SELECT harden.stock_take('product', 2, NULL) $$);
SELECT pg_temp.err($$ SELECT harden.stock_take('product', NULL::bigint, 1) $$);
SELECT pg_temp.err($$ SELECT harden.stock_take(NULL, 2, 1) $$);
SELECT pg_temp.err($$ SELECT harden.stock_take('product', 2, 1, 'later') $$);
SELECT pg_temp.err($$ SELECT harden.stock_take('product', 2, 1, '0') $$);
SELECT pg_temp.err($$ SELECT harden.stock_take('product', 2, 1, '-5ms') $$);
SELECT pg_temp.err($$ SELECT harden.stock_take('product', 2, 1, NULL) $$);
SELECT pg_temp.err($$ SELECT harden.stock_take('product', 'two'::text, 1) $$);
SELECT pg_temp.err($$ SELECT harden.stock_take('product', now(), 1) $$);
SELECT pg_temp.err($$ SELECT harden.stock_take('product', 2, 3000000000) $$);
SELECT id, stock FROM product ORDER BY id;

-- ---- take_many ----
-- Remaining per input line, duplicates summed (key 3 takes 1 + 3).
SELECT harden.stock_take_many('product', ARRAY[3, 4, 3], ARRAY[1, 2, 3]) AS remaining;
SELECT id, stock FROM product WHERE id IN (3, 4) ORDER BY id;
-- Every short line in one error, nothing taken.
SELECT pg_temp.err($$ SELECT harden.stock_take_many('product', ARRAY[5, 3, 4, 6], ARRAY[1, 7, 9, 11]) $$);
SELECT pg_temp.err($$ SELECT harden.stock_take_many('product', ARRAY[3, 3], ARRAY[4, 3]) $$);
SELECT pg_temp.err($$ SELECT harden.stock_take_many('product', ARRAY[5, 98, 3, 97], ARRAY[1, 1, 100, 1]) $$);
SELECT id, stock FROM product WHERE id IN (3, 4, 5, 6) ORDER BY id;
SELECT pg_temp.err($$ SELECT harden.stock_take_many('product', ARRAY[1, 2], ARRAY[1]) $$);
SELECT pg_temp.err($$ SELECT harden.stock_take_many('product', '{}'::bigint[], '{}') $$);
SELECT pg_temp.err($$ SELECT harden.stock_take_many('product', ARRAY[[1, 2]], ARRAY[1, 1]) $$);
SELECT pg_temp.err($$ SELECT harden.stock_take_many('product', ARRAY[5, NULL], ARRAY[1, 1]) $$);
SELECT pg_temp.err($$ SELECT harden.stock_take_many('product', ARRAY[5, 6], ARRAY[1, NULL]) $$);
SELECT pg_temp.err($$ SELECT harden.stock_take_many('product', ARRAY[5, 6], ARRAY[1, 0]) $$);
SELECT pg_temp.err($$ SELECT harden.stock_take_many('product', NULL::bigint[], ARRAY[1]) $$);
SELECT pg_temp.err($$ SELECT harden.stock_take_many('product', ARRAY[5], NULL) $$);
SELECT pg_temp.err($$ SELECT harden.stock_take_many('product', ARRAY[5, 5], ARRAY[9223372036854775807, 1]) $$);
-- At most 100000 lines a call, refused before anything is allocated for them.
SELECT pg_temp.err($$ SELECT harden.stock_take_many('product', array_fill(5, ARRAY[100001]), array_fill(1::bigint, ARRAY[100001])) $$);
SELECT pg_temp.err($$ SELECT harden.stock_reserve('product', array_fill(5, ARRAY[100001]), array_fill(1::bigint, ARRAY[100001]), '1 hour') $$);
SELECT pg_temp.err($$ SELECT harden.stock_take_many('product', ARRAY[5, 6], ARRAY[1, 1], 'sometimes') $$);
SELECT harden.stock_take_many('product', ARRAY[6, 5], ARRAY[1, 1], 'skip') AS skip,
       harden.stock_take_many('product', ARRAY['5', '6'], ARRAY[1, 1], 'nowait') AS nowait_text_keys;

-- ---- put ----
SELECT harden.stock_put('product', 1, 4) AS on_hand;
SELECT pg_temp.err($$ SELECT harden.stock_put('product', 1, 2147483647) $$);
SELECT pg_temp.err($$ SELECT harden.stock_put('product', 99, 1) $$);
SELECT pg_temp.err($$ SELECT harden.stock_put('product', 1, 0) $$);
SELECT pg_temp.err($$ SELECT harden.stock_put('product', NULL::int, 1) $$);
SELECT harden.stock_put('product', 1, 2147483647 - 4) AS at_the_limit;
UPDATE product SET stock = 10;

-- ---- reservations ----
SELECT harden.stock_reserve('product', ARRAY[2, 1, 2], ARRAY[1, 2, 3], '1 hour', 'cart-1') AS r1 \gset
SELECT "table", ref, status, keys, qtys, units, ttl > '59 minutes' AS ttl_ok, owner
  FROM harden.stock_reservations WHERE id = :r1;
SELECT id, stock FROM product WHERE id IN (1, 2) ORDER BY id;
SELECT harden.stock_release(:r1) AS released, harden.stock_release(:r1) AS again;
SELECT id, stock FROM product WHERE id IN (1, 2) ORDER BY id;
SELECT pg_temp.err(format('SELECT harden.stock_commit(%s)', :r1));

SELECT harden.stock_reserve('product', ARRAY[3], ARRAY[4], '1 hour', 'cart-2') AS r2 \gset
SELECT harden.stock_commit(:r2) AS committed, harden.stock_commit(:r2) AS again,
       harden.stock_release(:r2) AS release_after_commit;
SELECT status, closed_at IS NOT NULL AS closed FROM harden.stock_reservations WHERE id = :r2;
SELECT stock FROM product WHERE id = 3;

-- release_ref gives back every held reservation of a ref, once.
SELECT harden.stock_reserve('product', ARRAY[4], ARRAY[1], '1 hour', 'cart-3') IS NOT NULL AS r3a,
       harden.stock_reserve('product', ARRAY[4, 5], ARRAY[2, 2], '1 hour', 'cart-3') IS NOT NULL AS r3b;
SELECT id, stock FROM product WHERE id IN (4, 5) ORDER BY id;
SELECT harden.stock_release_ref('cart-3') AS released, harden.stock_release_ref('cart-3') AS again,
       harden.stock_release_ref('no-such-cart') AS none;
SELECT id, stock FROM product WHERE id IN (4, 5) ORDER BY id;

-- Expiry: stock_run_due gives back holds past their TTL, and only those.
SELECT harden.stock_reserve('product', ARRAY[6], ARRAY[3], '1 millisecond', 'cart-4') AS r4 \gset
SELECT harden.stock_reserve('product', ARRAY[6], ARRAY[2], '1 hour', 'cart-5') AS r5 \gset
SELECT pg_sleep(0.05);
SELECT harden.stock_run_due() AS expired, harden.stock_run_due() AS again;
SELECT id = :r4 AS is_r4, status FROM harden.stock_reservations WHERE id IN (:r4, :r5) ORDER BY id;
SELECT stock FROM product WHERE id = 6;
SELECT harden.stock_release(:r4) AS release_after_expiry;
SELECT pg_temp.err(format('SELECT harden.stock_commit(%s)', :r4));
SELECT harden.stock_commit(:r5) AS commit_r5;
SELECT stock FROM product WHERE id = 6;

SELECT pg_temp.err($$ SELECT harden.stock_reserve('product', ARRAY[1], ARRAY[1], NULL) $$);
SELECT pg_temp.err($$ SELECT harden.stock_reserve('product', ARRAY[1], ARRAY[1], '0 s') $$);
SELECT pg_temp.err($$ SELECT harden.stock_reserve('product', ARRAY[1], ARRAY[1], '-1 hour') $$);
SELECT pg_temp.err($$ SELECT harden.stock_reserve('product', ARRAY[1], ARRAY[1], '101 years') $$);
SELECT pg_temp.err($$ SELECT harden.stock_reserve('product', ARRAY[1], ARRAY[11], '1 hour') $$);
SELECT pg_temp.err($$ SELECT harden.stock_reserve('product', ARRAY[1, 2], ARRAY[1], '1 hour') $$);
SELECT pg_temp.err($$ SELECT harden.stock_commit(-1) $$);
SELECT pg_temp.err($$ SELECT harden.stock_release(-1) $$);
SELECT pg_temp.err($$ SELECT harden.stock_commit(NULL) $$);
SELECT pg_temp.err($$ SELECT harden.stock_release_ref(NULL) $$);
SELECT pg_temp.err($$ SELECT harden.stock_run_due(0) $$);
SELECT count(*) AS held FROM harden.stock_reservations WHERE status = 'held';

-- A reservation is rolled back with its transaction, stock and hold alike.
BEGIN;
SELECT harden.stock_reserve('product', ARRAY[1], ARRAY[5], '1 hour', 'cart-6') IS NOT NULL AS reserved;
ROLLBACK;
SELECT stock FROM product WHERE id = 1;
SELECT count(*) AS cart6 FROM harden.stock_reservations WHERE ref = 'cart-6';

-- ---- other column types ----
CREATE TABLE sku (code text PRIMARY KEY, on_hand numeric(12) NOT NULL);
INSERT INTO sku VALUES ('mug-red', 5), ('mug-blue', 0);
SELECT harden.stock_attach('sku', 'on_hand');
SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'sku'::regclass AND contype = 'c';
SELECT harden.stock_take('sku', 'mug-red'::text, 2) AS red;
SELECT pg_temp.err($$ SELECT harden.stock_take_many('sku', ARRAY['mug-red', 'mug-blue'], ARRAY[4, 1]) $$);
SELECT harden.stock_put('sku', 'mug-blue'::varchar, 100000000000) AS blue;

-- A table that already has the guard keeps it through attach and detach.
CREATE TABLE part (id int PRIMARY KEY, n smallint NOT NULL CHECK (n >= 0), sku uuid UNIQUE);
INSERT INTO part VALUES (1, 32000, '00000000-0000-0000-0000-000000000001');
SELECT harden.stock_attach('part', 'n', 'sku');
SELECT guard IS NULL AS kept_own_guard FROM harden.stock_tables WHERE relid = 'part'::regclass;
SELECT harden.stock_take('part', '00000000-0000-0000-0000-000000000001'::text, 1) AS by_uuid_text;
SELECT pg_temp.err($$ SELECT harden.stock_put('part', '00000000-0000-0000-0000-000000000001'::uuid, 1000) $$);
SELECT harden.stock_detach('part') AS detached, harden.stock_detach('part') AS again;
SELECT count(*) AS own_guard_left FROM pg_constraint WHERE conrelid = 'part'::regclass AND contype = 'c';
SELECT pg_temp.err($$ SELECT harden.stock_take('part', 1, 1) $$);

-- ---- attach errors ----
CREATE TABLE bad (id int PRIMARY KEY, a int, b text NOT NULL, c numeric(10,2) NOT NULL,
                  d int NOT NULL, e int NOT NULL, u int UNIQUE, v int NOT NULL);
CREATE TABLE nopk (q int NOT NULL);
CREATE TABLE twopk (a int, b int, q int NOT NULL, PRIMARY KEY (a, b));
CREATE VIEW vbad AS SELECT * FROM bad;
SELECT pg_temp.err($$ SELECT harden.stock_attach('bad', 'a') $$);
SELECT pg_temp.err($$ SELECT harden.stock_attach('bad', 'b') $$);
SELECT pg_temp.err($$ SELECT harden.stock_attach('bad', 'c') $$);
-- A numeric without a scale holds fractions: refused too, and so is a
-- quantity column retyped to one after attach.
CREATE TABLE frac (id int PRIMARY KEY, q numeric NOT NULL);
INSERT INTO frac VALUES (1, 2.5);
SELECT pg_temp.err($$ SELECT harden.stock_attach('frac', 'q') $$);
ALTER TABLE frac ALTER COLUMN q TYPE numeric(10);
SELECT harden.stock_attach('frac', 'q');
SELECT harden.stock_take('frac', 1, 1) AS frac_take;
ALTER TABLE frac ALTER COLUMN q TYPE numeric;
SELECT pg_temp.err($$ SELECT harden.stock_take('frac', 1, 1) $$);
DROP TABLE frac;
SELECT pg_temp.err($$ SELECT harden.stock_attach('bad', 'zz') $$);
SELECT pg_temp.err($$ SELECT harden.stock_attach('bad', 'd', 'e') $$);
SELECT pg_temp.err($$ SELECT harden.stock_attach('bad', 'd', 'zz') $$);
SELECT pg_temp.err($$ SELECT harden.stock_attach('bad', 'd', 'd') $$);
SELECT pg_temp.err($$ SELECT harden.stock_attach('nopk', 'q') $$);
SELECT pg_temp.err($$ SELECT harden.stock_attach('twopk', 'q') $$);
SELECT pg_temp.err($$ SELECT harden.stock_attach('vbad', 'd') $$);
SELECT pg_temp.err($$ SELECT harden.stock_attach(NULL, 'd') $$);
SELECT pg_temp.err($$ SELECT harden.stock_attach('bad', NULL) $$);
SELECT pg_temp.err($$ SELECT harden.stock_detach(NULL) $$);
-- Rows that break the guard: attach fails and leaves nothing behind.
UPDATE bad SET v = v;
INSERT INTO bad (id, b, c, d, e, v) VALUES (1, 'x', 1, 1, 1, -3);
SELECT pg_temp.err($$ SELECT harden.stock_attach('bad', 'v') $$);
SELECT count(*) AS attached FROM harden.stock_tables WHERE relid = 'bad'::regclass;
-- A unique key column other than the primary key.
SELECT harden.stock_attach('bad', 'd', 'u');
SELECT key_column FROM harden.stock_tables WHERE relid = 'bad'::regclass;
SELECT harden.stock_detach('bad');

-- ---- the table changes under the cached plans ----
SELECT harden.stock_take('product', 1, 1) AS before_alter;
ALTER TABLE product ALTER COLUMN stock TYPE bigint;
SELECT harden.stock_take('product', 1, 1) AS after_type_change;
ALTER TABLE product RENAME COLUMN stock TO qty;
SELECT pg_temp.err($$ SELECT harden.stock_take('product', 1, 1) $$);
ALTER TABLE product RENAME COLUMN qty TO stock;
SELECT harden.stock_take('product', 1, 1) AS after_rename_back;
-- A renamed or moved table keeps its stock: the statements follow the table,
-- not a new table that takes its old name.
CREATE TABLE box (id int PRIMARY KEY, q int NOT NULL);
INSERT INTO box VALUES (1, 10);
SELECT harden.stock_attach('box', 'q');
SELECT harden.stock_take('box', 1, 1) AS box_take;
ALTER TABLE box RENAME TO box_old;
CREATE TABLE box (id int PRIMARY KEY, q int NOT NULL);
INSERT INTO box VALUES (1, 100);
SELECT harden.stock_take('box_old', 1, 1) AS renamed_take;
CREATE SCHEMA pgh_stock_moved;
ALTER TABLE box_old SET SCHEMA pgh_stock_moved;
ALTER TABLE box SET SCHEMA pgh_stock_moved;
ALTER TABLE pgh_stock_moved.box RENAME TO box_new;
ALTER TABLE pgh_stock_moved.box_old RENAME TO box;
ALTER TABLE pgh_stock_moved.box_new SET SCHEMA public;
ALTER TABLE box_new RENAME TO box_old;
SELECT harden.stock_take('pgh_stock_moved.box', 1, 1) AS moved_take;
SELECT 'attached' AS t, q FROM pgh_stock_moved.box UNION ALL SELECT 'other', q FROM box_old;
DROP TABLE box_old;
DROP SCHEMA pgh_stock_moved CASCADE;
-- Inheritance children are not part of a plain stock table: its unique
-- index covers its own rows only, so only those are taken from.
CREATE TABLE crate_parent (id int PRIMARY KEY, q int NOT NULL);
CREATE TABLE crate_child (PRIMARY KEY (id)) INHERITS (crate_parent);
INSERT INTO crate_parent VALUES (1, 10);
INSERT INTO crate_child VALUES (1, 5), (2, 10);
SELECT harden.stock_attach('crate_parent', 'q');
SELECT harden.stock_take('crate_parent', 1, 1) AS parent_row;
SELECT pg_temp.err($$ SELECT harden.stock_take('crate_parent', 2, 1) $$) AS child_row;
SELECT harden.stock_take_many('crate_parent', ARRAY[1], ARRAY[1], 'nowait') AS parent_row_locked;
SELECT harden.stock_put('crate_parent', 1, 2) AS put_back;
SELECT tableoid::regclass AS t, id, q FROM crate_parent ORDER BY 1, 2;
DROP TABLE crate_parent CASCADE;
-- Re-attaching or detaching is refused while holds are active.
SELECT harden.stock_reserve('product', ARRAY[1], ARRAY[1], '1 hour', 'cart-7') AS r7 \gset
ALTER TABLE product ADD COLUMN stock2 int NOT NULL DEFAULT 0;
SELECT pg_temp.err($$ SELECT harden.stock_attach('product', 'stock2') $$);
SELECT pg_temp.err($$ SELECT harden.stock_detach('product') $$);
SELECT harden.stock_release(:r7);
SELECT harden.stock_attach('product', 'stock2');
SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint
 WHERE conrelid = 'product'::regclass AND contype = 'c';
SELECT harden.stock_put('product', 1, 2) AS stock2;
SELECT harden.stock_attach('product', 'stock');
-- Dropping the table drops its configuration and holds.
SELECT harden.stock_reserve('product', ARRAY[2], ARRAY[1], '1 hour', 'cart-8') IS NOT NULL AS reserved;
DROP TABLE product;
SELECT count(*) AS configs FROM harden.stock_tables WHERE relid::text NOT IN ('sku');
SELECT count(*) AS holds_of_dropped FROM harden.stock_holds WHERE ref = 'cart-8';

-- ---- privileges ----
CREATE TABLE shelf (id int PRIMARY KEY, q int NOT NULL);
INSERT INTO shelf VALUES (1, 10), (2, 10);
SELECT harden.stock_attach('shelf', 'q');
CREATE ROLE pgh_stock_clerk;
CREATE ROLE pgh_stock_viewer;
CREATE ROLE pgh_stock_clerk2;
GRANT USAGE ON SCHEMA harden TO pgh_stock_clerk, pgh_stock_clerk2, pgh_stock_viewer;
GRANT SELECT, UPDATE ON shelf TO pgh_stock_clerk, pgh_stock_clerk2;
GRANT SELECT ON shelf TO pgh_stock_viewer;
SELECT harden.stock_reserve('shelf', ARRAY[1], ARRAY[1], '1 hour', 'cart-9') AS r9 \gset
CREATE TABLE vault (id int PRIMARY KEY, q int NOT NULL);
INSERT INTO vault VALUES (1, 10);
SELECT harden.stock_attach('vault', 'q');
SELECT harden.stock_reserve('vault', ARRAY[1], ARRAY[1], '1 hour', 'vault-secret') IS NOT NULL AS vault_reserved;
SET ROLE pgh_stock_viewer;
SELECT pg_temp.err($$ SELECT harden.stock_take('shelf', 1, 1) $$);
SELECT pg_temp.err(format('SELECT harden.stock_release(%s)', :r9));
SELECT pg_temp.err(format('SELECT harden.stock_commit(%s)', :r9));
SELECT pg_temp.err($$ SELECT harden.stock_attach('shelf', 'q') $$);
SELECT pg_temp.err($$ SELECT harden.stock_run_due() $$);
SELECT pg_temp.err($$ INSERT INTO harden.stock_holds (relid, keys, qtys, expires_at, owner) VALUES ('shelf', '{1}', '{-100}', now(), 'pgh_stock_viewer') $$);
SELECT pg_temp.err($$ UPDATE harden.stock_holds SET qtys = '{100}' $$);
SELECT count(*) AS visible FROM harden.stock_reservations WHERE ref = 'cart-9';
-- A function of the viewer's in the condition sees only the rows it may see.
CREATE FUNCTION pg_temp.leak(text) RETURNS boolean LANGUAGE plpgsql COST 0.0000001 AS $$
BEGIN RAISE WARNING 'saw %', $1; RETURN true; END $$;
SELECT count(*) AS visible_leak FROM harden.stock_reservations WHERE pg_temp.leak(ref);
DROP FUNCTION pg_temp.leak(text);
SET ROLE pgh_stock_clerk;
SELECT harden.stock_take('shelf', 1, 1) AS clerk_take;
SELECT harden.stock_reserve('shelf', ARRAY[2, 1], ARRAY[1, 1], '1 hour', 'cart-10') IS NOT NULL AS clerk_reserve;
SELECT harden.stock_reserve('shelf', ARRAY[2], ARRAY[1], '1 hour', 'cart-11') AS r11 \gset
SELECT ref, owner FROM harden.stock_reservations WHERE ref LIKE 'cart-%' ORDER BY id;
-- A hold is committed or released by the role that made it or the table's
-- owner; another role that may update the table cannot finish it.
SELECT pg_temp.err(format('SELECT harden.stock_release(%s)', :r9)) AS clerk_release_other;
SELECT pg_temp.err(format('SELECT harden.stock_commit(%s)', :r9)) AS clerk_commit_other;
SET ROLE pgh_stock_clerk2;
SELECT pg_temp.err(format('SELECT harden.stock_release(%s)', :r11)) AS clerk2_release;
SELECT pg_temp.err(format('SELECT harden.stock_commit(%s)', :r11)) AS clerk2_commit;
-- stock_release_ref leaves other roles' holds with the same ref alone.
SELECT harden.stock_reserve('shelf', ARRAY[1], ARRAY[1], '1 hour', 'cart-10') IS NOT NULL AS clerk2_reserve;
SELECT harden.stock_release_ref('cart-10') AS clerk2_release_ref;
SELECT ref, owner, status FROM harden.stock_reservations WHERE ref = 'cart-10' ORDER BY id;
SET ROLE pgh_stock_clerk;
SELECT harden.stock_release_ref('cart-10') AS clerk_release_ref, harden.stock_release(:r11) AS clerk_release_own;
RESET ROLE;
-- The table's owner may finish anyone's hold.
SELECT harden.stock_release(:r9) AS owner_release;
SELECT id, q FROM shelf ORDER BY id;
SELECT proname, has_function_privilege('public', p.oid, 'EXECUTE') AS public_execute, prosecdef
  FROM pg_proc p WHERE pronamespace = 'harden'::regnamespace AND proname LIKE 'stock%' ORDER BY 1;
DROP TABLE shelf, vault;
REVOKE USAGE ON SCHEMA harden FROM pgh_stock_clerk, pgh_stock_clerk2, pgh_stock_viewer;
DROP ROLE pgh_stock_clerk;
DROP ROLE pgh_stock_clerk2;
DROP ROLE pgh_stock_viewer;

-- ---- a trigger that skips the update ----
-- A BEFORE UPDATE trigger returning NULL (or a row-level security policy)
-- makes an UPDATE change no row: every stock update checks its row count,
-- fails with PH309 and changes nothing, rather than reporting a shortage or
-- an overflow, or taking nothing while claiming success.
CREATE TABLE tray (id int PRIMARY KEY, q int NOT NULL);
INSERT INTO tray VALUES (1, 10), (2, 10);
SELECT harden.stock_attach('tray', 'q');
SELECT harden.stock_reserve('tray', ARRAY[1], ARRAY[2], '1 hour', 'tray-1') AS rt \gset
CREATE FUNCTION pg_temp.tray_skip() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
CREATE TRIGGER tray_skip BEFORE UPDATE ON tray FOR EACH ROW EXECUTE FUNCTION pg_temp.tray_skip();
SELECT pg_temp.err($$ SELECT harden.stock_take('tray', 1, 1) $$) AS take;
SELECT pg_temp.err($$ SELECT harden.stock_take('tray', 1, 1, '200ms') $$) AS take_timeout;
SELECT pg_temp.err($$ SELECT harden.stock_take('tray', 1, 1, 'nowait') $$) AS take_nowait;
SELECT pg_temp.err($$ SELECT harden.stock_take_many('tray', ARRAY[2, 1], ARRAY[1, 1]) $$) AS take_many;
SELECT pg_temp.err($$ SELECT harden.stock_reserve('tray', ARRAY[1], ARRAY[1], '1 hour') $$) AS reserve;
SELECT pg_temp.err($$ SELECT harden.stock_put('tray', 1, 1) $$) AS put;
SELECT pg_temp.err(format('SELECT harden.stock_release(%s)', :rt)) AS release;
-- Shortages and unknown keys are still told apart.
SELECT pg_temp.err($$ SELECT harden.stock_take('tray', 1, 100) $$) AS short;
SELECT pg_temp.err($$ SELECT harden.stock_take('tray', 3, 1) $$) AS unknown;
SELECT pg_temp.err($$ SELECT harden.stock_put('tray', 1, 2147483647) $$) AS overflow;
DROP TRIGGER tray_skip ON tray;
SELECT status FROM harden.stock_holds WHERE id = :rt;
SELECT harden.stock_release(:rt) AS released;
SELECT id, q FROM tray ORDER BY id;
DROP TABLE tray;

-- ---- keys that print differently per session ----
-- A hold stores its keys as text. They are written and read back with the
-- output settings pinned, so a date key reserved under one DateStyle goes
-- back to the same row when the hold is released or expires under another.
CREATE TABLE showing (day date PRIMARY KEY, seats int NOT NULL);
INSERT INTO showing VALUES ('2025-02-01', 10), ('2025-01-02', 10);
SELECT harden.stock_attach('showing', 'seats');
SET DateStyle = 'SQL, DMY';
SELECT harden.stock_reserve('showing', ARRAY['2025-02-01'::date], ARRAY[3], '1 hour') AS rd1 \gset
RESET DateStyle;
SELECT keys FROM harden.stock_holds WHERE id = :rd1;
SELECT harden.stock_release(:rd1) AS released_iso;
SELECT harden.stock_reserve('showing', ARRAY['2025-01-02'::date], ARRAY[2], '1 hour') AS rd2 \gset
SET DateStyle = 'German, DMY';
SELECT harden.stock_release(:rd2) AS released_german;
RESET DateStyle;
SELECT day, seats FROM showing ORDER BY day;
DROP TABLE showing;

-- ---- giving back what cannot all go back ----
-- A row deleted while a hold on it is held: releasing (or expiry) gives the
-- other lines back and warns about the missing one, rather than failing and
-- leaving the hold, and with it every later expiry, stuck.
CREATE TABLE pallet (id int PRIMARY KEY, q int NOT NULL);
INSERT INTO pallet VALUES (1, 10), (2, 10), (3, 10);
SELECT harden.stock_attach('pallet', 'q');
SELECT harden.stock_reserve('pallet', ARRAY[1, 2], ARRAY[1, 2], '1 hour') AS rp \gset
DELETE FROM pallet WHERE id = 1;
SELECT harden.stock_release(:rp) AS released_without_row_1;
SELECT harden.stock_reserve('pallet', ARRAY[2, 3], ARRAY[1, 1], '1 microsecond') IS NOT NULL AS reserved;
DELETE FROM pallet WHERE id = 3;
-- Expiry gives back one table at a time: a table whose trigger fails keeps
-- its holds held (a WARNING says why) and the other tables' holds still go back.
CREATE TABLE skid (id int PRIMARY KEY, q int NOT NULL);
INSERT INTO skid VALUES (1, 10);
SELECT harden.stock_attach('skid', 'q');
SELECT harden.stock_reserve('skid', ARRAY[1], ARRAY[4], '1 microsecond') AS rs \gset
CREATE FUNCTION pg_temp.skid_fail() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'skid is frozen'; END $$;
CREATE TRIGGER skid_fail BEFORE UPDATE ON skid FOR EACH ROW EXECUTE FUNCTION pg_temp.skid_fail();
SELECT pg_sleep(0.01);
SELECT harden.stock_run_due() AS expired;
SELECT status, attempts, last_error FROM harden.stock_holds WHERE id = :rs;
SELECT next_try > clock_timestamp() AS in_backoff FROM harden.stock_holds WHERE id = :rs;
DROP TRIGGER skid_fail ON skid;
-- In its backoff the hold waits; once the delay has passed it goes back.
SELECT harden.stock_run_due() AS expired_in_backoff;
UPDATE harden.stock_holds SET next_try = clock_timestamp() WHERE id = :rs;
SELECT harden.stock_run_due() AS expired_later;
SELECT 'pallet' AS t, id, q FROM pallet UNION ALL SELECT 'skid', id, q FROM skid ORDER BY 1, 2;
DROP TABLE pallet, skid;

-- ---- expiry runs as the table's owner ----
-- stock_run_due (an administrator, or the background worker as superuser)
-- gives stock back as the owner of each table, in a security-restricted
-- operation with a pinned search_path: the owner's trigger never runs with
-- the privileges of whoever runs expiry.
CREATE ROLE pgh_stock_owner;
GRANT CREATE ON SCHEMA public TO pgh_stock_owner;
GRANT USAGE ON SCHEMA harden TO pgh_stock_owner;
SET ROLE pgh_stock_owner;
CREATE TABLE crate (id int PRIMARY KEY, q int NOT NULL);
INSERT INTO crate VALUES (1, 10);
CREATE TABLE crate_log (who text, super boolean, path text, escalated text);
CREATE FUNCTION crate_spy() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  escalated text := 'no';
BEGIN
  BEGIN
    ALTER ROLE pgh_stock_owner SUPERUSER;
    escalated := 'yes';
  EXCEPTION WHEN OTHERS THEN
    NULL;
  END;
  INSERT INTO public.crate_log
    SELECT current_user, rolsuper, current_setting('search_path'), escalated
      FROM pg_roles WHERE rolname = current_user;
  RETURN NEW;
END $$;
CREATE TRIGGER crate_spy BEFORE UPDATE ON crate FOR EACH ROW EXECUTE FUNCTION crate_spy();
RESET ROLE;
SELECT harden.stock_attach('crate', 'q');
SET ROLE pgh_stock_owner;
SELECT harden.stock_reserve('crate', ARRAY[1], ARRAY[3], '1 microsecond', 'crate-1') IS NOT NULL AS reserved;
TRUNCATE crate_log;
RESET ROLE;
SELECT pg_sleep(0.01);
SELECT harden.stock_run_due() >= 1 AS expired;
SELECT who, super, path, escalated FROM crate_log;
SELECT rolsuper AS owner_became_superuser FROM pg_roles WHERE rolname = 'pgh_stock_owner';
SELECT q FROM crate;
DROP TABLE crate, crate_log;
DROP FUNCTION crate_spy();
REVOKE CREATE ON SCHEMA public FROM pgh_stock_owner;
REVOKE USAGE ON SCHEMA harden FROM pgh_stock_owner;
DROP ROLE pgh_stock_owner;

-- ---- counters ----
CREATE TABLE bin (id int PRIMARY KEY, q int NOT NULL);
INSERT INTO bin VALUES (1, 5);
SELECT harden.stock_attach('bin', 'q');
SELECT harden.metrics_reset();
SELECT harden.stock_take('bin', 1, 1), harden.stock_put('bin', 1, 1);
SELECT pg_temp.err($$ SELECT harden.stock_take('bin', 1, 100) $$);
SELECT harden.stock_commit(harden.stock_reserve('bin', ARRAY[1], ARRAY[1], '1 hour'));
SELECT key, value::bigint
  FROM jsonb_each(harden.metrics_json()->'metrics') AS m(key, v),
       jsonb_path_query(v, '$.samples[*] ? (@.labels.database == $db).value',
                        jsonb_build_object('db', current_database())) AS value
 WHERE key LIKE 'harden_stock_%' AND v ->> 'type' = 'counter' ORDER BY key;
DROP TABLE bin;
DROP TABLE sku, part, bad, nopk, twopk CASCADE;
SELECT count(*) AS configs_left FROM harden.stock_tables;
