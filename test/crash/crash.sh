# test/crash/crash.sh: sourced by test/run.sh on the preloaded cluster.
# Kills a backend with SIGKILL in the middle of a cache write, a
# single-flight cache_query computation, a stock reservation and a run of
# timed transitions; after each the postmaster restarts every process and
# reinitialises shared memory, and the checks below must hold: the
# extension works, the cache is empty or valid (cache_stats sane, a set and a
# get work), metrics() renders, no stock is created or lost, no transition
# is half-applied (every row's state is its last audit entry's), and the
# background worker resumes.  Prints TAP-like "ok"/"not ok" lines.

cr_db=pgh_crash
cr_q() { pgh_psql -At -d "$cr_db" -c "$1"; }

cr_check() {
	if "${@:2}"; then echo "ok - $1"; else echo "not ok - $1"; fi
}
cr_equals() { [ "$1" = "$2" ] || { echo "# got '$1', expected '$2'"; return 1; }; }
cr_restarts() { grep -c 'all server processes terminated; reinitializing' "$PGH_TMP/server.log" || true; }

# cr_wait SQL [SECONDS]: poll until SQL returns t (connection errors while
# the server restarts are retried).
cr_wait() {
	local deadline=$((SECONDS + ${2:-30}))
	while [ $SECONDS -lt $deadline ]; do
		[ "$(cr_q "$1" 2>/dev/null)" = t ] && return 0
		sleep 0.1
	done
	return 1
}

# cr_pid APPNAME: the pid of the (first) backend with that application_name.
cr_pid() {
	local deadline=$((SECONDS + 20)) pid
	while [ $SECONDS -lt $deadline ]; do
		pid=$(cr_q "SELECT pid FROM pg_stat_activity WHERE application_name = '$1' AND state = 'active' LIMIT 1" 2>/dev/null || true)
		[ -n "$pid" ] && { echo "$pid"; return 0; }
		sleep 0.1
	done
	return 1
}

# cr_kill APPNAME CONDITION: once CONDITION (SQL) holds, SIGKILL the backend
# and wait until the server takes connections again after its restart.
cr_kill() {
	local pid restarts
	pid=$(cr_pid "$1") || { echo "# no backend $1"; return 1; }
	cr_wait "$2" 30 || { echo "# $1: condition never held: $2"; return 1; }
	restarts=$(cr_restarts)
	kill -9 "$pid" || true
	local deadline=$((SECONDS + 60))
	while [ $SECONDS -lt $deadline ]; do
		if [ "$(cr_restarts)" -gt "$restarts" ] \
			&& [ "$(cr_q 'SELECT true' 2>/dev/null)" = t ]; then
			wait 2>/dev/null || true
			return 0
		fi
		sleep 0.1
	done
	echo "# the server did not come back after killing $1"
	return 1
}

# The shared state is consistent and usable.
cr_sane() {
	local what=$1
	cr_check "$what: cache_stats is sane" wk_true \
		"SELECT entries >= 0 AND bytes_used >= 0 AND bytes_used <= bytes_limit AND hits >= 0 AND sets >= 0 FROM harden.cache_stats"
	cr_check "$what: cache_set and cache_get work" cr_equals \
		"$(cr_q "SELECT harden.cache_set('cr:probe', 'after'::text); SELECT harden.cache_get_text('cr:probe')" | tail -n1)" after
	cr_check "$what: metrics() renders" wk_true \
		"SELECT harden.metrics() ~ 'harden_preloaded 1' AND harden.metrics_json() ? 'metrics'"
}
wk_true() { cr_equals "$(cr_q "$1")" t; }

cr_setup() {
	pgh_createdb "$cr_db" pg_harden
	pgh_psql -d "$cr_db" >/dev/null <<'SQL'
CREATE TABLE cr_stock (id int PRIMARY KEY, q int NOT NULL);
INSERT INTO cr_stock SELECT i, 100000 FROM generate_series(1, 10) AS i;
CREATE TABLE cr_stock_initial AS SELECT * FROM cr_stock;
SELECT harden.stock_attach('cr_stock', 'q');
-- Units taken by stock_take, recorded in the same statement.
CREATE TABLE cr_taken (id int NOT NULL, units int NOT NULL);
SELECT harden.fsm_define('cr_m', 'open -> closed after 1 second; open -> gone on drop');
CREATE TABLE cr_fsm (id int PRIMARY KEY, status text NOT NULL DEFAULT 'open');
SELECT harden.fsm_attach('cr_fsm', 'status', 'cr_m');
-- Runs after harden_fsm_cr_m (names sort), slowing every transition.
CREATE FUNCTION cr_slow() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_sleep(0.02); RETURN NEW; END $$;
CREATE TRIGGER zz_slow BEFORE UPDATE ON cr_fsm FOR EACH ROW EXECUTE FUNCTION cr_slow();
SQL
}

