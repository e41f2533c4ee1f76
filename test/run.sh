#!/usr/bin/env bash
# The whole pg_harden suite on a throwaway cluster: pg_regress (sql/,
# expected/), isolation specs (test/specs), the upgrade-path test, pgTAP
# suites (test/pgtap), dump and restore (test/dump), a Prometheus scrape
# through prometheus-postgres-exporter (test/metrics), the SQL examples of
# the docs (test/docs), the background
# worker's (test/worker), crash recovery (test/crash), pgbouncer, a hot
# standby and failover (test/replica), revocation and tenant isolation of
# query results (test/track), the Redis-protocol endpoint (test/resp), the
# cache across restarts (test/persist) and, after a restart without preloading, test/nopreload.  Exits non-zero if
# anything failed.
source "$(dirname "$0")/lib.sh"

PASSED=0
FAILED=0
FAILURES=()

# record NAME STATUS PASSED FAILED: a phase that exited non-zero counts at
# least one failure even if its output could not be parsed.
record() {
	local failed=${4:-0}
	[ "$2" -eq 0 ] || [ "$failed" -gt 0 ] || failed=1
	PASSED=$((PASSED + ${3:-0}))
	FAILED=$((FAILED + failed))
	[ "$failed" -eq 0 ] || FAILURES+=("$1")
}

