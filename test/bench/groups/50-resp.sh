# The Redis-protocol endpoint next to redis-server: redis-benchmark -t
# get,set at 8, 32 and 64 clients, unpipelined and -P 16, the same 100k keys
# of 200-byte values over loopback TCP, each case run against redis-server
# and then the endpoint; then a redis-py client reading products by id.
# Sourced by run.sh, which starts the cluster with harden.resp_listen on
# 127.0.0.1:$BENCH_RESP_PORT serving $BENCH_DB.

RESP_REDIS_PID=""
RESP_REDIS_PORT=""
RESP_N=${RESP_N:-$((BENCH_SECONDS * 10000))}

resp_bench_stop_redis() {
	[ -n "$RESP_REDIS_PID" ] || return 0
	kill "$RESP_REDIS_PID" 2>/dev/null || true
	wait "$RESP_REDIS_PID" 2>/dev/null || true
	RESP_REDIS_PID=""
}

resp_bench_chain_exit_trap() {
	eval "set -- $(trap -p EXIT)"
	trap "resp_bench_stop_redis; ${3:-:}" EXIT
}

resp_bench_start_redis() {
	local dir="$PGH_TMP/resp-redis"
	command -v redis-server >/dev/null && command -v redis-benchmark >/dev/null || return 1
	mkdir -p "$dir"
	RESP_REDIS_PORT=$(pgh_free_port)
	redis-server --bind 127.0.0.1 --port "$RESP_REDIS_PORT" --save '' --appendonly no \
		--dir "$dir" --logfile "$dir/redis.log" </dev/null >/dev/null 2>&1 &
	RESP_REDIS_PID=$!
	for _ in $(seq 1 100); do
		timeout 2 redis-cli -p "$RESP_REDIS_PORT" ping 2>/dev/null | grep -q PONG && return 0
		sleep 0.1
	done
	return 1
}

# resp_bench_rps PORT CLIENTS PIPELINE [AUTH ARGS...]: "get set" requests/s.
resp_bench_rps() {
	local port=$1 clients=$2 pipe=$3
	shift 3
	local n=$((RESP_N * (pipe > 1 ? 4 : 1)))
	redis-benchmark -h 127.0.0.1 -p "$port" "$@" -t set,get -n "$n" -r 100000 -d 200 \
		-c "$clients" -P "$pipe" --csv 2>/dev/null \
		| awk -F'"' '$2 == "GET" { g = $4 } $2 == "SET" { s = $4 } END { print g + 0, s + 0 }'
}

resp_bench_ready() {
	for _ in $(seq 1 100); do
		redis-cli -h 127.0.0.1 -p "$BENCH_RESP_PORT" --no-auth-warning --user pgh_bench_resp \
			--pass bench-pw ping 2>/dev/null | grep -q PONG && return 0
		sleep 0.2
	done
	return 1
}

resp_bench() {
	local auth=(--user pgh_bench_resp -a bench-pw) c p r e rg rs eg es
	bench_sql -q -c "DROP ROLE IF EXISTS pgh_bench_resp" -c "CREATE ROLE pgh_bench_resp LOGIN PASSWORD 'bench-pw'"
	if ! resp_bench_ready; then
		bench_record resp "endpoint" - - - "skipped: the endpoint did not answer"
		return
	fi
	resp_bench_chain_exit_trap
	if ! resp_bench_start_redis; then
		bench_record resp "redis-server" - - - "skipped: redis-server did not start"
		return
	fi
	for c in 8 32 64; do
		for p in 1 16; do
			read -r rg rs <<<"$(resp_bench_rps "$RESP_REDIS_PORT" "$c" "$p")"
			read -r eg es <<<"$(resp_bench_rps "$BENCH_RESP_PORT" "$c" "$p" "${auth[@]}")"
			bench_record resp "redis-server GET -P $p" "$c" "$(printf '%.0f' "$rg")" req/s ""
			bench_record resp "endpoint GET -P $p" "$c" "$(printf '%.0f' "$eg")" req/s \
				"$(awk -v a="$eg" -v b="$rg" 'BEGIN { if (b > 0) printf "%.2f x redis-server", a / b }')"
			bench_record resp "redis-server SET -P $p" "$c" "$(printf '%.0f' "$rs")" req/s ""
			bench_record resp "endpoint SET -P $p" "$c" "$(printf '%.0f' "$es")" req/s \
				"$(awk -v a="$es" -v b="$rs" 'BEGIN { if (b > 0) printf "%.2f x redis-server", a / b }')"
			printf '  -c %-3s -P %-3s GET %9.0f / %9.0f   SET %9.0f / %9.0f (endpoint / redis-server)\n' \
				"$c" "$p" "$eg" "$rg" "$es" "$rs"
		done
	done
	# A client library: redis-py reading products by id, one connection.
	local py
	py=$(/usr/bin/python3 - "$RESP_REDIS_PORT" "$BENCH_RESP_PORT" "$RESP_N" <<'PY' 2>&1
import json, random, sys, time
import redis
rport, eport, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
out = []
for name, kw in (("redis-server", dict(port=rport)),
                 ("endpoint", dict(port=eport, username="pgh_bench_resp", password="bench-pw"))):
    r = redis.Redis(host="127.0.0.1", **kw)
    p = r.pipeline(transaction=False)
    for i in range(1000):
        p.set("product:%d" % i, json.dumps({"id": i, "name": "product %d" % i, "price": i * 1.5}))
    p.execute()
    t = time.time()
    for _ in range(n):
        json.loads(r.get("product:%d" % random.randrange(1000)))
    out.append(n / (time.time() - t))
print("%.0f %.0f" % tuple(out))
PY
	) || true
	read -r rg eg <<<"$py"
	if [ -n "${eg:-}" ]; then
		bench_record resp "redis-py product by id: redis-server" 1 "$rg" reads/s ""
		bench_record resp "redis-py product by id: endpoint" 1 "$eg" reads/s \
			"$(awk -v a="$eg" -v b="$rg" 'BEGIN { if (b > 0) printf "%.2f x redis-server", a / b }')"
		printf '  redis-py product by id: endpoint %s / redis-server %s reads/s\n' "$eg" "$rg"
	fi
	resp_bench_stop_redis
}

resp_bench
