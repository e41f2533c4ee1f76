#!/usr/bin/env bash
# Upgrade-path test, run by test/run.sh against its running cluster (PGHOST,
# PGPORT, PGUSER set).  Prints TAP-like "ok"/"not ok" lines; exits non-zero
# on any failure.
#
# Two independent install paths are compared.  A fresh install of the newest
# version runs one script, pg_harden--<newest>.sql, built from
# sql/pg_harden.sql.  An upgrade runs the frozen 0.1.0 script and the chain of
# upgrade scripts.  For every older version (each full script's and each
# upgrade script's target): install it, go up the chain one ALTER EXTENSION
# ... UPDATE TO at a time, and compare the extension's objects, definitions,
# comments, privileges and shipped rows with the fresh install; a difference
# names the objects.
#
# Before each step the database gets user objects for what that version
# offers: a view over every pg_harden view, a view calling a pg_harden
# function, a role with grants on pg_harden functions and a view, cache
# entries and a policy, a table attached to a machine of the user's with
# audit rows and a timer, a stock table with a held reservation, a watched
# table with a cached result.  After each step they must all still exist
# and be readable, the grants and every config table's rows and sequences
# be unchanged; after the last step they must still work.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

newest=$(sed -n "s/^default_version *= *'\(.*\)'/\1/p" "$root/pg_harden.control")
app=pgh_upgrade_app
psql_q() { PGOPTIONS="-c client_min_messages=warning" psql -X -q -v ON_ERROR_STOP=1 "$@"; }
sql() { local db=$1; shift; psql_q -At -d "$db" "$@"; }

n=0
status=0
ok() { echo "ok - $*"; }
not_ok() { echo "not ok - $*"; status=1; }
check() { # check DESCRIPTION COMMAND...: ok when the command succeeds
	local what=$1; shift
	if "$@" >"$tmp/check.out" 2>&1; then ok "$what"; else not_ok "$what"; sed 's/^/# /' "$tmp/check.out"; fi
}

# Everything that makes up the installed extension, one "kind name<TAB>
# definition" record per object (newlines in definitions escaped), sorted.
# Grants to the test's role are left out: they are user objects.
snapshot() {
	psql_q -At -d "$1" -v app="$app" >"$2.raw" <<'SQL'
CREATE TEMP TABLE snap (k text, v text);
SELECT set_config('upgrade.app', :'app', false) \g /dev/null
CREATE FUNCTION pg_temp.acl(a aclitem[]) RETURNS text LANGUAGE sql AS
  $$SELECT coalesce((SELECT string_agg(x::text, ',' ORDER BY x::text) FROM unnest(a) x
                      WHERE x::text NOT LIKE current_setting('upgrade.app') || '=%'), 'default')$$;
INSERT INTO snap SELECT 'extversion', extversion FROM pg_extension WHERE extname = 'pg_harden';
INSERT INTO snap SELECT 'member ' || pg_describe_object(classid, objid, objsubid), ''
  FROM pg_depend
 WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
   AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'pg_harden');
INSERT INTO snap SELECT 'function ' || p.oid::regprocedure, pg_get_functiondef(p.oid)
       || ' acl ' || pg_temp.acl(p.proacl) || ' comment ' || coalesce(obj_description(p.oid, 'pg_proc'), '')
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'harden' AND p.prokind IN ('f', 'p');
INSERT INTO snap SELECT 'relation ' || c.oid::regclass, c.relkind::text || ' acl ' || pg_temp.acl(c.relacl)
       || ' options ' || coalesce(c.reloptions::text, '') || ' comment '
       || coalesce(obj_description(c.oid, 'pg_class'), '') || coalesce(' ' || pg_get_viewdef(c.oid), '')
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'harden';
INSERT INTO snap SELECT 'column ' || a.attrelid::regclass || '.' || a.attname,
       a.attnum || ' ' || format_type(a.atttypid, a.atttypmod)
       || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
       || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '')
       || ' acl ' || pg_temp.acl(a.attacl)
  FROM pg_attribute a
  JOIN pg_class c ON c.oid = a.attrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
 WHERE n.nspname = 'harden' AND a.attnum > 0 AND NOT a.attisdropped;
INSERT INTO snap SELECT 'constraint ' || conrelid::regclass || ' ' || pg_get_constraintdef(oid), ''
  FROM pg_constraint
 WHERE connamespace = 'harden'::regnamespace;
