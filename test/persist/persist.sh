# test/persist/persist.sh: sourced by test/run.sh.  The cache across
# restarts on a cluster of its own: what a clean restart keeps (TTL, tags,
# owner, public flag, type) and what it never keeps (secure entries, query
# results, entries of dropped roles, expired entries); dump files that are
# truncated, corrupt, tampered with or unreadable with the configured key
# are logged once and ignored; an encrypted dump holds no plaintext.
# Prints TAP-like "ok"/"not ok" lines.

ps_q() { pgh_psql -At -p "$PS_PORT" -d pgh_persist -c "$1"; }

ps_check() {
	if "${@:2}"; then echo "ok - $1"; else echo "not ok - $1"; fi
}

ps_equals() { [ "$1" = "$2" ] || { echo "# got '$1', expected '$2'"; return 1; }; }

PS_DATA=""
PS_LOG=""
PS_PORT=""
PS_CONF=()

ps_start() {
	pgh_cluster_up "$PS_DATA" "$PS_PORT" "$PS_LOG" "${PS_CONF[@]}" "$@"
}

ps_stop() {
	pgh_as_server "$PGH_BIN/pg_ctl" -D "$PS_DATA" -m fast -w stop >/dev/null
}

# The worker's verdict on the file: wait until it has logged one.
ps_wait_load() {
	local before=$1
	for _ in $(seq 1 100); do
		[ "$(grep -c 'pg_harden cache: loaded\|pg_harden cache dump file' "$PS_LOG")" -gt "$before" ] && return 0
		sleep 0.1
	done
	echo "# no load verdict in the log"
	return 1
}

ps_verdicts() { grep -c 'pg_harden cache: loaded\|pg_harden cache dump file' "$PS_LOG" || true; }

# ps_restart_with FILE [conf...]: stop, put FILE in place as the dump, start.
ps_restart_with() {
	local file=$1 n
	shift
	ps_stop
	if [ -n "$file" ]; then
		cp "$file" "$PS_DATA/pg_harden_cache.dump"
		chown "$PGH_USER" "$PS_DATA/pg_harden_cache.dump" 2>/dev/null || true
	fi
	n=$(ps_verdicts)
	ps_start "$@"
	ps_wait_load "$n"
}

ps_entries() { ps_q "SELECT count(*) FROM harden.cache_entries"; }

ps_fill() {
	ps_q "SELECT harden.cache_flush()" >/dev/null
	pgh_psql -p "$PS_PORT" -d pgh_persist >/dev/null <<'SQL'
SELECT harden.cache_set('persist:plain', '{"marker": "persist-value-marker"}'::jsonb, '1 hour', '{pt1,pt2}');
SELECT harden.cache_set('persist:text', 'text value'::text, NULL, '{}', false, true);
SELECT harden.cache_set('persist:bytes', '\xdeadbeef'::bytea, '2 hours');
SELECT harden.cache_set('persist:secret', 'secure-value-marker'::text, '1 hour', '{}', true);
SELECT harden.cache_query('persist:q', 'SELECT 42 AS answer', '1 hour');
SET ROLE pp_alice;
SELECT harden.cache_set('persist:alice', '"hers"'::jsonb, '1 hour', '{mine}');
RESET ROLE;
SQL
}

