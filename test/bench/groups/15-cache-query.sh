# The query cache: harden.cache_query() hits next to the same queries run
# uncached (a GROUP BY over 1M rows; a 3-table join for one customer, 1 of
# 1000 at random, given as a parameter), what the first call (a miss)
# costs, and what watching a table costs a write-heavy workload: pgbench's
# TPC-B-like script with and without harden.cache_watch('pgbench_accounts'),
# in a database of its own.
# Sourced by run.sh: bench_pgbench, bench_record and bench_sql come from it.

CQ_GROUP=cache_query
CQ_DIR="$PGH_TMP/cache_query"
CQ_JOIN_KEYS=1000
CQ_TPCB_DB=pgh_bench_cq_tpcb
CQ_TPCB_SCALE=10
# Keys and SQL texts go into pgbench scripts, where ":name" is a variable
# even inside a string literal: no colon before a letter or digit in them.
CQ_AGG_KEY=cq.agg
CQ_AGG_SQL="SELECT grp, count(*) AS n, sum(amount) AS total FROM cq_facts GROUP BY grp ORDER BY grp"
CQ_JOIN_SQL="SELECT c.name, o.id AS order_id, o.ordered_at, l.product, l.qty, l.price
FROM cq_customers c JOIN cq_orders o ON o.customer_id = c.id JOIN cq_lines l ON l.order_id = o.id
WHERE c.id = \$1 AND l.qty >= 2 ORDER BY o.id, l.id"
CQ_JOIN_SQL=${CQ_JOIN_SQL//$'\n'/ }
CQ_AGG="GROUP BY over 1M rows"
CQ_JOIN="3-table join for 1 customer (20 rows)"
CQ_TPCB="pgbench tpcb-like (scale $CQ_TPCB_SCALE)"

cq_sql() { bench_sql -At "$@"; }
cq_ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
cq_misses() { cq_sql -c "SELECT misses FROM harden.cache_stats"; }
cq_tsql() { pgh_psql -d "$CQ_TPCB_DB" -At "$@"; }

# cq_row CASE CLIENTS VALUE UNIT NOTE: record a row and print it.
cq_row() {
	bench_record "$CQ_GROUP" "$1" "$2" "$3" "$4" "$5"
	printf '  %-40s %3s clients %10s %-4s %s\n' "$1" "$2" "$3" "$4" "$5"
}

# cq_pgbench DB CLIENTS PGBENCH-ARGS...: one run of BENCH_SECONDS with
# prepared statements and client threads as bench_pgbench's; tps in CQ_TPS.
cq_pgbench() {
	local db=$1 clients=$2 out
	shift 2
	out=$(pgbench -M prepared -c "$clients" -j $((clients < 2 ? clients : 2)) -T "$BENCH_SECONDS" \
		"$@" "$db" 2>&1) || { echo "$out" >&2; pgh_die "pgbench failed: $*"; }
	CQ_TPS=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' <<<"$out" | head -n1)
	[ -n "$CQ_TPS" ] || { echo "$out" >&2; pgh_die "no tps from pgbench: $*"; }
}

# cq_compare WHAT CLIENTS SCRIPT: SCRIPT.sql, the uncached query, then
# SCRIPT_cached.sql, its cache_query() call, which must hit on every
# transaction (a miss computes the result: not what the row measures).
cq_compare() {
	local what=$1 c=$2 script=$3 plain hit misses
	cq_pgbench "$BENCH_DB" "$c" -n -f "$CQ_DIR/$script.sql"
	plain=$CQ_TPS
	cq_row "uncached: $what" "$c" "$(printf '%.0f' "$plain")" tps ""
	misses=$(cq_misses)
	cq_pgbench "$BENCH_DB" "$c" -n -f "$CQ_DIR/${script}_cached.sql"
	hit=$CQ_TPS
	[ "$(cq_misses)" = "$misses" ] \
		|| pgh_die "cache_query missed during the hit benchmark: $what, $c clients ($misses misses before, $(cq_misses) after)"
	cq_row "cache_query hit: $what" "$c" "$(printf '%.0f' "$hit")" tps "$(cq_ratio "$hit" "$plain") x uncached"
}

cq_skip() {
	local r
	for r in "cache_query miss: $CQ_AGG" "uncached: $CQ_AGG" "cache_query hit: $CQ_AGG" \
		"uncached: $CQ_JOIN" "cache_query hit: $CQ_JOIN" \
		"$CQ_TPCB, no watched table" "$CQ_TPCB, pgbench_accounts watched"; do
		cq_row "$r" - skipped "" "$1"
	done
}

cq_missing=""
for f in 'harden.cache_query(text,text,interval)' 'harden.cache_query(text,text,interval,"any")' \
	'harden.cache_watch(regclass)' 'harden.cache_unwatch(regclass)'; do
	[ "$(cq_sql -c "SELECT to_regprocedure('$f') IS NOT NULL")" = t ] || cq_missing+=" $f"
done
if [ -n "$cq_missing" ]; then
	pgh_log "cache_query rows skipped: missing$cq_missing"
	cq_skip "missing:$cq_missing"
	return 0
fi

# ---- 1. setup: the data and the pgbench scripts ----

bench_sql <<'SQL'
DROP TABLE IF EXISTS cq_facts, cq_lines, cq_orders, cq_customers;
CREATE TABLE cq_facts (id bigint PRIMARY KEY, grp int NOT NULL, amount numeric NOT NULL);
INSERT INTO cq_facts SELECT i, i % 10, (i % 1000) / 100.0 FROM generate_series(1, 1000000) i;
-- Customer c has orders c, c + 10000, ... (10); order o has lines o,
-- o + 100000, o + 200000 with qty 1, 2, 3: 20 lines of qty >= 2 each.
CREATE TABLE cq_customers (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE cq_orders (id bigint PRIMARY KEY, customer_id int NOT NULL REFERENCES cq_customers,
                        ordered_at timestamptz NOT NULL);
CREATE TABLE cq_lines (id bigint PRIMARY KEY, order_id bigint NOT NULL REFERENCES cq_orders,
                       product text NOT NULL, qty int NOT NULL, price numeric(10,2) NOT NULL);
INSERT INTO cq_customers SELECT i, 'customer ' || i FROM generate_series(1, 10000) i;
INSERT INTO cq_orders SELECT i, (i - 1) % 10000 + 1, timestamptz '2024-01-01' + i * interval '1 minute'
    FROM generate_series(1, 100000) i;
INSERT INTO cq_lines SELECT i, (i - 1) % 100000 + 1, 'product ' || (i % 500), (i - 1) / 100000 + 1, (i % 997) / 10.0
    FROM generate_series(1, 300000) i;
CREATE INDEX ON cq_orders (customer_id);
CREATE INDEX ON cq_lines (order_id);
VACUUM ANALYZE cq_facts, cq_customers, cq_orders, cq_lines;
CHECKPOINT;
SQL

mkdir -p "$CQ_DIR"
printf '%s;\n' "$CQ_AGG_SQL" >"$CQ_DIR/agg.sql"
printf "SELECT harden.cache_query('%s', '%s');\n" "$CQ_AGG_KEY" "$CQ_AGG_SQL" >"$CQ_DIR/agg_cached.sql"
printf '\\set cid random(1, %d)\n%s;\n' "$CQ_JOIN_KEYS" "${CQ_JOIN_SQL//\$1/:cid}" >"$CQ_DIR/join.sql"
# An untyped parameter cannot be passed as "any": :cid::int, as the warm-up's.
printf "\\\\set cid random(1, %d)\nSELECT harden.cache_query('cq.join.' || :cid, '%s', NULL, :cid::int);\n" \
	"$CQ_JOIN_KEYS" "$CQ_JOIN_SQL" >"$CQ_DIR/join_cached.sql"

# ---- 2. the first call of each: a miss, checked against the query ----

# Best of 3 for the query alone (run 0 warms up) and for 3 misses on fresh
# keys; then the keys the hit benchmarks read, checked row for row.
bench_sql -c "SELECT harden.cache_flush()" >/dev/null
out=$(cq_sql -F ' ' -v sql="$CQ_AGG_SQL" -v key="$CQ_AGG_KEY" -v keys="$CQ_JOIN_KEYS" -v jsql="$CQ_JOIN_SQL" <<'SQL'
SELECT set_config('cq.sql', :'sql', false) IS NULL;
CREATE TEMP TABLE cq_miss (what text, ms float8);
DO $$
DECLARE
    q text := current_setting('cq.sql');
    t timestamptz;
BEGIN
    FOR run IN 0..3 LOOP
        t := clock_timestamp();
        EXECUTE q;
        IF run > 0 THEN
            INSERT INTO cq_miss VALUES ('query', 1000 * extract(epoch FROM clock_timestamp() - t));
            t := clock_timestamp();
            PERFORM harden.cache_query('cq.miss.' || run, q);
            INSERT INTO cq_miss VALUES ('miss', 1000 * extract(epoch FROM clock_timestamp() - t));
        END IF;
    END LOOP;
END $$;
SELECT harden.cache_query(:'key', :'sql') = (SELECT jsonb_agg(to_jsonb(s)) FROM (:sql) s);
SELECT harden.cache_query(:'key', :'sql') = (SELECT jsonb_agg(to_jsonb(s)) FROM (:sql) s);
SELECT count(*) FILTER (WHERE jsonb_array_length(harden.cache_query('cq.join.' || i, :'jsql', NULL, i)) = 20)
    FROM generate_series(1, :keys) i;
SELECT count(*) FROM harden.cache_entries WHERE key LIKE 'cq.join.%' AND deps IS NOT NULL;
SELECT round((SELECT min(ms) FROM cq_miss WHERE what = 'miss')::numeric, 1),
       round((SELECT min(ms) FROM cq_miss WHERE what = 'query')::numeric, 1);
SQL
)
{ read -r _; read -r agg_first; read -r agg_again; read -r join_rows; read -r join_entries; read -r miss_ms query_ms; } <<<"$out"
[ "$agg_first $agg_again" = "t t" ] \
	|| pgh_die "cache_query('$CQ_AGG_KEY') differs from the query's rows (miss: $agg_first, hit: $agg_again)"
[ "$join_rows" = "$CQ_JOIN_KEYS" ] \
	|| pgh_die "cache_query returned 20 join rows for $join_rows of $CQ_JOIN_KEYS customers"
[ "$join_entries" = "$CQ_JOIN_KEYS" ] \
	|| pgh_die "the cache holds $join_entries of the $CQ_JOIN_KEYS join results"
cq_row "cache_query miss: $CQ_AGG" 1 "$miss_ms" ms "the query alone: $query_ms ms (best of 3 each)"

# ---- 3, 4. one query per transaction: uncached, then cache_query hits ----

for c in 1 8; do
	cq_compare "$CQ_AGG" $c agg
	cq_compare "$CQ_JOIN" $c join
done

bench_sql -c "SELECT harden.cache_flush()" >/dev/null
bench_sql -c "DROP TABLE cq_facts, cq_lines, cq_orders, cq_customers"

# ---- 5. a watched table under pgbench's TPC-B-like writes ----

# Plain and watched runs in the order ABBA ABBA, so a drift over the runs
# weighs on both alike; pgbench's own pre-run vacuum (no -n) gives each run
# the same start.  Before each watched run a cache_query() result reads
# pgbench_accounts; after it, the result must be the table's current sum,
# or the watch did not invalidate it.
cq_tpcb_out=""
if ! cq_tpcb_out=$(pgh_createdb "$CQ_TPCB_DB" pg_harden 2>&1 &&
	pgbench -i -q -s "$CQ_TPCB_SCALE" "$CQ_TPCB_DB" 2>&1); then
	echo "$cq_tpcb_out" >&2
	cq_row "$CQ_TPCB, no watched table" - skipped "" "pgbench -i failed"
	cq_row "$CQ_TPCB, pgbench_accounts watched" - skipped "" "pgbench -i failed"
else
	cq_plain=()
	cq_watched=()
	cq_sum="SELECT sum(abalance) AS total FROM pgbench_accounts"
	for kind in plain watched watched plain plain watched watched plain; do
		if [ "$kind" = plain ]; then
			cq_pgbench "$CQ_TPCB_DB" 8 -b tpcb-like
			cq_plain+=("$CQ_TPS")
			continue
		fi
		cq_tsql -c "SELECT harden.cache_watch('pgbench_accounts')" >/dev/null
		[ "$(cq_tsql -c "SELECT count(*) FROM pg_trigger
			WHERE tgrelid = 'pgbench_accounts'::regclass AND tgname = 'harden_cache_watch'")" = 1 ] \
			|| pgh_die "cache_watch('pgbench_accounts') installed no harden_cache_watch trigger"
		cq_tsql -c "SELECT harden.cache_query('cq.tpcb', '$cq_sum')" >/dev/null
		cq_pgbench "$CQ_TPCB_DB" 8 -b tpcb-like
		cq_watched+=("$CQ_TPS")
		[ "$(cq_tsql -c "SELECT harden.cache_query('cq.tpcb', '$cq_sum') = jsonb_agg(to_jsonb(s))
			FROM ($cq_sum) s")" = t ] \
			|| pgh_die "cache_query('cq.tpcb') served a sum of pgbench_accounts older than the watched run"
		cq_tsql -c "SELECT harden.cache_unwatch('pgbench_accounts')" >/dev/null
	done
	read -r cq_p cq_w cq_pruns cq_wruns cq_ovh < <(awk -v p="${cq_plain[*]}" -v w="${cq_watched[*]}" 'BEGIN {
		np = split(p, a, " "); nw = split(w, b, " ")
		for (i = 1; i <= np; i++) { sp += a[i]; rp = rp (i > 1 ? "/" : "") sprintf("%.0f", a[i]) }
		for (i = 1; i <= nw; i++) { sw += b[i]; rw = rw (i > 1 ? "/" : "") sprintf("%.0f", b[i]) }
		printf "%.0f %.0f %s %s %.1f\n", sp / np, sw / nw, rp, rw, 100 * (1 - (sw / nw) / (sp / np))
	}')
	cq_row "$CQ_TPCB, no watched table" 8 "$cq_p" tps "mean of 4 runs ($cq_pruns), order ABBA ABBA with the watched"
	cq_row "$CQ_TPCB, pgbench_accounts watched" 8 "$cq_w" tps \
		"overhead $cq_ovh% (target <= 5%); mean of 4 runs ($cq_wruns)"
	cq_tsql -c "SELECT harden.cache_flush()" >/dev/null
fi
pgh_psql -d postgres -c "DROP DATABASE IF EXISTS $CQ_TPCB_DB"
