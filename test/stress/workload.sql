-- test/stress/workload.sql: the randomized workload of `make stress`, run by
-- pgbench clients (test/stress/workload.pgbench) against shop.sql's tables.
-- stress_op(op, k) makes one cache, state-machine or stock call chosen by
-- op with arguments drawn from k and random(); errors pg_harden documents
-- are expected (short stock, a transition not allowed from the current
-- state, a locked row with 'nowait', ...); any other SQLSTATE is recorded in stress_errors with its message.
SET client_min_messages = warning;
CREATE TABLE stress_errors (at timestamptz DEFAULT clock_timestamp(), op int, sqlstate text,
                            message text);
CREATE SEQUENCE ticket_id START 100000;

-- The SQLSTATEs of the README's Errors table.
CREATE FUNCTION stress_documented(code text) RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
  SELECT code = ANY (ARRAY['PH001', 'PH101', 'PH102', 'PH103', 'PH104', 'PH105',
    'PH201', 'PH202', 'PH203', 'PH204', 'PH205', 'PH206', 'PH207', 'PH208', 'PH209', 'PH210', 'PH211',
    'PH301', 'PH302', 'PH303', 'PH304', 'PH305', 'PH306', 'PH307', 'PH308',
    '40001', '0A000', '42809', '42P01', '42701', '39P01', '42501',
    '22004', '22023', '2202E', '22003', '42804', '55P03'])
$$;

CREATE FUNCTION stress_pick(a text[]) RETURNS text LANGUAGE sql VOLATILE AS $$
  SELECT a[1 + floor(random() * cardinality(a))::int]
$$;

CREATE FUNCTION stress_op(op int, k int) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  st text := 'ok';
  msg text;
  id bigint;
  keys int[];
  qtys bigint[];
  n int;
  left_ bigint;
