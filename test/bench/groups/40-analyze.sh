# Query analysis: harden.health_report() over a generated database of
# ANALYZE_TABLES tables (default 5,000) with three indexes each (15,000:
# the primary key, one on a column, one duplicate of it) and a foreign key
# without an index on every tenth table, each table with a few analysed
# rows; and harden.query_check() per call on a join.  The database is a
# separate one, so the other groups' tables do not count.
# Sourced by run.sh: bench_record comes from it.  Timings are taken inside
# the server (clock_timestamp around the call) and reported with NOTICE.

ANALYZE_DB=pgh_bench_analyze
ANALYZE_TABLES=${ANALYZE_TABLES:-5000}
ANALYZE_BATCH=250

analyze_sql() { pgh_psql -d "$ANALYZE_DB" -At "$@"; }

pgh_createdb "$ANALYZE_DB" pg_trgm pg_harden
analyze_t0=$(date +%s.%N)
# One transaction per batch keeps the lock table small.
for ((first = 1; first <= ANALYZE_TABLES; first += ANALYZE_BATCH)); do
	analyze_sql -v first="$first" -v last="$((first + ANALYZE_BATCH - 1 < ANALYZE_TABLES ? first + ANALYZE_BATCH - 1 : ANALYZE_TABLES))" <<'SQL' >/dev/null
SELECT set_config('bench.first', :'first', false), set_config('bench.last', :'last', false);
DO $$
DECLARE
  t text;
BEGIN
  FOR i IN current_setting('bench.first')::int .. current_setting('bench.last')::int LOOP
    t := format('t%s', i);
    EXECUTE format('CREATE TABLE %I (id int PRIMARY KEY, a int, name text, parent_id int %s)', t,
                   CASE WHEN i % 10 = 0 THEN format('REFERENCES %I', 't' || (i - 1)) ELSE '' END);
    EXECUTE format('CREATE INDEX ON %I (a)', t);
    EXECUTE format('CREATE INDEX ON %I (a)', t);
    EXECUTE format('INSERT INTO %I SELECT g, g %% 3, ''n'' || g, NULL FROM generate_series(1, 20) g', t);
  END LOOP;
END $$;
SQL
done
analyze_sql -c "ANALYZE" >/dev/null
analyze_setup_s=$(awk -v a="$analyze_t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
read -r analyze_tables analyze_indexes <<<"$(analyze_sql -F ' ' -c "
  SELECT (SELECT count(*) FROM pg_class WHERE relkind = 'r' AND relname ~ '^t[0-9]+\$'),
         (SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid WHERE c.relname ~ '^t[0-9]+\$')")"
bench_record analyze "setup: generated database" 1 "$analyze_setup_s" s \
	"$analyze_tables tables, $analyze_indexes indexes, 20 rows each, analysed"
printf '  %-40s %s tables, %s indexes in %s s\n' "setup" "$analyze_tables" "$analyze_indexes" "$analyze_setup_s"

# health_report(): the first run, then the best of three.
analyze_run() {
	analyze_sql -c "SET client_min_messages = notice;
DO \$\$
DECLARE
  t0 timestamptz := clock_timestamp();
  n bigint;
BEGIN
  SELECT count(*) INTO n FROM harden.health_report();
  RAISE NOTICE '% %', round(extract(epoch FROM clock_timestamp() - t0) * 1000), n;
END \$\$" 2>&1 | sed -n 's/.*NOTICE: *\([0-9]*\) \([0-9]*\).*/\1 \2/p'
}
read -r analyze_first_ms analyze_findings <<<"$(analyze_run)"
analyze_best_ms=$analyze_first_ms
for _ in 1 2 3; do
	read -r ms _ <<<"$(analyze_run)"
	[ "$ms" -lt "$analyze_best_ms" ] && analyze_best_ms=$ms
done
analyze_note=$(awk -v ms="$analyze_best_ms" -v first="$analyze_first_ms" -v n="$analyze_findings" \
	'BEGIN { printf "target < 1000 ms (%s); first run %d ms; %d findings", (ms < 1000 ? "met" : "MISSED"), first, n }')
bench_record analyze "harden.health_report(), best of 3" 1 "$analyze_best_ms" ms "$analyze_note"
printf '  %-40s %10s ms  %s\n' "health_report()" "$analyze_best_ms" "$analyze_note"

# query_check(): mean per call over a loop, in one session.
analyze_qc_us=$(analyze_sql -c "SET client_min_messages = notice;
DO \$\$
DECLARE
  t0 timestamptz := clock_timestamp();
  n int := 500;
BEGIN
  FOR i IN 1 .. n LOOP
    PERFORM count(*) FROM harden.query_check(
      'SELECT t10.id, t9.name FROM t10 JOIN t9 ON t9.id = t10.parent_id WHERE t10.name ILIKE \$1 ORDER BY t9.name');
  END LOOP;
  RAISE NOTICE '%', round(extract(epoch FROM clock_timestamp() - t0) * 1000000 / n);
END \$\$" 2>&1 | sed -n 's/.*NOTICE: *\([0-9]*\).*/\1/p')
analyze_qc_ms=$(awk -v us="$analyze_qc_us" 'BEGIN { printf "%.3f", us / 1000 }')
bench_record analyze "harden.query_check() per call" 1 "$analyze_qc_ms" ms \
	"two-table join with ILIKE \$1 and ORDER BY: parse, plan, walk; mean of 500"
printf '  %-40s %10s ms per call\n' "query_check()" "$analyze_qc_ms"
pgh_psql -d postgres -c "DROP DATABASE \"$ANALYZE_DB\""
