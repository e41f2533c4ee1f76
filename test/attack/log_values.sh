# test/attack/log_values.sh: sourced by test/run.sh.  What reaches the
# server log ($PGH_TMP/server.log) of statements pg_harden runs for a
# caller: a cache_query() whose SQL fails, or raises a notice, under each
# harden.log_values setting, for secure and plain entries.  Each case puts
# a marker of its own in the statement's literals and scans the log for it.
# Prints TAP-like "ok"/"not ok" lines.

lv_check() {
	if "${@:2}"; then echo "ok - $1"; else echo "not ok - $1"; fi
}

# lv_run SETTING SQL: run SQL as a superuser with harden.log_values set;
# prints psql's stderr (verbose: with the SQLSTATE).
lv_run() {
	PGOPTIONS="-c harden.log_values=$1 -c log_min_messages=notice -c client_min_messages=notice" \
		psql -X -q -d pgh_logvalues -v VERBOSITY=verbose -c "$2" 2>&1 >/dev/null || true
}

lv_in_log() { grep -q -- "$1" "$PGH_TMP/server.log"; }
lv_not_in_log() { ! lv_in_log "$1"; }
lv_has() { case "$1" in *"$2"*) return 0 ;; *) echo "# got: $1"; return 1 ;; esac; }

run_log_values() {
	pgh_log "harden.log_values: server log scan"
	local log="$PGH_TMP/out/log_values.log" out m
	pgh_createdb pgh_logvalues pg_harden
	pgh_psql -d pgh_logvalues >/dev/null <<'SQL'
INSERT INTO harden.cache_policies (prefix, secure) VALUES ('lvsec:', true);
CREATE FUNCTION public.lv_notice() RETURNS int LANGUAGE plpgsql AS $$
BEGIN RAISE NOTICE 'lv notice from inside'; RETURN 1; END $$;
CREATE ROLE lv_user LOGIN;
SQL
	{
		m="lvmark$RANDOM"
		out=$(lv_run on "SELECT harden.cache_query('lvsec:a', 'SELECT 1/0 AS x WHERE ''${m}a'' <> ''''')")
		lv_check "a secure entry's failing query surfaces with its SQLSTATE and message" lv_has "$out" "22012: division by zero"
		lv_check "with log_values = on its text is not in the log" lv_not_in_log "${m}a"
		lv_check "and the error says why the statement is not shown" lv_has "$out" "harden.cache_query() statement (text not shown: secure entry)"

		out=$(lv_run on "SELECT harden.cache_query('lvplain:b', 'SELECT 1/0 AS x WHERE ''${m}b'' <> ''''')")
		lv_check "with log_values = on a plain entry's failing query is in the log (the scan sees it)" lv_in_log "${m}b"

		out=$(lv_run keys "SELECT harden.cache_query('lvplain:c', 'SELECT 1/0 AS x WHERE ''${m}c'' <> ''''')")
		lv_check "with log_values = keys: SQLSTATE and message" lv_has "$out" "22012: division by zero"
		lv_check "with log_values = keys a plain entry's text is not in the log" lv_not_in_log "${m}c"

		out=$(lv_run off "SELECT harden.cache_query('lvplain:d', 'SELECT 1/0 AS x WHERE ''${m}d'' <> ''''')")
		lv_check "with log_values = off a plain entry's text is not in the log" lv_not_in_log "${m}d"

		out=$(lv_run on "SELECT harden.cache_query('lvsec:e', 'SELEC ''${m}e''')")
		lv_check "a secure entry's syntax error: SQLSTATE 42601" lv_has "$out" "42601: syntax error"
		lv_check "and no QUERY line with its text, in the log or to the client" lv_not_in_log "${m}e"
		lv_check "nor to the client" eval '! lv_has "$out" "${m}e" >/dev/null'

		out=$(lv_run on "SELECT harden.cache_query('lvsec:f', 'SELECT public.lv_notice() AS n WHERE ''${m}f'' <> ''''')")
		lv_check "a notice raised inside a secure entry's query is logged" lv_in_log "lv notice from inside"
		lv_check "without the query's text" lv_not_in_log "${m}f"

		out=$(lv_run off "SELECT harden.cache_query('lvplain:g', \$q\$SELECT x::int FROM (VALUES ('1'), ('${m}g-literal')) v(x)\$q\$)")
		lv_check "an error whose message carries a value still has it (the user's own error)" lv_has "$out" "22P02: invalid input syntax for type integer"

		out=$(PGOPTIONS="-c harden.log_values=on" psql -X -q -U lv_user -d pgh_logvalues -v VERBOSITY=verbose \
			-c "SELECT 1" 2>&1 >/dev/null || true)
		lv_check "a role without superuser cannot turn harden.log_values on" lv_has "$out" "permission denied to set parameter \"harden.log_values\""
	} | tee "$log"
	record "log_values" 0 "$(grep -c '^ok ' "$log" || true)" "$(grep -c '^not ok ' "$log" || true)"
}

