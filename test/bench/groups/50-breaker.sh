# Circuit breakers: harden.breaker_allow() on a closed breaker next to the
# floor (SELECT 1) at 8 clients, and breaker_record() of successes (no state
# change, so no SQL).  Target: breaker_allow >= 0.9 x SELECT 1.
# Sourced by run.sh: bench_pgbench, bench_record and bench_sql come from it.

bench_sql -c "SELECT harden.breaker_define('bench-api', failure_threshold => 1000000)" >/dev/null
for c in 1 8; do
	bench_pgbench breaker "SELECT 1" $c floor.sql
	bench_pgbench breaker "harden.breaker_allow()" $c breaker_allow.sql "SELECT 1"
	bench_pgbench breaker "harden.breaker_record(success)" $c breaker_record.sql "SELECT 1"
done
bench_sql -c "SELECT harden.breaker_drop('bench-api')" >/dev/null
