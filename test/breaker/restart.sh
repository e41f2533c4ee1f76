# test/breaker/restart.sh: sourced by test/run.sh.  Circuit breakers under
# real concurrency (pgbench), across a server restart and across databases:
# a threshold is reached once however many sessions record failures, the
# live state is rebuilt from harden.breaker_states on first use, and the
# same name in two databases is two breakers.  Prints TAP-like "ok"/"not ok"
# lines.  Uses run.sh's PGH_CONF for the restart.

bk_q() { pgh_psql -At -d "$1" -c "$2"; }

bk_check() {
	if "${@:2}"; then echo "ok - $1"; else echo "not ok - $1"; fi
}

bk_equals() { [ "$1" = "$2" ] || { echo "# got '$1', expected '$2'"; return 1; }; }

breaker_concurrency_checks() {
	local dir="$PGH_TMP/out/breaker_bench"
	mkdir -p "$dir"
	pgh_createdb pgh_breaker_p pg_harden
	pgh_psql -d pgh_breaker_p >/dev/null <<'SQL'
SELECT harden.breaker_define('once', failure_threshold => 1000, cooldown => '1 hour');
SELECT harden.breaker_define('flap', failure_threshold => 3, failure_window => '1 second',
                             cooldown => '50 ms', half_open_probes => 2);
SQL
	echo "SELECT harden.breaker_record('once', false);" >"$dir/once.sql"
	printf '%s\n' '\set ok random(0, 1)' \
		"SELECT CASE WHEN harden.breaker_allow('flap') THEN harden.breaker_record('flap', :ok = 1) END;" >"$dir/flap.sql"
	pgbench -n -c 8 -j 2 -T 2 -f "$dir/once.sql" pgh_breaker_p >"$dir/once.log" 2>&1
	pgbench -n -c 8 -j 2 -T 2 -f "$dir/flap.sql" pgh_breaker_p >"$dir/flap.log" 2>&1
	bk_check "8 sessions recording failures trip a breaker once, audited once" bk_equals \
		"$(bk_q pgh_breaker_p "SELECT (failures > 1000) || '/' || opens || '/' || (SELECT count(*) FROM harden.fsm_log WHERE row_key = '{\"name\": \"once\"}' AND event = 'trip') FROM harden.breaker_status WHERE name = 'once'")" \
		"true/1/1"
	bk_q pgh_breaker_p "SELECT harden.breaker_sync()" >/dev/null
	bk_check "a flapping breaker: after breaker_sync the row and its last audit entry show the live state" bk_equals \
		"$(bk_q pgh_breaker_p "SELECT synced AND state = (SELECT to_state FROM harden.fsm_log WHERE row_key = '{\"name\": \"flap\"}' ORDER BY id DESC LIMIT 1) FROM harden.breaker_status WHERE name = 'flap'")" \
		"t"
	bk_check "a flapping breaker opened many times, each open audited at most once" bk_equals \
		"$(bk_q pgh_breaker_p "SELECT opens > 2 AND (SELECT count(*) FROM harden.fsm_log WHERE row_key = '{\"name\": \"flap\"}' AND to_state = 'open') BETWEEN 1 AND opens FROM harden.breaker_status WHERE name = 'flap'")" \
		"t"
}

