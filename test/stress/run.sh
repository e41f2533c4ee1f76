#!/usr/bin/env bash
# make stress: the long reliability runs on a throwaway preloaded cluster.
#
#   1. a randomized SQL workload (pgbench, STRESS_CLIENTS clients for
#      STRESS_SECONDS, default 4 and 60) mixing cache, state-machine and stock
#      calls against test/stress/shop.sql, with the background worker
#      applying timers and expiring holds; then the stock invariant
#      (initial = on hand + taken + held + committed, per product), the audit
#      (every row's state is its last fsm_log to_state) and the SQLSTATEs
#      (all documented) are checked;
#   2. sqlsmith (SQLSMITH_QUERIES random queries, default 20000, seed
#      SQLSMITH_SEED, default 42) as a role allowed to call every pg_harden
#      function, against a second copy of the shop;
#   3. the memory check of test/pgtap/memory.sql with MEM_CALLS iterations
#      (default 1,000,000);
#   4. a scan of the server log: no backend may die of a signal (none is
#      killed on purpose here), no TRAP, no PANIC; with SANITIZE=1, no
#      sanitizer report may point into src/.
# Prints a summary table and exits non-zero if a check failed.
source "$(dirname "$0")/../lib.sh"

STRESS_SECONDS=${STRESS_SECONDS:-60}
STRESS_CLIENTS=${STRESS_CLIENTS:-4}
SQLSMITH_QUERIES=${SQLSMITH_QUERIES:-20000}
SQLSMITH_SEED=${SQLSMITH_SEED:-42}
MEM_CALLS=${MEM_CALLS:-1000000}

ROWS=()
FAILED=0
# row CHECK RESULT STATUS(ok|FAIL)
row() {
	ROWS+=("$1|$2|$3")
	[ "$3" = ok ] || FAILED=$((FAILED + 1))
}
q() { pgh_psql -At -d "$1" -c "$2"; }

pgh_ensure_packages sqlsmith
pgh_build_and_stage
pgh_cluster_start "harden.cache_memory = '16MB'" "harden.worker_interval = '200ms'" \
	"max_worker_processes = 16" "max_connections = 100" "track_functions = all"
out="$PGH_TMP/out"

setup_shop() {
	pgh_createdb "$1" pg_harden
	pgh_psql -d "$1" -f "$PGH_ROOT/test/stress/shop.sql" -f "$PGH_ROOT/test/stress/workload.sql" >/dev/null
}

# 1. The randomized workload.
pgh_log "workload: $STRESS_CLIENTS clients for ${STRESS_SECONDS}s"
setup_shop pgh_stress
rc=0
pgbench -n -c "$STRESS_CLIENTS" -j 2 -T "$STRESS_SECONDS" --random-seed=42 \
	-f "$PGH_ROOT/test/stress/workload.pgbench" pgh_stress >"$out/pgbench.log" 2>&1 || rc=$?
tps=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$out/pgbench.log" | tail -n1)
calls=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$out/pgbench.log")
pgbench_failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$out/pgbench.log")
if [ $rc -eq 0 ] && [ "${pgbench_failed:-0}" -eq 0 ]; then
	row "workload: calls (clients x seconds)" "${calls:-0} calls, ${tps%.*} calls/s ($STRESS_CLIENTS x ${STRESS_SECONDS}s)" ok
else
	tail -n 20 "$out/pgbench.log"
	row "workload: calls (clients x seconds)" "pgbench exit $rc, failed ${pgbench_failed:-?}" FAIL
