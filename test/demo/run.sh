#!/usr/bin/env bash
# The shop walk-through: builds pg_harden, starts a throwaway preloaded
# cluster, runs test/demo/*.sql in order against a "shop" database and
# prints what happened.  Each capability adds its chapter as a numbered file.
source "$(dirname "$0")/../lib.sh"

pgh_ensure_packages
pgh_build_and_stage
# The worker chapter waits for the worker: run it every 200ms.
pgh_cluster_start "harden.worker_interval = '200ms'"
pgh_createdb shop pg_trgm pg_harden
for f in "$PGH_ROOT"/test/demo/[0-9]*.sql; do
	echo
	PGOPTIONS="-c client_min_messages=warning" psql -X -v ON_ERROR_STOP=1 -q -d shop -f "$f"
done
echo
pgh_log "demo finished; the cluster is removed"