INSERT INTO snap SELECT 'index ' || pg_get_indexdef(indexrelid), ''
  FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
 WHERE c.relnamespace = 'harden'::regnamespace;
INSERT INTO snap SELECT 'trigger ' || t.tgrelid::regclass || ' ' || t.tgname, pg_get_triggerdef(t.oid)
  FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
 WHERE c.relnamespace = 'harden'::regnamespace AND NOT t.tgisinternal;
INSERT INTO snap SELECT 'event trigger ' || evtname, evtevent || ' ' || evtfoid::regproc || ' ' || coalesce(evttags::text, '')
  FROM pg_event_trigger e
  JOIN pg_depend d ON d.classid = 'pg_event_trigger'::regclass AND d.objid = e.oid AND d.deptype = 'e';
INSERT INTO snap SELECT 'type ' || t.oid::regtype, t.typtype::text
  FROM pg_type t WHERE t.typnamespace = 'harden'::regnamespace AND t.typrelid = 0 AND t.typelem = 0;
INSERT INTO snap SELECT 'config ' || c.oid::regclass, coalesce(e.extcondition[i], '')
  FROM pg_extension e, unnest(e.extconfig) WITH ORDINALITY AS u(cfg, i)
  JOIN pg_class c ON c.oid = u.cfg
 WHERE e.extname = 'pg_harden';
INSERT INTO snap SELECT 'shipped machine ' || machine, rules FROM harden.fsm_machines WHERE shipped;
INSERT INTO snap SELECT 'shipped state ' || machine || ' ' || state, position || ' ' || initial || ' ' || terminal
  FROM harden.fsm_states WHERE machine IN (SELECT machine FROM harden.fsm_machines WHERE shipped);
INSERT INTO snap SELECT 'shipped transition ' || machine || ' ' || from_state || ' ' || to_state,
       coalesce(event, '') || ' ' || coalesce(after::text, '') || ' ' || position
  FROM harden.fsm_transitions WHERE machine IN (SELECT machine FROM harden.fsm_machines WHERE shipped);
SELECT k || E'\t' || replace(coalesce(v, ''), E'\n', '\n') FROM snap ORDER BY 1;
SQL
	LC_ALL=C sort "$2.raw" >"$2"
}

# compare LABEL FRESH UPGRADED: ok, or not ok naming every differing object.
compare() {
	local label=$1
	if cmp -s "$2" "$3"; then ok "$label equals a fresh install"; return; fi
	not_ok "$label differs from a fresh install"
	awk -F '\t' '
		FNR == NR { a[$1] = $0; next }
		{ b[$1] = $0 }
		END {
			for (k in a) if (!(k in b)) print "#   only in a fresh install (missing from the upgrade scripts): " k
			for (k in b) if (!(k in a)) print "#   only after the upgrade (missing from sql/pg_harden.sql): " k
			for (k in a) if ((k in b) && a[k] != b[k]) {
				print "#   differs: " k
				print "#     fresh:    " substr(a[k], 1, 600)
				print "#     upgraded: " substr(b[k], 1, 600)
			}
		}' "$2" "$3"
}

fresh_db() {
	psql_q -d postgres -c "DROP DATABASE IF EXISTS \"$1\"" -c "CREATE DATABASE \"$1\""
}

has() { [ "$(sql "$1" -c "SELECT to_regprocedure('$2') IS NOT NULL")" = t ]; }