# State machines and stock with harden.log_values = keys / off: errors name
# the table and states, never the row's key (issue 18: no personal data).
run_log_values_rows() {
	pgh_log "harden.log_values: row keys in state-machine and stock errors"
	local log="$PGH_TMP/out/log_values_rows.log" out m="lvrow$RANDOM"
	pgh_psql -d pgh_logvalues >/dev/null <<SQL
CREATE TABLE lv_order (email text PRIMARY KEY, status text NOT NULL DEFAULT 'pending');
SELECT harden.fsm_attach('lv_order', 'status', 'order');
INSERT INTO lv_order VALUES ('${m}a@example.com'), ('${m}b@example.com'), ('${m}o@example.com');
CREATE TABLE lv_stock (sku text PRIMARY KEY, qty int NOT NULL);
SELECT harden.stock_attach('lv_stock', 'qty');
INSERT INTO lv_stock VALUES ('${m}c-sku', 5), ('${m}d-sku', 5), ('${m}p-sku', 5);
SQL
	{
		out=$(lv_run keys "UPDATE lv_order SET status = 'delivered' WHERE email = '${m}a@example.com'")
		lv_check "keys: an invalid transition names table and states, with its SQLSTATE" lv_has "$out" \
			'PH201: invalid transition for public.lv_order row (key redacted): "pending" -> "delivered"'
		lv_check "keys: the row's key is in neither the error nor the log" lv_not_in_log "${m}a"
		out=$(lv_run off "SELECT harden.fsm_fire('lv_order', to_jsonb('${m}b@example.com'::text), 'ship')")
		lv_check "off: fsm_fire's error redacts the key" lv_has "$out" "(key redacted) in state"
		lv_check "off: the key is not in the log" lv_not_in_log "${m}b"
		out=$(lv_run keys "SELECT harden.stock_take('lv_stock', '${m}c-sku'::text, 100)")
		lv_check "keys: insufficient stock keeps its SQLSTATE and counts" lv_has "$out" \
			"Key (key redacted): requested 100, available 5."
		lv_check "keys: the stock key is not in the log" lv_not_in_log "${m}c"
		out=$(lv_run off "SELECT harden.stock_take_many('lv_stock', ARRAY['${m}d-sku', '${m}x-sku'], ARRAY[1, 1])")
		lv_check "off: an unknown stock key is redacted" lv_has "$out" "has no row with key (key redacted)"
		lv_check "off: neither key is in the log" lv_not_in_log "${m}[dx]-sku"
		out=$(lv_run on "UPDATE lv_order SET status = 'delivered' WHERE email = '${m}o@example.com'")
		lv_check "on: the key is in the error and the log (the scan sees it)" lv_in_log "${m}o"
		out=$(lv_run on "SELECT harden.stock_take('lv_stock', '${m}p-sku'::text, 100)")
		lv_check "on: the stock key is in the log" lv_in_log "${m}p-sku"
	} | tee "$log"
	record "log_values rows" 0 "$(grep -c '^ok ' "$log" || true)" "$(grep -c '^not ok ' "$log" || true)"
}
