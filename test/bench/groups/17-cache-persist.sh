# The cache across a restart: 200k entries (a jsonb value and a tag each)
# written at shutdown and loaded by the persistence worker at start.  The
# row is the load rate from the worker's log line (read, checks, inserts);
# target >= 1M entries/s.
# Sourced by run.sh: bench_record comes from it.

CP_DB=pgh_bench_cp
CP_N=200000
pgh_createdb "$CP_DB" pg_harden
pgh_psql -d "$CP_DB" -c "SELECT harden.cache_flush()" \
	-c "SELECT count(harden.cache_set('persist:' || g, jsonb_build_object('id', g, 'name', 'product ' || g), '1 hour', ARRAY['t' || (g % 100)])) FROM generate_series(1, $CP_N) g" >/dev/null
cp_before=$(grep -c 'pg_harden cache: loaded' "$PGH_TMP/server.log" || true)
pgh_cluster_stop
# The conf run.sh started the cluster with.
pgh_cluster_start "shared_buffers = '512MB'" "max_connections = 120" "synchronous_commit = off"
for _ in $(seq 1 300); do
	[ "$(grep -c 'pg_harden cache: loaded' "$PGH_TMP/server.log" || true)" -gt "$cp_before" ] && break
	sleep 0.1
done
cp_line=$(grep 'pg_harden cache: loaded' "$PGH_TMP/server.log" | tail -n1)
cp_n=$(sed -n 's/.*loaded \([0-9]*\) entries.*/\1/p' <<<"$cp_line")
cp_ms=$(sed -n 's/.* in \([0-9.]*\) ms.*/\1/p' <<<"$cp_line")
[ -n "$cp_n" ] && [ -n "$cp_ms" ] || pgh_die "no load line in the server log"
cp_rate=$(awk -v n="$cp_n" -v ms="$cp_ms" 'BEGIN { printf "%.0f", n / (ms / 1000) }')
bench_record cache_persist "load at start: $cp_n entries in $cp_ms ms" 1 "$cp_rate" "entries/s" "target >= 1000000"
printf '  %-48s %10s entries/s\n' "load at start: $cp_n entries in $cp_ms ms" "$cp_rate"
pgh_psql -d "$CP_DB" -c "SELECT harden.cache_flush()" >/dev/null