# User objects for what the installed version offers.  Idempotent: run
# before every step, it adds what the last step made available.
populate() {
	local db=$1
	sql "$db" -v app="$app" <<'SQL'
SELECT format('GRANT USAGE ON SCHEMA harden TO %I', :'app') \gexec
GRANT EXECUTE ON FUNCTION harden.metrics_reset() TO :"app";
CREATE OR REPLACE VIEW public.upg_fn_version AS SELECT harden.version() AS v, harden.metrics() IS NOT NULL AS m;
GRANT SELECT ON public.upg_fn_version TO :"app";
CREATE TABLE IF NOT EXISTS public.upg_views (view text, over text);
-- A view over every pg_harden view, once.
SELECT format('CREATE VIEW public.%I AS SELECT * FROM harden.%I', 'upg_v_' || c.relname, c.relname),
       format('GRANT SELECT ON public.%I TO %I', 'upg_v_' || c.relname, :'app'),
       format('INSERT INTO public.upg_views VALUES (%L, %L)', 'public.upg_v_' || c.relname, c.relname)
  FROM pg_class c
 WHERE c.relnamespace = 'harden'::regnamespace AND c.relkind = 'v' AND c.relname NOT LIKE '\_%'
   AND to_regclass('public.upg_v_' || c.relname) IS NULL
\gexec
SQL
	if has "$db" 'harden.cache_set(text,jsonb,interval,text[],boolean,boolean)'; then
		sql "$db" -v app="$app" <<'SQL'
GRANT EXECUTE ON FUNCTION harden.cache_flush() TO :"app";
INSERT INTO harden.cache_policies VALUES ('upg:', '1 hour', '1 day', false) ON CONFLICT DO NOTHING;
SELECT harden.cache_set('upg:plain', '{"kept": true}'::jsonb, tags => '{upg}') WHERE NOT harden.cache_exists('upg:plain');
SQL
	fi
	if has "$db" 'harden.fsm_define(text,text,text)'; then
		sql "$db" -v app="$app" <<'SQL'
GRANT EXECUTE ON FUNCTION harden.fsm_run_due(integer) TO :"app";
CREATE TABLE IF NOT EXISTS public.upg_ticket (id int PRIMARY KEY, status text NOT NULL DEFAULT 'new');
SELECT harden.fsm_define('upg_ticket', 'new -> open on start; open -> done on close; open -> stale after 1 day')
 WHERE NOT EXISTS (SELECT FROM harden.fsm_machines WHERE machine = 'upg_ticket');
SELECT harden.fsm_attach('upg_ticket', 'status', 'upg_ticket')
 WHERE NOT EXISTS (SELECT FROM harden.fsm_attached WHERE relid = 'public.upg_ticket'::regclass);
INSERT INTO public.upg_ticket VALUES (1), (2) ON CONFLICT DO NOTHING;
UPDATE public.upg_ticket SET status = 'open' WHERE id = 1 AND status = 'new';
SQL
	fi
	if has "$db" 'harden.stock_attach(regclass,name,name)'; then
		sql "$db" -v app="$app" <<'SQL'
GRANT EXECUTE ON FUNCTION harden.stock_run_due(integer) TO :"app";
CREATE TABLE IF NOT EXISTS public.upg_stock (id int PRIMARY KEY, qty int NOT NULL);
INSERT INTO public.upg_stock VALUES (1, 100), (2, 50) ON CONFLICT DO NOTHING;
SELECT harden.stock_attach('upg_stock', 'qty')
 WHERE NOT EXISTS (SELECT FROM harden.stock_tables WHERE relid = 'public.upg_stock'::regclass);
SELECT harden.stock_reserve('upg_stock', ARRAY[1, 2], ARRAY[3, 4], ttl => '1 day', ref => 'upg')
 WHERE NOT EXISTS (SELECT FROM harden.stock_holds WHERE ref = 'upg');
SELECT harden.cache_watch('upg_stock')
 WHERE NOT EXISTS (SELECT FROM pg_trigger WHERE tgrelid = 'public.upg_stock'::regclass AND tgname = 'harden_cache_watch');
SELECT harden.cache_query('upg:qty', 'SELECT qty FROM public.upg_stock WHERE id = 1');
SQL
	fi
}

# What must not change across a step: the user's objects, grants, the rows
# of every config table and the config sequences' positions.  Rows about the
# extension's own tables (a step may attach a machine to one) do not count,
# nor do the columns a step appends to a config table (named here, each
# added with NULL or a default: fsm_log.forced, fsm_due.next_try and
# stock_holds.next_try in 0.5.0).
kept_state() {
	sql "$1" -v app="$app" <<'SQL'
SELECT 'view ' || view || ' ' || has_table_privilege(:'app', view, 'SELECT') FROM public.upg_views ORDER BY 1;
SELECT 'fn-grant ' || p.oid::regprocedure || ' ' || has_function_privilege(:'app', p.oid, 'EXECUTE')
  FROM pg_proc p, aclexplode(p.proacl) a
 WHERE p.pronamespace = 'harden'::regnamespace AND a.grantee = :'app'::regrole ORDER BY 1;
SELECT 'config ' || c.oid::regclass || ' ' ||
       CASE WHEN c.relkind = 'S' THEN (xpath('/row/l/text()',
                 query_to_xml(format('SELECT last_value AS l FROM %s', c.oid::regclass), false, true, '')))[1]::text
            ELSE (xpath('/row/m/text()', query_to_xml(
                 format('SELECT md5(coalesce(string_agg((to_jsonb(t) - ARRAY[''forced'', ''next_try''])::text, '',''
                         ORDER BY (to_jsonb(t) - ARRAY[''forced'', ''next_try''])::text), '''')) AS m FROM %s t'
                        ' WHERE coalesce(to_jsonb(t)->>''relid'', '''') NOT LIKE ''harden.%%''',
                        c.oid::regclass), false, true, '')))[1]::text END
  FROM pg_extension e, unnest(e.extconfig) u(cfg) JOIN pg_class c ON c.oid = u.cfg
 WHERE e.extname = 'pg_harden' ORDER BY 1;
