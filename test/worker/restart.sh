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
}

run_worker_restart() {
	pgh_log "worker: restart and other databases"
	local log="$PGH_TMP/out/worker_restart.log" rc=0
	worker_restart_checks >"$log" 2>&1 || rc=$?
	cat "$log"
	record "worker restart" $rc "$(grep -c '^ok ' "$log" || true)" "$(grep -c '^not ok ' "$log" || true)"
}
