# Pending cache writes of one transaction block at scale: 1M operations in
# one block (sets, deletes, reads and tag invalidations) and what the commit
# that publishes them costs; 40k cache_set in one block next to the same
# sets made outside a block.  Both must be linear: a block costs about what
# its operations cost outside one.
# Sourced by run.sh: bench_record and bench_sql come from it.

cx_sql() { bench_sql -At "$@"; }

# cx_ms SQL...: wall time of the statements given, run in one psql session.
cx_ms() {
	local out
	out=$(cx_sql -v ON_ERROR_STOP=1 <<SQL
SELECT harden.cache_invalidate('cx:*') \\gset
SELECT clock_timestamp() AS cx_t0 \\gset
$1
SELECT round(1000 * extract(epoch FROM clock_timestamp() - :'cx_t0'::timestamptz));
SQL
)
	tail -n1 <<<"$out"
}

cx_1m=$(cx_ms "BEGIN;
SELECT count(harden.cache_set('cx:' || (i % 100000), '1'::jsonb, tags => ARRAY['cx' || (i % 100)])) FROM generate_series(1, 400000) i \\gset
SELECT count(harden.cache_delete('cx:' || i)) FROM generate_series(1, 200000) i \\gset
SELECT count(harden.cache_get('cx:' || i)) FROM generate_series(1, 200000) i \\gset
SELECT count(harden.cache_invalidate_tag('cx' || (i % 100))) FROM generate_series(1, 200000) i \\gset
COMMIT;")
bench_record cache "1M pending ops in one block, with COMMIT" 1 "$cx_1m" ms \
	"400k set, 200k delete, 200k get, 200k invalidate_tag"
printf '  %-40s %3s clients %10s ms   %s\n' "1M pending ops in one block, with COMMIT" 1 "$cx_1m" \
	"400k set, 200k delete, 200k get, 200k invalidate_tag"

cx_in=$(cx_ms "BEGIN;
SELECT count(harden.cache_set('cx:' || i, '1'::jsonb)) FROM generate_series(1, 40000) i \\gset
COMMIT;")
cx_out=$(cx_ms "SELECT count(harden.cache_set('cx:' || i, '1'::jsonb)) FROM generate_series(1, 40000) i \\gset")
note=$(awk -v a="$cx_in" -v b="$cx_out" 'BEGIN { printf "%.2f x the same sets outside a block (%d ms)", (b > 0 ? a / b : 0), b }')
bench_record cache "40k cache_set in one block, with COMMIT" 1 "$cx_in" ms "$note"
printf '  %-40s %3s clients %10s ms   %s\n' "40k cache_set in one block, with COMMIT" 1 "$cx_in" "$note"
bench_sql -c "SELECT harden.cache_invalidate('cx:*')" >/dev/null
