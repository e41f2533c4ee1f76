# test/replica/replica.sh: sourced by test/run.sh on the preloaded cluster,
# after every suite that needs the primary (the failover stops it; it is
# started again at the end, as an independent server).
#
# A streaming hot standby made with pg_basebackup -R (test/replica/lib.sh):
#   - it replays the primary's writes; its own cache (cache_set, cache_get,
#     cache_query, deletes, invalidations, flushes) works in its shared
#     memory, publishes at commit, and is not the primary's;
#   - with harden.cache_wal on, the primary's commits invalidate the
#     standby's query results at replay (watched, tracked and per-value
#     dependencies), and a slow computation racing a replayed write is
#     returned but not stored; a standby without pg_harden preloaded gives
#     PH001 for the cache, then stops at pg_harden's first WAL record with
#     PostgreSQL's message naming shared_preload_libraries;
#   - every function that writes tables refuses with 25006, naming itself,
#     with a hint; reads (fsm_can, fsm_next, views) work;
#   - stopped and restarted, it catches up;
#   - failover: the primary stops, the standby is promoted; its worker
#     starts, the timers and holds that fell due are applied exactly once,
#     those applied before the failover are not applied again, and state
#     machines, stock, watches and the cache work on the new primary.
# Prints TAP-like "ok"/"not ok" lines.

rp_db=pgh_replica
rp_check() {
	local what=$1
	shift
	if "$@" >"$PGH_TMP/out/replica-check.out" 2>&1; then
		echo "ok - $what"
	else
		echo "not ok - $what"
		sed 's/^/# /' "$PGH_TMP/out/replica-check.out"
	fi
}
rp_p() { pgh_psql -At -d "$rp_db" "$@"; }
rp_s() { pgh_psql -At -h "$PGH_STANDBY_HOST" -p "$PGH_STANDBY_PORT" -d "$rp_db" "$@"; }
rp_equal() { [ "$1" = "$2" ] || { echo "got:"; echo "$1"; echo "expected:"; echo "$2"; return 1; }; }
rp_true_s() { rp_equal "$(rp_s -c "$1" 2>&1)" t; }
rp_true_p() { rp_equal "$(rp_p -c "$1" 2>&1)" t; }

# rp_wait_s SQL [SECONDS]: poll the standby (or the promoted server).
rp_wait_s() {
	local deadline=$((SECONDS + ${2:-30}))
	while [ $SECONDS -lt $deadline ]; do
		[ "$(rp_s -c "$1" 2>/dev/null)" = t ] && return 0
		sleep 0.2
	done
	echo "never held: $1"
	return 1
}

# rp_refuses SQL FUNCTION: on the standby, SQL fails with 25006 naming
# FUNCTION, with the detail and the hint.
rp_refuses() {
	local out
	out=$(PGOPTIONS="-c client_min_messages=warning" psql -X -q -At -h "$PGH_STANDBY_HOST" -p "$PGH_STANDBY_PORT" \
		-d "$rp_db" -v VERBOSITY=verbose -c "$1" 2>&1 || true)
	echo "$out"
	grep -q "^ERROR:  25006: cannot execute $2 during recovery" <<<"$out" \
		&& grep -q "^DETAIL:  This server is a standby: $2 writes tables" <<<"$out" \
		&& grep -q "^HINT:  Run it on the primary server" <<<"$out"
}

rp_setup() {
	pgh_createdb "$rp_db" pg_harden
	rp_p >/dev/null <<'SQL'
CREATE TABLE prod (id int PRIMARY KEY, price int NOT NULL);
INSERT INTO prod SELECT g, g FROM generate_series(1, 100) g;
SELECT harden.cache_watch('prod');
SELECT harden.stock_attach('prod', 'price');
SELECT harden.fsm_define('rp_m', 'new -> open on start; open -> done on close; new -> late after 1 second');
-- 'slow' rows become due only after the failover.
SELECT harden.fsm_define('rp_slow', 'wait -> over after 6 seconds');
SELECT harden.breaker_define('rp_b', failure_threshold => 2);
CREATE TABLE pw (v int);
INSERT INTO pw VALUES (1);
CREATE TABLE tr (v int);
CREATE TABLE race (v int);
INSERT INTO race VALUES (1);
CREATE TABLE pv (id int PRIMARY KEY, cat int NOT NULL, price int NOT NULL);
INSERT INTO pv SELECT g, g % 2, 10 FROM generate_series(1, 10) g;
SELECT harden.cache_watch('pv', by => 'cat');
SELECT harden.cache_watch('pw');
CREATE TABLE ticket (id int PRIMARY KEY, status text NOT NULL DEFAULT 'new');
SELECT harden.fsm_attach('ticket', 'status', 'rp_m');
CREATE TABLE slow (id int PRIMARY KEY, status text NOT NULL DEFAULT 'wait');
SELECT harden.fsm_attach('slow', 'status', 'rp_slow');
SQL
}

