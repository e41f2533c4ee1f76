# Automatic write tracking and per-value dependencies.
#
# 1. What tracking costs a write-heavy workload: pgbench's TPC-B-like
#    script with the hooks off (harden.cache_track = off, a restart), on
#    with nothing cached, and on with cache_query() results over each of
#    the four tables it writes (so every commit finds generations to move),
#    in the order ABCCBA ABCCBA; each row is the mean of its runs.
# 2. The listing mix of a shop: 95% category listings through cache_query()
#    (products watched by category_id), 5% price updates by id, against the
#    same mix uncached and with the table tracked but not by column.  After
#    each cached run every cached listing must equal the table's rows
#    (stale reads = 0).
# Sourced by run.sh: bench_record and bench_sql come from it.

CT_GROUP=cache_track
CT_DB=pgh_bench_ct
CT_SCALE=10
CT_DIR="$PGH_TMP/cache_track"
CT_TPCB="pgbench tpcb-like (scale $CT_SCALE)"
CT_CONF=("${BENCH_CONF[@]}")
mkdir -p "$CT_DIR"

ct_sql() { pgh_psql -d "$CT_DB" -At "$@"; }
ct_row() {
	bench_record "$CT_GROUP" "$1" "$2" "$3" "$4" "$5"
	printf '  %-48s %3s clients %10s %-4s %s\n' "$1" "$2" "$3" "$4" "$5"
}
ct_pgbench() {
	local clients=$1 out
	shift
	out=$(pgbench -c "$clients" -j $((clients < 2 ? clients : 2)) -T "$BENCH_SECONDS" "$@" "$CT_DB" 2>&1) \
		|| { echo "$out" >&2; pgh_die "pgbench failed: $*"; }
	CT_TPS=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' <<<"$out" | head -n1)
}
ct_restart() {
	pgh_cluster_stop
	pgh_cluster_start "${CT_CONF[@]}" "$@"
}
ct_mean() { awk '{ s = 0; for (i = 1; i <= NF; i++) s += $i; printf "%.0f", s / NF }' <<<"$*"; }
ct_runs() { local r=""; for v in "$@"; do r+="${r:+/}$(printf '%.0f' "$v")"; done; echo "$r"; }

pgh_createdb "$CT_DB" pg_harden
pgbench -i -q -s "$CT_SCALE" "$CT_DB" >/dev/null 2>&1 || pgh_die "pgbench -i failed"

# ---- 1. TPC-B-like: off / on, nothing cached / on, cached dependents ----
ct_cache_all() {
	local t
	for t in pgbench_accounts pgbench_branches pgbench_tellers pgbench_history; do
		ct_sql -c "SELECT harden.cache_query('ct.$t', 'SELECT count(*) AS n FROM $t')" >/dev/null
	done
}
ct_off=() ct_none=() ct_cached=()
for kind in off none cached cached none off off none cached cached none off; do
	case $kind in
		off) ct_restart "harden.cache_track = off" ;;
		*) [ "$(ct_sql -c "SHOW harden.cache_track")" = on ] || ct_restart ;;
	esac
	ct_sql -c "SELECT harden.cache_flush()" >/dev/null
	[ "$kind" = cached ] && ct_cache_all
	ct_pgbench 8 -b tpcb-like
	case $kind in
		off) ct_off+=("$CT_TPS") ;;
		none) ct_none+=("$CT_TPS") ;;
		cached) ct_cached+=("$CT_TPS")
			# The results over the written tables were invalidated.
			[ "$(ct_sql -c "SELECT harden.cache_query('ct.pgbench_history', 'SELECT count(*) AS n FROM pgbench_history')
				= jsonb_build_array(jsonb_build_object('n', (SELECT count(*) FROM pgbench_history)))")" = t ] \
				|| pgh_die "a cached count of pgbench_history survived the run" ;;
	esac
done
[ "$(ct_sql -c "SHOW harden.cache_track")" = on ] || ct_restart
ct_o=$(ct_mean "${ct_off[*]}") ct_n=$(ct_mean "${ct_none[*]}") ct_c=$(ct_mean "${ct_cached[*]}")
ct_row "$CT_TPCB, tracking off" 8 "$ct_o" tps "mean of 4 runs ($(ct_runs "${ct_off[@]}")), order ABCCBA ABCCBA"
ct_row "$CT_TPCB, tracking on, nothing cached" 8 "$ct_n" tps \
	"overhead $(awk -v a="$ct_n" -v b="$ct_o" 'BEGIN { printf "%.1f", 100 * (1 - a / b) }')% (target <= 2%); $(ct_runs "${ct_none[@]}")"
