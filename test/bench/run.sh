#!/usr/bin/env bash
# make bench: side-by-side benchmarks in one run on a throwaway cluster.
# Each file test/bench/groups/NN-*.sh is a group that sets up its data and
# calls bench_pgbench / bench_record; the table is printed at the end.
# BENCH_SECONDS (default 8) is the duration of each pgbench run; BENCH_GROUPS
# (e.g. "00-floor 20-fsm") limits the run to those groups.
source "$(dirname "$0")/../lib.sh"

BENCH_SECONDS=${BENCH_SECONDS:-8}
BENCH_DB=pgh_bench
BENCH_DIR="$PGH_ROOT/test/bench"
ROWS=()
declare -A BASE_TPS=()

# bench_record GROUP CASE CLIENTS VALUE UNIT NOTE
bench_record() { ROWS+=("$1|$2|$3|$4|$5|$6"); }

# bench_pgbench GROUP CASE CLIENTS SCRIPT [BASELINE-CASE] [extra pgbench args...]
# Runs SCRIPT (path relative to test/bench) with prepared statements; the
# ratio column is tps / the baseline case's tps at the same client count.
bench_pgbench() {
	local group=$1 case=$2 clients=$3 script=$4 base=${5:-}
	shift 5 2>/dev/null || shift $#
	local jobs=$((clients < 2 ? clients : 2)) out tps note=""
	out=$(pgbench -n -M prepared -c "$clients" -j "$jobs" -T "$BENCH_SECONDS" \
		-f "$BENCH_DIR/$script" "$@" "$BENCH_DB" 2>&1) || { echo "$out" >&2; pgh_die "pgbench failed: $case"; }
	tps=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' <<<"$out" | head -n1)
	BASE_TPS["$group|$case|$clients"]=$tps
	if [ -n "$base" ] && [ -n "${BASE_TPS["$group|$base|$clients"]:-}" ]; then
		note=$(awk -v a="$tps" -v b="${BASE_TPS["$group|$base|$clients"]}" \
			'BEGIN { printf "%.2f x %s", a / b, "'"$base"'" }')
	fi
	bench_record "$group" "$case" "$clients" "$(printf '%.0f' "$tps")" tps "$note"
	printf '  %-40s %3s clients %10.0f tps  %s\n' "$case" "$clients" "$tps" "$note"
}

bench_sql() { pgh_psql -d "$BENCH_DB" "$@"; }

print_table() {
	echo
	echo "| group | case | clients | result | unit | ratio |"
	echo "|---|---|---:|---:|---|---|"
	local r
	for r in "${ROWS[@]}"; do
		IFS='|' read -r g c n v u note <<<"$r"
		echo "| $g | $c | $n | $v | $u | $note |"
	done
}

# Redis is only the cache group's point of comparison, which records its
# rows as skipped without it: failing to install the extras is not fatal.
BENCH_PACKAGES=${BENCH_PACKAGES-redis-server redis-tools}
pgh_ensure_packages
(pgh_ensure_packages $BENCH_PACKAGES) || pgh_log "could not install: $BENCH_PACKAGES"
pgh_build_and_stage
# The Redis-protocol endpoint for the resp group (test/bench/groups/50-resp.sh).
BENCH_RESP_PORT=$(pgh_free_port)
# The bench cluster's settings; a group that restarts the cluster passes
# them again (with its own after them), so later groups find the same server.
BENCH_CONF=("shared_buffers = '512MB'" "max_connections = 120" "synchronous_commit = off"
	"harden.resp_listen = '127.0.0.1:$BENCH_RESP_PORT'" "harden.resp_database = '$BENCH_DB'")
pgh_cluster_start "${BENCH_CONF[@]}"
pgh_createdb "$BENCH_DB" pg_trgm pg_harden
pgh_log "benchmarks: ${BENCH_SECONDS}s per run, $(nproc) cores"
for g in "$BENCH_DIR"/groups/[0-9]*.sh; do
	# BENCH_GROUPS="20-fsm ..." runs only the groups named.
	if [ -n "${BENCH_GROUPS:-}" ] && [[ " $BENCH_GROUPS " != *" $(basename "$g" .sh) "* ]]; then
		continue
	fi
	pgh_log "group $(basename "$g" .sh)"
	source "$g"
done
print_table
