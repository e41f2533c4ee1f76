# test/metrics/scrape.sh: sourced by test/run.sh on the preloaded cluster.
#
# A real scrape.  Starts prometheus-postgres-exporter (the Debian package)
# with prometheus/pg_harden.yaml against a database that used every
# feature, on a free loopback port, fetches /metrics with curl, and checks:
# the whole page is valid Prometheus text exposition (every line a HELP,
# TYPE, comment or sample line of the format, one TYPE per family before its
# samples, a family's samples together, no series twice; promtool check
# metrics too when the prometheus package happens to be installed); every
# family harden.metrics() lists is there with the same type; counters end
# in _total; the labels are the documented ones; histograms have cumulative
# buckets with the documented bounds ending in +Inf, a _sum and a _count
# equal to the +Inf bucket, and moved for the calls made; and the values
# equal those of harden.metric_rows.  Prints TAP-like "ok"/"not ok" lines.

sc_db=pgh_scrape
sc_check() {
	local what=$1
	shift
	if "$@" >"$PGH_TMP/out/scrape-check.out" 2>&1; then
		echo "ok - $what"
	else
		echo "not ok - $what"
		sed 's/^/# /' "$PGH_TMP/out/scrape-check.out" | head -n 40
	fi
}

# sc_valid_exposition FILE: Prometheus text format 0.0.4, line by line.
sc_valid_exposition() {
	local name='[a-zA-Z_:][a-zA-Z0-9_:]*' lname='[a-zA-Z_][a-zA-Z0-9_]*' lval='"([^"\\]|\\.)*"'
	local num='[-+]?((([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?)|NaN|Inf)'
	local sample="^$name(\{($lname=$lval(,$lname=$lval)*,?)?\})? $num( -?[0-9]+)?\$"
	local bad
	bad=$(grep -Ev -e "$sample" -e "^# HELP $name( .*)?\$" \
		-e "^# TYPE $name (counter|gauge|histogram|summary|untyped)\$" \
		-e '^#( .*)?$' -e '^$' "$1" || true)
	[ -z "$bad" ] || { echo "lines that are not of the format:"; echo "$bad"; return 1; }
	[ -s "$1" ] || { echo "empty page"; return 1; }
	awk '
		/^# TYPE / { if (type[$3]++) { print "two TYPE lines for " $3; bad = 1 }
		             if ($3 in seen) { print "TYPE after samples for " $3; bad = 1 } next }
		/^#/ || /^$/ { next }
		{
			key = $0; sub(/ [^ ]+( -?[0-9]+)?$/, "", key)
			if (key in series) { print "series twice: " key; bad = 1 }
			series[key] = 1
			n = key; sub(/\{.*/, "", n)
			fam = n; sub(/_(bucket|sum|count)$/, "", fam)
			if (!(fam in type) && !(n in type)) fam = n
			if (fam != last && (fam in seen)) { print "samples of " fam " not together"; bad = 1 }
			seen[fam] = 1; last = fam
		}
		END { exit bad }' "$1"
}

# The families and types of harden.metric_rows against the page (a
# histogram's rows are named by series: _bucket, _sum, _count).
sc_same_families() {
	local page=$1 fam type missing=0
	while IFS='|' read -r fam type; do
		[ "$type" != histogram ] || fam=${fam%_bucket} fam=${fam%_sum} fam=${fam%_count}
		if ! grep -qx "# TYPE $fam $type" "$page"; then
			echo "missing or of another type: $fam ($type)"
			missing=1
		fi
	done < <(pgh_psql -At -d "$sc_db" -c "SELECT DISTINCT name, type FROM harden.metric_rows ORDER BY 1")
	[ "$missing" = 0 ]
}

sc_conventions() {
	local page=$1 bad
	# counters end in _total; only documented labels (and the exporter's server)
	bad=$(grep -E '^# TYPE harden_[a-z_]+ counter$' "$page" | grep -Ev '_total counter$' || true)
	[ -z "$bad" ] || { echo "counters not ending in _total:"; echo "$bad"; return 1; }
	bad=$(grep -E '^harden_' "$page" | grep -oE '[{,][a-z_]+=' | tr -d '{,=' | sort -u \
		| grep -Evx 'database|machine|check|severity|version|item|server|le' || true)
	[ -z "$bad" ] || { echo "undocumented labels:"; echo "$bad"; return 1; }
	grep -q '^harden_worker_up{database="pgh_scrape",' "$page" || { echo "no harden_worker_up for pgh_scrape"; return 1; }
}

