-- test/attack/hostile.sql: the hostile table owner of the attacker suites
-- (test/pgtap/attacker.sql, test/worker/attacker.sql), included with \ir.
--
-- pg_temp.hostile_setup(r) makes role r (no superuser, no createrole),
-- owner of schema r with:
--   r.cart      a table the shipped machine 'cart' is attached to (its
--               timed transition submitted -> abandoned), rows 1 and 2
--               submitted;
--   r.product   a stock table, stock 10;
--   r.trap()    its BEFORE UPDATE trigger on both tables, for the timer's
--               update and the hold's give-back: it records that it ran
--               (r.traps) and calls set_config(..., false) to point the
--               session's search_path at schema r and to change work_mem,
--               application_name and harden.reason;
--   functions and operators named like the built-ins pg_harden's own SQL
--   uses (now(), clock_timestamp(), make_interval(), =, <>, <, <=, >, +, -,
--   *, and domains named oid and text): each records its call in r.calls
--   and tries ALTER ROLE r SUPERUSER before returning the built-in's result.
-- The caller is a superuser (the administrator).
CREATE FUNCTION pg_temp.hostile_setup(r name) RETURNS void LANGUAGE plpgsql AS $setup$
DECLARE
  ddl text;
  o record;
  n int := 0;
BEGIN
  EXECUTE format('CREATE ROLE %I NOSUPERUSER NOCREATEROLE NOCREATEDB', r);
  EXECUTE format('CREATE SCHEMA %I AUTHORIZATION %I', r, r);
  EXECUTE format('GRANT USAGE ON SCHEMA harden TO %I', r);
  EXECUTE format('SET LOCAL ROLE %I', r);
  ddl := $ddl$
    CREATE TABLE @.calls (fn text, usr text);
    CREATE TABLE @.traps (tbl text, usr text, restricted boolean);
    CREATE TABLE @.cart (id int PRIMARY KEY, status text NOT NULL DEFAULT 'pending');
    CREATE TABLE @.product (id int PRIMARY KEY, stock int NOT NULL);
    CREATE FUNCTION @.trap() RETURNS trigger LANGUAGE plpgsql AS $t$
    DECLARE
      restricted boolean := false;
    BEGIN
      -- Restricted: a temporary table cannot be created.
      BEGIN
        CREATE TEMP TABLE pg_temp.hostile_probe (x int);
        DROP TABLE pg_temp.hostile_probe;
      EXCEPTION WHEN OTHERS THEN
        restricted := true;
      END;
      INSERT INTO @.traps VALUES (TG_TABLE_NAME, current_user, restricted);
      PERFORM pg_catalog.set_config('search_path', '@, pg_catalog, pg_temp', false);
      PERFORM pg_catalog.set_config('work_mem', '7777kB', false);
      PERFORM pg_catalog.set_config('application_name', 'planted', false);
      PERFORM pg_catalog.set_config('harden.reason', 'planted', false);
      RETURN NEW;
    END $t$;
    CREATE TRIGGER a_trap BEFORE UPDATE ON @.cart FOR EACH ROW
      WHEN (NEW.status OPERATOR(pg_catalog.=) 'abandoned') EXECUTE FUNCTION @.trap();
    CREATE TRIGGER a_trap BEFORE UPDATE ON @.product FOR EACH ROW
      WHEN (NEW.stock OPERATOR(pg_catalog.>) OLD.stock) EXECUTE FUNCTION @.trap();
    -- Records a call whoever makes it; the attempt below runs as the caller.
    CREATE FUNCTION @.record(what text, usr text) RETURNS void LANGUAGE sql SECURITY DEFINER
      SET search_path = pg_catalog, pg_temp AS $h$ INSERT INTO @.calls VALUES (what, usr) $h$;
    CREATE FUNCTION @.hit(what text) RETURNS void LANGUAGE plpgsql
      SET search_path = pg_catalog, pg_temp AS $h$
    BEGIN
      PERFORM @.record(what, current_user);
      BEGIN
        ALTER ROLE @ SUPERUSER;
      EXCEPTION WHEN OTHERS THEN
        NULL;
      END;
    END $h$;
    CREATE FUNCTION @.now() RETURNS timestamptz LANGUAGE plpgsql
      SET search_path = pg_catalog, pg_temp AS $h$
      BEGIN PERFORM @.hit('now()'); RETURN pg_catalog.now(); END $h$;
    CREATE FUNCTION @.clock_timestamp() RETURNS timestamptz LANGUAGE plpgsql
      SET search_path = pg_catalog, pg_temp AS $h$
      BEGIN PERFORM @.hit('clock_timestamp()'); RETURN pg_catalog.clock_timestamp(); END $h$;
    CREATE FUNCTION @.make_interval(secs integer) RETURNS interval LANGUAGE plpgsql
      SET search_path = pg_catalog, pg_temp AS $h$
      BEGIN PERFORM @.hit('make_interval()'); RETURN pg_catalog.make_interval(secs => secs); END $h$;
    CREATE FUNCTION @.ok(what text) RETURNS boolean LANGUAGE plpgsql
      SET search_path = pg_catalog, pg_temp AS $h$
      BEGIN PERFORM @.hit(what); RETURN true; END $h$;
  $ddl$;
  EXECUTE replace(ddl, '@', quote_ident(r));
  FOR o IN SELECT * FROM (VALUES
      ('=', 'bigint', 'bigint', 'boolean'), ('=', 'integer', 'integer', 'boolean'),
      ('=', 'text', 'text', 'boolean'), ('=', 'oid', 'oid', 'boolean'),
      ('=', 'regclass', 'regclass', 'boolean'), ('=', 'jsonb', 'jsonb', 'boolean'),
      ('=', 'tid', 'tid', 'boolean'), ('<>', 'text', 'text', 'boolean'),
      ('>', 'bigint', 'bigint', 'boolean'), ('>=', 'integer', 'bigint', 'boolean'),
      ('<', 'timestamptz', 'timestamptz', 'boolean'), ('<=', 'timestamptz', 'timestamptz', 'boolean'),
      ('+', 'timestamptz', 'interval', 'timestamptz'), ('-', 'timestamptz', 'interval', 'timestamptz'),
      ('*', 'integer', 'interval', 'interval'), ('+', 'integer', 'integer', 'integer'),
      ('+', 'integer', 'bigint', 'bigint'), ('-', 'integer', 'bigint', 'bigint')
    ) v(op, l, rt, ret)
  LOOP
    n := n + 1;
    EXECUTE format($f$CREATE FUNCTION %1$I.op%2$s(a %3$s, b %4$s) RETURNS %5$s LANGUAGE plpgsql
      SET search_path = pg_catalog, pg_temp AS $h$
      BEGIN PERFORM %1$I.hit(%6$L); RETURN a OPERATOR(pg_catalog.%7$s) b; END $h$$f$,
      r, n, o.l, o.rt, o.ret, format('%s %s %s', o.l, o.op, o.rt), o.op);
    EXECUTE format('CREATE OPERATOR %I.%s (LEFTARG = %s, RIGHTARG = %s, FUNCTION = %I.op%s)',
                   r, o.op, o.l, o.rt, r, n);
  END LOOP;
  EXECUTE format('CREATE DOMAIN %1$I.oid AS pg_catalog.oid CHECK (%1$I.ok(''::oid''))', r);
  EXECUTE format('CREATE DOMAIN %1$I.text AS pg_catalog.text CHECK (%1$I.ok(''::text''))', r);
  RESET ROLE;
  EXECUTE format('SELECT harden.fsm_attach(%L, ''status'', ''cart'')', r || '.cart');
  EXECUTE format('SELECT harden.stock_attach(%L, ''stock'')', r || '.product');
  EXECUTE format('INSERT INTO %I.cart VALUES (1), (2)', r);
  EXECUTE format('UPDATE %I.cart SET status = ''submitted''', r);
  EXECUTE format('INSERT INTO %I.product VALUES (1, 10)', r);
END $setup$;

-- pg_temp.hostile_arm(r, cart): the timer of r.cart row cart and a new hold of
-- 3 units on r.product fall due now.
CREATE FUNCTION pg_temp.hostile_arm(r name, cart int) RETURNS void LANGUAGE plpgsql AS $arm$
BEGIN
  PERFORM harden.stock_reserve(format('%I.product', r)::regclass, ARRAY[1], ARRAY[3], '1 hour', 'hostile');
  UPDATE harden.stock_holds SET expires_at = pg_catalog.clock_timestamp() - interval '1 second'
   WHERE relid = format('%I.product', r)::regclass AND status = 'held';
  UPDATE harden.fsm_due SET due_at = pg_catalog.now() - interval '1 second'
   WHERE relid = format('%I.cart', r)::regclass AND row_key = pg_catalog.jsonb_build_object('id', cart);
END $arm$;
