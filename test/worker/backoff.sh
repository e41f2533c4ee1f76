# test/worker/backoff.sh: sourced by test/run.sh after restart.sh (uses its
# wk_* helpers).  A timed transition and an expired hold whose work fails
# with one error, then another, then succeeds, under the background worker:
# attempts and next_try grow with each failure, the server log has one line
# per distinct error and one when the item works again, and worker_status
# and metrics() show the failures while they last.  Prints TAP-like lines.

bo_db=pgh_worker_backoff

# bo_track TABLE QUERY N SECONDS: poll "attempts|epoch of next_try" until
# attempts reaches N; prints the next_try of each attempt seen, one a line.
bo_track() {
	local q=$1 n=$2 deadline=$((SECONDS + $3)) row a t last=0
	while [ $SECONDS -lt $deadline ]; do
		row=$(wk_q $bo_db "$q" 2>/dev/null || true)
		a=${row%%|*}
		t=${row#*|}
		if [ -n "$row" ] && [ "$a" -gt "$last" ]; then
			echo "$a $t"
			last=$a
			[ "$a" -lt "$n" ] || return 0
		fi
		sleep 0.02
	done
	return 1
}

# bo_growing FILE: the delay before the last attempt seen is longer than
# the one before the second (each delay is at least twice the base times
# 2^(n-2), so the last must beat the first whatever the jitter).
bo_growing() {
	local first last
	first=$(awk 'NR == 1 {a = $2} NR == 2 {print $2 - a}' "$1")
	last=$(awk '{p = c; c = $2} END {print c - p}' "$1")
	echo "# next_try gaps: first ${first}s, last ${last}s"
	awk -v f="$first" -v l="$last" 'BEGIN {exit !(f > 0 && l > f)}'
}

# bo_log_count PATTERN: lines of the server log since backoff_checks began.
bo_log_count() { tail -c +$((bo_log_start + 1)) "$PGH_TMP/server.log" | grep -c -- "$1" || true; }

# bo_metric FAMILY [MORE LABELS]: this database's sample of a family.
bo_metric() {
	wk_q $bo_db "SELECT coalesce(sum(split_part(line, ' ', 2)::numeric), -1) FROM regexp_split_to_table(harden.metrics(), E'\n') AS line
		WHERE line LIKE '$1{database=\"$bo_db\"${2:-}}%'"
}

backoff_checks() {
	bo_log_start=$(stat -c %s "$PGH_TMP/server.log")
	pgh_createdb $bo_db pg_harden
	# Delays of 0.5 s, 1 s, 2 s, then 3 s (the cap), runs every 50 ms; the
	# suite's settings are put back afterwards.
	local base max interval
	base=$(wk_q postgres "SHOW harden.worker_retry_base")
	max=$(wk_q postgres "SHOW harden.worker_retry_max")
	interval=$(wk_q postgres "SHOW harden.worker_interval")
	pgh_psql -d postgres -c "ALTER SYSTEM SET harden.worker_retry_base = '500ms'" \
		-c "ALTER SYSTEM SET harden.worker_retry_max = '3s'" \
		-c "ALTER SYSTEM SET harden.worker_interval = '50ms'" -c "SELECT pg_reload_conf()" >/dev/null
	pgh_psql -d $bo_db >/dev/null <<'SQL'
-- mode says how the next attempt ends: with error A, error B, or well.
CREATE TABLE bo_mode (m text NOT NULL);
INSERT INTO bo_mode VALUES ('A');
CREATE FUNCTION bo_fail() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  m text := (SELECT m FROM public.bo_mode);
BEGIN
  IF m <> 'ok' THEN RAISE EXCEPTION 'bo % error %', TG_ARGV[0], m; END IF;
  RETURN NEW;
END $$;
SELECT harden.fsm_define('bo_cart', 'open -> submitted; submitted -> abandoned after 1 second');
CREATE TABLE bo_cart (id int PRIMARY KEY, status text NOT NULL DEFAULT 'open');
SELECT harden.fsm_attach('bo_cart', 'status', 'bo_cart');
CREATE TRIGGER bo_fail BEFORE UPDATE ON bo_cart FOR EACH ROW
  WHEN (NEW.status = 'abandoned') EXECUTE FUNCTION bo_fail('timer');
CREATE TABLE bo_stock (id int PRIMARY KEY, qty int NOT NULL);
INSERT INTO bo_stock VALUES (1, 10);
SELECT harden.stock_attach('bo_stock', 'qty');
CREATE TRIGGER bo_fail BEFORE UPDATE ON bo_stock FOR EACH ROW
  WHEN (NEW.qty > OLD.qty) EXECUTE FUNCTION bo_fail('hold');
INSERT INTO bo_cart VALUES (1);
UPDATE bo_cart SET status = 'submitted';
SELECT harden.stock_reserve('bo_stock', ARRAY[1], ARRAY[4], '1 second', 'bo-1');
SQL
	local timer_q="SELECT attempts || '|' || extract(epoch FROM next_try) FROM harden.fsm_due WHERE relid = 'bo_cart'::regclass"
	local hold_q="SELECT attempts || '|' || extract(epoch FROM next_try) FROM harden.stock_holds WHERE ref = 'bo-1' AND status = 'held'"
	local tfile="$PGH_TMP/out/backoff_timer" hfile="$PGH_TMP/out/backoff_hold"

	# Error A, four times: the delays grow.
	bo_track "$timer_q" 4 30 >"$tfile" &
	local tpid=$!
	bo_track "$hold_q" 4 30 >"$hfile" || true
	wait $tpid || true
	wk_check "a failing timer is tried again, 4 attempts so far" wk_equals "$(tail -n1 "$tfile" | cut -d' ' -f1)" 4
	wk_check "with growing delays between its attempts" bo_growing "$tfile"
	wk_check "a failing hold expiry is tried again, 4 attempts so far" wk_equals "$(tail -n1 "$hfile" | cut -d' ' -f1)" 4
	wk_check "with growing delays between its attempts" bo_growing "$hfile"
	wk_check "worker_status counts the failed items and shows the last error" wk_equals \
		"$(wk_q $bo_db "SELECT item_errors >= 8, last_item_error LIKE 'bo % error A', last_item_error_at IS NOT NULL FROM harden.worker_status WHERE database = current_database()")" "t|t|t"
	wk_check "worker_status shows both items in backoff" \
		wk_wait $bo_db "SELECT items_in_backoff = 2 FROM harden.worker_status WHERE database = current_database()" 5
	wk_check "metrics() has them by kind" wk_equals \
		"$(bo_metric harden_worker_items_in_backoff ',item=\"timer\"')/$(bo_metric harden_worker_items_in_backoff ',item=\"hold\"')" "1/1"
	wk_check "metrics() counts the failed timers" \
		wk_wait $bo_db "SELECT sum(split_part(line, ' ', 2)::numeric) >= 4 FROM regexp_split_to_table(harden.metrics(), E'\n') AS line WHERE line LIKE 'harden_fsm_timers_failed_total{database=\"$bo_db\"}%'" 5

	# Error B, twice; then the work succeeds.
	wk_q $bo_db "UPDATE bo_mode SET m = 'B'" >/dev/null
	wk_check "the timer fails with the new error" \
		wk_wait $bo_db "SELECT attempts >= 6 AND last_error = 'bo timer error B' FROM harden.fsm_due WHERE relid = 'bo_cart'::regclass" 20
	wk_check "the hold fails with the new error" \
		wk_wait $bo_db "SELECT attempts >= 6 AND last_error = 'bo hold error B' FROM harden.stock_holds WHERE ref = 'bo-1'" 20
	wk_q $bo_db "UPDATE bo_mode SET m = 'ok'" >/dev/null
	wk_check "then the timer is applied" \
		wk_wait $bo_db "SELECT status = 'abandoned' FROM bo_cart WHERE id = 1" 10
	wk_check "and the hold is given back" \
		wk_wait $bo_db "SELECT status = 'expired' FROM harden.stock_holds WHERE ref = 'bo-1'" 10
	wk_check "nothing is left in backoff" \
		wk_wait $bo_db "SELECT items_in_backoff = 0 FROM harden.worker_status WHERE database = current_database()" 5
	wk_check "metrics() counts the recoveries" wk_equals \
		"$(bo_metric harden_fsm_timers_recovered_total)/$(bo_metric harden_stock_expirations_recovered_total)" "1/1"

	# The log: once per distinct error, once for the recovery.
	sleep 0.5
	wk_check "the timer's first error is logged once" wk_equals "$(bo_log_count 'on public.bo_cart failed: bo timer error A')" 1
	wk_check "its second error once" wk_equals "$(bo_log_count 'on public.bo_cart failed: bo timer error B')" 1
	wk_check "and its recovery once" wk_equals "$(bo_log_count 'on public.bo_cart applied after [0-9]* failed attempts')" 1
	wk_check "the hold's first error is logged once" wk_equals "$(bo_log_count 'hold on table public.bo_stock: bo hold error A')" 1
	wk_check "its second error once" wk_equals "$(bo_log_count 'hold on table public.bo_stock: bo hold error B')" 1
	wk_check "and its recovery once" wk_equals "$(bo_log_count 'on table public.bo_stock given back after [0-9]* failed attempts')" 1

	pgh_psql -d postgres -c "ALTER SYSTEM SET harden.worker_retry_base = '$base'" \
		-c "ALTER SYSTEM SET harden.worker_retry_max = '$max'" \
		-c "ALTER SYSTEM SET harden.worker_interval = '$interval'" -c "SELECT pg_reload_conf()" >/dev/null
	pgh_psql -d postgres -c "DROP DATABASE $bo_db" >/dev/null
}

run_worker_backoff() {
	pgh_log "worker: failing items back off"
	local log="$PGH_TMP/out/worker_backoff.log" rc=0
	backoff_checks >"$log" 2>&1 || rc=$?
	cat "$log"
	record "worker backoff" $rc "$(grep -c '^ok ' "$log" || true)" "$(grep -c '^not ok ' "$log" || true)"
}