fi
# Let the worker expire the short holds and apply the due timers.
sleep 3
bad=$(q pgh_stress "
	SELECT count(*) FROM product_initial i JOIN product p USING (id)
	 WHERE i.stock <> p.stock + coalesce((SELECT sum(units) FROM stock_taken t WHERE t.id = i.id), 0)
	                  + coalesce((SELECT sum(l.qty) FROM harden.stock_holds h, unnest(h.keys, h.qtys) AS l(key, qty)
	                               WHERE h.relid = 'product'::regclass AND h.status IN ('held', 'committed')
	                                 AND l.key = i.id::text), 0)")
summary=$(q pgh_stress "
	SELECT format('%s units taken, %s held, %s committed, %s holds expired by the worker',
	  (SELECT sum(units) FROM stock_taken WHERE units > 0),
	  (SELECT coalesce(sum(u), 0) FROM (SELECT (SELECT sum(x) FROM unnest(qtys) x) u FROM harden.stock_holds WHERE status = 'held') s),
	  (SELECT coalesce(sum(u), 0) FROM (SELECT (SELECT sum(x) FROM unnest(qtys) x) u FROM harden.stock_holds WHERE status = 'committed') s),
	  (SELECT count(*) FROM harden.stock_holds WHERE status = 'expired'))")
row "stock invariant (50 products)" "$bad products off; $summary" "$([ "$bad" = 0 ] && echo ok || echo FAIL)"
# The state of every row is the to_state of its last audit entry, or its
# initial state if it has none (rows inserted before the attach).
bad=$(q pgh_stress "
	WITH cur (tbl, machine, key, state, initial) AS (
	  SELECT 'public.shop_order', 'order', jsonb_build_object('id', id), status, 'pending' FROM shop_order
	  UNION ALL SELECT 'public.shop_order', 'payment', jsonb_build_object('id', id), payment, 'pending' FROM shop_order
	  UNION ALL SELECT 'public.cart', 'cart', jsonb_build_object('id', id), status::text, 'pending' FROM cart
	  UNION ALL SELECT 'public.breaker', 'circuit_breaker', jsonb_build_object('name', name), state, 'closed' FROM breaker
	  UNION ALL SELECT 'public.ticket', 'ticket', jsonb_build_object('id', id), status::text, 'new' FROM ticket)
	SELECT count(*) FROM cur
	 WHERE state IS DISTINCT FROM coalesce(
	         (SELECT l.to_state FROM harden.fsm_log l
	           WHERE l.table_name = cur.tbl AND l.machine = cur.machine AND l.row_key = cur.key
	           ORDER BY l.id DESC LIMIT 1), cur.initial)")
audited=$(q pgh_stress "SELECT format('%s audit rows (%s by the worker''s timers)', count(*), count(*) FILTER (WHERE actor = 'timer')) FROM harden.fsm_log")
row "fsm audit (every row's state = last to_state)" "$bad rows off; $audited" "$([ "$bad" = 0 ] && echo ok || echo FAIL)"
bad=$(q pgh_stress "SELECT count(*) FROM stress_errors")
row "workload: undocumented SQLSTATEs" "$bad$( [ "$bad" = 0 ] || q pgh_stress "SELECT ': ' || string_agg(DISTINCT sqlstate || ' ' || message, '; ') FROM stress_errors")" \
	"$([ "$bad" = 0 ] && echo ok || echo FAIL)"

# 2. sqlsmith, as a role that may call every pg_harden function.
pgh_log "sqlsmith: $SQLSMITH_QUERIES queries, seed $SQLSMITH_SEED"
setup_shop pgh_smith
pgh_psql -d pgh_smith >/dev/null <<'SQL'
DROP ROLE IF EXISTS smith;
CREATE ROLE smith LOGIN;
GRANT USAGE ON SCHEMA harden TO smith;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA harden TO smith;
GRANT ALL ON ALL TABLES IN SCHEMA public TO smith;
GRANT SELECT ON harden.fsm_log, harden.fsm_due TO smith;
ALTER ROLE smith SET statement_timeout = '2s';
SQL
rc=0
(cd "$out" && timeout 1800 sqlsmith --target="host=$PGHOST port=$PGPORT dbname=pgh_smith user=smith" \
	--seed="$SQLSMITH_SEED" --max-queries="$SQLSMITH_QUERIES" --exclude-catalog --verbose) \
	>"$out/sqlsmith.log" 2>&1 || rc=$?
erate=$(sed -n 's/^error rate: \([0-9.]*\).*/\1/p' "$out/sqlsmith.log" | tail -n1)
sleep 1   # the statistics of sqlsmith's session are flushed when it ends
called=$(q pgh_smith "SELECT format('%s of %s pg_harden functions called %s times',
	count(*), (SELECT count(*) FROM pg_proc WHERE pronamespace = 'harden'::regnamespace), coalesce(sum(calls), 0))
	FROM pg_stat_user_functions WHERE schemaname = 'harden'" 2>/dev/null || true)
up=$(q pgh_smith "SELECT harden.version() IS NOT NULL" 2>/dev/null || true)
if [ $rc -eq 0 ] && [ "$up" = t ]; then
	row "sqlsmith (seed $SQLSMITH_SEED)" "$SQLSMITH_QUERIES queries, error rate ${erate:-?} (errors are expected); ${called:-?}" ok
else
	tail -n 20 "$out/sqlsmith.log"
	row "sqlsmith (seed $SQLSMITH_SEED)" "sqlsmith exit $rc, server up: ${up:-no}" FAIL
fi

# 3. Backend memory over MEM_CALLS mixed calls.
pgh_log "memory: $MEM_CALLS iterations"
pgh_createdb pgh_memory pgtap pg_harden
psql -X -q -At -d pgh_memory -v mem_calls="$MEM_CALLS" -f "$PGH_ROOT/test/pgtap/memory.sql" >"$out/memory.log" 2>&1 || true
growth=$(sed -n 's/^# backend memory: //p' "$out/memory.log")
planned=$(sed -n 's/^1\.\.\([0-9]*\)$/\1/p' "$out/memory.log")
if grep -q '^not ok' "$out/memory.log" || [ "$(grep -c '^ok' "$out/memory.log")" -ne "${planned:-0}" ]; then
	grep -v '^ok' "$out/memory.log" | tail -n 20
	row "memory ($MEM_CALLS iterations, 9 calls each)" "${growth:-no result}" FAIL
else
	row "memory ($MEM_CALLS iterations, 9 calls each)" "bytes: ${growth:-?}" ok
fi

# 4. Crashes.
pgh_cluster_stop
crashes=$(grep -cE 'terminated by signal|TRAP:|PANIC:' "$PGH_TMP/server.log" || true)
[ "$crashes" = 0 ] || grep -E 'terminated by signal|TRAP:|PANIC:' "$PGH_TMP/server.log"
row "server log: backends killed by a signal, TRAP, PANIC" "$crashes" "$([ "$crashes" = 0 ] && echo ok || echo FAIL)"
# SANITIZE=1 make stress: no sanitizer report may point into src/.
if [ -n "${SANITIZE:-}" ]; then
	findings=$(pgh_sanitizer_findings)
	[ -z "$findings" ] || echo "$findings"
	row "sanitizer reports in src/ ($SANITIZE)" "$(printf '%s' "$findings" | grep -c . || true) kinds, $(ls "$PGH_TMP/sanitizer" | wc -l) report files" \
		"$([ -z "$findings" ] && echo ok || echo FAIL)"
fi

echo
printf '| %s | %s | %s |\n' check result status
printf '|---|---|---|\n'
for r in "${ROWS[@]}"; do
	IFS='|' read -r a b c <<<"$r"
	printf '| %s | %s | %s |\n' "$a" "$b" "$c"
done
echo
echo "pg_harden stress: $((${#ROWS[@]} - FAILED)) passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
