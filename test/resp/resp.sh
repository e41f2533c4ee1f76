# test/resp/resp.sh: sourced by test/run.sh.  The Redis-protocol endpoint
# with real clients: redis-py (python3-redis) and raw sockets in
# test/resp/test_resp.py, redis-cli and redis-benchmark (redis-tools), and
# the parser fuzz run (test/fuzz).  Every check prints "ok"/"not ok".
#
# run.sh starts the cluster with resp_conf's settings: the endpoint on a
# unix socket in $PGH_TMP and on a free loopback port, serving pgh_resp.

PGH_RESP_SOCK=""
PGH_RESP_PORT=""

# resp_conf: postgresql.conf lines for the endpoint (after pgh_build_and_stage).
resp_conf() {
	PGH_RESP_SOCK="$PGH_TMP/resp.sock"
	PGH_RESP_PORT=$(pgh_free_port)
	RESP_CONF=("harden.resp_listen = '$PGH_RESP_SOCK, 127.0.0.1:$PGH_RESP_PORT'"
		"harden.resp_database = 'pgh_resp'" "harden.resp_workers = 2"
		"harden.resp_max_clients = 1200" "harden.resp_idle_timeout = '4s'")
}

# resp_setup: the served database, created right after the cluster starts
# so that the endpoint's workers find it.
resp_setup() {
	pgh_createdb pgh_resp pg_harden
}

resp_check() {
	if "${@:2}"; then echo "ok - $1"; else echo "not ok - $1"; fi
}

resp_cli() { redis-cli -s "$PGH_RESP_SOCK" --no-auth-warning "$@"; }

resp_tools_checks() {
	pgh_psql -d pgh_resp >/dev/null <<'SQL'
DROP ROLE IF EXISTS pgh_resp_cli;
CREATE ROLE pgh_resp_cli LOGIN PASSWORD 'cli-pw';
SQL
	resp_check "redis-cli: PING over the unix socket" \
		test "$(resp_cli --user pgh_resp_cli --pass cli-pw ping)" = PONG
	resp_check "redis-cli: SET and GET over TCP" \
		test "$(redis-cli -p "$PGH_RESP_PORT" --no-auth-warning --user pgh_resp_cli --pass cli-pw set cli:k v1)/$(redis-cli -p "$PGH_RESP_PORT" --no-auth-warning --user pgh_resp_cli --pass cli-pw get cli:k)" = "OK/v1"
	resp_check "redis-cli -3 (RESP3): GET of a missing key" \
		test "$(resp_cli -3 --user pgh_resp_cli --pass cli-pw get cli:none)" = ""
	resp_check "redis-cli -3 (RESP3): HELLO map" \
		bash -c "redis-cli -s '$PGH_RESP_SOCK' --no-auth-warning -3 hello 3 auth pgh_resp_cli cli-pw | grep -q 'proto'"
	resp_check "redis-cli: without AUTH is NOAUTH" \
		bash -c "redis-cli -s '$PGH_RESP_SOCK' get cli:k 2>&1 | grep -q NOAUTH"
	resp_check "redis-cli: inline command through nc" \
		bash -c "printf 'PING\r\nAUTH pgh_resp_cli cli-pw\r\nECHO hi\r\nQUIT\r\n' | timeout 5 nc -U '$PGH_RESP_SOCK' | tr -d '\r' | tr '\n' ' ' | grep -q 'NOAUTH.*+OK \$2 hi +OK'"
	local stat
	timeout 3 stdbuf -oL redis-cli -s "$PGH_RESP_SOCK" --no-auth-warning --user pgh_resp_cli \
		--pass cli-pw --stat -i 1 >"$PGH_TMP/out/resp-stat.log" 2>&1 || true
	stat=$(cat "$PGH_TMP/out/resp-stat.log")
	echo "$stat" | head -n 3 | sed 's/^/# /'
	resp_check "redis-cli --stat reads INFO" \
		bash -c "echo '$stat' | grep -A1 'keys.*mem.*clients' | tail -n1 | grep -Eq '^ *[0-9]+ +[0-9.]+[KMGB]? +[0-9]+'"
	local out
	out=$(redis-benchmark -s "$PGH_RESP_SOCK" --user pgh_resp_cli -a cli-pw -t get,set -n 20000 -c 20 -P 4 -q 2>&1 || true)
	echo "$out" | sed 's/^/# /' | tr '\r' '\n' | grep -v '^# *$' | tail -n 3
	resp_check "redis-benchmark: GET and SET, 20 clients, pipelined" \
		bash -c "echo '$out' | tr '\r' '\n' | grep -q 'SET: .* requests per second' && echo '$out' | tr '\r' '\n' | grep -q 'GET: .* requests per second'"
}

resp_fuzz() {
	local bin="$PGH_TMP/fuzz_resp"
	if ! gcc -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -I "$PGH_ROOT/src" \
		"$PGH_ROOT/test/fuzz/fuzz_resp.c" "$PGH_ROOT/src/cache_resp_proto.c" -o "$bin" 2>&1; then
		echo "not ok - fuzz harness builds"
		return
	fi
	if ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		"$bin" 150000 2>&1 | tail -n 5 | sed 's/^/# /'; then
		echo "ok - parser fuzz: 150000 random and mutated frames, no sanitizer report"
	else
		echo "not ok - parser fuzz: 150000 random and mutated frames, no sanitizer report"
	fi
}

resp_log_checks() {
	resp_check "server log: the endpoint listens on the unix socket" \
		grep -q "Redis-protocol endpoint listening on unix socket \"$PGH_RESP_SOCK\"" "$PGH_TMP/server.log"
	resp_check "server log: the endpoint listens on loopback, without the non-loopback warning" \
		bash -c "grep -q 'Redis-protocol endpoint listening on 127.0.0.1 port $PGH_RESP_PORT' '$PGH_TMP/server.log' && ! grep -q 'non-loopback' '$PGH_TMP/server.log'"
	resp_check "server log: failed AUTH is logged without the password" \
		bash -c "grep -q 'pg_harden resp: authentication failed' '$PGH_TMP/server.log' && ! grep -q 'alice-pw\|x-pw' '$PGH_TMP/server.log'"
}

run_resp() {
	pgh_log "Redis-protocol endpoint"
	local log="$PGH_TMP/out/resp.log" rc=0
	{
		resp_fuzz
		PGH_RESP_SOCK="$PGH_RESP_SOCK" PGH_RESP_PORT="$PGH_RESP_PORT" \
			/usr/bin/python3 "$PGH_ROOT/test/resp/test_resp.py" || echo "not ok - test_resp.py exited with $?"
		resp_tools_checks
		resp_log_checks
	} 2>&1 | tee "$log" || rc=$?
	record "resp" $rc "$(grep -c '^ok ' "$log" || true)" "$(grep -c '^not ok ' "$log" || true)"
}