SQL
	if has "$1" 'harden.cache_get(text)'; then sql "$1" -c "SELECT 'cache ' || harden.cache_get('upg:plain')::text"; fi
}

kept() {
	local lost
	lost=$(LC_ALL=C comm -23 <(LC_ALL=C sort "$1") <(LC_ALL=C sort "$2"))
	[ -z "$lost" ] || { echo "lost or changed:"; echo "$lost"; echo "now:"; cat "$2"; return 1; }
	[ -s "$1" ]
}

# Every user view still answers, as the granted role too.
views_answer() {
	local db=$1 v
	for v in $(sql "$db" -c "SELECT view FROM public.upg_views UNION ALL SELECT 'public.upg_fn_version'"); do
		sql "$db" -c "SET ROLE $app" -c "SELECT count(*) FROM $v" >/dev/null || { echo "$v"; return 1; }
	done
}

# The user's objects still work after the last step.
works_fsm() {
	local db=$1
	sql "$db" <<'SQL'
DO $$
BEGIN
  UPDATE public.upg_ticket SET status = 'done' WHERE id = 2;
  RAISE EXCEPTION 'a transition the machine forbids was accepted';
EXCEPTION WHEN SQLSTATE 'PH201' THEN NULL;
END $$;
SELECT harden.fsm_fire('upg_ticket', '1', 'close');
SELECT 1 / (count(*) = 1)::int FROM harden.fsm_log WHERE table_name = 'public.upg_ticket' AND to_state = 'done';
SELECT 1 / (count(*) = 1)::int FROM harden.fsm_attachments WHERE table_name = 'public.upg_ticket'::regclass;
SQL
}
# The role still runs the admin functions it was granted.
works_grants() {
	sql "$1" -c "SET ROLE $app" -c "SELECT harden.metrics_reset()" -c "SELECT harden.cache_flush()" >/dev/null
}
works_stock() {
	local db=$1
	sql "$db" <<'SQL'
SELECT 1 / (harden.cache_query('upg:qty', 'SELECT qty FROM public.upg_stock WHERE id = 1') = '[{"qty": 97}]')::int;
SELECT 1 / (harden.stock_take('upg_stock', 1, 7) = 90)::int;
-- the watch still invalidates: the cached result follows the take
SELECT 1 / (harden.cache_query('upg:qty', 'SELECT qty FROM public.upg_stock WHERE id = 1') = '[{"qty": 90}]')::int;
SELECT 1 / (harden.stock_release_ref('upg') = 1)::int;
SELECT 1 / (qty = 93)::int FROM public.upg_stock WHERE id = 1;
SQL
}

