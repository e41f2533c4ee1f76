# Latency histograms: what timing costs.  The same build with
# harden.metrics_histograms on and off (a superuser setting, given per
# connection through PGOPTIONS): harden.cache_get() hits at 1 client (not
# timed at all: the two should be equal within noise; target <= 2%) and
# harden.stock_take() on 10 hot rows at 8 clients (timed, lock waits
# included).  The cases alternate ABBA and the better run of each counts.
# Sourced by run.sh: bench_record and bench_sql come from it.

HIST_KEYS=100000

bench_sql -At -v n="$HIST_KEYS" >/dev/null <<'SQL'
SELECT count(*) FROM (SELECT harden.cache_set('p:' || i, jsonb_build_object('v', repeat('x', 180)), ttl => interval '1 day')
                        FROM generate_series(1, :n) AS i) s;
DROP TABLE IF EXISTS bench_stock;
CREATE TABLE bench_stock (id int PRIMARY KEY, q bigint NOT NULL);
INSERT INTO bench_stock SELECT i, 1000000000000 FROM generate_series(1, 10) AS i;
DO $$ BEGIN PERFORM harden.stock_attach('bench_stock', 'q'); END $$;
VACUUM ANALYZE bench_stock;
SQL

# hist_tps CLIENTS SCRIPT on|off: tps of one pgbench run.
hist_tps() {
	local out
	out=$(PGOPTIONS="-c harden.metrics_histograms=$3" pgbench -n -M prepared -c "$1" -j $(($1 < 2 ? $1 : 2)) \
		-T "$BENCH_SECONDS" -f "$BENCH_DIR/$2" "$BENCH_DB" 2>&1) || { echo "$out" >&2; pgh_die "pgbench failed: $2"; }
	sed -n 's/^tps = \([0-9.]*\) .*/\1/p' <<<"$out" | head -n1
}

# hist_case NAME CLIENTS SCRIPT: ABBA (off, on, on, off), best of 2 each.
hist_case() {
	local name=$1 c=$2 script=$3 off=0 on=0 m note
	for m in off on on off; do
		local t
		t=$(hist_tps "$c" "$script" $m)
		if [ $m = on ]; then on=$(awk -v a="$on" -v b="$t" 'BEGIN { print (b > a ? b : a) }')
		else off=$(awk -v a="$off" -v b="$t" 'BEGIN { print (b > a ? b : a) }'); fi
	done
	note=$(awk -v a="$on" -v b="$off" 'BEGIN { printf "cost %.1f%% (target <= 2%%); best of 2, ABBA", (b - a) / b * 100 }')
	bench_record histograms "$name, histograms off" "$c" "$(printf '%.0f' "$off")" tps "best of 2, ABBA"
	bench_record histograms "$name, histograms on" "$c" "$(printf '%.0f' "$on")" tps "$note"
	printf '  %-40s %3s clients %10.0f tps\n' "$name, histograms off" "$c" "$off"
	printf '  %-40s %3s clients %10.0f tps  %s\n' "$name, histograms on" "$c" "$on" "$note"
}

hist_case "harden.cache_get() hit" 1 cache_get.sql
hist_case "harden.stock_take()" 8 stock_take.sql

# One backend, one statement: 1M cache_get hits in a SELECT, and 20,000
# stock_take in a DO block committing after each (a take per transaction,
# as in an application: repeated updates of a row in one transaction would
# make every take walk the row's versions).  Off and on alternate
# (ABBAABBA), the best time of each; less noise than pgbench on a busy machine.
# hist_loop_ms SQL on|off: milliseconds of one run of SQL.
hist_loop_ms() {
	bench_sql -At -v sql="$1" -v m="$2" <<'SQL' | tail -n1
SET harden.metrics_histograms = :m;
SELECT clock_timestamp() AS t0 \gset
:sql \g /dev/null
SELECT round(1000 * extract(epoch FROM clock_timestamp() - :'t0'::timestamptz), 1);
SQL
}

# hist_loop NAME SQL
hist_loop() {
	local name=$1 sql=$2 off=0 on=0 m t note
	for m in off on on off off on on off; do
		t=$(hist_loop_ms "$sql" $m)
		if [ $m = on ]; then on=$(awk -v a="$on" -v b="$t" 'BEGIN { print (a == 0 || b < a ? b : a) }')
		else off=$(awk -v a="$off" -v b="$t" 'BEGIN { print (a == 0 || b < a ? b : a) }'); fi
	done
	note=$(awk -v a="$on" -v b="$off" 'BEGIN { printf "cost %.1f%% (target <= 2%%); best of 4, ABBAABBA", (a - b) / b * 100 }')
	bench_record histograms "$name, histograms off" 1 "$off" ms "best of 4, ABBAABBA"
	bench_record histograms "$name, histograms on" 1 "$on" ms "$note"
	printf '  %-40s %10s ms\n' "$name, histograms off" "$off"
	printf '  %-40s %10s ms  %s\n' "$name, histograms on" "$on" "$note"
}

hist_loop "1M cache_get hits in one SELECT" \
	"SELECT count(harden.cache_get('p:' || (1 + i % $HIST_KEYS))) FROM generate_series(1, 1000000) i"
hist_loop "20k stock_take, one per transaction" \
	"DO \$\$ BEGIN FOR i IN 1..20000 LOOP PERFORM harden.stock_take('bench_stock', 1 + i % 10, 1); COMMIT; END LOOP; END \$\$"