persist_checks() {
	export PGHOST="$PGH_TMP" PGUSER=postgres
	PS_DATA="$PGH_TMP/persist"
	PS_LOG="$PGH_TMP/server-persist.log"
	PS_PORT=$(pgh_free_port)
	PS_CONF=("harden.cache_memory = '16MB'")
	local keyhex="$PGH_TMP/persist-key.hex" keyraw="$PGH_TMP/persist-key.raw"
	local keyother="$PGH_TMP/persist-key.other" keyshort="$PGH_TMP/persist-key.short"
	rm -rf "$PS_DATA"
	PGH_OTHER+=("$PS_DATA")
	ps_start
	pgh_psql -p "$PS_PORT" -d postgres >/dev/null <<'SQL'
CREATE DATABASE pgh_persist;
CREATE ROLE pp_alice;
CREATE ROLE pp_bob;
SQL
	ps_q "CREATE EXTENSION pg_harden" >/dev/null
	ps_q "GRANT USAGE ON SCHEMA harden TO pp_alice, pp_bob" >/dev/null
	ps_fill
	pgh_psql -p "$PS_PORT" -d pgh_persist >/dev/null <<'SQL'
SELECT harden.cache_set('persist:short', 'gone soon'::text, '3 seconds');
SET ROLE pp_bob;
SELECT harden.cache_set('persist:bob', '"his"'::jsonb, '1 hour');
RESET ROLE;
SQL
	local before
	before=$(ps_q "SELECT string_agg(key || '|' || type || '|' || coalesce(expires_at::text, '-') || '|' || tags::text || '|' || owner || '|' || public, ',' ORDER BY key) FROM harden.cache_entries WHERE key IN ('persist:plain', 'persist:text', 'persist:bytes', 'persist:alice')")
	ps_q "REVOKE USAGE ON SCHEMA harden FROM pp_bob; DROP ROLE pp_bob" >/dev/null
	ps_check "cache_dump() is refused to PUBLIC" bash -c \
		"! PGOPTIONS='-c client_min_messages=warning' psql -X -q -At -p $PS_PORT -d pgh_persist -c 'SET ROLE pp_alice; SELECT harden.cache_dump()' 2>/dev/null"
	ps_check "cache_dump() writes the non-secure, non-query entries" ps_equals \
		"$(ps_q "SELECT harden.cache_dump()")" "6"

	# A clean restart; the short entry expires while the server is down.
	ps_stop
	sleep 3
	cp "$PS_DATA/pg_harden_cache.dump" "$PGH_TMP/persist-plain.dump"
	ps_check "a plain dump holds the values (the grep below can fail)" \
		grep -q 'persist-value-marker' "$PGH_TMP/persist-plain.dump"
	ps_check "a dump never holds a secure entry" bash -c \
		"! grep -q -a 'persist:secret\|secure-value-marker' '$PGH_TMP/persist-plain.dump'"
	local n
	n=$(ps_verdicts)
	ps_start
	ps_wait_load "$n"
	ps_check "after a restart: values, types, TTL deadlines, tags, owners and the public flag are kept" ps_equals \
		"$(ps_q "SELECT string_agg(key || '|' || type || '|' || coalesce(expires_at::text, '-') || '|' || tags::text || '|' || owner || '|' || public, ',' ORDER BY key) FROM harden.cache_entries")" \
		"$before"
	ps_check "after a restart: the values read back" ps_equals \
		"$(ps_q "SELECT harden.cache_get('persist:plain') ->> 'marker' || '/' || harden.cache_get_text('persist:text') || '/' || encode(harden.cache_get_bytea('persist:bytes'), 'hex')")" \
		"persist-value-marker/text value/deadbeef"
	ps_check "after a restart: the owner's rules still apply" ps_equals \
		"$(ps_q "SET ROLE pp_alice; SELECT coalesce(harden.cache_get('persist:alice')::text, 'none') || '/' || coalesce(harden.cache_get('persist:plain')::text, 'none')")" \
		'"hers"/none'
	ps_check "after a restart: tags still invalidate" ps_equals \
		"$(ps_q "SELECT harden.cache_invalidate_tag('pt2') || '/' || harden.cache_exists('persist:plain')")" "1/false"
	ps_check "secure entries, query results, expired entries and entries of dropped roles are gone" ps_equals \
		"$(ps_q "SELECT count(*) FROM harden.cache_entries WHERE key IN ('persist:secret', 'persist:q', 'persist:short', 'persist:bob')")" "0"
	ps_check "the load is counted in metrics(): 4 loaded, 2 dropped (expired, role dropped)" ps_equals \
		"$(ps_q "SELECT sum(value) FILTER (WHERE name = 'harden_cache_dump_loaded_total') || '/' || sum(value) FILTER (WHERE name = 'harden_cache_dump_dropped_total') FROM harden.metric_rows")" \
		"4/2"
	ps_check "a loaded dump is removed (a later crash does not load it again)" \
		test ! -e "$PS_DATA/pg_harden_cache.dump"
	ps_check "the TTL keeps counting across the restart" ps_equals \
		"$(ps_q "SELECT harden.cache_ttl('persist:bytes') < interval '2 hours'")" "t"

	# A dump not written at shutdown (cache_dump(), a periodic dump) is not loaded after a crash.
	ps_q "SELECT harden.cache_dump()" >/dev/null
	n=$(ps_verdicts)
	pgh_as_server "$PGH_BIN/pg_ctl" -D "$PS_DATA" -m immediate -w stop >/dev/null
	ps_start
	ps_wait_load "$n"
	ps_check "after a crash, a dump not written at clean shutdown is not loaded" ps_equals \
		"$(ps_entries)/$(grep -c 'not written at the clean shutdown' "$PS_LOG")" "0/1"

	# A clean dump of an earlier run, with a run without pg_harden in between.
	ps_fill
	ps_stop
	cp "$PS_DATA/pg_harden_cache.dump" "$PGH_TMP/persist-clean.dump"
	pgh_cluster_up "$PS_DATA" "$PS_PORT" "$PS_LOG" "${PS_CONF[@]}" "shared_preload_libraries = ''"
	pgh_psql -p "$PS_PORT" -d postgres -c "SELECT 1" >/dev/null
	n=$(ps_verdicts)
	ps_stop
	ps_start
	ps_wait_load "$n"
	ps_check "a clean dump older than the last run of the server is not loaded" ps_equals \
		"$(ps_entries)/$(grep -c 'not written at the clean shutdown' "$PS_LOG")" "0/2"

	# Corrupt files: each is logged once and ignored; the server is up, the cache empty.
	local f="$PGH_TMP/persist-bad.dump" size
	ps_fill
	ps_stop
	cp "$PS_DATA/pg_harden_cache.dump" "$PGH_TMP/persist-clean.dump"
	size=$(stat -c %s "$PGH_TMP/persist-clean.dump")
	ps_start
	ps_q "SELECT harden.cache_flush()" >/dev/null
	ps_bad() {
		local what=$1 warnings
		shift
		warnings=$(grep -c 'cache dump file "pg_harden_cache.dump" ignored' "$PS_LOG" || true)
		ps_restart_with "$f" "$@"
		ps_check "$what: logged once, ignored, server up, cache empty" ps_equals \
			"$(($(grep -c 'cache dump file "pg_harden_cache.dump" ignored' "$PS_LOG" || true) - warnings))/$(ps_entries)" \
			"1/0"
	}
	# ps_mangle OFFSET HEXBYTES: overwrite bytes of the clean dump.
	ps_mangle() {
		cp "$PGH_TMP/persist-clean.dump" "$f"
		printf "$2" | dd of="$f" bs=1 seek="$1" conv=notrunc status=none
	}
	for cut in 0 20 47 48 100 $((size / 2)) $((size - 1)); do
		head -c "$cut" "$PGH_TMP/persist-clean.dump" >"$f"
		ps_bad "a dump truncated to $cut bytes"
	done
	ps_mangle 0 'XGHC'
	ps_bad "a wrong magic number"
	ps_mangle 8 '\x07'
	ps_bad "a wrong format version"
	ps_mangle 32 '\x99\x99'
	ps_bad "a wrong payload length"
	ps_mangle 24 '\xff\xff\xff'
	ps_bad "a wrong entry count"
	ps_mangle 60 '\x55'
	ps_bad "a flipped byte in a record head"
	ps_mangle $((size - 10)) '\x01'
	ps_bad "a flipped byte in a value"
	{ cat "$PGH_TMP/persist-clean.dump"; printf 'x'; } >"$f"
	ps_bad "a byte appended"

	# Encrypted: 64 hex digits or 32 raw bytes.
	od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$keyhex"
	head -c 32 /dev/urandom >"$keyraw"
	od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$keyother"
	printf '0123456789abcdef' >"$keyshort"
	chown "$PGH_USER" "$keyhex" "$keyraw" "$keyother" "$keyshort" 2>/dev/null || true
	chmod 600 "$keyhex" "$keyraw" "$keyother" "$keyshort"
	PS_CONF=("harden.cache_memory = '16MB'" "harden.cache_dump_key_file = '$keyhex'")
	ps_bad "a plain dump while a key file is set"
	ps_fill
	ps_stop
	cp "$PS_DATA/pg_harden_cache.dump" "$PGH_TMP/persist-enc.dump"
	ps_check "an encrypted dump holds no key and no value in plaintext" bash -c \
		"! grep -q -a 'persist:\|persist-value-marker\|text value\|hers' '$PGH_TMP/persist-enc.dump'"
	n=$(ps_verdicts)
	ps_start
	ps_wait_load "$n"
	ps_check "an encrypted dump (hex key) is loaded" ps_equals \
		"$(ps_q "SELECT harden.cache_get('persist:plain') ->> 'marker'")/$(ps_entries)" "persist-value-marker/4"
	size=$(stat -c %s "$PGH_TMP/persist-enc.dump")
	cp "$PGH_TMP/persist-enc.dump" "$PGH_TMP/persist-clean.dump"
	ps_q "SELECT harden.cache_flush()" >/dev/null
	ps_mangle 70 '\x00\x01'
	ps_bad "tampered ciphertext"
	ps_mangle $((size - 3)) '\x42'
	ps_bad "a tampered authentication tag"
	ps_mangle 50 '\x42'
	ps_bad "a tampered IV"
	ps_mangle 16 '\x01'
	ps_bad "a tampered header (authenticated)"
	cp "$PGH_TMP/persist-enc.dump" "$f"
	PS_CONF=("harden.cache_memory = '16MB'" "harden.cache_dump_key_file = '$keyother'")
	ps_bad "the wrong key"
	PS_CONF=("harden.cache_memory = '16MB'" "harden.cache_dump_key_file = '$PGH_TMP/no-such-key'")
	ps_bad "a key file that is missing"
	PS_CONF=("harden.cache_memory = '16MB'" "harden.cache_dump_key_file = '$keyshort'")
	ps_bad "a key file of the wrong size"
	PS_CONF=("harden.cache_memory = '16MB'")
	ps_bad "an encrypted dump without a key file"

	# A raw 32-byte key works as well.
	PS_CONF=("harden.cache_memory = '16MB'" "harden.cache_dump_key_file = '$keyraw'")
	ps_stop
	rm -f "$PS_DATA/pg_harden_cache.dump"
	ps_start
	ps_fill
	n=$(ps_verdicts)
	# A session busy at shutdown: the dump waits for it to be terminated.
	(psql -X -q -p "$PS_PORT" -d pgh_persist -c "SELECT pg_sleep(60)" >/dev/null 2>&1 &)
	sleep 0.5
	ps_stop
	ps_start
	ps_wait_load "$n"
	ps_check "an encrypted dump (raw key), written while a session was being terminated, is loaded" \
		ps_equals "$(ps_entries)" "4"
	ps_q "ALTER SYSTEM SET harden.cache_dump_key_file = '$PGH_TMP/no-such-key'" >/dev/null
	ps_q "SELECT pg_reload_conf()" >/dev/null
	sleep 0.5
	ps_check "with the key file missing, cache_dump() refuses rather than write plaintext" bash -c \
		"! PGOPTIONS='-c client_min_messages=warning' psql -X -q -At -p $PS_PORT -d pgh_persist -c 'SELECT harden.cache_dump()' 2>/dev/null"
	ps_stop
	ps_check "with the key file missing, the shutdown writes no dump" test ! -e "$PS_DATA/pg_harden_cache.dump"

	# harden.cache_dump_interval = -1: nothing is written.
	PS_CONF=("harden.cache_memory = '16MB'" "harden.cache_dump_interval = -1")
	rm -f "$PS_DATA/pg_harden_cache.dump"
	ps_start
	ps_fill
	ps_stop
	ps_check "with harden.cache_dump_interval = -1 no dump is written" test ! -e "$PS_DATA/pg_harden_cache.dump"
	warm_checks
	ps_stop
	ps_check "no server process crashed" bash -c \
		"! grep -E 'terminated by signal|TRAP:|PANIC:' '$PS_LOG'"
}