# Generation moves in the WAL; standbys made afterwards inherit the setting.
rp_cache_wal_on() {
	rp_p -c "ALTER SYSTEM SET harden.cache_wal = on" -c "SELECT pg_reload_conf()" >/dev/null
	rp_check "harden.cache_wal is on on the primary" \
		pgh_wait_sql "$rp_db" "SELECT current_setting('harden.cache_wal') = 'on'" 10
}

rp_standby_basics() {
	rp_check "standby: in recovery, streaming from the primary" rp_true_s \
		"SELECT pg_is_in_recovery() AND (SELECT status = 'streaming' FROM pg_stat_wal_receiver)"
	rp_check "standby: pg_harden is preloaded there" rp_true_s \
		"SELECT harden.metrics() ~ 'harden_preloaded 1'"
	rp_check "standby: it replayed the primary's setup" rp_true_s \
		"SELECT count(*) = 100 FROM prod"

	# Its own cache, in its own shared memory.
	rp_check "standby: cache_set and cache_get work" rp_equal \
		"$(rp_s -c "SELECT harden.cache_set('rp:k', '{\"a\": 1}'::jsonb, '1 hour', '{rp}')" -c "SELECT harden.cache_get('rp:k')" 2>&1 | tail -n1)" '{"a": 1}'
	rp_check "standby: the primary does not have the standby's entry" rp_true_p \
		"SELECT harden.cache_get('rp:k') IS NULL"
	rp_p -c "SELECT harden.cache_set('rp:p', 'primary'::text)" >/dev/null
	pgh_standby_wait_replay >/dev/null
	rp_check "standby: nor the standby the primary's (caches do not replicate)" rp_true_s \
		"SELECT harden.cache_get_text('rp:p') IS NULL"
	rp_check "standby: cache_query computes there and then hits" rp_equal \
		"$(rp_s -c "SELECT harden.cache_query('rp:sum', 'SELECT sum(price) AS s FROM prod', '1 hour')" \
			-c "SELECT hits FROM harden.cache_entries WHERE key = 'rp:sum'" \
			-c "SELECT harden.cache_query('rp:sum', 'SELECT sum(price) AS s FROM prod', '1 hour')" \
			-c "SELECT hits FROM harden.cache_entries WHERE key = 'rp:sum'" 2>&1 | tr '\n' ' ')" \
		'[{"s": 5050}] 0 [{"s": 5050}] 1 '
	rp_check "standby: with harden.cache_wal its dependencies are tracked (nothing in cache_entries.unwatched)" rp_true_s \
		"SELECT coalesce(cardinality(unwatched), 0) = 0 FROM harden.cache_entries WHERE key = 'rp:sum'"
	rp_check "standby: a cache write in a transaction is published at its commit" rp_equal \
		"$(rp_s -c "BEGIN" -c "SELECT harden.cache_set('rp:tx', 'v'::text)" \
			-c "SELECT harden.cache_get_text('rp:tx')" \
			-c "SELECT count(*) FROM harden.cache_entries WHERE key = 'rp:tx'" \
			-c "COMMIT" -c "SELECT count(*) FROM harden.cache_entries WHERE key = 'rp:tx'" 2>&1 | grep -v '^$' | tr '\n' ' ')" \
		'v 0 1 '
	rp_check "standby: ... and rolled back with it" rp_equal \
		"$(rp_s -c "BEGIN" -c "SELECT harden.cache_delete('rp:tx')" -c "ROLLBACK" -c "SELECT harden.cache_get_text('rp:tx')" 2>&1 | tr '\n' ' ')" 't v '
	rp_check "standby: cache_delete, cache_invalidate_tag, cache_invalidate and cache_flush work" rp_equal \
		"$(rp_s -c "SELECT harden.cache_delete('rp:tx')" -c "SELECT harden.cache_invalidate_tag('rp')" \
			-c "SELECT harden.cache_set('rp:g', '1'::text)" -c "SELECT harden.cache_invalidate('rp:g*')" \
			-c "SELECT harden.cache_flush() >= 1" -c "SELECT count(*) FROM harden.cache_entries" 2>&1 | grep -v '^$' | tr '\n' ' ')" \
		't 1 1 t 0 '
	rp_check "standby: a standby wrote no WAL for its cache" rp_true_s \
		"SELECT pg_last_wal_replay_lsn() = pg_last_wal_receive_lsn()"
	rp_check "standby: fsm_can, fsm_next and the views work" rp_equal \
		"$(rp_s -c "INSERT INTO harden.cache_policies VALUES ('x:', NULL, NULL, false)" 2>/dev/null;
			rp_s -c "SELECT harden.fsm_next('rp_m', 'new')" -c "SELECT count(*) FROM harden.fsm_attachments WHERE machine LIKE 'rp_%'" \
			-c "SELECT count(*) >= 0 FROM harden.health_report()" -c "SELECT count(*) FROM harden.worker_status" 2>&1 | tr '\n' ' ')" \
		'{open,late} 2 t 0 '
}