count_words() { set -- $1; echo $#; }

# pg_regress prints "M of N tests failed." on failure.
regress_failed() { sed -n 's/^ *\([0-9][0-9]*\) of [0-9]* tests failed.*/\1/p' "$1" | tail -n1; }

run_regress() {
	local tests
	tests=$(pgh_list REGRESS)
	[ -n "$tests" ] || return 0
	pgh_log "pg_regress: $tests"
	local out="$PGH_TMP/out/regress" rc=0
	mkdir -p "$out"
	"$(pgh_pgxs_dir)/test/regress/pg_regress" --bindir="$(pgh_bindir)" \
		--host="$PGHOST" --port="$PGPORT" --user=postgres \
		--inputdir="$PGH_ROOT" --outputdir="$out" --dbname=pgh_regress \
		--load-extension=pg_harden $tests 2>&1 | tee "$out.log" || rc=$?
	[ $rc -eq 0 ] || cat "$out/regression.diffs" 2>/dev/null || true
	local total failed
	total=$(count_words "$tests")
	failed=$(regress_failed "$out.log")
	record pg_regress $rc $((total - ${failed:-0})) "${failed:-0}"
}

run_isolation() {
	local tests
	tests=$(pgh_list ISOLATION)
	[ -n "$tests" ] || return 0
	pgh_log "isolation: $tests"
	local out="$PGH_TMP/out/isolation" rc=0
	mkdir -p "$out"
	"$(pgh_pgxs_dir)/test/isolation/pg_isolation_regress" --bindir="$(pgh_bindir)" \
		--host="$PGHOST" --port="$PGPORT" --user=postgres \
		--inputdir="$PGH_ROOT/test" --outputdir="$out" --dbname=pgh_isolation \
		--load-extension=pg_harden $tests 2>&1 | tee "$out.log" || rc=$?
	[ $rc -eq 0 ] || cat "$out/regression.diffs" 2>/dev/null || true
	local total failed
	total=$(count_words "$tests")
	failed=$(regress_failed "$out.log")
	record isolation $rc $((total - ${failed:-0})) "${failed:-0}"
}

# run_pgtap LABEL DIR: every DIR/*.sql through pg_prove in a fresh database.
run_pgtap() {
	local label=$1 dir=$2 files rc=0 log="$PGH_TMP/out/$1.log"
	files=$(ls "$dir"/*.sql 2>/dev/null || true)
	[ -n "$files" ] || return 0
	pgh_log "pgTAP ($label): $(cd "$dir" && ls ./*.sql | xargs -n1 basename | tr '\n' ' ')"
	pgh_createdb "pgh_$label" pgtap pg_trgm pg_harden
	pg_prove --dbname "pgh_$label" --host "$PGHOST" --port "$PGPORT" --username postgres \
		$files 2>&1 | tee "$log" || rc=$?
	local n failed
	n=$(sed -n 's/.*Tests=\([0-9]*\).*/\1/p' "$log" | tail -n1)
	failed=$(sed -n 's/.*Failed \([0-9]*\)\/[0-9]* subtests.*/\1/p' "$log" | awk '{s+=$1} END {print s+0}')
	record "pgTAP $label" $rc $((${n:-0} - failed)) "$failed"
}

run_upgrade() {
	pgh_log "upgrade path"
	local rc=0 n
	bash "$PGH_ROOT/test/upgrade.sh" | tee "$PGH_TMP/out/upgrade.log" || rc=$?
	n=$(grep -c '^ok ' "$PGH_TMP/out/upgrade.log" || true)
	record upgrade $rc "$n" "$(grep -c '^not ok ' "$PGH_TMP/out/upgrade.log" || true)"
}

pgh_ensure_packages
pgh_build_and_stage
source "$PGH_ROOT/test/resp/resp.sh"
resp_conf
# The worker runs fast here, and stays out of the databases whose tests call
# the *_run_due() functions themselves and check what they did, and out of
# the Redis endpoint's database, which needs none.
# pg_stat_statements is preloaded for harden.slow_queries and
# harden.suggested_indexes (without it, see test/nopreload).
PGH_CONF=("harden.cache_memory = '16MB'" "harden.worker_interval = '200ms'"
	"harden.worker_retry_base = '200ms'" "harden.worker_retry_max = '2s'"
	"harden.worker_skip_databases = 'pgh_regress, pgh_isolation, pgh_pgtap, pgh_dump_src, pgh_resp, pgh_bouncer, pgh_bouncer_s'"
	"max_worker_processes = 16" "max_prepared_transactions = 4"
	"shared_preload_libraries = 'pg_harden, pg_stat_statements'" "${RESP_CONF[@]}")
pgh_cluster_start "${PGH_CONF[@]}"
resp_setup
run_regress
run_isolation
run_upgrade
run_pgtap pgtap "$PGH_ROOT/test/pgtap"

# pgbouncer in transaction mode in front of this cluster: pgTAP suites and
# what matters through a pooler.
source "$PGH_ROOT/test/replica/lib.sh"
source "$PGH_ROOT/test/replica/pooler.sh"
run_pooler

# What the server log gets of statements pg_harden runs for a caller.
source "$PGH_ROOT/test/attack/log_values.sh"
run_log_values
run_log_values_rows

# pg_dump of a database using every feature, pg_restore into a second cluster.
source "$PGH_ROOT/test/dump/dump.sh"
run_dump_restore

# prometheus-postgres-exporter with prometheus/pg_harden.yaml, scraped with curl.
source "$PGH_ROOT/test/metrics/scrape.sh"
run_scrape

# Every SQL example of README.md and docs/ runs and shows its true errors.
source "$PGH_ROOT/test/docs/examples.sh"
run_doc_examples

# The Redis-protocol endpoint with redis-py, redis-cli, redis-benchmark.
run_resp

# The background worker: pgTAP in a database it serves, then checks across
# a restart and across databases.
source "$PGH_ROOT/test/worker/restart.sh"
source "$PGH_ROOT/test/worker/backoff.sh"
run_pgtap worker "$PGH_ROOT/test/worker"
run_worker_restart
run_worker_backoff
source "$PGH_ROOT/test/breaker/restart.sh"
run_breaker_restart

# Backends killed with SIGKILL mid-write; the postmaster's crash restart.
source "$PGH_ROOT/test/crash/crash.sh"
run_crash

# A streaming standby of this cluster: its own cache, 25006 for writes,
# restart and catch-up, then failover (the primary stops, the standby is
# promoted; the primary is started again on its own afterwards).
source "$PGH_ROOT/test/replica/replica.sh"
run_replica

# The cache across restarts: dump files, corrupt ones, encrypted ones (own cluster).
source "$PGH_ROOT/test/persist/persist.sh"
run_persist

# Cached query results against revocation and a second tenant's churn, on
# a restart with a small table of generations.
source "$PGH_ROOT/test/track/track.sh"
run_track

# make sanitize: the sanitizer runtime is in the server's backends.
if [ -n "${SANITIZE:-}" ]; then
	if [ "$(pgh_psql -At -d pgh_pgtap -c "SELECT pg_read_file('/proc/self/maps') ~ 'libasan' AND pg_read_file('/proc/self/maps') ~ 'libubsan' FROM (SELECT harden.version()) v")" = t ]; then
		record "sanitizers: runtime loaded" 0 1 0
	else
		record "sanitizers: runtime loaded" 1 0 1
	fi
fi

# Without preloading: restart the same cluster with an empty preload list.
# Not with SANITIZE=nopreload: a backend that loads the instrumented library
# itself cannot read ASAN_OPTIONS (PostgreSQL reuses the environment's memory
# for the process title) and ASan refuses to start behind the executable.
pgh_cluster_stop
if [ "${SANITIZE:-}" != nopreload ]; then
	pgh_cluster_start "shared_preload_libraries = ''"
	run_pgtap nopreload "$PGH_ROOT/test/nopreload"
	pgh_cluster_stop
fi

# Tests kill backends on purpose (SIGKILL, signal 9); any other signal is a
# crash, as are failed assertions and PANICs.
if grep -E 'terminated by signal ([0-8]|[1-9][0-9]+)([^0-9]|$)|TRAP:|PANIC:' "$PGH_TMP/server.log"; then
	record "server log: crash" 1 0 1
fi

# make sanitize: reports of AddressSanitizer and UndefinedBehaviorSanitizer
# that point into pg_harden's sources.
if [ -n "${SANITIZE:-}" ]; then
	findings=$(pgh_sanitizer_findings)
	reports=$(ls "$PGH_TMP/sanitizer" 2>/dev/null | wc -l)
	pgh_log "sanitizers: $reports report files"
	if [ -n "$findings" ]; then
		echo "$findings"
		record "sanitizers" 1 0 "$(echo "$findings" | wc -l)"
	else
		record "sanitizers" 0 1 0
	fi
fi

echo
if [ "$FAILED" -ne 0 ]; then
	echo "failed: ${FAILURES[*]}"
fi
echo "pg_harden: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
