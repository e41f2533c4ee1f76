# The cache: harden.cache_get next to the floor (SELECT 1), a primary-key
# lookup in an unlogged table and Redis GET, over the same 100k keys of
# 200-byte values; then 1M gets in one statement, and the memory an entry
# costs beyond its key and value once the cache is full.
# Sourced by run.sh: bench_pgbench, bench_record and bench_sql come from it.

CACHE_KEYS=100000
CACHE_GET="harden.cache_get() hit"
CACHE_LOOKUP="unlogged table PK lookup"
CACHE_REDIS_PID=""
CACHE_REDIS_PORT=""
CACHE_REDIS_SKIP=""

cache_sql() { bench_sql -At "$@"; }
cache_ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

# True while PID runs; a child that exited but is not reaped yet is a zombie.
cache_alive() { [ -r "/proc/$1/status" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status"; }

cache_redis_stop() {
	local pid=$CACHE_REDIS_PID
	[ -n "$pid" ] || return 0
	CACHE_REDIS_PID=""
	kill "$pid" 2>/dev/null || true
	for _ in $(seq 1 50); do
		cache_alive "$pid" || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

# Stop Redis on every exit, pgh_die included, then run the EXIT trap that was
# there (lib.sh's pgh_cleanup).  In a function so that set -- leaves the
# sourcing script's arguments alone.
cache_chain_exit_trap() {
	eval "set -- $(trap -p EXIT)"
	trap "cache_redis_stop; ${3:-:}" EXIT
}

# Start a private Redis without persistence and load the keys redis-benchmark
# -r reads (key:%012d); on failure say why in CACHE_REDIS_SKIP.
cache_redis_start() {
	local dir="$PGH_TMP/redis" cli keys b
	for b in redis-server redis-cli redis-benchmark; do
		command -v "$b" >/dev/null || { CACHE_REDIS_SKIP="$b not installed"; return 1; }
	done
	mkdir -p "$dir"
	CACHE_REDIS_PORT=$(pgh_free_port)
	cli=(timeout 60 redis-cli -h 127.0.0.1 -p "$CACHE_REDIS_PORT")
	redis-server --bind 127.0.0.1 --port "$CACHE_REDIS_PORT" --save '' --appendonly no \
		--dir "$dir" --logfile "$dir/redis.log" --daemonize no </dev/null >/dev/null 2>&1 &
	CACHE_REDIS_PID=$!
	for _ in $(seq 1 100); do
		timeout 2 redis-cli -h 127.0.0.1 -p "$CACHE_REDIS_PORT" ping 2>/dev/null | grep -q PONG && break
		cache_alive "$CACHE_REDIS_PID" || break
		sleep 0.1
	done
	if ! timeout 2 redis-cli -h 127.0.0.1 -p "$CACHE_REDIS_PORT" ping 2>/dev/null | grep -q PONG; then
		tail -n 5 "$dir/redis.log" 2>/dev/null >&2 || true
		cache_redis_stop
		CACHE_REDIS_SKIP="redis-server did not start"
		return 1
	fi
	# RESP on stdin: one round trip for all the SETs.
	awk -v n="$CACHE_KEYS" 'BEGIN {
		v = sprintf("%200s", ""); gsub(/ /, "x", v)
		for (i = 0; i < n; i++) {
			k = sprintf("key:%012d", i)
			printf "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", length(k), k, length(v), v
		}
	}' | "${cli[@]}" --pipe >/dev/null 2>&1 || true
	keys=$("${cli[@]}" dbsize 2>/dev/null || true)
	if [ "$keys" != "$CACHE_KEYS" ]; then
		cache_redis_stop
		CACHE_REDIS_SKIP="loading Redis failed ($keys keys)"
		return 1
	fi
}

cache_redis_misses() {
	timeout 10 redis-cli -h 127.0.0.1 -p "$CACHE_REDIS_PORT" info stats 2>/dev/null \
		| sed -n 's/^keyspace_misses:\([0-9]*\).*/\1/p'
}

# cache_redis_rps CLIENTS REQUESTS: GET requests/s, one request per round
# trip (-P 1), client threads as pgbench's -j; empty on failure.
cache_redis_rps() {
	local jobs=$(($1 < 2 ? $1 : 2))
	timeout $((BENCH_SECONDS * 4 + 60)) redis-benchmark -h 127.0.0.1 -p "$CACHE_REDIS_PORT" \
		-t get -r "$CACHE_KEYS" -d 200 -P 1 -c "$1" --threads "$jobs" -n "$2" --csv 2>/dev/null \
		| awk -F, '$1 == "\"GET\"" { gsub(/"/, "", $2); print $2 }' || true
}

# cache_redis_get CLIENTS: a short run sizes the real one to ~BENCH_SECONDS
# (redis-benchmark counts requests, not seconds).
cache_redis_get() {
	local c=$1 rps misses note
	local name="Redis GET (redis-benchmark)"
	if [ -n "$CACHE_REDIS_SKIP" ]; then
		bench_record cache "$name" "$c" skipped "" "$CACHE_REDIS_SKIP"
		printf '  %-40s %3s clients    skipped  %s\n' "$name" "$c" "$CACHE_REDIS_SKIP"
		return 0
	fi
	misses=$(cache_redis_misses)
	rps=$(cache_redis_rps "$c" 20000)
	[ -n "$rps" ] && rps=$(cache_redis_rps "$c" "$(awk -v r="$rps" -v s="$BENCH_SECONDS" \
		'BEGIN { n = int(r * s); print (n < 10000 ? 10000 : n > 50000000 ? 50000000 : n) }')")
	if [ -z "$rps" ]; then
		bench_record cache "$name" "$c" skipped "" "redis-benchmark failed"
		printf '  %-40s %3s clients    skipped  redis-benchmark failed\n' "$name" "$c"
		return 0
	fi
	# Misses are cheaper than hits; INFO must answer for the check to mean anything.
	[[ $misses =~ ^[0-9]+$ ]] && [ "$(cache_redis_misses)" = "$misses" ] \
		|| pgh_die "Redis GET missed keys (or INFO failed): not comparable"
	note="cache_get = $(cache_ratio "${BASE_TPS["cache|$CACHE_GET|$c"]}" "$rps") x Redis GET"
	bench_record cache "$name" "$c" "$(printf '%.0f' "$rps")" tps "$note"
	printf '  %-40s %3s clients %10.0f tps  %s\n' "$name" "$c" "$rps" "$note"
}

cache_chain_exit_trap

# ---- 1. setup: the same 100k keys and values in the cache and a table ----

# A 200-byte jsonb (payload without the varlena header) for any i < 10^7:
# fixed-width fields keep every value the same size.
bench_sql <<'SQL'
CREATE OR REPLACE FUNCTION bench_cache_value(i int) RETURNS jsonb
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN jsonb_build_object('id', lpad(i::text, 7, '0'), 'name', 'product ' || lpad(i::text, 7, '0'),
                              'price', 1999, 'tags', jsonb_build_array('a', 'b'), 'pad', repeat('x', 92));
DROP TABLE IF EXISTS bench_kv;
CREATE UNLOGGED TABLE bench_kv (k text PRIMARY KEY, v jsonb);
SQL
bench_sql -c "SELECT harden.cache_flush()" >/dev/null
out=$(cache_sql -F ' ' -v keys="$CACHE_KEYS" <<'SQL'
CREATE TEMP TABLE cache_setup (what text, ms float8);
-- Both load from the same prepared rows, so neither pays for building values.
CREATE TEMP TABLE cache_src AS
    SELECT 'p:' || i AS k, bench_cache_value(i) AS v FROM generate_series(1, :keys) i;
DO $$
DECLARE
    t timestamptz := clock_timestamp();
BEGIN
    INSERT INTO bench_kv SELECT k, v FROM cache_src;
    INSERT INTO cache_setup VALUES ('table', 1000 * extract(epoch FROM clock_timestamp() - t));
    t := clock_timestamp();
    PERFORM harden.cache_set(k, v) FROM cache_src;
    INSERT INTO cache_setup VALUES ('cache', 1000 * extract(epoch FROM clock_timestamp() - t));
END $$;
SELECT round((SELECT ms FROM cache_setup WHERE what = 'cache')), round((SELECT ms FROM cache_setup WHERE what = 'table'));
SQL
)
read -r cache_set_ms table_ms <<<"$out"
bench_sql -c "VACUUM ANALYZE bench_kv"
[ "$(cache_sql -c "SELECT count(*) FROM harden.cache_entries WHERE key LIKE 'p:%'")" = "$CACHE_KEYS" ] \
	|| pgh_die "the cache does not hold the $CACHE_KEYS keys"
[ "$(cache_sql -c "SELECT min(pg_column_size(v) - 4) || ' ' || max(pg_column_size(v) - 4) FROM bench_kv")" = "200 200" ] \
	|| pgh_die "bench_cache_value() is not 200 bytes"
bench_record cache "setup: ${CACHE_KEYS} cache_set" 1 "$cache_set_ms" ms \
	"INSERT into the unlogged table: $table_ms ms"
printf '  %-40s %3s clients %10s ms   INSERT into the unlogged table: %s ms\n' \
	"setup: ${CACHE_KEYS} cache_set" 1 "$cache_set_ms" "$table_ms"

cache_redis_start || pgh_log "Redis rows skipped: $CACHE_REDIS_SKIP"

# ---- 2, 3. one get per transaction, random keys ----

misses=$(cache_sql -c "SELECT misses FROM harden.cache_stats")
for c in 1 8; do
	bench_pgbench cache "SELECT 1" $c floor.sql
	bench_pgbench cache "$CACHE_LOOKUP" $c kv_unlogged_get.sql "SELECT 1"
	bench_pgbench cache "$CACHE_GET" $c cache_get.sql "SELECT 1"
	ratio=$(cache_ratio "${BASE_TPS["cache|$CACHE_GET|$c"]}" "${BASE_TPS["cache|$CACHE_LOOKUP|$c"]}")
	bench_record cache "cache_get vs PK lookup" $c "$ratio" x "cache_get tps / $CACHE_LOOKUP tps"
	printf '  %-40s %3s clients %10s x    cache_get tps / lookup tps\n' "cache_get vs PK lookup" $c "$ratio"
	cache_redis_get $c
done
# A miss returns NULL without copying a value: it would flatter cache_get.
[ "$(cache_sql -c "SELECT misses FROM harden.cache_stats")" = "$misses" ] \
	|| pgh_die "cache_get missed during the hit benchmark"
cache_redis_stop

# ---- 4. 1M gets in one statement: no round trips, only the lookups ----

# Run 0 warms up; the best of runs 1-3 counts.  Interleaved, so both see
# the same machine.
out=$(cache_sql -F ' ' <<'SQL'
CREATE TEMP TABLE cache_loop (what text, ms float8);
DO $$
DECLARE
    t timestamptz;
    n bigint;
BEGIN
    FOR run IN 0..3 LOOP
        t := clock_timestamp();
        SELECT count(harden.cache_get('p:' || (i % 100000 + 1))) INTO n FROM generate_series(1, 1000000) i;
        IF run > 0 THEN
            INSERT INTO cache_loop VALUES ('cache', 1000 * extract(epoch FROM clock_timestamp() - t));
        END IF;
        IF n <> 1000000 THEN RAISE 'cache_get found % of 1000000', n; END IF;
        t := clock_timestamp();
        SELECT count((SELECT v FROM bench_kv WHERE k = 'p:' || (i % 100000 + 1))) INTO n
            FROM generate_series(1, 1000000) i;
        IF run > 0 THEN
            INSERT INTO cache_loop VALUES ('table', 1000 * extract(epoch FROM clock_timestamp() - t));
        END IF;
        IF n <> 1000000 THEN RAISE 'the lookup found % of 1000000', n; END IF;
    END LOOP;
END $$;
SELECT round((SELECT min(ms) FROM cache_loop WHERE what = 'cache')),
       round((SELECT min(ms) FROM cache_loop WHERE what = 'table'));
SQL
)
read -r get_ms lookup_ms <<<"$out"
note="cache / table = $(cache_ratio "$get_ms" "$lookup_ms")"
bench_record cache "1M cache_get in one SELECT" 1 "$get_ms" ms "$note"
bench_record cache "1M PK lookups in one SELECT" 1 "$lookup_ms" ms "scalar subquery per row"
printf '  %-40s %3s clients %10s ms   %s\n' "1M cache_get in one SELECT" 1 "$get_ms" "$note"
printf '  %-40s %3s clients %10s ms\n' "1M PK lookups in one SELECT" 1 "$lookup_ms"

# ---- 5. memory per entry beyond key and value, in a full cache ----

# Fill in batches of 1000 until the first eviction: the last count before it
# is at most one batch short of a full cache, so the overhead it gives errs
# high.  At most 2000 batches (2M sets).
bench_sql -c "SELECT harden.cache_flush()" >/dev/null
out=$(cache_sql -F ' ' <<'SQL'
CREATE TEMP TABLE cache_fill (entries bigint, bytes_limit bigint);
DO $$
DECLARE
    ev0 bigint;
    ev bigint;
    lim bigint;
    full_at bigint;
BEGIN
    SELECT evictions INTO ev0 FROM harden.cache_stats;
    FOR b IN 0..1999 LOOP
        SELECT entries INTO full_at FROM harden.cache_stats;
        PERFORM harden.cache_set('o:' || i, bench_cache_value(i))
            FROM generate_series(b * 1000 + 1, b * 1000 + 1000) i;
        SELECT evictions, bytes_limit INTO ev, lim FROM harden.cache_stats;
        IF ev > ev0 THEN
            INSERT INTO cache_fill VALUES (full_at, lim);
            RETURN;
        END IF;
    END LOOP;
END $$;
SELECT coalesce(round(f.bytes_limit::numeric / f.entries - avg(octet_length(e.key) + pg_column_size(bench_cache_value(substr(e.key, 3)::int)) - 4), 1)::text, 'none'),
       coalesce(f.entries::text, '-'), coalesce(f.bytes_limit::text, '-')
    FROM harden.cache_entries e LEFT JOIN cache_fill f ON true
    WHERE e.key LIKE 'o:%'
    GROUP BY f.entries, f.bytes_limit;
SQL
)
read -r overhead fill_entries fill_limit <<<"${out:-none - -}"
bench_sql -c "SELECT harden.cache_flush()" >/dev/null
if [ "$overhead" = none ]; then
	note="no eviction within 2M sets: the cache never filled"
else
	note="target <= 128; full at $fill_entries entries of 200 B values in $fill_limit B"
fi
bench_record cache "memory overhead per entry" 1 "$overhead" bytes "$note"
printf '  %-40s %3s clients %10s B    %s\n' "memory overhead per entry" 1 "$overhead" "$note"