# harden.cache_wal: the primary's commits invalidate the standby's results
# when it replays them, and a computation racing a replayed write is not
# stored.
rp_standby_wal() {
	rp_check "wal: a watched table's sum cached on the standby" rp_equal \
		"$(rp_s -c "SELECT harden.cache_query('rp:w', 'SELECT sum(price) AS s FROM prod', '1 hour')")" '[{"s": 5050}]'
	rp_p -c "UPDATE prod SET price = price + 1000 WHERE id = 100" >/dev/null
	pgh_standby_wait_replay >/dev/null
	rp_check "wal: after the primary's UPDATE is replayed, the standby's result is the new sum" rp_equal \
		"$(rp_s -c "SELECT harden.cache_query('rp:w', 'SELECT sum(price) AS s FROM prod', '1 hour')")" '[{"s": 6050}]'
	rp_p -c "UPDATE prod SET price = price - 1000 WHERE id = 100" >/dev/null
	rp_check "wal: a table neither watched nor written yet (tracked writes), cached on the standby" rp_equal \
		"$(rp_s -c "SELECT harden.cache_query('rp:tr', 'SELECT count(*) AS n FROM tr', '1 hour')")" '[{"n": 1}]'
	rp_p -c "INSERT INTO tr VALUES (1)" >/dev/null
	pgh_standby_wait_replay >/dev/null
	rp_check "wal: ... invalidated by the replayed INSERT" rp_equal \
		"$(rp_s -c "SELECT harden.cache_query('rp:tr', 'SELECT count(*) AS n FROM tr', '1 hour')")" '[{"n": 2}]'
	local q0="SELECT harden.cache_query('rp:pv:0', 'SELECT sum(price) AS s FROM pv WHERE cat = 0', '1 hour')"
	local q1="SELECT harden.cache_query('rp:pv:1', 'SELECT sum(price) AS s FROM pv WHERE cat = 1', '1 hour')"
	rp_check "wal: per-value dependencies: two categories cached on the standby" rp_equal \
		"$(rp_s -c "$q0" -c "$q1" | tr '\n' ' ')" '[{"s": 50}] [{"s": 50}] '
	rp_p -c "UPDATE pv SET price = 20 WHERE id = 1" >/dev/null
	pgh_standby_wait_replay >/dev/null
	rp_check "wal: a replayed write of category 1 invalidates its result and leaves category 0's (a hit)" rp_equal \
		"$(rp_s -c "$q1" -c "$q0" -c "SELECT hits FROM harden.cache_entries WHERE key = 'rp:pv:0'" | tr '\n' ' ')" \
		'[{"s": 60}] [{"s": 50}] 1 '
	# A slow computation on the standby; the primary writes its table
	# meanwhile; the standby replays the write before the computation ends.
	local slow="SELECT harden.cache_query('rp:slow', 'SELECT v FROM race, LATERAL (SELECT pg_sleep(2)) s', '1 hour')"
	rp_s -c "$slow" >"$PGH_TMP/out/replica-slow.out" 2>&1 &
	sleep 0.7
	rp_p -c "UPDATE race SET v = 10" >/dev/null
	pgh_standby_wait_replay >/dev/null
	wait
	rp_check "wal: the slow computation returns what its snapshot saw" rp_equal "$(cat "$PGH_TMP/out/replica-slow.out")" '[{"v": 1}]'
	rp_check "wal: ... and is not stored: the next call computes the replayed value (no stale refill)" rp_equal \
		"$(rp_s -c "$slow")" '[{"v": 10}]'
	# The moves travel with the commit record, not after it: with the
	# walwriter asleep for 10 s, a standby that shows the commit has them.
	local ww="SELECT harden.cache_query('rp:ww', 'SELECT v FROM ww', '1 hour')"
	rp_replayed <<<"CREATE TABLE ww (v int); INSERT INTO ww VALUES (1);
		ALTER SYSTEM SET wal_writer_delay = '10s'; SELECT pg_reload_conf();"
	rp_check "wal: a result cached on the standby while the primary's walwriter sleeps" rp_equal "$(rp_s -c "$ww")" '[{"v": 1}]'
	rp_p -c "UPDATE ww SET v = 2" >/dev/null
	rp_check "wal: the standby shows the committed UPDATE" rp_wait_s "SELECT v = 2 FROM ww" 10
	rp_check "wal: ... and at once the new result: the moves came with the commit" rp_equal "$(rp_s -c "$ww")" '[{"v": 2}]'
	rp_p -c "ALTER SYSTEM RESET wal_writer_delay" -c "SELECT pg_reload_conf()" >/dev/null
}