# The 0.2.0 -> 0.3.0 script drops and recreates cache_stats and
# cache_entries: with views of the user's over them it must fail, naming
# them, and change nothing; then the steps docs/upgrading.md gives work.
step_with_dependent_views() {
	local db=$1 to=$2 deps stats_deps
	# Views over each, qualified as the error's DETAIL names them.
	local q="SELECT string_agg(DISTINCT format('%I.%I', n.nspname, v.relname), ' ')
	  FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid JOIN pg_class v ON v.oid = r.ev_class
	  JOIN pg_namespace n ON n.oid = v.relnamespace
	 WHERE d.classid = 'pg_rewrite'::regclass AND v.oid <> d.refobjid AND d.refobjid IN"
	deps=$(sql "$db" -c "$q ('harden.cache_stats'::regclass, 'harden.cache_entries'::regclass)")
	stats_deps=$(sql "$db" -c "$q ('harden.cache_stats'::regclass)")
	if sql "$db" -c "ALTER EXTENSION pg_harden UPDATE TO '$to'" >"$tmp/err" 2>&1; then
		not_ok "0.2.0 -> $to with views over cache_stats and cache_entries fails, naming them"
		return
	fi
	# PostgreSQL stops at the first view it cannot drop, cache_stats.
	local named=1 v
	for v in $stats_deps; do grep -q "view $v depends on" "$tmp/err" || named=0; done
	if [ "$named" = 1 ] && [ -n "$deps" ] \
		&& [ "$(sql "$db" -c "SELECT extversion FROM pg_extension WHERE extname = 'pg_harden'")" = 0.2.0 ]; then
		ok "0.2.0 -> $to with views over cache_stats and cache_entries fails, naming $stats_deps, and changes nothing"
	else
		not_ok "0.2.0 -> $to with views over cache_stats and cache_entries fails, naming them"
		sed 's/^/# /' "$tmp/err"
	fi
	# The documented way through: keep definitions and grants, drop,
	# update, recreate, in one transaction.
	{
		echo "BEGIN;"
		for v in $deps; do
			echo "DROP VIEW $v;"
		done
		echo "ALTER EXTENSION pg_harden UPDATE TO '$to';"
		for v in $deps; do
			echo "CREATE VIEW $v AS $(sql "$db" -c "SELECT pg_get_viewdef('$v')")"
			sql "$db" -c "SELECT format('GRANT %s ON $v TO %I;', a.privilege_type, a.grantee::regrole)
			  FROM pg_class c, aclexplode(c.relacl) a
			 WHERE c.oid = '$v'::regclass AND a.grantee <> c.relowner"
		done
		echo "COMMIT;"
	} >"$tmp/workaround.sql"
	check "0.2.0 -> $to after dropping and recreating the dependent views (docs/upgrading.md)" \
		sql "$db" -f "$tmp/workaround.sql"
}

# ---------------------------------------------------------------------------

sql postgres -c "DO \$\$BEGIN CREATE ROLE $app; EXCEPTION WHEN duplicate_object THEN NULL; END\$\$"

# The fresh install runs the full script alone: it is the built copy of
# sql/pg_harden.sql, and a version the chain reaches too.
sharedir=$(sql postgres -c "SELECT setting FROM pg_config WHERE name = 'SHAREDIR'")
check "pg_harden--$newest.sql is sql/pg_harden.sql" cmp "$sharedir/extension/pg_harden--$newest.sql" "$root/sql/pg_harden.sql"
fresh_db pgh_upgrade_fresh
sql pgh_upgrade_fresh -c "CREATE EXTENSION pg_harden"
snapshot pgh_upgrade_fresh "$tmp/fresh.txt"
if grep -q "^extversion	$newest\$" "$tmp/fresh.txt" && grep -q '^member ' "$tmp/fresh.txt"; then
	ok "fresh install of $newest ($(grep -c '^member ' "$tmp/fresh.txt") member objects)"
else
	not_ok "fresh install of $newest"
fi

