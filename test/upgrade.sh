#!/usr/bin/env bash
# Upgrade-path test, run by test/run.sh against its running cluster (PGHOST,
# PGPORT, PGUSER set).  For every version older than default_version (a
# full script's or an upgrade script's target): install it, ALTER EXTENSION
# pg_harden UPDATE, and compare
# the extension's objects and definitions with a fresh install of the newest
# version.  Prints TAP-like "ok"/"not ok" lines; exits non-zero on a mismatch.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

newest=$(sed -n "s/^default_version *= *'\(.*\)'/\1/p" "$root/pg_harden.control")
psql_q() { PGOPTIONS="-c client_min_messages=warning" psql -X -q -v ON_ERROR_STOP=1 "$@"; }

# Everything that makes up the installed extension, as sorted text.
snapshot() {
	psql_q -At -d "$1" >"$2" <<'SQL'
SELECT 'extversion ' || extversion FROM pg_extension WHERE extname = 'pg_harden';
SELECT 'member ' || pg_describe_object(classid, objid, objsubid)
  FROM pg_depend
 WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
   AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'pg_harden')
 ORDER BY 1;
SELECT 'function ' || p.oid::regprocedure || E'\n' || pg_get_functiondef(p.oid)
       || E'\nacl ' || coalesce(p.proacl::text, 'default')
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'harden' AND p.prokind IN ('f', 'p')
 ORDER BY p.oid::regprocedure::text;
SELECT 'relation ' || c.oid::regclass || ' ' || c.relkind::text
       || ' acl ' || coalesce(c.relacl::text, 'default')
       || coalesce(E'\n' || pg_get_viewdef(c.oid), '')
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'harden'
 ORDER BY c.oid::regclass::text;
SELECT 'column ' || a.attrelid::regclass || '.' || a.attname || ' '
       || format_type(a.atttypid, a.atttypmod)
       || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
       || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '')
  FROM pg_attribute a
  JOIN pg_class c ON c.oid = a.attrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
 WHERE n.nspname = 'harden' AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY 1;
SELECT 'constraint ' || conrelid::regclass || ' ' || pg_get_constraintdef(oid)
  FROM pg_constraint
 WHERE connamespace = 'harden'::regnamespace
 ORDER BY 1;
SELECT 'index ' || pg_get_indexdef(indexrelid)
  FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
 WHERE c.relnamespace = 'harden'::regnamespace
 ORDER BY 1;
SELECT 'trigger ' || pg_get_triggerdef(t.oid)
  FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
 WHERE c.relnamespace = 'harden'::regnamespace AND NOT t.tgisinternal
 ORDER BY 1;
SELECT 'config ' || c.oid::regclass || coalesce(' ' || e.extcondition[i], '')
  FROM pg_extension e, unnest(e.extconfig) WITH ORDINALITY AS u(cfg, i)
  JOIN pg_class c ON c.oid = u.cfg
 WHERE e.extname = 'pg_harden'
 ORDER BY 1;
SQL
}

fresh_db() {
	psql_q -d postgres -c "DROP DATABASE IF EXISTS \"$1\"" -c "CREATE DATABASE \"$1\""
}

fresh_db pgh_upgrade_fresh
psql_q -d pgh_upgrade_fresh -c "CREATE EXTENSION pg_harden"
snapshot pgh_upgrade_fresh "$tmp/fresh.txt"
if grep -q "^extversion $newest\$" "$tmp/fresh.txt" && grep -q '^member ' "$tmp/fresh.txt"; then
	echo "ok - fresh install of $newest ($(grep -c '^member ' "$tmp/fresh.txt") member objects)"
else
	echo "not ok - fresh install of $newest"
	exit 1
fi

# Every version there has been: each full script's, and each upgrade
# script's target (installed through the chain of upgrade scripts).
versions() {
	local f v
	for f in "$root"/sql/pg_harden--*.sql; do
		v=$(basename "$f" .sql)
		v=${v#pg_harden--}
		echo "${v##*--}"
	done | sort -uV
}

status=0
for v in $(versions); do
	[ "$v" != "$newest" ] || continue
	[ "$(printf '%s\n%s\n' "$v" "$newest" | sort -V | head -n1)" = "$v" ] || continue
	fresh_db pgh_upgrade_old
	psql_q -d pgh_upgrade_old -c "CREATE EXTENSION pg_harden VERSION '$v'" \
		-c "ALTER EXTENSION pg_harden UPDATE"
	snapshot pgh_upgrade_old "$tmp/upgraded.txt"
	if diff -u "$tmp/fresh.txt" "$tmp/upgraded.txt" >"$tmp/diff.txt"; then
		echo "ok - $v -> $newest equals a fresh install"
	else
		echo "not ok - $v -> $newest differs from a fresh install"
		cat "$tmp/diff.txt"
		status=1
	fi
	psql_q -d postgres -c "DROP DATABASE pgh_upgrade_old"
done
psql_q -d postgres -c "DROP DATABASE pgh_upgrade_fresh"

# Between a restart with the new library and ALTER EXTENSION UPDATE, the
# state-machine trigger still writes the 0.3.0 audit and timer tables.
fresh_db pgh_upgrade_window
window=$(psql_q -At -d pgh_upgrade_window <<'SQL' | tail -n1
CREATE EXTENSION pg_harden VERSION '0.3.0';
CREATE TABLE w_cart (id int PRIMARY KEY, status text NOT NULL DEFAULT 'pending');
SELECT harden.fsm_attach('w_cart', 'status', 'cart');
INSERT INTO w_cart VALUES (1);
UPDATE w_cart SET status = 'submitted';
SELECT count(*) || '/' || (SELECT count(*) FROM harden.fsm_due) FROM harden.fsm_log;
SQL
)
if [ "$window" = "2/1" ]; then
	echo "ok - with the 0.3.0 tables the $newest library audits transitions and sets timers"
else
	echo "not ok - with the 0.3.0 tables the $newest library audits transitions and sets timers (got '$window')"
	status=1
fi
psql_q -d postgres -c "DROP DATABASE pgh_upgrade_window"
exit $status