# harden.cache_wal: explicit invalidations on the primary (deletes, sets,
# patterns, tags, flushes) remove the standby's own entries at replay, with
# the role rules of the primary, and a standby's set computed from a
# snapshot that missed the invalidating commit is not kept.
# rp_replayed: run stdin's SQL on the primary, then wait for the standby to replay it.
rp_replayed() {
	rp_p >/dev/null
	pgh_standby_wait_replay >/dev/null
}

rp_standby_explicit() {
	rp_replayed <<'SQL'
DROP ROLE IF EXISTS rp_a, rp_b, rp_c;
CREATE ROLE rp_a; CREATE ROLE rp_b; CREATE ROLE rp_c IN ROLE rp_a;
GRANT USAGE ON SCHEMA harden TO rp_a, rp_b, rp_c;
SQL
	rp_s >/dev/null <<'SQL'
SELECT harden.cache_set('rp:e:del', 's'::text), harden.cache_set('rp:e:keep', 's'::text),
       harden.cache_set('rp:e:set', 's'::text), harden.cache_set('rp:e:tx', 's'::text),
       harden.cache_set('rp:e:tag', 's'::text, tags => '{rpt}'), harden.cache_set('rp:e:pat1', 's'::text),
       harden.cache_set('rp:e:pat2', 's'::text);
SET ROLE rp_a;
SELECT harden.cache_set('rp:e:ra', 'a'::text), harden.cache_set('rp:e:rc', 'a'::text),
       harden.cache_set('rp:e:rt', 'a'::text, tags => '{rpr}');
SQL
	local left="SELECT string_agg(key, ' ' ORDER BY key) FROM harden.cache_entries WHERE key LIKE 'rp:e:%'"
	rp_check "explicit: the standby's own entries" rp_equal "$(rp_s -c "$left")" \
		'rp:e:del rp:e:keep rp:e:pat1 rp:e:pat2 rp:e:ra rp:e:rc rp:e:rt rp:e:set rp:e:tag rp:e:tx'
	rp_replayed <<'SQL'
SELECT harden.cache_delete('rp:e:del');
SELECT harden.cache_set('rp:e:set', 'primary'::text);
SELECT harden.cache_invalidate_tag('rpt');
SELECT harden.cache_invalidate('rp:e:pat*');
BEGIN; SELECT harden.cache_delete('rp:e:tx'); ROLLBACK;
SET ROLE rp_b;
SELECT harden.cache_delete('rp:e:ra'), harden.cache_invalidate_tag('rpr');
SQL
	rp_check "explicit: the primary's delete, set, tag and pattern removed them at replay; a rolled-back delete and another role's did not" \
		rp_equal "$(rp_s -c "$left")" 'rp:e:keep rp:e:ra rp:e:rc rp:e:rt rp:e:tx'
	rp_check "explicit: a set on the primary removes the standby's entry, it does not copy the value" rp_true_s \
		"SELECT harden.cache_get_text('rp:e:set') IS NULL"
	rp_replayed <<'SQL'
BEGIN; SELECT harden.cache_delete('rp:e:tx'); COMMIT;
SET ROLE rp_c;
SELECT harden.cache_delete('rp:e:rc'), harden.cache_invalidate_tag('rpr');
SQL
	rp_check "explicit: a committed delete, and a member of the writing role's delete and tag, removed them" \
		rp_equal "$(rp_s -c "$left")" 'rp:e:keep rp:e:ra'
	rp_replayed <<<"SELECT harden.cache_flush()"
	rp_check "explicit: the primary's cache_flush() empties the standby's cache of that database" rp_true_s \
		"SELECT count(*) = 0 FROM harden.cache_entries"
	# A standby session computes a value slowly from its snapshot; the
	# primary commits an UPDATE with a delete of the key meanwhile.
	local slow="SELECT harden.cache_set('rp:e:m', (SELECT v::text FROM race, LATERAL (SELECT pg_sleep(2)) s))"
	rp_replayed <<<"UPDATE race SET v = 30"
	rp_s -c "$slow" >"$PGH_TMP/out/replica-explicit.out" 2>&1 &
	sleep 0.7
	rp_p -c "BEGIN" -c "UPDATE race SET v = 40" -c "SELECT harden.cache_delete('rp:e:m')" -c "COMMIT" >/dev/null
	pgh_standby_wait_replay >/dev/null
	wait
	rp_check "explicit: the slow set ran without an error" rp_equal "$(cat "$PGH_TMP/out/replica-explicit.out")" ""
	rp_check "explicit: ... and its value, read before the replayed commit, is not kept (no stale refill)" rp_true_s \
		"SELECT harden.cache_get_text('rp:e:m') IS NULL"
	[ -z "${PGH_RESP_SOCK:-}" ] || rp_standby_explicit_resp
}

