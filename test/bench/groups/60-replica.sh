# Hot standbys and harden.cache_wal.
#
# 1. What cache_wal costs the primary: pgbench's TPC-B-like script with it
#    off and on (ALTER SYSTEM and a reload), in the order ABBA ABBA; mean
#    tps per setting, and the WAL bytes per transaction from
#    pg_current_wal_insert_lsn() before and after each run.
# 2. Explicit invalidations: the WAL bytes of one cache_delete outside a
#    transaction block (10,000 in a DO block), and a pgbench script of
#    deletes with cache_wal off and on (ABBA).
# 3. What a standby's cache gives: a streaming hot standby of the bench
#    cluster (cache_wal on in both), the listing mix of 16-cache-track split
#    between the servers: category listings on the standby (8 clients),
#    uncached and through cache_query(), while a second pgbench updates
#    prices on the primary at a rate that makes writes about 5% of all
#    operations.  Reports the read tps, the standby's hit rate, and the
#    cached listings that differ from the table once the standby has
#    replayed everything (stale reads, must be 0).
# The standby is removed and cache_wal is off again at the end.
# Sourced by run.sh: bench_record comes from it.

source "$PGH_ROOT/test/replica/lib.sh"

RB_GROUP=replica
RB_DB=pgh_bench_rb
RB_SCALE=10
RB_DIR="$PGH_TMP/replica_bench"
RB_STANDBY=rb_standby
RB_TPCB="pgbench tpcb-like (scale $RB_SCALE)"
mkdir -p "$RB_DIR"

rb_p() { pgh_psql -d "$RB_DB" -At "$@"; }
rb_s() { pgh_psql -h "$PGH_STANDBY_HOST" -p "$PGH_STANDBY_PORT" -d "$RB_DB" -At "$@"; }
rb_row() {
	bench_record "$RB_GROUP" "$1" "$2" "$3" "$4" "$5"
	printf '  %-66s %3s clients %10s %-8s %s\n' "$1" "$2" "$3" "$4" "$5"
}
rb_mean() { awk '{ s = 0; for (i = 1; i <= NF; i++) s += $i; printf "%.0f", s / NF }' <<<"$*"; }
rb_runs() { local r="" v; for v in "$@"; do r+="${r:+/}$(printf '%.0f' "$v")"; done; echo "$r"; }
rb_pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", 100 * (1 - a / b) }'; }
rb_lsn() { rb_p -c "SELECT pg_current_wal_insert_lsn()"; }
rb_wal_since() { rb_p -c "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '$1')::bigint"; }

# rb_pgbench CLIENTS [pgbench args...]: sets RB_TPS and RB_XACTS.
rb_pgbench() {
	local clients=$1 out
	shift
	out=$(pgbench -c "$clients" -j $((clients < 2 ? clients : 2)) -T "$BENCH_SECONDS" "$@" 2>&1) \
		|| { echo "$out" >&2; pgh_die "pgbench failed: $*"; }
	RB_TPS=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' <<<"$out" | head -n1)
	RB_XACTS=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out")
}

# rb_cache_wal on|off: a reload, then wait until new sessions see it (the
# postmaster handles SIGHUP asynchronously).
rb_cache_wal() {
	rb_p -c "ALTER SYSTEM SET harden.cache_wal = $1" -c "SELECT pg_reload_conf()" >/dev/null
	rb_wait_wal "$1"
}
rb_wait_wal() {
	local deadline=$((SECONDS + 20))
	while [ "$(rb_p -c "SELECT current_setting('harden.cache_wal')")" != "$1" ]; do
		[ $SECONDS -lt $deadline ] || pgh_die "harden.cache_wal did not become $1"
		sleep 0.1
	done
}

pgh_createdb "$RB_DB" pg_harden
pgbench -i -q -s "$RB_SCALE" "$RB_DB" >/dev/null 2>&1 || pgh_die "pgbench -i failed"

