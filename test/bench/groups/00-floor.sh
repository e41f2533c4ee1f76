# The floor: a round trip that does nothing, and pg_harden's cheapest calls.
for c in 1 8; do
	bench_pgbench floor "SELECT 1" $c floor.sql
	bench_pgbench floor "harden.version()" $c version.sql "SELECT 1"
done
bench_pgbench floor "harden.metrics() scrape" 1 metrics.sql "SELECT 1"