# The Redis endpoint's writes on the primary (test/resp: pgh_resp, role
# pgh_resp_alice) are logged like SQL's.
rp_standby_explicit_resp() {
	local s=(pgh_psql -At -h "$PGH_STANDBY_HOST" -p "$PGH_STANDBY_PORT" -d pgh_resp)
	local cli=(redis-cli -s "$PGH_RESP_SOCK" --no-auth-warning --user pgh_resp_alice --pass alice-pw)
	"${s[@]}" -c "SET ROLE pgh_resp_alice" -c "SELECT harden.cache_set('rp:resp:' || k, 's'::text) FROM unnest('{del,set,keep}'::text[]) k" >/dev/null
	"${cli[@]}" DEL rp:resp:del >/dev/null
	"${cli[@]}" SET rp:resp:set primary >/dev/null
	pgh_standby_wait_replay >/dev/null
	rp_check "explicit: the Redis endpoint's DEL and SET on the primary remove the standby's entries" rp_equal \
		"$("${s[@]}" -c "SELECT string_agg(key, ' ' ORDER BY key) FROM harden.cache_entries WHERE key LIKE 'rp:resp:%'")" 'rp:resp:keep'
	# EXPIRE of an entry the primary has rewrites it: the standby drops its copy.
	"${cli[@]}" SET rp:resp:exp primary >/dev/null
	pgh_standby_wait_replay >/dev/null
	"${s[@]}" -c "SET ROLE pgh_resp_alice" -c "SELECT harden.cache_set('rp:resp:exp', 's'::text)" >/dev/null
	"${cli[@]}" EXPIRE rp:resp:exp 100 >/dev/null
	pgh_standby_wait_replay >/dev/null
	rp_check "explicit: the endpoint's EXPIRE on the primary removes the standby's entry" rp_equal \
		"$("${s[@]}" -c "SELECT count(*) FROM harden.cache_entries WHERE key = 'rp:resp:exp'")" 0
}

