# The cache across a restart: 200k entries (a jsonb value and a tag each)
# written at shutdown and loaded by the persistence worker at start, plain
# (CRC-32C) and encrypted (AES-256-GCM).  Each row is the load rate from the
# worker's log line (read, checks, inserts); target >= 1M entries/s.
# Sourced by run.sh: bench_record comes from it.

CP_DB=pgh_bench_cp
CP_N=200000
CP_CONF=("${BENCH_CONF[@]}")
CP_KEY="$PGH_TMP/bench-dump.key"
od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$CP_KEY"
[ "$(id -u)" -ne 0 ] || chown "$PGH_USER" "$CP_KEY"
chmod 600 "$CP_KEY"

# cp_restart_load LABEL [conf...]: fill, restart, record the load rate.
cp_restart_load() {
	local label=$1 before line n ms rate
	shift
	pgh_psql -d "$CP_DB" -c "SELECT harden.cache_flush()" \
		-c "SELECT count(harden.cache_set('persist:' || g, jsonb_build_object('id', g, 'name', 'product ' || g), '1 hour', ARRAY['t' || (g % 100)])) FROM generate_series(1, $CP_N) g" >/dev/null
	before=$(grep -c 'pg_harden cache: loaded' "$PGH_TMP/server.log" || true)
	pgh_cluster_stop
	pgh_cluster_start "${CP_CONF[@]}" "$@"
	for _ in $(seq 1 300); do
		[ "$(grep -c 'pg_harden cache: loaded' "$PGH_TMP/server.log" || true)" -gt "$before" ] && break
		sleep 0.1
	done
	line=$(grep 'pg_harden cache: loaded' "$PGH_TMP/server.log" | tail -n1)
	n=$(sed -n 's/.*loaded \([0-9]*\) entries.*/\1/p' <<<"$line")
	ms=$(sed -n 's/.* in \([0-9.]*\) ms.*/\1/p' <<<"$line")
	[ -n "$n" ] && [ -n "$ms" ] || pgh_die "no load line in the server log"
	rate=$(awk -v n="$n" -v ms="$ms" 'BEGIN { printf "%.0f", n / (ms / 1000) }')
	bench_record cache_persist "load at start, $label: $n entries in $ms ms" 1 "$rate" "entries/s" "target >= 1000000"
	printf '  %-56s %10s entries/s\n' "load at start, $label: $n entries in $ms ms" "$rate"
}

pgh_createdb "$CP_DB" pg_harden
cp_restart_load "plain"
# The shutdown after this fill writes the encrypted dump.
pgh_cluster_stop
pgh_cluster_start "${CP_CONF[@]}" "harden.cache_dump_key_file = '$CP_KEY'"
cp_restart_load "AES-256-GCM" "harden.cache_dump_key_file = '$CP_KEY'"
pgh_cluster_stop
pgh_cluster_start "${CP_CONF[@]}"
pgh_psql -d "$CP_DB" -c "SELECT harden.cache_flush()" >/dev/null