# Per key: initial = on hand + taken + held and committed reservations.
cr_stock_invariant() {
	cr_equals "$(cr_q "
		SELECT count(*) FROM cr_stock_initial i JOIN cr_stock s USING (id)
		 WHERE i.q <> s.q + coalesce((SELECT sum(units) FROM cr_taken t WHERE t.id = i.id), 0)
		                  + coalesce((SELECT sum(l.qty) FROM harden.stock_holds h,
		                                     unnest(h.keys, h.qtys) AS l(key, qty)
		                               WHERE h.relid = 'cr_stock'::regclass AND h.status IN ('held', 'committed')
		                                 AND l.key = i.id::text), 0)")" 0
}

# Every row's state is the to_state of its last audit entry, and it has an
# audit entry per state it went through (insert, then at most one move).
cr_fsm_audit() {
	cr_equals "$(cr_q "
		SELECT count(*) FROM cr_fsm f
		 WHERE f.status IS DISTINCT FROM (SELECT l.to_state FROM harden.fsm_log l
		                                   WHERE l.table_name = 'public.cr_fsm' AND l.row_key = jsonb_build_object('id', f.id)
		                                   ORDER BY l.id DESC LIMIT 1)
		    OR (SELECT count(*) FROM harden.fsm_log l
		         WHERE l.table_name = 'public.cr_fsm' AND l.row_key = jsonb_build_object('id', f.id))
		       <> CASE f.status WHEN 'open' THEN 1 ELSE 2 END")" 0
}

run_crash() {
	pgh_log "crash recovery"
	local log="$PGH_TMP/out/crash.log" n
	crash_checks 2>&1 | tee "$log"
	n=$(grep -c '^ok ' "$log" || true)
	record "crash recovery" 0 "$n" "$(grep -c '^not ok ' "$log" || true)"
}