rp_standby_refuses() {
	local q
	while IFS='|' read -r fn q; do
		rp_check "standby: $fn refuses with 25006, a detail and a hint" rp_refuses "$q" "$fn"
	done <<'EOF'
harden.fsm_fire()|SELECT harden.fsm_fire('ticket', '{"id": 1}', 'start')
harden.fsm_define()|SELECT harden.fsm_define('rp_x', 'a -> b')
harden.fsm_drop()|SELECT harden.fsm_drop('rp_m')
harden.fsm_attach()|SELECT harden.fsm_attach('prod', 'price', 'rp_m')
harden.fsm_detach()|SELECT harden.fsm_detach('ticket')
harden.fsm_run_due()|SELECT harden.fsm_run_due()
harden.fsm_log_prune()|SELECT harden.fsm_log_prune()
harden.stock_take()|SELECT harden.stock_take('prod', 1, 1)
harden.stock_take_many()|SELECT harden.stock_take_many('prod', ARRAY[1, 2], ARRAY[1, 1]::bigint[])
harden.stock_put()|SELECT harden.stock_put('prod', 1, 1)
harden.stock_reserve()|SELECT harden.stock_reserve('prod', ARRAY[1], ARRAY[1]::bigint[], '1 hour')
harden.stock_commit()|SELECT harden.stock_commit(1)
harden.stock_release()|SELECT harden.stock_release(1)
harden.stock_release_ref()|SELECT harden.stock_release_ref('x')
harden.stock_run_due()|SELECT harden.stock_run_due()
harden.stock_attach()|SELECT harden.stock_attach('ticket', 'id')
harden.stock_detach()|SELECT harden.stock_detach('prod')
harden.cache_watch()|SELECT harden.cache_watch('ticket')
harden.cache_unwatch()|SELECT harden.cache_unwatch('prod')
harden.breaker_define()|SELECT harden.breaker_define('rp_b')
harden.breaker_drop()|SELECT harden.breaker_drop('rp_b')
harden.breaker_sync()|SELECT harden.breaker_sync()
EOF
	rp_check "standby: analyze_snapshot() fails with PostgreSQL's own 25006" rp_equal \
		"$(rp_s -v VERBOSITY=verbose -c "SELECT harden.analyze_snapshot()" 2>&1 | head -n1)" \
		"ERROR:  25006: cannot execute INSERT in a read-only transaction"
	rp_check "standby: a breaker counts there in its own shared memory" rp_equal \
		"$(rp_s -c "SELECT harden.breaker_record('rp_b', false)" -c "SELECT harden.breaker_record('rp_b', false)" \
			-c "SELECT state FROM harden.breaker_status WHERE name = 'rp_b'" 2>&1 | tail -n1)" open
	rp_check "standby: a plain UPDATE of an attached table fails with PostgreSQL's own 25006" rp_equal \
		"$(rp_s -v VERBOSITY=verbose -c "UPDATE ticket SET status = 'open'" 2>&1 | head -n1)" \
		"ERROR:  25006: cannot execute UPDATE in a read-only transaction"
}

rp_standby_restart() {
	pgh_standby_stop standby
	rp_p -c "INSERT INTO ticket SELECT g FROM generate_series(1, 20) g" -c "UPDATE ticket SET status = 'open' WHERE id <= 10" >/dev/null
	rp_check "restart: the stopped standby starts again" pgh_standby_restart standby
	rp_check "restart: it catches up with what the primary wrote meanwhile" pgh_standby_wait_replay
	rp_check "restart: ... and sees it" rp_true_s \
		"SELECT count(*) FILTER (WHERE status = 'open') = 10 AND count(*) = 20 FROM ticket"
	rp_check "restart: its cache starts empty and works" rp_equal \
		"$(rp_s -c "SELECT count(*) FROM harden.cache_entries" -c "SELECT harden.cache_query('rp:n', 'SELECT count(*) AS n FROM ticket')" 2>&1 | tr '\n' ' ')" \
		'0 [{"n": 20}] '
}