# Every version there has been, and the next step up from one.
versions() {
	local f v
	for f in "$root"/sql/pg_harden--*.sql; do
		v=$(basename "$f" .sql)
		v=${v#pg_harden--}
		echo "${v##*--}"
	done | sort -uV
}
next_version() {
	local f
	for f in "$root"/sql/pg_harden--"$1"--*.sql; do
		[ -e "$f" ] || continue
		f=$(basename "$f" .sql)
		echo "${f##*--}"
	done | sort -V | head -n1
}

for v in $(versions); do
	[ "$v" != "$newest" ] || continue
	[ "$(printf '%s\n%s\n' "$v" "$newest" | sort -V | head -n1)" = "$v" ] || continue
	db=pgh_upgrade_old
	fresh_db $db
	sql $db -c "CREATE EXTENSION pg_harden VERSION '$v'"
	cur=$v
	while [ "$cur" != "$newest" ]; do
		to=$(next_version "$cur")
		[ -n "$to" ] || { not_ok "no upgrade script from $cur"; break; }
		populate $db >/dev/null
		kept_state $db >"$tmp/before.txt"
		if [ "$cur" = 0.2.0 ]; then
			step_with_dependent_views $db "$to"
		else
			check "from $v: $cur -> $to with user objects" sql $db -c "ALTER EXTENSION pg_harden UPDATE TO '$to'"
		fi
		kept_state $db >"$tmp/after.txt"
		# The step may add config tables; what was there must be unchanged.
		check "from $v: $cur -> $to keeps user views, grants, cache entries and config rows" \
			kept "$tmp/before.txt" "$tmp/after.txt"
		check "from $v: $cur -> $to: every user view answers, as the granted role too" views_answer $db
		cur=$to
	done
	snapshot $db "$tmp/upgraded.txt"
	compare "$v -> $newest" "$tmp/fresh.txt" "$tmp/upgraded.txt"
	if has $db 'harden.fsm_define(text,text,text)' && [ "$(sql $db -c "SELECT to_regclass('public.upg_ticket') IS NOT NULL")" = t ]; then
		check "from $v: the attached machine enforces, fires and audits after the update" works_fsm $db
		check "from $v: stock, its reservation and the watched table's cached result work after the update" works_stock $db
		check "from $v: the role still runs the functions it was granted" works_grants $db
	fi
	psql_q -d postgres -c "DROP DATABASE $db"
done
psql_q -d postgres -c "DROP DATABASE pgh_upgrade_fresh"

# 0.3.0 left the attachments and timers of a dropped table behind; the
# update removes them, and from then on a drop takes them along.
fresh_db pgh_upgrade_drop
sql pgh_upgrade_drop >/dev/null <<'SQL'
CREATE EXTENSION pg_harden VERSION '0.3.0';
CREATE TABLE gone (id int PRIMARY KEY, status text NOT NULL DEFAULT 'pending');
SELECT harden.fsm_attach('gone', 'status', 'cart');
INSERT INTO gone VALUES (1);
UPDATE gone SET status = 'submitted';
DROP TABLE gone;
SQL
dangling="SELECT count(*) FROM (SELECT relid FROM harden.fsm_attached UNION ALL SELECT relid FROM harden.fsm_due) r
	WHERE NOT EXISTS (SELECT FROM pg_class c WHERE c.oid = r.relid)"
if [ "$(sql pgh_upgrade_drop -c "$dangling")" = 2 ] \
	&& sql pgh_upgrade_drop -c "ALTER EXTENSION pg_harden UPDATE" \
	&& [ "$(sql pgh_upgrade_drop -c "$dangling")" = 0 ] \
	&& sql pgh_upgrade_drop >/dev/null <<'SQL' && [ "$(sql pgh_upgrade_drop -c "$dangling")" = 0 ]
CREATE TABLE gone (id int PRIMARY KEY, status text NOT NULL DEFAULT 'pending');
SELECT harden.fsm_attach('gone', 'status', 'cart');
INSERT INTO gone VALUES (1);
UPDATE gone SET status = 'submitted';
DROP TABLE gone;
SQL
then
	ok "the update removes a dropped table's attachments and timers; a drop then takes them along"
else
	not_ok "the update removes a dropped table's attachments and timers; a drop then takes them along"
fi
psql_q -d postgres -c "DROP DATABASE pgh_upgrade_drop"
sql postgres -c "DROP ROLE $app"

# Between a restart with the new library and ALTER EXTENSION UPDATE, the
# state-machine trigger still writes the 0.3.0 audit and timer tables.
fresh_db pgh_upgrade_window
window=$(sql pgh_upgrade_window <<'SQL' | tail -n1
CREATE EXTENSION pg_harden VERSION '0.3.0';
CREATE TABLE w_cart (id int PRIMARY KEY, status text NOT NULL DEFAULT 'pending');
SELECT harden.fsm_attach('w_cart', 'status', 'cart');
INSERT INTO w_cart VALUES (1);
UPDATE w_cart SET status = 'submitted';
SELECT count(*) || '/' || (SELECT count(*) FROM harden.fsm_due) FROM harden.fsm_log;
SQL
)
if [ "$window" = "2/1" ]; then
	ok "with the 0.3.0 tables the $newest library audits transitions and sets timers"
else
	not_ok "with the 0.3.0 tables the $newest library audits transitions and sets timers (got '$window')"
fi
psql_q -d postgres -c "DROP DATABASE pgh_upgrade_window"
exit $status
