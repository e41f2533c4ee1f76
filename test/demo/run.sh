#!/usr/bin/env bash
# The shop walk-through: builds pg_harden, starts a throwaway preloaded
# cluster, runs test/demo/*.sql in order against a "shop" database and
# prints each statement before its result.  Each capability adds its
# chapter as a numbered file.  Expected errors are run through
# pg_temp.expect_error() (test/demo/lib/helpers.sql); any other error stops
# the demo with a non-zero exit.
source "$(dirname "$0")/../lib.sh"

pgh_ensure_packages
pgh_build_and_stage
# The worker chapters wait for the worker: run it every 200ms.  The Redis
# endpoint listens on a unix socket next to the server's.
conf=("harden.worker_interval = '200ms'")
redis=off
if command -v redis-cli >/dev/null; then
	redis=on
	conf+=("harden.resp_listen = '$PGH_TMP/pg_harden.sock'" "harden.resp_database = 'shop'")
fi
pgh_cluster_start "${conf[@]}"
pgh_createdb shop pg_trgm pg_harden
export PGH_DEMO_RESP_SOCK="$PGH_TMP/pg_harden.sock"
for f in "$PGH_ROOT"/test/demo/[0-9]*.sql; do
	echo
	# A chapter that starts with this line shows what survives a restart.
	if head -n1 "$f" | grep -q '^-- demo: restart the server'; then
		pgh_cluster_stop
		pgh_cluster_start "${conf[@]}"
	fi
	PGOPTIONS="-c client_min_messages=warning" psql -X -e -v ON_ERROR_STOP=1 \
		-v redis="$redis" -q -d shop \
		-f "$PGH_ROOT/test/demo/lib/helpers.sql" -f "$f" \
		|| pgh_die "demo chapter $(basename "$f") failed"
done
echo
pgh_log "demo finished; the cluster is removed"