rp_failover() {
	# Before: the primary's worker applied the 1-second timers of rows 11-20
	# and released an expired hold; the standby replayed it.
	rp_p >/dev/null <<'SQL'
SELECT harden.stock_reserve('prod', ARRAY[1, 2], ARRAY[1, 2]::bigint[], '1 second', 'rp-before');
SQL
	rp_check "failover: the primary's worker applies the early timers and the expired hold" \
		pgh_wait_sql "$rp_db" "SELECT count(*) = 10 FROM ticket WHERE status = 'late' AND (SELECT status = 'expired' FROM harden.stock_holds WHERE ref = 'rp-before')" 30
	# Due only after the failover: 6-second timers, 4-second holds.
	rp_p >/dev/null <<'SQL'
INSERT INTO slow SELECT g FROM generate_series(1, 50) g;
SELECT harden.stock_reserve('prod', ARRAY[3, 4], ARRAY[1, 1]::bigint[], '4 seconds', 'rp-after-' || g) FROM generate_series(1, 3) g;
SQL
	pgh_standby_wait_replay >/dev/null
	local before
	before=$(rp_s -c "SELECT string_agg(id || ':' || price, ',' ORDER BY id) FROM prod WHERE id <= 4")
	rp_check "failover: the standby has the reservations (stock taken)" rp_equal "$before" "1:1,2:2,3:0,4:1"
	rp_check "failover: a result cached on the standby from a watched table" rp_equal \
		"$(rp_s -c "SELECT harden.cache_query('rp:pre', 'SELECT v FROM pw', '1 hour')")" '[{"v": 1}]'
	rp_p -c "UPDATE pw SET v = 2" >/dev/null
	pgh_standby_wait_replay >/dev/null
	rp_check "failover: ... invalidated when the standby replays a write" rp_equal \
		"$(rp_s -c "SELECT harden.cache_query('rp:pre', 'SELECT v FROM pw', '1 hour')")" '[{"v": 2}]'
	# The primary fails (no shutdown checkpoint); the standby is promoted.
	pgh_as_server "$PGH_BIN/pg_ctl" -D "$PGH_TMP/data" -m immediate -w stop >/dev/null 2>&1 || true
	rp_check "failover: pg_ctl promote" pgh_standby_promote standby
	rp_check "failover: the promoted server is out of recovery" rp_true_s "SELECT NOT pg_is_in_recovery()"
	rp_check "failover: its worker starts" \
		rp_wait_s "SELECT count(*) = 1 FROM harden.worker_status WHERE database = current_database() AND pid IS NOT NULL AND runs > 0" 30
	rp_check "failover: the timers that fell due after the failover are applied" \
		rp_wait_s "SELECT count(*) = 50 FROM slow WHERE status = 'over'" 40
	rp_check "failover: the holds that expired after it are released" \
		rp_wait_s "SELECT count(*) = 3 FROM harden.stock_holds WHERE ref LIKE 'rp-after-%' AND status = 'expired'" 30
	rp_check "failover: each applied exactly once (one timer entry per row in the audit, no timer left)" rp_true_s \
		"SELECT (SELECT count(*) FROM harden.fsm_log WHERE table_name = 'public.slow' AND to_state = 'over') = 50
		    AND (SELECT count(DISTINCT row_key) FROM harden.fsm_log WHERE table_name = 'public.slow' AND to_state = 'over') = 50
		    AND (SELECT count(*) FROM harden.fsm_due) = 0"
	rp_check "failover: stock given back exactly once (and the pre-failover hold not again)" rp_equal \
		"$(rp_s -c "SELECT string_agg(id || ':' || price, ',' ORDER BY id) FROM prod WHERE id <= 4")" "1:1,2:2,3:3,4:4"
	rp_check "failover: the timers applied before it are not applied again" rp_true_s \
		"SELECT count(*) = 10 FROM harden.fsm_log WHERE table_name = 'public.ticket' AND to_state = 'late'"
	# The new primary writes.
	rp_check "failover: fsm_fire works on the new primary" rp_equal \
		"$(rp_s -c "SELECT harden.fsm_fire('ticket', '{\"id\": 1}', 'close')" 2>&1)" done
	rp_check "failover: the machine still enforces" rp_equal \
		"$(rp_s -v VERBOSITY=verbose -c "UPDATE ticket SET status = 'new' WHERE id = 1" 2>&1 | head -n1 | cut -c1-15)" "ERROR:  PH201: "
	rp_check "failover: stock_take, a reservation and its release work" rp_true_s \
		"SELECT harden.stock_take('prod', 10, 4) = 6 AND harden.stock_release(harden.stock_reserve('prod', ARRAY[10], ARRAY[6]::bigint[], '1 hour'))"
	rp_check "failover: a watched table's write invalidates a cached result" rp_equal \
		"$(rp_s -c "SELECT harden.cache_query('rp:f', 'SELECT sum(price) AS s FROM prod WHERE id <= 4')" \
			-c "UPDATE prod SET price = price + 1 WHERE id = 1" \
			-c "SELECT harden.cache_query('rp:f', 'SELECT sum(price) AS s FROM prod WHERE id <= 4')" 2>&1 | tr '\n' ' ')" \
		'[{"s": 10}] [{"s": 11}] '
	rp_check "failover: the promoted server serves no stale result it cached as a standby" rp_equal \
		"$(rp_s -c "SELECT harden.cache_query('rp:pre', 'SELECT v FROM pw', '1 hour')")" '[{"v": 2}]'
	rp_check "failover: a new timer fires there" rp_true_s \
		"INSERT INTO ticket VALUES (100); SELECT true"
	rp_check "... once" rp_wait_s \
		"SELECT status = 'late' AND (SELECT count(*) = 1 FROM harden.fsm_log WHERE table_name = 'public.ticket' AND row_key = '{\"id\": 100}' AND to_state = 'late') FROM ticket WHERE id = 100" 20
}