crash_checks() {
	local cr_restarts0
	cr_restarts0=$(cr_restarts)
	cr_setup

	# 1. A cache write: a loop of cache_set, each published at once.
	PGAPPNAME=cr_cache pgh_psql -d "$cr_db" -c "
		DO \$\$ BEGIN FOR i IN 1..100000000 LOOP
		  PERFORM harden.cache_set('cr:w:' || (i % 5000), repeat('x', 100 + i % 900), tags => '{cr}');
		END LOOP; END \$\$" >/dev/null 2>&1 &
	cr_check "cache write: a backend killed in a cache_set loop; the server restarts" \
		cr_kill cr_cache "SELECT sets > 20000 FROM harden.cache_stats"
	cr_sane "after a cache write"
	cr_check "after a cache write: the cache was reinitialised (no entry of the killed loop)" wk_true \
		"SELECT count(*) = 0 FROM harden.cache_entries WHERE key LIKE 'cr:w:%'"

	# 2. A single-flight computation, with a second session waiting for it.
	local sf_sql="SELECT harden.cache_query('cr:sf', 'SELECT pg_sleep(current_setting(''cr.sleep'')::float8) AS s, 1 AS x')"
	PGAPPNAME=cr_flight pgh_psql -d "$cr_db" -c "SET cr.sleep = 30" -c "$sf_sql" >/dev/null 2>&1 &
	cr_pid cr_flight >/dev/null || true
	sleep 0.5
	PGAPPNAME=cr_waiter pgh_psql -d "$cr_db" -c "SET cr.sleep = 30" -c "$sf_sql" >/dev/null 2>&1 &
	cr_check "single-flight: the computing backend killed while another waits; the server restarts" \
		cr_kill cr_flight "SELECT count(*) = 2 FROM pg_stat_activity WHERE application_name IN ('cr_flight', 'cr_waiter') AND state = 'active' AND (application_name = 'cr_flight' OR wait_event = 'Extension')"
	cr_sane "after a single-flight kill"
	cr_check "after a single-flight kill: the same query computes at once (no flight left behind)" cr_equals \
		"$(pgh_psql -At -d "$cr_db" -c "SET cr.sleep = 0" -c "SET statement_timeout = '3s'" -c "$sf_sql" 2>&1)" '[{"s": "", "x": 1}]'
	cr_check "... and is then served from the cache" wk_true \
		"SELECT count(*) = 1 FROM harden.cache_entries WHERE key = 'cr:sf'"

	# 3. Stock: a stream of takes, reservations, commits and releases in
	# autocommit on keys 1-8, plus a transaction that keeps keys 9 and 10
	# locked after its reservation.
	{
		for i in $(seq 1 20000); do
			k=$((1 + i % 8)); k2=$((1 + (i * 7) % 8))
			echo "INSERT INTO cr_taken SELECT $k, 2 WHERE harden.stock_take('cr_stock', $k, 2) IS NOT NULL;"
			echo "SELECT harden.stock_reserve('cr_stock', ARRAY[$k, $k2], ARRAY[1, 3]::bigint[], '1 hour', 'cr-$i');"
			case $((i % 3)) in
			0) echo "SELECT harden.stock_commit(max(id)) FROM harden.stock_holds WHERE ref = 'cr-$i';" ;;
			1) echo "SELECT harden.stock_release_ref('cr-$i');" ;;
			esac
		done
	} >"$PGH_TMP/out/crash_stock.sql"
	PGAPPNAME=cr_stock pgh_psql -d "$cr_db" -f "$PGH_TMP/out/crash_stock.sql" >/dev/null 2>&1 &
	PGAPPNAME=cr_stock_tx pgh_psql -d "$cr_db" -c "BEGIN" \
		-c "SELECT harden.stock_reserve('cr_stock', ARRAY[9, 10], ARRAY[5, 5]::bigint[], '1 hour', 'cr-tx')" \
		-c "SELECT pg_sleep(60)" >/dev/null 2>&1 &
	cr_check "stock: a backend killed among takes and reservations; the server restarts" \
		cr_kill cr_stock "SELECT count(*) >= 300 FROM harden.stock_holds WHERE ref LIKE 'cr-%'"
	cr_sane "after a stock kill"
	cr_check "after a stock kill: no stock created or lost (initial = on hand + taken + held + committed)" cr_stock_invariant
	cr_check "after a stock kill: the uncommitted reservation left nothing behind" wk_true \
		"SELECT count(*) = 0 FROM harden.stock_holds WHERE ref = 'cr-tx'"
	cr_check "after a stock kill: a take and a reservation work" wk_true \
		"SELECT harden.stock_take('cr_stock', 5, 1) IS NOT NULL AND harden.stock_release(harden.stock_reserve('cr_stock', ARRAY[5], ARRAY[1]::bigint[], '1 hour'))"
	pgh_psql -d "$cr_db" -c "INSERT INTO cr_taken VALUES (5, 1)" >/dev/null || true

	# 4. Timed transitions: 300 due rows, a slow trigger, fsm_run_due
	# killed half-way.  The worker stays off meanwhile so it does not take
	# them first.
	pgh_psql -d "$cr_db" -c "ALTER SYSTEM SET harden.worker_enabled = off" -c "SELECT pg_reload_conf()" >/dev/null || true
	cr_wait "SELECT count(*) = 0 FROM harden.worker_status WHERE database = current_database() AND pid IS NOT NULL" 10 || true
	pgh_psql -d "$cr_db" -c "INSERT INTO cr_fsm SELECT generate_series(1, 300)" >/dev/null || true
	sleep 1.2
	PGAPPNAME=cr_fsm pgh_psql -d "$cr_db" -c "SELECT harden.fsm_run_due(1000)" >/dev/null 2>&1 &
	cr_check "timed transitions: fsm_run_due killed half-way; the server restarts" \
		cr_kill cr_fsm "SELECT count(*) = 1 FROM pg_stat_activity WHERE application_name = 'cr_fsm' AND wait_event = 'PgSleep' AND query_start < now() - interval '1 second'"
	echo "# transitions applied when killed and still there: $(cr_q "SELECT count(*) FROM cr_fsm WHERE status <> 'open'" || true)"
	cr_sane "after a timed-transition kill"
	cr_check "after a timed-transition kill: no half-applied transition (states match the audit)" cr_fsm_audit
	cr_check "after a timed-transition kill: the timers of unapplied transitions are still there" wk_true \
		"SELECT count(*) = (SELECT count(*) FROM cr_fsm WHERE status = 'open') FROM harden.fsm_due WHERE table_name = 'public.cr_fsm'"

	# 5. The worker resumes and finishes the job.
	pgh_psql -d "$cr_db" -c "ALTER SYSTEM RESET harden.worker_enabled" -c "SELECT pg_reload_conf()" >/dev/null || true
	cr_check "the worker resumes after the crash restarts (runs increase)" \
		cr_wait "SELECT runs >= 3 FROM harden.worker_status WHERE database = current_database()" 30
	local r1 r2
	r1=$(cr_q "SELECT runs FROM harden.worker_status WHERE database = current_database()" || true)
	sleep 1
	r2=$(cr_q "SELECT runs FROM harden.worker_status WHERE database = current_database()" || true)
	cr_check "... and keeps running ($r1 -> $r2 runs in 1s)" test "${r2:-0}" -gt "${r1:-0}"
	cr_check "the worker applies the remaining timed transitions" \
		cr_wait "SELECT count(*) = 0 FROM cr_fsm WHERE status = 'open'" 60
	cr_check "exactly once: every row has its insert and one timer transition in the audit" cr_fsm_audit
	cr_check "no timer left" wk_true "SELECT count(*) = 0 FROM harden.fsm_due WHERE table_name = 'public.cr_fsm'"
	cr_check "the stock invariant still holds after the worker ran" cr_stock_invariant
	cr_check "four crash restarts in the server log" test "$(cr_restarts)" -ge $((cr_restarts0 + 4))
}
