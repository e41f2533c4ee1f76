# Cache writes at scale.  Pending writes of one transaction block: 1M operations in
# one block (sets, deletes, reads and tag invalidations) and what the commit
# that publishes them costs; 40k cache_set in one block next to the same
# sets made outside a block.  Both must be linear: a block costs about what
# its operations cost outside one.  Then cache_invalidate_tag through the tag
# index against cache_delete of one key.
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

# ---- invalidate_tag through the tag index: 100k entries, 10 carry the tag ----

# Each run re-tags 10 entries, then times one cache_invalidate_tag (and, in
# the same loop, one cache_delete of a single key); the median of 200 runs
# counts.  Outside a transaction block, so each call applies at once.
out=$(cx_sql -F ' ' <<'SQL'
SELECT harden.cache_invalidate('cx:*') \gset
DO $$ BEGIN PERFORM harden.cache_set('cx:bulk:' || i, '1'::jsonb) FROM generate_series(1, 100000) i; END $$;
CREATE TEMP TABLE cx_tag (what text, us float8);
DO $$
DECLARE
    t timestamptz;
    n bigint;
BEGIN
    FOR run IN 1..200 LOOP
        PERFORM harden.cache_set('cx:hot:' || i, '1'::jsonb, tags => '{cx-hot}') FROM generate_series(1, 10) i;
        t := clock_timestamp();
        n := harden.cache_invalidate_tag('cx-hot');
        INSERT INTO cx_tag VALUES ('tag', 1e6 * extract(epoch FROM clock_timestamp() - t));
        IF n <> 10 THEN RAISE 'cache_invalidate_tag removed % of 10', n; END IF;
        PERFORM harden.cache_set('cx:one', '1'::jsonb);
        t := clock_timestamp();
        PERFORM harden.cache_delete('cx:one');
        INSERT INTO cx_tag VALUES ('delete', 1e6 * extract(epoch FROM clock_timestamp() - t));
    END LOOP;
END $$;
SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY us) FILTER (WHERE what = 'tag')::numeric, 1),
       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY us) FILTER (WHERE what = 'delete')::numeric, 1)
  FROM cx_tag;
SQL
)
read -r tag_us del_us <<<"$(tail -n1 <<<"$out")"
bench_record cache "invalidate_tag: 100k entries, 10 match" 1 "$tag_us" us "target <= 50 us; median of 200"
bench_record cache "cache_delete of one key" 1 "$del_us" us "median of 200, same loop"
printf '  %-40s %3s clients %10s us   %s\n' "invalidate_tag: 100k entries, 10 match" 1 "$tag_us" "target <= 50 us"
printf '  %-40s %3s clients %10s us\n' "cache_delete of one key" 1 "$del_us"
bench_sql -c "SELECT harden.cache_invalidate('cx:*')" >/dev/null
