# Stock: harden.stock_take next to the raw UPDATE ... WHERE q >= n on 10 hot
# rows at 8 and 32 clients; then 16 clients placing random 1-5-line orders
# with stock_take_many against a naive per-line UPDATE in random order:
# orders/s, deadlocks, retries, oversold units and the stock invariant,
# first with stock that never runs out, then selling out a small stock.
# Deadlocks are counted by the server (pg_stat_database) and retried by
# pgbench (--max-tries); each one stalls its rows for deadlock_timeout.
# Sourced by run.sh: bench_record and bench_sql come from it.
# STOCK_ORDER_SECONDS (default 7.5 x BENCH_SECONDS: 60 s) is the length of
# each order run.

STOCK_ORDER_SECONDS=${STOCK_ORDER_SECONDS:-$((BENCH_SECONDS * 15 / 2))}
STOCK_ORDER_CLIENTS=16
STOCK_PRODUCTS=20
STOCK_TAKE="harden.stock_take()"
STOCK_RAW="raw UPDATE ... WHERE q >= n"

stock_sql() { bench_sql -At "$@"; }

# ---- 1. single-row takes on 10 hot rows ----

bench_sql <<'SQL'
DROP TABLE IF EXISTS bench_stock;
CREATE TABLE bench_stock (id int PRIMARY KEY, q bigint NOT NULL);
INSERT INTO bench_stock SELECT i, 1000000000000 FROM generate_series(1, 10) AS i;
DO $$ BEGIN PERFORM harden.stock_attach('bench_stock', 'q'); END $$;
VACUUM ANALYZE bench_stock;
SQL
# stock_tps CLIENTS SCRIPT: tps of one pgbench run.
stock_tps() {
	local out
	out=$(pgbench -n -M prepared -c "$1" -j $(($1 < 2 ? $1 : 2)) -T "$BENCH_SECONDS" \
		-f "$BENCH_DIR/$2" "$BENCH_DB" 2>&1) || { echo "$out" >&2; pgh_die "pgbench failed: $2"; }
	sed -n 's/^tps = \([0-9.]*\) .*/\1/p' <<<"$out" | head -n1
}

# The two cases alternate twice and the better run of each counts: on a
# shared machine one run alone is too noisy for a ratio near 1.
for c in 8 32; do
	stock_raw_tps=0
	stock_take_tps=0
	for _ in 1 2; do
		stock_raw_tps=$(awk -v a="$stock_raw_tps" -v b="$(stock_tps $c stock_raw_update.sql)" 'BEGIN { print (b > a ? b : a) }')
		stock_take_tps=$(awk -v a="$stock_take_tps" -v b="$(stock_tps $c stock_take.sql)" 'BEGIN { print (b > a ? b : a) }')
	done
	stock_note=$(awk -v a="$stock_take_tps" -v b="$stock_raw_tps" 'BEGIN { printf "%.2f x raw UPDATE (target >= 0.90)", a / b }')
	bench_record stock "$STOCK_RAW" $c "$(printf '%.0f' "$stock_raw_tps")" tps "best of 2"
	bench_record stock "$STOCK_TAKE" $c "$(printf '%.0f' "$stock_take_tps")" tps "$stock_note; best of 2"
	printf '  %-40s %3s clients %10.0f tps  best of 2\n' "$STOCK_RAW" $c "$stock_raw_tps"
	printf '  %-40s %3s clients %10.0f tps  %s\n' "$STOCK_TAKE" $c "$stock_take_tps" "$stock_note"
done

# ---- 2. multi-line orders ----

# Each order is 1-5 random lines of 1-3 units over $STOCK_PRODUCTS rows.
# The harden order takes every line or none; the naive one updates line by
# line in the order given, committing whatever lines found stock.  Both log
# what they sold, so sold can be checked against what left the table.
bench_sql -v products="$STOCK_PRODUCTS" <<'SQL'
DROP TABLE IF EXISTS bench_order_stock, bench_naive_stock, bench_sold, bench_orders, bench_initial;
CREATE TABLE bench_order_stock (id int PRIMARY KEY, q bigint NOT NULL);
CREATE TABLE bench_naive_stock (id int PRIMARY KEY, q bigint NOT NULL CHECK (q >= 0));
CREATE TABLE bench_sold (method text NOT NULL, id int NOT NULL, units bigint NOT NULL);
CREATE TABLE bench_initial (method text NOT NULL, id int NOT NULL, q bigint NOT NULL);
-- One row per order: lines asked for, lines that got stock.
CREATE TABLE bench_orders (method text NOT NULL, lines int NOT NULL, filled int NOT NULL);
INSERT INTO bench_order_stock SELECT i, 0 FROM generate_series(1, :products) AS i;
INSERT INTO bench_naive_stock SELECT i, 0 FROM generate_series(1, :products) AS i;
DO $$ BEGIN PERFORM harden.stock_attach('bench_order_stock', 'q'); END $$;

CREATE OR REPLACE FUNCTION bench_order_lines(OUT keys int[], OUT qtys bigint[]) LANGUAGE sql AS $$
  SELECT array_agg(1 + floor(random() * (SELECT count(*) FROM bench_naive_stock))::int),
         array_agg(1 + floor(random() * 3)::bigint)
    FROM generate_series(1, 1 + floor(random() * 5)::int)
$$;
CREATE OR REPLACE FUNCTION bench_order_harden() RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
  o record;