# ps_poll SQL EXPECTED: wait up to 10 s for the answer.
ps_poll() {
	local got
	for _ in $(seq 1 100); do
		got=$(ps_q "$1")
		[ "$got" = "$2" ] && { echo "$got"; return 0; }
		sleep 0.1
	done
	echo "$got"
}

warm_checks() {
	PS_CONF=("harden.cache_memory = '16MB'" "harden.worker_interval = '200ms'")
	ps_start
	pgh_psql -p "$PS_PORT" -d pgh_persist >/dev/null <<'SQL'
CREATE ROLE pp_carol;
GRANT USAGE ON SCHEMA harden TO pp_carol;
CREATE TABLE wp (id int);
INSERT INTO wp VALUES (1), (2);
GRANT SELECT ON wp TO pp_alice;
SET ROLE pp_alice;
SET search_path = public;
SELECT harden.cache_warm_register('w:count', 'SELECT count(*) AS n FROM wp', '1 hour');
SELECT harden.cache_warm_register('w:bad', 'SELECT 1 / 0 AS x', '1 hour');
SELECT harden.cache_warm_register('w:param', 'SELECT $1::int AS v', '1 hour', '7');
SQL
	ps_check "cache_warm() is refused to PUBLIC" bash -c \
		"! PGOPTIONS='-c client_min_messages=warning' psql -X -q -At -p $PS_PORT -d pgh_persist -c 'SET ROLE pp_alice; SELECT harden.cache_warm()' 2>/dev/null"
	ps_check "cache_warm() runs every registered query" ps_equals "$(ps_q "SELECT harden.cache_warm()")" "3"
	ps_check "a failing warm-up query does not stop the others; its error is in cache_warm_status" ps_equals \
		"$(ps_q "SET ROLE pp_alice; SELECT string_agg(key || ':' || (last_ok IS NOT NULL) || ':' || coalesce(last_error, '-'), ',' ORDER BY key) FROM harden.cache_warm_status")" \
		"w:bad:false:division by zero,w:count:true:-,w:param:true:-"
	ps_check "warmed results are the role's own entries" ps_equals \
		"$(ps_q "SET ROLE pp_alice; SELECT string_agg(key || ':' || owner, ',' ORDER BY key) FROM harden.cache_entries")" \
		"w:count:pp_alice,w:param:pp_alice"
	ps_check "another role sees and changes none of them" ps_equals \
		"$(ps_q "SET ROLE pp_carol; SELECT (SELECT count(*) FROM harden.cache_warm_status) || '/' || harden.cache_warm_unregister('w:count')")" "0/false"

	ps_restart_with ""
	ps_check "after a restart the worker warms the registered queries" ps_equals \
		"$(ps_poll "SET ROLE pp_alice; SELECT count(*) FROM harden.cache_entries WHERE key IN ('w:count', 'w:param')" 2)" "2"
	ps_check "the role's own call is a hit on the warmed entry (same fingerprint)" ps_equals \
		"$(ps_q "SET ROLE pp_alice; SET search_path = public; SELECT harden.cache_query('w:count', 'SELECT count(*) AS n FROM wp', '1 hour')::text || (SELECT hits FROM harden.cache_entries WHERE key = 'w:count')")" \
		'[{"n": 2}]1'
	ps_q "INSERT INTO wp VALUES (3)" >/dev/null
	ps_check "an invalidated warm entry is computed again by the worker" ps_equals \
		"$(ps_poll "SET ROLE pp_alice; SELECT count(*) FROM harden.cache_entries WHERE key = 'w:count'" 1)" "1"
	ps_check "... with the new rows" ps_equals \
		"$(ps_q "SET ROLE pp_alice; SET search_path = public; SELECT harden.cache_query('w:count', 'SELECT count(*) AS n FROM wp', '1 hour')")" \
		'[{"n": 3}]'
	ps_check "the failing query is retried, its error logged once" ps_equals \
		"$(ps_q "SET ROLE pp_alice; SELECT failures > 2 FROM harden.cache_warm_status WHERE key = 'w:bad'")/$(grep -c 'warm-up query "w:bad"' "$PS_LOG")" "t/1"
	ps_check "unregister" ps_equals \
		"$(ps_q "SET ROLE pp_alice; SELECT harden.cache_warm_unregister('w:param') || '/' || harden.cache_warm_unregister('w:param')")/$(ps_q "SET ROLE pp_alice; SELECT string_agg(key, ',' ORDER BY key) FROM harden.cache_warm_status")" \
		"true/false/w:bad,w:count"
	ps_check "pg_dump keeps the registrations" bash -c \
		"pg_dump -p $PS_PORT -d pgh_persist | grep -q 'w:count'"
}

run_persist() {
	pgh_log "cache persistence: restarts, corrupt and encrypted dumps"
	local log="$PGH_TMP/out/persist.log" rc=0
	persist_checks >"$log" 2>&1 || rc=$?
	cat "$log"
	record "cache persistence" $rc "$(grep -c '^ok ' "$log" || true)" "$(grep -c '^not ok ' "$log" || true)"
}
