# test/dump/dump.sh: sourced by test/run.sh on the preloaded cluster.
#
# Dump and restore.  A database using every feature that keeps state in
# tables (a machine of the user's and a shipped one attached to tables,
# audit rows, due timers, a stock table with an expired, a held and a
# committed reservation, a watched table, a cache policy) is dumped with
# pg_dump -Fc and restored with pg_restore into a fresh database of a second
# cluster.  The restore must succeed without an error; every config table
# must hold exactly the rows the dump selected (nothing duplicated, nothing
# missing, the shipped machines once), the config sequences their positions,
# the user tables their rows, triggers and constraints.  Then, with the
# second cluster's worker let in: the machines enforce, the due timers fire,
# the expired hold goes back, the held one can be released, new audit rows
# and holds take fresh ids, and the watched table invalidates a cached
# result.  Prints TAP-like "ok"/"not ok" lines.

dr_src=pgh_dump_src
dr_dst=pgh_dump_dst
dr_check() {
	local what=$1
	shift
	if "$@" >"$PGH_TMP/out/dump-check.out" 2>&1; then
		echo "ok - $what"
	else
		echo "not ok - $what"
		sed 's/^/# /' "$PGH_TMP/out/dump-check.out"
	fi
}
dr_src_q() { pgh_psql -At -d "$dr_src" "$@"; }
dr_dst_q() { pgh_psql -At -p "$PGH_OTHER_PORT" -d "$dr_dst" "$@"; }
dr_equal() { [ -n "$1" ] && [ "$1" = "$2" ] || { echo "got:"; echo "$1"; echo "expected:"; echo "$2"; return 1; }; }

# dr_wait SQL [SECONDS]: poll the restored database until SQL returns t.
dr_wait() {
	local deadline=$((SECONDS + ${2:-20}))
	while [ $SECONDS -lt $deadline ]; do
		[ "$(dr_dst_q -c "$1" 2>/dev/null)" = t ] && return 0
		sleep 0.2
	done
	echo "never held: $1"
	return 1
}

dr_setup() {
	pgh_createdb "$dr_src" pg_harden
	dr_src_q <<'SQL'
INSERT INTO harden.cache_policies VALUES ('api:', '5 minutes', '1 hour', false);
SELECT harden.fsm_define('ticket', 'new -> open on start; open -> done on close; open -> stale after 1 second');
CREATE TABLE ticket (id int PRIMARY KEY, status text NOT NULL DEFAULT 'new');
SELECT harden.fsm_attach('ticket', 'status', 'ticket');
INSERT INTO ticket SELECT g FROM generate_series(1, 5) g;
UPDATE ticket SET status = 'open' WHERE id <= 3;
SELECT harden.fsm_fire('ticket', '3', 'close');
CREATE TABLE orders (id int PRIMARY KEY, status text NOT NULL DEFAULT 'pending');
SELECT harden.fsm_attach('orders', 'status', 'order');
INSERT INTO orders VALUES (1), (2);
SELECT harden.fsm_fire('orders', '1', 'pay');
CREATE TABLE product (id int PRIMARY KEY, name text NOT NULL, stock int NOT NULL);
INSERT INTO product VALUES (1, 'Mug', 100), (2, 'Tea', 100), (3, 'Pot', 100);
SELECT harden.stock_attach('product', 'stock');
SELECT harden.stock_reserve('product', ARRAY[1], ARRAY[5], ttl => '1 second', ref => 'short');
SELECT harden.stock_reserve('product', ARRAY[2], ARRAY[7], ttl => '1 day', ref => 'long');
SELECT harden.stock_commit(harden.stock_reserve('product', ARRAY[3], ARRAY[2], ttl => '1 day', ref => 'done'));
SELECT harden.cache_watch('product');
-- A shipped machine without audit on an enum column of a partitioned table.
CREATE TYPE cart_status AS ENUM ('pending', 'submitted', 'converted', 'abandoned');
CREATE TABLE cart (id int, region text, status cart_status NOT NULL DEFAULT 'pending',
                   PRIMARY KEY (id, region)) PARTITION BY LIST (region);
CREATE TABLE cart_eu PARTITION OF cart FOR VALUES IN ('eu');
CREATE TABLE cart_us PARTITION OF cart FOR VALUES IN ('us');
SELECT harden.fsm_attach('cart', 'status', 'cart', audit => false);
INSERT INTO cart VALUES (1, 'eu'), (2, 'us');
UPDATE cart SET status = 'submitted' WHERE id = 1;
-- A table attached, given a timer, and dropped: it leaves nothing behind.
CREATE TABLE gone (id int PRIMARY KEY, status text NOT NULL DEFAULT 'new', qty int NOT NULL DEFAULT 5);
SELECT harden.fsm_attach('gone', 'status', 'ticket');
INSERT INTO gone VALUES (1);
UPDATE gone SET status = 'open';
SELECT harden.stock_attach('gone', 'qty');
SELECT harden.stock_reserve('gone', ARRAY[1], ARRAY[1], ttl => '1 day');
DROP TABLE gone;
SQL
	[ $? -eq 0 ] || return 1
	# The timers of tickets 1 and 2 and the short hold are overdue in the
	# dump (the source's worker skips this database).
	sleep 1.5
}