# pgh_wait_sql DB SQL SECONDS: poll the primary.
pgh_wait_sql() {
	local deadline=$((SECONDS + $3))
	while [ $SECONDS -lt $deadline ]; do
		[ "$(pgh_psql -At -d "$1" -c "$2" 2>/dev/null)" = t ] && return 0
		sleep 0.2
	done
	echo "never held: $2"
	return 1
}

rp_no_preload_error() {
	local out
	out=$(rp_s -v VERBOSITY=verbose -c "SELECT harden.cache_get('rp:k')" 2>&1 || true)
	echo "$out"
	grep -q "^ERROR:  PH001: harden.cache_get() requires pg_harden to be loaded via shared_preload_libraries" <<<"$out" \
		&& grep -q "^HINT:  Add pg_harden to shared_preload_libraries in postgresql.conf and restart the server." <<<"$out"
}

# A standby that does not preload pg_harden, made while the primary logs
# no generation move: the cache says how to fix it, writes refuse as on any
# standby, reads work.  Once harden.cache_wal is on, it stops at pg_harden's
# first WAL record, naming the fix.
rp_standby_nopreload() {
	pgh_standby_start standby_nopreload "shared_preload_libraries = ''"
	rp_check "no preload: the standby replays" pgh_standby_wait_replay
	# A backend that loads the instrumented library itself cannot start
	# the sanitizer runtime (see the no-preload phase of test/run.sh).
	if [ "${SANITIZE:-}" = nopreload ]; then
		echo "# skipped with SANITIZE=nopreload: the no-preload standby's backends"
		return 0
	fi
	rp_check "no preload: the cache raises PH001 naming shared_preload_libraries" rp_no_preload_error
	rp_check "no preload: fsm_fire refuses with 25006" rp_refuses \
		"SELECT harden.fsm_fire('ticket', '{\"id\": 1}', 'start')" "harden.fsm_fire()"
	rp_check "no preload: fsm_next works" rp_equal \
		"$(rp_s -c "SELECT harden.fsm_next('rp_m', 'new')" 2>/dev/null)" '{open,late}'
}
rp_standby_nopreload_stops() {
	rp_p -c "INSERT INTO tr VALUES (2)" >/dev/null
	rp_check "no preload: at pg_harden's first WAL record it stops, naming the fix" rp_wait_log \
		"$PGH_TMP/server-standby_nopreload.log" \
		"FATAL:  resource manager with ID 128 not registered" \
		"HINT:  Include the extension module that implements this resource manager in shared_preload_libraries" \
		"shutting down due to startup process failure"
	pgh_standby_stop standby_nopreload immediate
	rm -rf "$PGH_TMP/standby_nopreload"
}

# rp_wait_log FILE TEXT...: every TEXT appears in FILE within 30 seconds.
rp_wait_log() {
	local file=$1 deadline=$((SECONDS + 30)) t ok
	shift
	while [ $SECONDS -lt $deadline ]; do
		ok=1
		for t in "$@"; do grep -qF "$t" "$file" 2>/dev/null || ok=0; done
		[ $ok -eq 1 ] && return 0
		sleep 0.2
	done
	tail -n 20 "$file"
	return 1
}

replica_checks() {
	rp_setup
	rp_standby_nopreload
	rp_cache_wal_on
	rp_standby_nopreload_stops
	pgh_standby_start standby "harden.worker_interval = '200ms'"
	rp_check "standby: pg_basebackup -R, started, replaying" pgh_standby_wait_replay
	rp_standby_basics
	rp_standby_wal
	rp_standby_explicit
	rp_standby_refuses
	rp_standby_restart
	rp_failover
}

run_replica() {
	pgh_log "hot standby and failover"
	local log="$PGH_TMP/out/replica.log" n
	replica_checks 2>&1 | tee "$log"
	n=$(grep -c '^ok ' "$log" || true)
	record "hot standby" 0 "$n" "$(grep -c '^not ok ' "$log" || true)"
	pgh_replica_cleanup
	# The old primary comes back on its own (it does not follow the promoted
	# server), for the suites that run after this one.
	pgh_as_server env $(pgh_sanitizer_env) "$PGH_BIN/pg_ctl" -D "$PGH_TMP/data" -l "$PGH_TMP/server.log" -w -t 60 start >/dev/null \
		|| record "hot standby: the old primary restarts" 1 0 1
}