ct_row "$CT_TPCB, tracking on, cached dependents" 8 "$ct_c" tps \
	"overhead $(awk -v a="$ct_c" -v b="$ct_o" 'BEGIN { printf "%.1f", 100 * (1 - a / b) }')% (target <= 5%); $(ct_runs "${ct_cached[@]}")"

# ---- 2. the listing mix: 95% listings of a category, 5% price updates ----
ct_sql -c "DROP TABLE IF EXISTS ct_products;
	CREATE TABLE ct_products (id int PRIMARY KEY, category_id int NOT NULL, name text NOT NULL, price numeric NOT NULL);
	INSERT INTO ct_products SELECT g, g % 200, 'p' || g, g % 97 FROM generate_series(1, 20000) g;
	CREATE INDEX ON ct_products (category_id); ANALYZE ct_products;" >/dev/null
CT_LIST="SELECT id, name, price FROM ct_products WHERE category_id = \$1 ORDER BY id"
cat >"$CT_DIR/mix_plain.sql" <<EOF
\\set r random(1, 100)
\\set c random(0, 199)
\\set p random(1, 20000)
\\if :r <= 95
SELECT id, name, price FROM ct_products WHERE category_id = :c ORDER BY id;
\\else
UPDATE ct_products SET price = price + 1 WHERE id = :p;
\\endif
EOF
cat >"$CT_DIR/mix_cached.sql" <<EOF
\\set r random(1, 100)
\\set c random(0, 199)
\\set p random(1, 20000)
\\if :r <= 95
SELECT harden.cache_query('ct.cat.' || :c, '$CT_LIST', NULL, :c);
\\else
UPDATE ct_products SET price = price + 1 WHERE id = :p;
\\endif
EOF
# Every cached listing equals the table's rows now: stale reads.
ct_stale() {
	ct_sql -c "SELECT count(*) FROM generate_series(0, 199) c
		WHERE harden.cache_query('ct.cat.' || c, '$CT_LIST', NULL, c)
		   IS DISTINCT FROM (SELECT coalesce(jsonb_agg(to_jsonb(s) ORDER BY s.id), '[]')
		                       FROM (SELECT id, name, price FROM ct_products WHERE category_id = c) s)"
}
ct_hit_rate() {
	ct_sql -c "SELECT round(100.0 * hits / nullif(hits + misses, 0), 1) FROM harden.cache_stats"
}
ct_pgbench 8 -n -M prepared -f "$CT_DIR/mix_plain.sql"
ct_row "listing mix 95/5, uncached" 8 "$(printf '%.0f' "$CT_TPS")" tps ""
ct_plain_tps=$CT_TPS
for by in table value; do
	ct_sql -c "SELECT harden.cache_unwatch('ct_products')" >/dev/null
	[ "$by" = value ] && ct_sql -c "SELECT harden.cache_watch('ct_products', by => 'category_id')" >/dev/null
	ct_sql -c "SELECT harden.cache_flush()" -c "SELECT harden.cache_stats_reset()" >/dev/null
	ct_pgbench 8 -n -M prepared -f "$CT_DIR/mix_cached.sql"
	ct_rate=$(ct_hit_rate)
	ct_bad=$(ct_stale)
	if [ "$by" = value ]; then what="watched by category_id"; target=" (target >= 90%)"; else what="tracked per table"; target=""; fi
	ct_row "listing mix 95/5, cache_query, $what" 8 "$(printf '%.0f' "$CT_TPS")" tps \
		"hit rate $ct_rate%$target, stale reads $ct_bad; $(awk -v a="$CT_TPS" -v b="$ct_plain_tps" 'BEGIN { printf "%.2f", a / b }') x uncached"
	[ "$ct_bad" = 0 ] || pgh_die "listing mix: $ct_bad stale cached listings ($what)"
done
ct_sql -c "SELECT harden.cache_unwatch('ct_products')" -c "SELECT harden.cache_flush()" >/dev/null
pgh_psql -d postgres -c "DROP DATABASE IF EXISTS $CT_DB"
