# test/replica/pooler.sh: sourced by test/run.sh on the preloaded cluster.
#
# A real pgbouncer (test/replica/lib.sh) in front of the test cluster,
# pool_mode = transaction, two server connections per pool:
#   - the state-machine, stock and core pgTAP suites (each one transaction)
#     run through it, two files at a time sharing the pool;
#   - the cache suites, which keep session state (pg_temp functions,
#     SET ROLE, pgTAP's own temporary tables, session advisory locks), run
#     through it in session mode (a database entry with pool_mode=session);
#   - checks of what matters through transaction pooling: cache writes of a
#     transaction publish at its commit, results are shared by every client
#     and single-flight coalesces misses across them, stock sold by eight
#     clients over two server connections is exact, state machines enforce
#     and audit, SET LOCAL harden.reason stays in its transaction, while a
#     session-level SET reaches the next client of that server connection
#     (docs/replicas.md says so), and pgbench's extended protocol works.
# Prints TAP-like "ok"/"not ok" lines.

pl_db=pgh_bouncer
pl_check() {
	local what=$1
	shift
	if "$@" >"$PGH_TMP/out/pooler-check.out" 2>&1; then
		echo "ok - $what"
	else
		echo "not ok - $what"
		sed 's/^/# /' "$PGH_TMP/out/pooler-check.out"
	fi
}
# pl_b [DB] -c ...: a client of pgbouncer (transaction mode by default).
pl_b() { psql -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PGH_BOUNCER_PORT" -d "$pl_db" "$@"; }
pl_b1() { psql -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PGH_BOUNCER_PORT" -d pgh_bouncer_one "$@"; }
pl_equal() { [ "$1" = "$2" ] || { echo "got:"; echo "$1"; echo "expected:"; echo "$2"; return 1; }; }

# pl_prove LABEL DB JOBS FILES...: pg_prove through pgbouncer, counted like
# run_pgtap.
pl_prove() {
	local label=$1 db=$2 jobs=$3 rc=0 log="$PGH_TMP/out/pgtap-$2.log" n failed
	shift 3
	pgh_log "pgTAP through pgbouncer ($label): $(for f in "$@"; do basename "$f"; done | tr '\n' ' ')"
	pg_prove -j "$jobs" --dbname "$db" --host 127.0.0.1 --port "$PGH_BOUNCER_PORT" --username postgres \
		"$@" 2>&1 | tee "$log" || rc=$?
	n=$(sed -n 's/.*Tests=\([0-9]*\).*/\1/p' "$log" | tail -n1)
	failed=$(sed -n 's/.*Failed \([0-9]*\)\/[0-9]* subtests.*/\1/p' "$log" | awk '{s+=$1} END {print s+0}')
	record "$label" $rc $((${n:-0} - failed)) "$failed"
}

pl_setup() {
	pgh_createdb "$pl_db" pgtap pg_trgm pg_harden
	pgh_createdb pgh_bouncer_s pgtap pg_trgm pg_harden dblink
	pgh_psql -d "$pl_db" >/dev/null <<'SQL'
CREATE TABLE pl_stock (id int PRIMARY KEY, q int NOT NULL);
INSERT INTO pl_stock SELECT g, 1000 FROM generate_series(1, 4) g;
SELECT harden.stock_attach('pl_stock', 'q');
CREATE TABLE pl_sold (id int NOT NULL, units int NOT NULL);
SELECT harden.fsm_define('pl_m', 'new -> paid on pay; paid -> shipped on ship');
CREATE TABLE pl_order (id int PRIMARY KEY, status text NOT NULL DEFAULT 'new');
SELECT harden.fsm_attach('pl_order', 'status', 'pl_m');
INSERT INTO pl_order SELECT generate_series(1, 10);
CREATE SEQUENCE pl_runs;
CREATE TABLE pl_src (v int);
INSERT INTO pl_src VALUES (7);
SQL
}

pl_cache_checks() {
	pl_check "pooler: a cache write in a transaction is not seen by other clients before its commit" pl_equal \
		"$( { pl_b -c "BEGIN" -c "SELECT harden.cache_set('pl:tx', 'v'::text)" -c "SELECT pg_sleep(1.5)" -c "COMMIT" >/dev/null & }
			sleep 0.7; pl_b -c "SELECT coalesce(harden.cache_get_text('pl:tx'), 'none')"; wait
			pl_b -c "SELECT harden.cache_get_text('pl:tx')")" "none
v"
	pl_check "pooler: a result cached by one client is a hit for the others" pl_equal \
		"$(pl_b -c "SELECT harden.cache_query('pl:q', 'SELECT v FROM pl_src')" >/dev/null
			for i in 1 2 3 4; do pl_b -c "SELECT harden.cache_query('pl:q', 'SELECT v FROM pl_src')" & done; wait
			pl_b -c "SELECT hits FROM harden.cache_entries WHERE key = 'pl:q'")" '[{"v": 7}]
[{"v": 7}]
[{"v": 7}]
[{"v": 7}]
4'
	local sf="SELECT harden.cache_query('pl:sf', 'SELECT v, nextval(''pl_runs'') AS run FROM pl_src, LATERAL (SELECT pg_sleep(2)) s')"
	pl_check "pooler: single-flight coalesces the misses of two clients (one run, one result)" pl_equal \
		"$(pl_b -c "$sf" & sleep 0.3; pl_b -c "$sf"; wait; pl_b -c "SELECT last_value FROM pl_runs")" '[{"v": 7, "run": 1}]
[{"v": 7, "run": 1}]
1'
	pl_check "pooler: a watched table's write through the pool invalidates the result" pl_equal \
		"$(pl_b -c "SELECT harden.cache_watch('pl_src')" >/dev/null
			pl_b -c "SELECT harden.cache_query('pl:w', 'SELECT v FROM pl_src')"
			pl_b -c "UPDATE pl_src SET v = 8"
			pl_b -c "SELECT harden.cache_query('pl:w', 'SELECT v FROM pl_src')")" '[{"v": 7}]