# ---- 1. TPC-B-like with cache_wal off / on ----
# rb_walstats LSN0 LSN1: "record-bytes fpi-bytes harden-records
# harden-bytes" between the two positions (pg_waldump --stats), once the
# walwriter has flushed the end (synchronous_commit is off).  The full-page
# images after a checkpoint depend on how many pages a run touches first,
# and swamp the ~100 bytes cache_wal adds; the record bytes do not.
rb_walstats() {
	local deadline=$((SECONDS + 20)) out
	while [ "$(rb_p -c "SELECT pg_current_wal_flush_lsn() >= '$2'")" != t ]; do
		[ $SECONDS -lt $deadline ] || pgh_die "the WAL up to $2 was not flushed"
		sleep 0.1
	done
	out=$(pgh_as_server "$(pgh_bindir)/pg_waldump" --stats=rmgr -p "$PGH_TMP/data/pg_wal" -s "$1" -e "$2" 2>&1) \
		|| { echo "$out" >&2; pgh_die "pg_waldump failed"; }
	# The percentages in () and [] go; then: name count record fpi combined.
	sed 's/([^)]*)//g; s/\[[^]]*\]//g' <<<"$out" | awk -v id="custom$RB_RMGR" '
		$1 == "Total" { rec = $3; fpi = $4 }
		$1 == id || $1 == "pg_harden" { hn = $2; hb = $3 }
		END { printf "%d %d %d %d\n", rec, fpi, hn, hb }'
}
RB_RMGR=$(rb_p -c "SELECT current_setting('harden.cache_rmgr_id')")

# A checkpoint and a warm-up of three runs' length first: most pages have
# had their full-page image by then, so that the runs compared start more
# alike (the first still takes the most).
rb_cache_wal off
rb_p -c "CHECKPOINT" >/dev/null
BENCH_SECONDS=$((BENCH_SECONDS * 3)) rb_pgbench 8 -n -b tpcb-like "$RB_DB"
declare -A rb_tps=() rb_wal=() rb_sum=()
for setting in off on on off off on on off; do
	rb_cache_wal "$setting"
	rb_lsn0=$(rb_lsn)
	rb_pgbench 8 -n -b tpcb-like "$RB_DB"
	rb_lsn1=$(rb_lsn)
	rb_b=$(rb_p -c "SELECT pg_wal_lsn_diff('$rb_lsn1', '$rb_lsn0')::bigint")
	read -r rb_rec rb_fpi rb_hn rb_hb <<<"$(rb_walstats "$rb_lsn0" "$rb_lsn1")"
	rb_tps[$setting]+=" $RB_TPS"
	rb_wal[$setting]+=" $(awk -v b="$rb_b" -v x="$RB_XACTS" 'BEGIN { printf "%.0f", b / x }')"
	# Sums per setting: transactions, LSN bytes, record bytes, FPI bytes,
	# pg_harden records and their bytes.
	read -r -a rb_v <<<"${rb_sum[$setting]:-0 0 0 0 0 0}"
	rb_sum[$setting]="$((rb_v[0] + RB_XACTS)) $((rb_v[1] + rb_b)) $((rb_v[2] + rb_rec)) $((rb_v[3] + rb_fpi)) $((rb_v[4] + rb_hn)) $((rb_v[5] + rb_hb))"
done
rb_off=$(rb_mean "${rb_tps[off]}") rb_on=$(rb_mean "${rb_tps[on]}")
# shellcheck disable=SC2086 # the lists are space-separated on purpose
rb_row "$RB_TPCB, cache_wal off" 8 "$rb_off" tps "mean of 4 runs ($(rb_runs ${rb_tps[off]})), order ABBA ABBA"
# shellcheck disable=SC2086
rb_row "$RB_TPCB, cache_wal on" 8 "$rb_on" tps \
	"overhead $(rb_pct "$rb_on" "$rb_off")% (target <= 3%); mean of 4 runs ($(rb_runs ${rb_tps[on]}))"
# rb_per SETTING FIELD: bytes (or records) per transaction over its runs.
rb_per() {
	local -a v
	read -r -a v <<<"${rb_sum[$1]}"
	awk -v n="${v[$2]}" -v x="${v[0]}" 'BEGIN { printf "%.0f", n / x }'
}
read -r -a rb_v <<<"${rb_sum[on]}"
rb_hrec=$(awk -v n="${rb_v[4]}" -v x="${rb_v[0]}" 'BEGIN { printf "%.2f", n / x }')
rb_hsize=$(awk -v n="${rb_v[4]}" -v b="${rb_v[5]}" 'BEGIN { printf "%.0f", n ? b / n : 0 }')
for setting in off on; do
	rb_row "$RB_TPCB, WAL per transaction, cache_wal $setting" 8 "$(rb_per "$setting" 1)" bytes \
		"records $(rb_per "$setting" 2) + full-page images $(rb_per "$setting" 3); runs:${rb_wal[$setting]}"
done
rb_row "$RB_TPCB, WAL added per invalidating transaction" 8 "$(($(rb_per on 2) - $(rb_per off 2)))" bytes \
	"record bytes on minus off; pg_harden records: $rb_hrec per transaction, $rb_hsize bytes each; all WAL on minus off: $(($(rb_per on 1) - $(rb_per off 1)))"