BEGIN
  o := bench_order_lines();
  PERFORM harden.stock_take_many('bench_order_stock', o.keys, o.qtys);
  INSERT INTO bench_sold SELECT 'harden', k, n FROM unnest(o.keys, o.qtys) AS u(k, n);
  INSERT INTO bench_orders VALUES ('harden', cardinality(o.keys), cardinality(o.keys));
  RETURN true;
EXCEPTION WHEN sqlstate 'PH301' THEN
  INSERT INTO bench_orders VALUES ('harden', cardinality(o.keys), 0);
  RETURN false;
END $$;
CREATE OR REPLACE FUNCTION bench_order_naive() RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
  o record;
  filled int := 0;
BEGIN
  o := bench_order_lines();
  FOR i IN 1 .. cardinality(o.keys) LOOP
    UPDATE bench_naive_stock SET q = q - o.qtys[i] WHERE id = o.keys[i] AND q >= o.qtys[i];
    IF FOUND THEN
      INSERT INTO bench_sold VALUES ('naive', o.keys[i], o.qtys[i]);
      filled := filled + 1;
    END IF;
  END LOOP;
  INSERT INTO bench_orders VALUES ('naive', cardinality(o.keys), filled);
  RETURN filled = cardinality(o.keys);
END $$;
SQL

# stock_reset UNITS: every row of both tables at UNITS, logs emptied.
stock_reset() {
	stock_sql -v units="$1" <<'SQL' >/dev/null
UPDATE bench_order_stock SET q = :units;
UPDATE bench_naive_stock SET q = :units;
TRUNCATE bench_sold, bench_initial, bench_orders;
INSERT INTO bench_initial SELECT 'harden', id, q FROM bench_order_stock
                          UNION ALL SELECT 'naive', id, q FROM bench_naive_stock;
VACUUM ANALYZE bench_order_stock, bench_naive_stock, bench_sold;
SQL
}

# stock_check METHOD TABLE: "oversold sold refused partial invariant":
# oversold is what was logged as sold beyond what left the table (per row);
# refused orders got nothing, partial ones some of their lines; the
# invariant is initial = on hand + sold, for every row.
stock_check() {
	stock_sql -F ' ' -v method="$1" -v tbl="$2" <<'SQL'
WITH per_row AS (
  SELECT i.id, i.q AS initial, s.q AS on_hand,
         coalesce((SELECT sum(units) FROM bench_sold WHERE method = :'method' AND id = i.id), 0) AS sold
    FROM bench_initial i JOIN :tbl s USING (id) WHERE i.method = :'method'
)
SELECT sum(greatest(sold - (initial - on_hand), 0)), sum(sold),
       (SELECT count(*) FROM bench_orders WHERE method = :'method' AND filled = 0),
       (SELECT count(*) FROM bench_orders WHERE method = :'method' AND filled > 0 AND filled < lines),
       CASE WHEN bool_and(initial = on_hand + sold) THEN 'holds' ELSE 'BROKEN' END
       || CASE WHEN bool_or(on_hand < 0) THEN ',negative-stock' ELSE '' END
  FROM per_row;
SQL
}

stock_deadlocks() { stock_sql -c "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"; }

# stock_orders METHOD TABLE SCRIPT LABEL: one order run; records orders/s,
# deadlocks (server counter), retries and failures (pgbench), oversold.
stock_orders() {
	local method=$1 tbl=$2 script=$3 label=$4 out d0 d1 tps retried failed sold oversold refused partial inv note
	d0=$(stock_deadlocks)
	out=$(pgbench -n -M prepared -c "$STOCK_ORDER_CLIENTS" -j 2 -T "$STOCK_ORDER_SECONDS" \
		--max-tries=100 -f "$BENCH_DIR/$script" "$BENCH_DB" 2>&1) \
		|| { echo "$out" >&2; pgh_die "pgbench failed: $label"; }
	sleep 1	# let the ended backends flush their statistics
	d1=$(stock_deadlocks)
	tps=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' <<<"$out" | head -n1)
	retried=$(sed -n 's/^number of transactions retried: \([0-9]*\).*/\1/p' <<<"$out")
	failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' <<<"$out")
	read -r oversold sold refused partial inv <<<"$(stock_check "$method" "$tbl")"
	note="deadlocks $((d1 - d0)), retried ${retried:-0}, failed ${failed:-0}; oversold $oversold; sold $sold units; refused $refused, partial $partial orders; invariant $inv"
	bench_record stock "$label" "$STOCK_ORDER_CLIENTS" "$(printf '%.0f' "$tps")" orders/s "$note"
	printf '  %-40s %3s clients %10.0f orders/s  %s\n' "$label" "$STOCK_ORDER_CLIENTS" "$tps" "$note"
}

pgh_log "orders: ${STOCK_ORDER_SECONDS}s per run, $STOCK_ORDER_CLIENTS clients, $STOCK_PRODUCTS products"
# Plenty of stock: throughput and deadlocks.
stock_reset 1000000000
stock_orders harden bench_order_stock stock_order_harden.sql "orders: harden.stock_take_many()"
stock_orders naive bench_naive_stock stock_order_naive.sql "orders: naive per-line UPDATE"
# A small stock sold out: every unit sold once, none twice, and the orders
# that came too late refused whole.  (The naive orders are too slow to sell
# anything out in the same time.)
stock_reset 500
stock_orders harden bench_order_stock stock_order_harden.sql "sell-out: harden.stock_take_many()"
