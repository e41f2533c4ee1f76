# test/worker/restart.sh: sourced by test/run.sh.  Checks of the background
# worker that need a server restart or more than one database.  Prints
# TAP-like "ok"/"not ok" lines.  Uses run.sh's PGH_CONF for the restart.

wk_q() { pgh_psql -At -d "$1" -c "$2"; }

# wk_wait DB SQL [SECONDS]: poll until SQL returns t.
wk_wait() {
	local deadline=$((SECONDS + ${3:-30}))
	while [ $SECONDS -lt $deadline ]; do
		[ "$(wk_q "$1" "$2" 2>/dev/null)" = t ] && return 0
		sleep 0.1
	done
	return 1
}

wk_check() {
	if "${@:2}"; then echo "ok - $1"; else echo "not ok - $1"; fi
}

# wk_pid DB: the pid of the database's worker, per worker_status.
wk_pid() { wk_q "$1" "SELECT pid FROM harden.worker_status WHERE database = current_database()"; }

# wk_restarts DB N SECONDS: terminate the database's worker N times; each
# time a new one must be back, with a finished run, within SECONDS.
wk_restarts() {
	local db=$1 n=$2 secs=$3 pid i
	for i in $(seq 1 "$n"); do
		pid=$(wk_pid "$db")
		[ -n "$pid" ] || { echo "# no worker to terminate"; return 1; }
		wk_q postgres "SELECT pg_terminate_backend($pid)" >/dev/null
		wk_wait "$db" "SELECT pid <> $pid AND state IN ('idle', 'running') AND last_run > started_at
			FROM harden.worker_status WHERE database = current_database()" "$secs" \
			|| { echo "# restart $i took longer than ${secs}s"; return 1; }
	done
}

wk_equals() { [ "$1" = "$2" ] || { echo "# got '$1', expected '$2'"; return 1; }; }

wk_setup_overdue() {
	pgh_createdb pgh_worker_restart pg_harden
	pgh_psql -d pgh_worker_restart >/dev/null <<'SQL'
SELECT harden.fsm_define('rs_cart', 'open -> submitted; submitted -> abandoned after 2 seconds');
CREATE TABLE rs_cart (id int PRIMARY KEY, status text NOT NULL DEFAULT 'open');
SELECT harden.fsm_attach('rs_cart', 'status', 'rs_cart');
INSERT INTO rs_cart VALUES (1);
UPDATE rs_cart SET status = 'submitted';
CREATE TABLE rs_product (id int PRIMARY KEY, stock int NOT NULL);
INSERT INTO rs_product VALUES (1, 10);
SELECT harden.stock_attach('rs_product', 'stock');
SELECT harden.stock_reserve('rs_product', ARRAY[1], ARRAY[4], '2 seconds', 'rs-1');
SQL
}