# One line per config table: the rows its dump filter selects, as an md5;
# and each config sequence's position.
dr_config_state() {
	cat <<'SQL'
SELECT c.oid::regclass || ' ' || CASE WHEN c.relkind = 'S' THEN
         (xpath('/row/v/text()', query_to_xml(format('SELECT last_value AS v FROM %s', c.oid::regclass), false, true, '')))[1]::text
       ELSE (xpath('/row/v/text()', query_to_xml(
         format('SELECT count(*) || '' '' || md5(coalesce(string_agg(t::text, '','' ORDER BY t::text), '''')) AS v FROM %s t %s',
                c.oid::regclass, coalesce(e.extcondition[i], '')), false, true, '')))[1]::text END
  FROM pg_extension e, unnest(e.extconfig) WITH ORDINALITY AS u(cfg, i) JOIN pg_class c ON c.oid = u.cfg
 WHERE e.extname = 'pg_harden' ORDER BY 1;
SELECT 'shipped machines ' || count(*) FROM harden.fsm_machines WHERE shipped;
SQL
}
# The user's tables: rows, triggers, constraints.
dr_user_state() {
	cat <<'SQL'
CREATE FUNCTION pg_temp.tables() RETURNS regclass[] LANGUAGE sql
  AS $$SELECT '{ticket,orders,product,cart,cart_eu,cart_us}'::regclass[]$$;
SELECT 'rows ' || r || ' ' || (xpath('/row/v/text()', query_to_xml(
         format('SELECT md5(string_agg(t::text, '','' ORDER BY t::text)) AS v FROM %s t', r), false, true, '')))[1]::text
  FROM unnest(pg_temp.tables()) r ORDER BY 1;
SELECT 'trigger ' || tgrelid::regclass || ' ' || tgname || ' ' || tgenabled::text
  FROM pg_trigger WHERE NOT tgisinternal AND tgrelid = ANY (pg_temp.tables()) ORDER BY 1;
SELECT 'constraint ' || conrelid::regclass || ' ' || conname || ' ' || pg_get_constraintdef(oid)
  FROM pg_constraint WHERE conrelid = ANY (pg_temp.tables()) ORDER BY 1;
SQL
}

run_dump_restore() {
	local log="$PGH_TMP/out/dump.log" dump="$PGH_TMP/dump.pgc" n rc=0
	pgh_log "dump and restore"
	# A subshell, so that a failed step ends only this test, and the second
	# cluster is stopped however it ends.
	(
		trap pgh_other_cluster_stop EXIT
		dr_check "a database using every feature" dr_setup
		dr_check "pg_dump of a database using every feature" \
			"$(pgh_bindir)/pg_dump" -Fc -d "$dr_src" -f "$dump"
		# The second cluster's worker stays out until the state is compared.
		pgh_other_cluster_start restore "harden.worker_interval = '200ms'" \
			"harden.worker_skip_databases = '$dr_dst'"
		pgh_psql -p "$PGH_OTHER_PORT" -d postgres -c "CREATE DATABASE $dr_dst"
		dr_check "pg_restore into a fresh database of another cluster, without an error" \
			"$(pgh_bindir)/pg_restore" --exit-on-error -p "$PGH_OTHER_PORT" -U postgres -d "$dr_dst" "$dump"
		dr_check "every config table holds the dumped rows once, the shipped machines once, sequences kept" \
			dr_equal "$(dr_config_state | dr_dst_q)" "$(dr_config_state | dr_src_q)"
		dr_check "no attachment, timer, stock table or hold of a dropped table is dumped" \
			dr_equal "$(dr_dst_q -c "SELECT count(*) FROM (SELECT relid FROM harden.fsm_attached UNION ALL SELECT relid FROM harden.fsm_due
			             UNION ALL SELECT relid FROM harden.stock_tables UNION ALL SELECT relid FROM harden.stock_holds) r
			             WHERE NOT EXISTS (SELECT FROM pg_class c WHERE c.oid = r.relid)
			               OR r.relid::text !~ '^(ticket|orders|product|cart|cart_eu|cart_us|harden\.breaker_states)\$'")" 0
		dr_check "user tables keep their rows, pg_harden's triggers and the stock guard" \
			dr_equal "$(dr_user_state | dr_dst_q)" "$(dr_user_state | dr_src_q)"
		dr_check "the restored machines enforce" dr_dst_q <<'SQL'
DO $$
BEGIN
  BEGIN
    UPDATE ticket SET status = 'new' WHERE id = 1;
    RAISE EXCEPTION 'ticket: a forbidden transition was accepted';
  EXCEPTION WHEN SQLSTATE 'PH201' THEN NULL;
  END;
  BEGIN
    UPDATE orders SET status = 'shipped' WHERE id = 2;
    RAISE EXCEPTION 'orders: a forbidden transition was accepted';
  EXCEPTION WHEN SQLSTATE 'PH201' THEN NULL;
  END;
  BEGIN
    UPDATE cart SET status = 'converted' WHERE id = 2;
    RAISE EXCEPTION 'cart: a forbidden transition was accepted';
  EXCEPTION WHEN SQLSTATE 'PH201' THEN NULL;
  END;
END $$;
SELECT harden.fsm_fire('orders', '2', 'pay');
SELECT 1 / (count(*) = 1)::int FROM harden.fsm_log WHERE table_name = 'public.orders' AND row_key = '{"id": 2}' AND to_state = 'processing'
   AND id > (SELECT max(id) FROM harden.fsm_log WHERE event IS DISTINCT FROM 'pay' OR row_key <> '{"id": 2}');
SQL
		dr_check "a watched table of the restore invalidates its cached result" dr_dst_q <<'SQL'
SELECT 1 / (harden.cache_query('p2', 'SELECT stock FROM product WHERE id = 2') = '[{"stock": 93}]')::int;
UPDATE product SET name = 'Green tea', stock = stock + 1 WHERE id = 2;
SELECT 1 / (harden.cache_query('p2', 'SELECT stock FROM product WHERE id = 2') = '[{"stock": 94}]')::int;
SQL
		# Let the worker in.
		pgh_psql -p "$PGH_OTHER_PORT" -d postgres -c "ALTER SYSTEM SET harden.worker_skip_databases = ''" \
			-c "SELECT pg_reload_conf()" >/dev/null
		dr_check "the dumped due timers fire on the restored database (worker)" \
			dr_wait "SELECT count(*) = 2 FROM ticket WHERE status = 'stale'
			     AND (SELECT count(*) FROM harden.fsm_log WHERE actor = 'timer' AND to_state = 'stale') = 2
			     AND NOT EXISTS (SELECT FROM harden.fsm_due WHERE machine = 'ticket')"
		dr_check "the dumped expired hold goes back (worker), the held one stays held" \
			dr_wait "SELECT (SELECT stock FROM product WHERE id = 1) = 100
			     AND (SELECT status FROM harden.stock_holds WHERE ref = 'short') = 'expired'
			     AND (SELECT status FROM harden.stock_holds WHERE ref = 'long') = 'held'"
		dr_check "the held reservation is released, a new one gets a fresh id" dr_dst_q <<'SQL'
SELECT 1 / (harden.stock_release_ref('long') = 1)::int;
SELECT 1 / (stock = 101)::int FROM product WHERE id = 2;
SELECT max(id) AS before_max, count(*) AS before_n FROM harden.stock_holds \gset
SELECT 1 / (harden.stock_reserve('product', ARRAY[3], ARRAY[1], ttl => '1 hour') > :before_max)::int;
SELECT 1 / (count(*) = :before_n + 1)::int FROM harden.stock_holds;
SQL
		dr_check "the shipped machines are there once and still read-only" dr_dst_q <<'SQL'
SELECT 1 / (count(*) = 4)::int FROM harden.fsm_machines WHERE shipped;
DO $$
BEGIN
  PERFORM harden.fsm_define('order', 'a -> b');
  RAISE EXCEPTION 'a shipped machine was redefined';
EXCEPTION WHEN SQLSTATE 'PH210' THEN NULL;
END $$;
SQL
		pgh_other_cluster_stop
		pgh_psql -d postgres -c "DROP DATABASE $dr_src"
	) >"$log" 2>&1 || rc=$?
	cat "$log"
	n=$(grep -c '^ok ' "$log" || true)
	record "dump and restore" $rc "$n" "$(grep -c '^not ok ' "$log" || true)"
}