# ---- 2. explicit invalidations ----
# Outside a transaction block each cache_delete is logged at once, one
# record each; the keys need not exist (the standby may hold them).
rb_del_bytes() {
	local lsn0
	lsn0=$(rb_lsn)
	rb_p -c "DO \$\$ BEGIN FOR i IN 1..10000 LOOP PERFORM harden.cache_delete('rb.del.' || i); END LOOP; END \$\$" >/dev/null
	awk -v b="$(rb_wal_since "$lsn0")" 'BEGIN { printf "%.1f", b / 10000 }'
}
rb_cache_wal off
rb_del_off=$(rb_del_bytes)
rb_cache_wal on
rb_del_on=$(rb_del_bytes)
rb_row "cache_delete outside a transaction block, cache_wal on" 1 "$rb_del_on" bytes \
	"WAL per call, 10000 calls in one DO block (keys of 8-12 bytes); off: $rb_del_off"
cat >"$RB_DIR/delete.sql" <<'EOF'
\set n random(1, 100000)
SELECT harden.cache_delete('k' || :n);
EOF
declare -A rb_dtps=()
for setting in off on on off; do
	rb_cache_wal "$setting"
	rb_pgbench 8 -n -M prepared -f "$RB_DIR/delete.sql" "$RB_DB"
	rb_dtps[$setting]+=" $RB_TPS"
done
rb_doff=$(rb_mean "${rb_dtps[off]}") rb_don=$(rb_mean "${rb_dtps[on]}")
# shellcheck disable=SC2086
rb_row "pgbench cache_delete of a random key, cache_wal off" 8 "$rb_doff" tps "mean of 2 runs ($(rb_runs ${rb_dtps[off]})), order ABBA"
# shellcheck disable=SC2086
rb_row "pgbench cache_delete of a random key, cache_wal on" 8 "$rb_don" tps \
	"overhead $(rb_pct "$rb_don" "$rb_doff")%; mean of 2 runs ($(rb_runs ${rb_dtps[on]}))"

# ---- 3. the listing mix on a hot standby ----
rb_p -c "DROP TABLE IF EXISTS rb_products;
	CREATE TABLE rb_products (id int PRIMARY KEY, category_id int NOT NULL, name text NOT NULL, price numeric NOT NULL);
	INSERT INTO rb_products SELECT g, g % 200, 'p' || g, g % 97 FROM generate_series(1, 20000) g;
	CREATE INDEX ON rb_products (category_id); ANALYZE rb_products;
	SELECT harden.cache_watch('rb_products', by => 'category_id');" >/dev/null
rb_cache_wal on
# The primary's own endpoint setting is copied by pg_basebackup: the standby
# must not try its port.  Feedback keeps the primary's pruning from
# cancelling the standby's reads.
pgh_standby_start "$RB_STANDBY" "harden.cache_wal = on" "harden.resp_listen = ''" "hot_standby_feedback = on"
pgh_standby_wait_replay || pgh_die "the standby did not catch up"
[ "$(rb_s -c "SELECT current_setting('harden.cache_wal')")" = on ] || pgh_die "harden.cache_wal is off on the standby"

RB_LIST="SELECT id, name, price FROM rb_products WHERE category_id = \$1 ORDER BY id"
cat >"$RB_DIR/read_plain.sql" <<'EOF'
\set c random(0, 199)
SELECT id, name, price FROM rb_products WHERE category_id = :c ORDER BY id;
EOF
cat >"$RB_DIR/read_cached.sql" <<EOF
\\set c random(0, 199)
SELECT harden.cache_query('rb.cat.' || :c, '$RB_LIST', NULL, :c);
EOF
cat >"$RB_DIR/write.sql" <<'EOF'
\set p random(1, 20000)
UPDATE rb_products SET price = price + 1 WHERE id = :p;
EOF
rb_stale() {
	rb_s -c "SELECT count(*) FROM generate_series(0, 199) c
		WHERE harden.cache_query('rb.cat.' || c, '$RB_LIST', NULL, c)
		   IS DISTINCT FROM (SELECT coalesce(jsonb_agg(to_jsonb(s) ORDER BY s.id), '[]')
		                       FROM (SELECT id, name, price FROM rb_products WHERE category_id = c) s)"
}
rb_stats() { rb_s -c "SELECT hits || ' ' || misses FROM harden.cache_stats"; }
rb_standby_bench() { rb_pgbench 8 -n -M prepared -h "$PGH_STANDBY_HOST" -p "$PGH_STANDBY_PORT" -f "$RB_DIR/read_$1.sql" "$RB_DB"; }