# Histograms: for every family of type histogram and every label set, the
# buckets are those of docs/metrics.md in order, cumulative, the last is
# +Inf, and _count equals it; _sum is there.  The families of the
# operations run here (stock_take, transitions, worker runs) have a series
# for the scrape database with a positive count and sum.
sc_histograms() {
	local page=$1 fams
	fams=$(sed -n 's/^# TYPE \(harden_[a-z_]*\) histogram$/\1/p' "$page")
	[ "$(echo "$fams" | wc -w)" -ge 4 ] || { echo "histogram families: $fams"; return 1; }
	awk -v fams="$fams" -v db="$sc_db" '
		BEGIN {
			n = split(fams, f, /[ \n]+/); for (i = 1; i <= n; i++) ishist[f[i]] = 1
			want = "0.0001 0.00025 0.0005 0.001 0.0025 0.005 0.01 0.025 0.05 0.1 0.25 0.5 1 2.5 5 10 +Inf"
		}
		/^#/ { next }
		{
			name = $1; sub(/\{.*/, "", name)
			fam = name; sub(/_(bucket|sum|count)$/, "", fam)
			if (!(fam in ishist)) next
			labels = $1; sub(/^[^{]*/, "", labels)
			le = ""
			if (match(labels, /le="[^"]*"/)) le = substr(labels, RSTART + 4, RLENGTH - 5)
			key = labels; gsub(/,?le="[^"]*"/, "", key); sub(/\{,/, "{", key)
			id = fam key; v = $2 + 0
			if (name ~ /_bucket$/) {
				if ((id in last) && v < last[id]) { print "bucket below the one before: " $0; bad = 1 }
				last[id] = v; bounds[id] = bounds[id] (bounds[id] == "" ? "" : " ") le; inf[id] = (le == "+Inf") ? v : -1
			} else if (name ~ /_count$/) { count[id] = v; counted[id] = 1 }
			else if (name ~ /_sum$/) { sum[id] = v; summed[id] = 1 }
		}
		END {
			for (id in bounds) {
				if (bounds[id] != want) { print "buckets of " id ": " bounds[id]; bad = 1 }
				if (!(id in counted) || count[id] != inf[id]) { print "_count is not the +Inf bucket: " id; bad = 1 }
				if (!(id in summed)) { print "no _sum: " id; bad = 1 }
				# cache_query misses are shown moving by sql/metrics_histograms.sql
				if (index(id, "database=\"" db "\"") && id !~ /^harden_cache_query_/ && (count[id] < 1 || sum[id] <= 0)) {
					print "nothing observed in " id; bad = 1
				}
				fam = id; sub(/\{.*/, "", fam); seen[fam] = 1
			}
			for (fam in ishist) if (!(fam in seen)) { print "no series: " fam; bad = 1 }
			exit bad
		}' "$page"
}

# Values: the page's series, without the exporter's server label (labels
# are sorted by name on both sides), against harden.metric_rows read right
# after the scrape; stable families only (scrapes_total and the worker's
# series move by themselves).
sc_same_values() {
	local page=$1 want got
	want=$(pgh_psql -At -d "$sc_db" -c "
		SELECT name || coalesce('{' || (SELECT string_agg(format('%s=\"%s\"', k, v), ',' ORDER BY k)
		                                  FROM jsonb_each_text(labels) l(k, v)) || '}', '') || ' ' || value
		  FROM harden.metric_rows
		 WHERE name ~ '^harden_(cache|fsm|stock)_' AND labels ->> 'database' = '$sc_db'
		    OR name IN ('harden_info', 'harden_health_findings')" | awk '{ v = $NF + 0; $NF = ""; print $0 v }' | LC_ALL=C sort)
	got=$(grep -E '^harden_((cache|fsm|stock)_[a-z_]+\{.*database="'"$sc_db"'"|info\{|health_findings\{)' "$page" \
		| sed -E 's/,?server="[^"]*"//; s/\{,/{/' | awk '{ v = $NF + 0; $NF = ""; print $0 v }' | LC_ALL=C sort)
	[ -n "$want" ] && [ "$got" = "$want" ] || { echo "exporter:"; echo "$got"; echo "metric_rows:"; echo "$want"; return 1; }
}

# harden.metric_rows has a row for every series line of harden.metrics():
# per family, as many series and the same sum of values (to 6 decimals:
# sums of seconds are added in another order on each side).
sc_rows_match() {
	diff <(pgh_psql -At -d "$sc_db" -c "
		SELECT substring(line from '^[a-z_]+') AS name, count(*), round(sum(substring(line from '[^ ]+\$')::float8)::numeric, 6)
		  FROM regexp_split_to_table(harden.metrics(), E'\\n') line
		 WHERE line ~ '^harden_' AND line !~ '^harden_(metrics_scrapes_total|worker_)' GROUP BY 1 ORDER BY 1") \
	     <(pgh_psql -At -d "$sc_db" -c "
		SELECT name, count(*), round(sum(value)::numeric, 6) FROM harden.metric_rows
		 WHERE name !~ '^harden_(metrics_scrapes_total|worker_)' GROUP BY 1 ORDER BY 1")
}

run_scrape() {
	local log="$PGH_TMP/out/scrape.log" page="$PGH_TMP/out/scrape.txt" port pid rc=0 n
	pgh_log "a real scrape (prometheus-postgres-exporter)"
	(
		pgh_createdb "$sc_db" pg_harden
		pgh_psql -d "$sc_db" >/dev/null <<'SQL'
SELECT harden.cache_set('scrape:a', '{"a": 1}'::jsonb);
SELECT harden.cache_get('scrape:a'), harden.cache_get('scrape:missing');
CREATE TABLE orders (id int PRIMARY KEY, status text NOT NULL DEFAULT 'pending');
SELECT harden.fsm_attach('orders', 'status', 'order');
INSERT INTO orders VALUES (1), (2);
SELECT harden.fsm_fire('orders', '1', 'pay');
CREATE TABLE product (id int PRIMARY KEY, stock int NOT NULL);
INSERT INTO product VALUES (1, 10);
SELECT harden.stock_attach('product', 'stock');
SELECT harden.stock_take('product', 1, 3);
CREATE TABLE big (id int PRIMARY KEY, v text);
CREATE INDEX big_v ON big (v);
CREATE INDEX big_v_again ON big (v);
SELECT count(*) FROM harden.health_report();
SQL
		[ $? -eq 0 ] || echo "not ok - a database using every feature"
		# The worker must have run in this database for its series (and its
		# histogram: a run has completed).
		local deadline=$((SECONDS + 20))
		until [ "$(pgh_psql -At -d "$sc_db" -c "SELECT count(*) FILTER (WHERE name = 'harden_worker_up') > 0
			AND coalesce(sum(value) FILTER (WHERE name = 'harden_worker_run_duration_seconds_count'), 0) > 0
			FROM harden.metric_rows WHERE labels ->> 'database' = '$sc_db'")" = t ] \
			|| [ $SECONDS -gt $deadline ]; do sleep 0.2; done
		port=$(pgh_free_port)
		DATA_SOURCE_NAME="host=$PGHOST port=$PGPORT user=postgres dbname=$sc_db sslmode=disable" \
			prometheus-postgres-exporter --web.listen-address="127.0.0.1:$port" \
			--extend.query-path="$PGH_ROOT/prometheus/pg_harden.yaml" \
			--disable-default-metrics --disable-settings-metrics >"$PGH_TMP/out/exporter.log" 2>&1 &
		pid=$!
		trap 'kill $pid 2>/dev/null || true' EXIT
		deadline=$((SECONDS + 20))
		until curl -sf "http://127.0.0.1:$port/metrics" -o "$page" && grep -q '^harden_info' "$page" \
			|| [ $SECONDS -gt $deadline ]; do sleep 0.3; done
		sc_check "the exporter serves /metrics with the pg_harden series" grep -q '^harden_cache_sets_total{' "$page"
		sc_check "the page is valid Prometheus text exposition" sc_valid_exposition "$page"
		if command -v promtool >/dev/null; then
			sc_check "promtool check metrics accepts the pg_harden series" \
				bash -c "grep -E '^(# (HELP|TYPE) )?harden_' '$page' | promtool check metrics"
		fi
		sc_check "every family of harden.metrics() is scraped, with its type" sc_same_families "$page"
		sc_check "counters end in _total, labels are the documented ones" sc_conventions "$page"
		sc_check "histograms: documented cumulative buckets to +Inf, _count is +Inf, observed" sc_histograms "$page"
		sc_check "the scraped values are those of harden.metric_rows" sc_same_values "$page"
		sc_check "harden.metric_rows has one row per series of harden.metrics()" sc_rows_match
		kill $pid 2>/dev/null || true
		wait $pid 2>/dev/null || true
		pgh_psql -d postgres -c "DROP DATABASE $sc_db" >/dev/null
	) >"$log" 2>&1 || rc=$?
	cat "$log"
	n=$(grep -c '^ok ' "$log" || true)
	record "scrape" $rc "$n" "$(grep -c '^not ok ' "$log" || true)"
}