worker_restart_checks() {
	# Work that falls due while the server is down is applied once it is up.
	wk_setup_overdue
	pgh_cluster_stop
	sleep 3
	pgh_cluster_start "${PGH_CONF[@]}"
	wk_check "an overdue timed transition is applied after a restart" \
		wk_wait pgh_worker_restart "SELECT status = 'abandoned' FROM rs_cart WHERE id = 1"
	wk_check "an overdue hold is given back after a restart" \
		wk_wait pgh_worker_restart "SELECT stock = 10 FROM rs_product WHERE id = 1"
	# A few more runs must not apply anything twice.
	wk_wait pgh_worker_restart "SELECT runs >= 5 FROM harden.worker_status WHERE database = current_database()" >/dev/null
	wk_check "exactly once: one timer entry in the audit log, no timer left" wk_equals \
		"$(wk_q pgh_worker_restart "SELECT count(*) FILTER (WHERE actor = 'timer') || '/' || (SELECT count(*) FROM harden.fsm_due) FROM harden.fsm_log WHERE machine = 'rs_cart'")" "1/0"
	wk_check "exactly once: the hold expired once and the stock is whole" wk_equals \
		"$(wk_q pgh_worker_restart "SELECT string_agg(status, ',') || '/' || (SELECT stock FROM rs_product) FROM harden.stock_reservations")" "expired/10"

	# A database whose batches fail does not hold up another one.
	pgh_createdb pgh_worker_broken pg_harden
	pgh_psql -d pgh_worker_broken >/dev/null <<'SQL'
CREATE TABLE br_product (id int PRIMARY KEY, stock int NOT NULL);
INSERT INTO br_product VALUES (1, 10);
SELECT harden.stock_attach('br_product', 'stock');
CREATE FUNCTION br_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'br_product is frozen'; END $$;
CREATE TRIGGER br_refuse BEFORE UPDATE ON br_product FOR EACH ROW WHEN (NEW.stock > OLD.stock) EXECUTE FUNCTION br_refuse();
SELECT harden.stock_reserve('br_product', ARRAY[1], ARRAY[1], '100 ms');
SQL
	wk_check "the broken database's worker records the failing hold's error" wk_wait pgh_worker_broken \
		"SELECT status = 'held' AND attempts > 0 AND last_error LIKE '%br_product is frozen%' FROM harden.stock_reservations"
	wk_q pgh_worker_restart "SELECT harden.stock_reserve('rs_product', ARRAY[1], ARRAY[2], '100 ms')" >/dev/null
	wk_check "meanwhile another database's hold is given back" \
		wk_wait pgh_worker_restart "SELECT stock = 10 FROM rs_product WHERE id = 1"

	# Other databases' errors are shown only to pg_read_all_stats.  A hold
	# that cannot go back is the hold's own error (above); a step that fails
	# as a whole is the worker's: here the timer table is out of the way.
	wk_q pgh_worker_broken "ALTER TABLE harden.fsm_due RENAME TO fsm_due_away" >/dev/null
	wk_wait pgh_worker_broken "SELECT errors > 0 FROM harden.worker_status WHERE database = current_database()" >/dev/null
	pgh_psql -d postgres >/dev/null <<'SQL'
DROP ROLE IF EXISTS wk_nobody;
DROP ROLE IF EXISTS wk_stats;
CREATE ROLE wk_nobody LOGIN;
CREATE ROLE wk_stats LOGIN IN ROLE pg_read_all_stats;
SQL
	wk_q pgh_worker_restart "GRANT USAGE ON SCHEMA harden TO wk_nobody, wk_stats" >/dev/null
	wk_check "worker_status hides another database's error from a plain role" wk_equals \
		"$(pgh_psql -At -U wk_nobody -d pgh_worker_restart -c "SELECT errors > 0, last_error IS NULL FROM harden.worker_status WHERE database = 'pgh_worker_broken'")" "t|t"
	wk_check "and shows it to pg_read_all_stats" wk_equals \
		"$(pgh_psql -At -U wk_stats -d pgh_worker_restart -c "SELECT last_error LIKE '%fsm_due%' FROM harden.worker_status WHERE database = 'pgh_worker_broken'")" "t"

	# A role that may not drop or rename a database cannot stop its worker
	# by trying to.
	local pid_before
	pid_before=$(wk_pid pgh_worker_restart)
	for _ in 1 2 3; do
		pgh_psql -U wk_nobody -d postgres -c "DROP DATABASE pgh_worker_restart" >/dev/null 2>&1 || true
		pgh_psql -U wk_nobody -d postgres -c "ALTER DATABASE pgh_worker_restart RENAME TO wk_gone" >/dev/null 2>&1 || true
		pgh_psql -U wk_nobody -d postgres -c "CREATE DATABASE wk_copy TEMPLATE pgh_worker_restart" >/dev/null 2>&1 || true
	done
	wk_q pgh_worker_restart "SELECT harden.stock_reserve('rs_product', ARRAY[1], ARRAY[2], '100 ms')" >/dev/null
	wk_check "a failed DROP DATABASE by a non-owner does not pause the worker" \
		wk_wait pgh_worker_restart "SELECT stock = 10 FROM rs_product WHERE id = 1" 8
	wk_check "the same worker still runs" wk_equals "$(wk_pid pgh_worker_restart)" "$pid_before"

	# The worker's own queries use pg_catalog, whatever search_path the
	# database sets; and a worker that ran well restarts fast again.
	wk_wait pgh_worker_restart "SELECT pid IS NOT NULL AND state IN ('idle', 'running') FROM harden.worker_status WHERE database = current_database()" >/dev/null
	pgh_psql -d pgh_worker_restart >/dev/null <<'SQL'
CREATE TABLE wk_calls (app text, usr name);
CREATE FUNCTION public.now() RETURNS timestamptz LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO public.wk_calls
    SELECT a.backend_type, current_user FROM pg_catalog.pg_stat_activity a WHERE a.pid = pg_catalog.pg_backend_pid();
  RETURN pg_catalog.now();
END $$;
ALTER DATABASE pgh_worker_restart SET search_path = public, pg_catalog;
SELECT harden.stock_reserve('rs_product', ARRAY[1], ARRAY[1], '1 hour', 'rs-long');
SQL
	wk_check "a worker terminated 5 times comes back within 6 s each time (failures reset after a good run)" \
		wk_restarts pgh_worker_restart 5 6
	wk_check "a database's search_path does not reach the worker's queries" wk_equals \
		"$(wk_q pgh_worker_restart "SELECT count(*) FROM wk_calls WHERE app = 'pg_harden worker'")" "0"
	pgh_psql -d pgh_worker_restart >/dev/null <<'SQL'
ALTER DATABASE pgh_worker_restart RESET search_path;
DROP FUNCTION public.now();
SQL

	# DROP DATABASE does not fail on the worker's connection.
	wk_check "DROP DATABASE with its worker running succeeds" \
		pgh_psql -d postgres -c "DROP DATABASE pgh_worker_broken"
	wk_check "the worker of a dropped database is gone" wk_wait postgres \
		"SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE backend_type = 'pg_harden worker' AND datname = 'pgh_worker_broken')"

	# A newly skipped database loses its worker at the next reload.
	pgh_psql -d postgres -c "ALTER SYSTEM SET harden.worker_skip_databases = 'pgh_worker_restart'" -c "SELECT pg_reload_conf()" >/dev/null
	wk_check "harden.worker_skip_databases stops the database's worker" wk_wait pgh_worker_restart \
		"SELECT state = 'skipped' AND pid IS NULL FROM harden.worker_status WHERE database = current_database()"
	pgh_psql -d postgres -c "ALTER SYSTEM RESET harden.worker_skip_databases" -c "SELECT pg_reload_conf()" >/dev/null
	wk_check "and removing it from the list brings the worker back" wk_wait pgh_worker_restart \
		"SELECT state IN ('idle', 'running') FROM harden.worker_status WHERE database = current_database()"

	# A full batch is followed by another run at once, not after the
	# interval: 30 expired holds with a batch of 5 and an interval of 10 min.
	pgh_psql -d pgh_worker_restart >/dev/null <<'SQL'
CREATE TABLE bt_product (id int PRIMARY KEY, stock int NOT NULL);
INSERT INTO bt_product VALUES (1, 100);
SELECT harden.stock_attach('bt_product', 'stock');
SQL
	pgh_psql -d postgres -c "ALTER SYSTEM SET harden.worker_batch_size = 5" \
		-c "ALTER SYSTEM SET harden.worker_interval = '10min'" -c "SELECT pg_reload_conf()" >/dev/null
	# Once the worker has taken the new interval it stops running every 200ms.
	wk_wait pgh_worker_restart "SELECT last_run < clock_timestamp() - interval '1 s' FROM harden.worker_status WHERE database = current_database()" >/dev/null
	wk_q pgh_worker_restart "SELECT count(harden.stock_reserve('bt_product', ARRAY[1], ARRAY[1], '50 ms')) FROM generate_series(1, 30)" >/dev/null
	wk_wait pgh_worker_restart "SELECT count(*) = 0 FROM harden.stock_holds WHERE relid = 'bt_product'::regclass AND expires_at > clock_timestamp()" >/dev/null
	# The reload wakes the worker from its 10-minute wait.
	pgh_psql -d postgres -c "SELECT pg_reload_conf()" >/dev/null
	wk_check "a full batch is followed at once by the next one" \
		wk_wait pgh_worker_restart "SELECT stock = 100 FROM bt_product WHERE id = 1" 20
	pgh_psql -d postgres -c "ALTER SYSTEM RESET harden.worker_batch_size" \
		-c "ALTER SYSTEM RESET harden.worker_interval" -c "SELECT pg_reload_conf()" >/dev/null
}

run_worker_restart() {
	pgh_log "worker: restart and other databases"
	local log="$PGH_TMP/out/worker_restart.log" rc=0
	worker_restart_checks >"$log" 2>&1 || rc=$?
	cat "$log"
	record "worker restart" $rc "$(grep -c '^ok ' "$log" || true)" "$(grep -c '^not ok ' "$log" || true)"
}