[{"v": 8}]'
}

pl_stock_fsm_checks() {
	local script="$PGH_TMP/out/pooler_stock.pgbench"
	cat >"$script" <<'EOF'
\set k random(1, 4)
INSERT INTO pl_sold SELECT :k::int, 3 WHERE harden.stock_take('pl_stock', :k::int, 3) IS NOT NULL;
EOF
	# 8 clients, 2 server connections, 100 orders each: 2400 of 4000 units.
	pl_check "pooler: pgbench, 8 clients over 2 server connections, stock_take in the extended protocol: no failed transaction" \
		pgbench -n -M extended -c 8 -j 2 -t 100 -f "$script" -h 127.0.0.1 -p "$PGH_BOUNCER_PORT" "$pl_db"
	pl_check "pooler: stock is exact (on hand + sold = initial for every key)" pl_equal \
		"$(pl_b -c "SELECT count(*) FROM pl_stock s WHERE s.q + coalesce((SELECT sum(units) FROM pl_sold d WHERE d.id = s.id), 0) <> 1000" \
			-c "SELECT sum(units) FROM pl_sold")" "0
2400"
	pl_check "pooler: fsm_fire and the trigger enforce through the pool" pl_equal \
		"$(for i in 1 2 3 4 5; do pl_b -c "SELECT harden.fsm_fire('pl_order', '$i', 'pay')" & done; wait
			pl_b -v VERBOSITY=verbose -c "UPDATE pl_order SET status = 'shipped' WHERE id = 9" 2>&1 | head -n1 | cut -c1-14
			pl_b -c "SELECT count(*) FROM pl_order WHERE status = 'paid'")" "paid
paid
paid
paid
paid
ERROR:  PH201:
5"
	# pgh_bouncer_one: one server connection, so the next client surely gets
	# the connection the previous one used.
	pl_check "pooler: SET LOCAL harden.reason is audited in its transaction and gone after it" pl_equal \
		"$(pl_b1 -c "BEGIN" -c "SET LOCAL harden.reason = 'local reason'" -c "SELECT harden.fsm_fire('pl_order', '1', 'ship')" -c "COMMIT" >/dev/null
			pl_b1 -c "SELECT harden.fsm_fire('pl_order', '2', 'ship')" >/dev/null
			pl_b -c "SELECT string_agg(coalesce(reason, '-'), ',' ORDER BY id) FROM harden.fsm_log WHERE table_name = 'public.pl_order' AND to_state = 'shipped'")" \
		"local reason,-"
	pl_check "pooler: a session-level SET harden.reason reaches the next client of that server connection (docs/replicas.md)" pl_equal \
		"$(pl_b1 -c "SET harden.reason = 'from another client'"
			pl_b1 -c "SELECT harden.fsm_fire('pl_order', '3', 'ship')" >/dev/null
			pl_b1 -c "RESET harden.reason"
			pl_b -c "SELECT reason FROM harden.fsm_log WHERE table_name = 'public.pl_order' AND row_key = '{\"id\": 3}' AND to_state = 'shipped'")" \
		"from another client"
	pl_check "pooler: reservations made, committed and released by different clients" pl_equal \
		"$(id=$(pl_b -c "SELECT harden.stock_reserve('pl_stock', ARRAY[1], ARRAY[5]::bigint[], '1 hour', 'pl-r')")
			pl_b -c "SELECT harden.stock_commit($id)"
			id=$(pl_b -c "SELECT harden.stock_reserve('pl_stock', ARRAY[2], ARRAY[5]::bigint[], '1 hour', 'pl-r2')")
			pl_b -c "SELECT harden.stock_release_ref('pl-r2')"
			pl_b -c "SELECT harden.stock_release($id)")" "t
1
f"
}

pooler_checks() {
	pl_cache_checks
	pl_stock_fsm_checks
}

run_pooler() {
	pgh_log "pgbouncer (transaction pooling)"
	pl_setup
	pgh_pgbouncer_start \
		"pgh_bouncer_s = host=$PGHOST port=$PGPORT pool_mode=session" \
		"pgh_bouncer_one = host=$PGHOST port=$PGPORT dbname=$pl_db pool_size=1"
	pl_prove "pgTAP through pgbouncer, transaction mode" "$pl_db" 2 \
		"$PGH_ROOT/test/pgtap/fsm.sql" "$PGH_ROOT/test/pgtap/stock.sql" "$PGH_ROOT/test/pgtap/core.sql"
	pl_prove "pgTAP through pgbouncer, session mode" pgh_bouncer_s 1 \
		"$PGH_ROOT/test/pgtap/cache_query.sql" "$PGH_ROOT/test/pgtap/cache_roles.sql"
	local log="$PGH_TMP/out/pooler.log" n
	pooler_checks 2>&1 | tee "$log"
	n=$(grep -c '^ok ' "$log" || true)
	record "pgbouncer" 0 "$n" "$(grep -c '^not ok ' "$log" || true)"
	pgh_replica_cleanup
}
