# test/docs/examples.sh: sourced by test/run.sh on the preloaded cluster.
#
# The docs cannot rot: every fenced ```sql block of README.md and docs/*.md
# runs against the cluster, the blocks of one page in order, in a fresh
# database of their own (for docs/ pages, with test/docs/fixture.sql first;
# README.md's walk-through creates the extension itself).  A block must run
# without an error, except for the errors it shows: each "-- ERROR:" line
# (and the "-- DETAIL:" lines after it) of a block must be what PostgreSQL
# printed, and it must print no other error.  A block preceded by a
# "<!-- no-test: why -->" line is skipped (kept for examples that need
# another setup, such as a database still at an old version).  One TAP line
# per page; then every harden.* setting must be in docs/configuration.md and
# every SQLSTATE of src/pg_harden.h in docs/errors.md.

# dx_blocks FILE DIR: write the page's blocks to DIR/NNN.sql (in order) and
# print how many were skipped.
dx_blocks() {
	awk -v dir="$2" '
		/^```sql[ \t]*$/ { inb = 1; n++; skip = (prev ~ /^<!-- no-test/); if (skip) skipped++
		                   f = sprintf("%s/%03d.sql", dir, n); if (!skip) printf "" > f; next }
		/^```/ && inb { inb = 0; if (!skip) close(f); next }
		inb { if (!skip) print > f; next }
		/[^ \t]/ { prev = $0 }
		END { print skipped + 0 }' "$1"
}

# dx_expected BLOCK: the error lines a block shows, without "-- ".
dx_expected() {
	awk '/^-- ERROR:  / { e = 1; sub(/^-- /, ""); print; next }
	     e && /^-- / { sub(/^-- /, ""); print; next }
	     { e = 0 }' "$1"
}

# dx_page FILE: run a page's blocks; prints what failed.
dx_page() {
	local page=$1 dir db rc=0 b out
	dir=$(mktemp -d "$PGH_TMP/docs.XXXXXX")
	db=pgh_docs
	dx_blocks "$page" "$dir" >"$dir/skipped"
	pgh_psql -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
	if [ "$(basename "$page")" != README.md ]; then
		pgh_psql -d "$db" -f "$PGH_ROOT/test/docs/fixture.sql" >/dev/null
	fi
	for b in "$dir"/*.sql; do
		[ -e "$b" ] || continue
		out="$b.out"
		PGOPTIONS="-c client_min_messages=warning" psql -X -q -d "$db" -f "$b" >/dev/null 2>"$out" || true
		# psql's error lines without their "psql:FILE:LINE: " prefix.
		sed -E 's/^psql:[^:]*:[0-9]+: //' "$out" >"$out.errors"
		local want got missing
		want=$(dx_expected "$b")
		got=$(grep -c '^ERROR:  ' "$out.errors" || true)
		missing=$(printf '%s\n' "$want" | grep -v '^$' | grep -vxF -f "$out.errors" || true)
		if [ "$got" -ne "$(printf '%s\n' "$want" | grep -c '^ERROR:  ' || true)" ] || [ -n "$missing" ]; then
			echo "block $(basename "$b" .sql) of $page:"
			sed 's/^/    /' "$b"
			echo "  printed:"
			sed 's/^/    /' "$out.errors"
			[ -z "$missing" ] || { echo "  shown in the docs but not printed:"; echo "$missing" | sed 's/^/    /'; }
			rc=1
		fi
	done
	pgh_psql -d postgres -c "DROP DATABASE $db"
	echo "$(ls "$dir"/*.sql 2>/dev/null | wc -l) blocks run, $(cat "$dir/skipped") skipped" >"$PGH_TMP/out/docs-count"
	return $rc
}

# Every setting the library defines has a row in docs/configuration.md.
dx_gucs_documented() {
	local missing
	missing=$(pgh_psql -At -d postgres -c "SELECT name FROM pg_settings WHERE name LIKE 'harden.%' ORDER BY 1" \
		| while read -r g; do grep -q "^| \`$g\` |" "$PGH_ROOT/docs/configuration.md" || echo "$g"; done)
	[ -z "$missing" ] || { echo "not in docs/configuration.md:"; echo "$missing"; return 1; }
}

# Every SQLSTATE of src/pg_harden.h has a row in docs/errors.md, whose
# table is sorted.
dx_sqlstates_documented() {
	local missing codes
	missing=$(sed -n "s/.*MAKE_SQLSTATE('\(.\)','\(.\)','\(.\)','\(.\)','\(.\)').*/\1\2\3\4\5/p" "$PGH_ROOT/src/pg_harden.h" \
		| while read -r c; do grep -q "^| \`$c\` |" "$PGH_ROOT/docs/errors.md" || echo "$c"; done)
	[ -z "$missing" ] || { echo "not in docs/errors.md:"; echo "$missing"; return 1; }
	codes=$(sed -n 's/^| `\([0-9A-Z]\{5\}\)` |.*/\1/p' "$PGH_ROOT/docs/errors.md")
	[ "$codes" = "$(echo "$codes" | LC_ALL=C sort -u)" ] || { echo "docs/errors.md is not sorted (or has a code twice)"; return 1; }
}

run_doc_examples() {
	local log="$PGH_TMP/out/docs.log" page rc=0 n conf="$PGH_TMP/data/postgresql.auto.conf"
	pgh_log "the docs' SQL examples"
	# An example may ALTER SYSTEM (query-analysis.md turns snapshots on):
	# the suites after this one get the cluster's settings back.
	pgh_as_server cp "$conf" "$conf.before-docs"
	(
		for page in "$PGH_ROOT/README.md" "$PGH_ROOT"/docs/*.md; do
			grep -q '^```sql' "$page" || continue
			if dx_page "$page" >"$PGH_TMP/out/docs-page.out" 2>&1; then
				echo "ok - ${page#"$PGH_ROOT"/}: $(cat "$PGH_TMP/out/docs-count")"
			else
				echo "not ok - ${page#"$PGH_ROOT"/}"
				sed 's/^/# /' "$PGH_TMP/out/docs-page.out"
			fi
		done
		if dx_gucs_documented >"$PGH_TMP/out/docs-page.out" 2>&1; then
			echo "ok - every harden.* setting is in docs/configuration.md"
		else
			echo "not ok - every harden.* setting is in docs/configuration.md"
			sed 's/^/# /' "$PGH_TMP/out/docs-page.out"
		fi
		if dx_sqlstates_documented >"$PGH_TMP/out/docs-page.out" 2>&1; then
			echo "ok - every SQLSTATE of src/pg_harden.h is in docs/errors.md, sorted"
		else
			echo "not ok - every SQLSTATE of src/pg_harden.h is in docs/errors.md, sorted"
			sed 's/^/# /' "$PGH_TMP/out/docs-page.out"
		fi
	) >"$log" 2>&1 || rc=$?
	pgh_as_server cp "$conf.before-docs" "$conf"
	pgh_psql -d postgres -c "SELECT pg_reload_conf()" >/dev/null
	cat "$log"
	n=$(grep -c '^ok ' "$log" || true)
	record "docs examples" $rc "$n" "$(grep -c '^not ok ' "$log" || true)"
}