breaker_restart_checks() {
	breaker_concurrency_checks
	pgh_createdb pgh_breaker_a pg_harden
	pgh_createdb pgh_breaker_b pg_harden
	pgh_psql -d pgh_breaker_a >/dev/null <<'SQL'
SELECT harden.breaker_define('api', failure_threshold => 2, cooldown => '1 hour');
SELECT harden.breaker_define('mail', failure_threshold => 1, cooldown => '2 seconds');
SELECT harden.breaker_define('calm', failure_threshold => 5);
SELECT harden.breaker_record('api', false), harden.breaker_record('api', false);
SELECT harden.breaker_record('mail', false);
SELECT harden.breaker_record('calm', false), harden.breaker_record('calm', true);
SQL
	pgh_psql -d pgh_breaker_b >/dev/null <<'SQL'
SELECT harden.breaker_define('api', failure_threshold => 2, cooldown => '1 hour');
SELECT harden.breaker_record('api', false);
SQL
	bk_check "the same name in another database is another breaker" bk_equals \
		"$(bk_q pgh_breaker_b "SELECT harden.breaker_allow('api')")/$(bk_q pgh_breaker_b "SELECT state || '/' || window_failures FROM harden.breaker_status")" \
		"t/closed/1"
	local since
	since=$(bk_q pgh_breaker_a "SELECT since FROM harden.breaker_status WHERE name = 'api'")

	pgh_cluster_stop
	pgh_cluster_start "${PGH_CONF[@]}"

	bk_check "after a restart, an open breaker is open before its first use" bk_equals \
		"$(bk_q pgh_breaker_a "SELECT state || '/' || (since = '$since') FROM harden.breaker_status WHERE name = 'api'")" \
		"open/true"
	bk_check "after a restart, an open breaker rejects calls until its cooldown ends" bk_equals \
		"$(bk_q pgh_breaker_a "SELECT harden.breaker_allow('api')")/$(bk_q pgh_breaker_a "SELECT state || '/' || (since = '$since') || '/' || rejected FROM harden.breaker_status WHERE name = 'api'")" \
		"f/open/true/1"
	bk_check "after a restart, counters start afresh" bk_equals \
		"$(bk_q pgh_breaker_a "SELECT harden.breaker_allow('calm')")/$(bk_q pgh_breaker_a "SELECT state || '/' || window_failures || '/' || failures FROM harden.breaker_status WHERE name = 'calm'")" \
		"t/closed/0/0"
	sleep 2
	bk_check "the cooldown counts from the trip before the restart" bk_equals \
		"$(bk_q pgh_breaker_a "SELECT harden.breaker_allow('mail') || '/' || harden.breaker_record('mail', true)")" \
		"true/closed"
	bk_check "the breaker's audit trail survives: trip, probe, reset" bk_equals \
		"$(bk_q pgh_breaker_a "SELECT string_agg(to_state, ',' ORDER BY id) FROM harden.fsm_log WHERE row_key = '{\"name\": \"mail\"}'")" \
		"closed,open,half_open,closed"
	bk_check "the other database's breaker is still its own" bk_equals \
		"$(bk_q pgh_breaker_b "SELECT harden.breaker_record('api', false) || '/' || harden.breaker_allow('api')")" \
		"closed/true"

	# pg_dump keeps the definitions, not the states, and the attachment
	# CREATE EXTENSION makes is not restored a second time.
	pgh_psql -d pgh_breaker_a >/dev/null <<'SQL'
CREATE TABLE bk_user_breaker (name text PRIMARY KEY, state text NOT NULL DEFAULT 'closed');
SELECT harden.fsm_attach('bk_user_breaker', 'state', 'circuit_breaker');
SQL
	local dump="$PGH_TMP/out/breaker_dump.sql" rc=0
	pg_dump -d pgh_breaker_a >"$dump"
	pgh_createdb pgh_breaker_c
	pgh_psql -d pgh_breaker_c -f "$dump" >/dev/null 2>&1 || rc=$?
	bk_check "a dump with breakers restores without errors" bk_equals "$rc" 0
	bk_check "the restored database has the definitions and both attachments, once each" bk_equals \
		"$(bk_q pgh_breaker_c "SELECT (SELECT string_agg(name, ',' ORDER BY name) FROM harden.breakers) || '/' || (SELECT string_agg(relid::text, ',' ORDER BY relid::text) FROM harden.fsm_attached)")" \
		"api,calm,mail/bk_user_breaker,harden.breaker_states"
	bk_check "restored breakers start closed and trip as defined" bk_equals \
		"$(bk_q pgh_breaker_c "SELECT harden.breaker_allow('api')")/$(bk_q pgh_breaker_c "SELECT harden.breaker_record('api', false) || harden.breaker_record('api', false)")/$(bk_q pgh_breaker_c "SELECT recorded_state FROM harden.breaker_status WHERE name = 'api'")" \
		"t/closedopen/open"
}

run_breaker_restart() {
	pgh_log "breakers: concurrency, restart and other databases"
	local log="$PGH_TMP/out/breaker_restart.log" rc=0
	breaker_restart_checks >"$log" 2>&1 || rc=$?
	cat "$log"
	record "breaker restart" $rc "$(grep -c '^ok ' "$log" || true)" "$(grep -c '^not ok ' "$log" || true)"
}