# Writes are 5/95 of the reads: the write rate (-R) of a kind's first run
# comes from its reads alone, that of its second from the reads of its
# first, which the concurrent writes slowed (the note gives the share each
# run actually had).
rb_rate_of() { awk -v r="$1" 'BEGIN { w = r * 5 / 95; printf "%.0f", w < 1 ? 1 : w }'; }
declare -A rb_rate=() rb_rates=() rb_rtps=() rb_wtps=() rb_share=()
for kind in plain cached; do
	rb_standby_bench "$kind"
	rb_rate[$kind]=$(rb_rate_of "$RB_TPS")
done
rb_hits=0 rb_misses=0 rb_bad=0 rb_bad_runs=""
for kind in plain cached cached plain; do
	read -r rb_h0 rb_m0 <<<"$(rb_stats)"
	pgbench -n -M prepared -c 2 -j 1 -R "${rb_rate[$kind]}" -T "$BENCH_SECONDS" \
		-f "$RB_DIR/write.sql" "$RB_DB" >"$RB_DIR/write.out" 2>&1 &
	rb_wpid=$!
	rb_standby_bench "$kind"
	rb_r=$RB_TPS
	wait "$rb_wpid" || { cat "$RB_DIR/write.out" >&2; pgh_die "the writing pgbench failed"; }
	rb_w=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$RB_DIR/write.out" | head -n1)
	rb_rtps[$kind]+=" $rb_r" rb_wtps[$kind]+=" $rb_w" rb_rates[$kind]+="${rb_rates[$kind]:+/}${rb_rate[$kind]}"
	rb_rate[$kind]=$(rb_rate_of "$rb_r")
	rb_share[$kind]+="${rb_share[$kind]:+/}$(awk -v r="$rb_r" -v w="$rb_w" 'BEGIN { printf "%.1f", 100 * w / (r + w) }')"
	if [ "$kind" = cached ]; then
		read -r rb_h1 rb_m1 <<<"$(rb_stats)"
		rb_hits=$((rb_hits + rb_h1 - rb_h0)) rb_misses=$((rb_misses + rb_m1 - rb_m0))
		# Stale reads: everything replayed, every cached listing must
		# equal the table's rows.
		pgh_standby_wait_replay || pgh_die "the standby did not replay the writes"
		rb_n=$(rb_stale)
		rb_bad=$((rb_bad + rb_n)) rb_bad_runs+="${rb_bad_runs:+/}$rb_n"
	fi
done
# shellcheck disable=SC2086
rb_note() {
	echo "mean of 2 runs ($(rb_runs ${rb_rtps[$1]})); writes on the primary $(rb_runs ${rb_wtps[$1]}) tps (-R ${rb_rates[$1]}), write share ${rb_share[$1]}%"
}
rb_plain=$(rb_mean "${rb_rtps[plain]}") rb_cached=$(rb_mean "${rb_rtps[cached]}")
rb_row "standby listing mix 95/5, reads uncached" 8 "$rb_plain" tps "$(rb_note plain)"
rb_row "standby listing mix 95/5, reads via cache_query" 8 "$rb_cached" tps \
	"$(awk -v a="$rb_cached" -v b="$rb_plain" 'BEGIN { printf "%.2f", a / b }') x uncached; $(rb_note cached)"
rb_row "standby cache hit rate" 8 \
	"$(awk -v h="$rb_hits" -v m="$rb_misses" 'BEGIN { printf "%.1f", h + m ? 100 * h / (h + m) : 0 }')" "%" \
	"hits $rb_hits, misses $rb_misses over the 2 cached runs (target >= 90%)"
rb_row "standby stale reads after replay" 8 "$rb_bad" listings \
	"of 200 categories, per cached run: $rb_bad_runs (must be 0)"
[ "$rb_bad" = 0 ] || echo "  warning: $rb_bad cached listings on the standby differ from its table after replay" >&2

# Stop and remove the standby; the primary goes on as later groups expect it.
pgh_replica_cleanup
rm -rf "${PGH_TMP:?}/$RB_STANDBY" "$PGH_TMP/$RB_STANDBY.sock"
rb_p -c "ALTER SYSTEM RESET harden.cache_wal" -c "SELECT pg_reload_conf()" >/dev/null
rb_wait_wal off
pgh_psql -d postgres -c "DROP DATABASE IF EXISTS $RB_DB"