BEGIN
  BEGIN
    CASE op
    WHEN 0 THEN   -- cache: set (three types), get, delete
      CASE k % 5
      WHEN 0 THEN PERFORM harden.cache_set('w:' || k % 2000, jsonb_build_object('k', k, 'pad', repeat('p', k % 500)),
                                           ttl => '30 seconds', tags => ARRAY['w', 'w' || k % 10]);
      WHEN 1 THEN PERFORM harden.cache_set('w:' || k % 2000, repeat('t', k % 3000));
      WHEN 2 THEN PERFORM harden.cache_set('w:' || k % 2000, decode(md5(k::text), 'hex'), secure => k % 2 = 0);
      WHEN 3 THEN PERFORM harden.cache_get('w:' || k % 2000);
      ELSE PERFORM harden.cache_delete('w:' || k % 2000);
      END CASE;
    WHEN 1 THEN   -- cache: gets of the other types, exists, ttl, tag invalidation
      CASE k % 6
      WHEN 0 THEN PERFORM harden.cache_get_text('w:' || k % 2000);
      WHEN 1 THEN PERFORM harden.cache_get_bytea('w:' || k % 2000);
      WHEN 2 THEN PERFORM harden.cache_exists('w:' || k % 2000);
      WHEN 3 THEN PERFORM harden.cache_ttl('w:' || k % 2000);
      WHEN 4 THEN PERFORM harden.cache_invalidate_tag('w' || k % 10);
      ELSE PERFORM harden.cache_get('product:' || k % 60);
      END CASE;
    WHEN 2 THEN   -- cache_query on watched tables, with parameters
      CASE k % 3
      WHEN 0 THEN PERFORM harden.cache_query('q:cheap:' || k % 20,
                    'SELECT id, name, price, stock FROM product WHERE price < $1 ORDER BY id', NULL, k % 20);
      WHEN 1 THEN PERFORM harden.cache_query('q:orders:' || k % 97,
                    'SELECT id, status, payment FROM shop_order WHERE customer = $1 ORDER BY id', '10 seconds', k % 97);
      ELSE PERFORM harden.cache_query('q:counts',
                    'SELECT status, count(*) AS n FROM shop_order GROUP BY status ORDER BY status');
      END CASE;
    WHEN 3 THEN   -- orders: events, direct updates (often refused)
      IF k % 3 = 0 THEN
        UPDATE shop_order SET status = stress_pick(ARRAY['pending', 'processing', 'shipped', 'delivered', 'cancelled'])
         WHERE shop_order.id = 1 + k % 500;
      ELSE
        PERFORM harden.fsm_fire('shop_order', to_jsonb(1 + k % 500),
                                stress_pick(ARRAY['pay', 'ship', 'deliver', 'cancel', 'complete', 'fail', 'refund']));
      END IF;
    WHEN 4 THEN   -- carts, breakers, tickets (whose timer the worker applies)
      CASE k % 4
      WHEN 0 THEN PERFORM harden.fsm_fire('cart', to_jsonb(1 + k % 200), stress_pick(ARRAY['submit', 'convert', 'abandon']));
      WHEN 1 THEN PERFORM harden.fsm_fire('breaker', to_jsonb('svc' || 1 + k % 20), stress_pick(ARRAY['trip', 'probe', 'reset']));
      WHEN 2 THEN PERFORM harden.fsm_fire('ticket', to_jsonb(1 + k % 200), stress_pick(ARRAY['start', 'close']));
      ELSE          -- a new ticket (or a refused one), opened: the worker makes it stale
        id := nextval('ticket_id');
        INSERT INTO ticket VALUES (id, stress_pick(ARRAY['new', 'new', 'open']));
        PERFORM harden.fsm_fire('ticket', to_jsonb(id), 'start');
      END CASE;
      PERFORM harden.fsm_can('shop_order', to_jsonb(1 + k % 500), 'shipped');
    WHEN 5 THEN   -- a take, recorded with the units
      n := 1 + k % 3;
      left_ := harden.stock_take('product', 1 + k % 50, n, stress_pick(ARRAY['block', 'nowait', 'skip', '50ms']));
      IF left_ IS NOT NULL THEN
        INSERT INTO stock_taken VALUES (1 + k % 50, n);
      END IF;
    WHEN 6 THEN   -- an order of one to five lines
      n := 1 + k % 5;
      SELECT array_agg(1 + floor(random() * 50)::int), array_agg(1 + floor(random() * 3)::bigint)
        INTO keys, qtys FROM generate_series(1, n);
      IF harden.stock_take_many('product', keys, qtys, stress_pick(ARRAY['block', 'block', 'skip', '100ms'])) IS NOT NULL THEN
        INSERT INTO stock_taken SELECT * FROM unnest(keys, qtys);
      END IF;
    WHEN 7 THEN   -- reservations: commit, release, or leave to expire
      n := 1 + k % 3;
      SELECT array_agg(1 + floor(random() * 50)::int), array_agg(1::bigint)
        INTO keys, qtys FROM generate_series(1, n);
      id := harden.stock_reserve('product', keys, qtys, stress_pick(ARRAY['1 second', '1 minute'])::interval, 'cart:' || k % 100);
      CASE k % 4
      WHEN 0 THEN PERFORM harden.stock_commit(id);
      WHEN 1 THEN PERFORM harden.stock_release(id);
      WHEN 2 THEN PERFORM harden.stock_release_ref('cart:' || k % 100);
      ELSE NULL;
      END CASE;
    ELSE          -- restock, views, metrics
      CASE k % 4
      WHEN 0 THEN
        PERFORM harden.stock_put('product', 1 + k % 50, 5);
        INSERT INTO stock_taken VALUES (1 + k % 50, -5);
      WHEN 1 THEN PERFORM count(*) FROM harden.cache_entries;
      WHEN 2 THEN PERFORM harden.metrics();
      ELSE PERFORM count(*) FROM harden.stock_reservations WHERE status = 'held';
      END CASE;
    END CASE;
  EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
    IF NOT stress_documented(st) THEN
      INSERT INTO stress_errors (op, sqlstate, message) VALUES (op, st, left(msg, 300));
    END IF;
  END;
  RETURN st;
END $$;
