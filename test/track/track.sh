# test/track/track.sh: sourced by test/run.sh.  Multi-session checks of
# cached query results against an attacker and against revocation, on a
# cluster restarted with a small table of generations
# (harden.cache_max_watched = 1024, so that one tenant can try to fill it):
#
# - revocation: a role's cached result is not served after the owner
#   REVOKEs its privilege on the view, the table, a column, the schema, a
#   function, or a role it was a member of, or changes an RLS policy;
# - tenant isolation: another role changing its password, replacing
#   functions and creating views in its temporary schema, and creating,
#   caching over, watching and dropping tables in another database (and in
#   this one) does not invalidate the first role's result, nor push its
#   generations out of shared memory; exhaustion shows in metrics().
#
# Every step is its own session (psql -c), as an application's would be.
# Prints TAP-like "ok"/"not ok" lines.

tr_a=pgh_track_a
tr_b=pgh_track_b

# tr_q DB ROLE SQL: run SQL as ROLE in DB; prints the result (or the error).
tr_q() { PGOPTIONS="-c client_min_messages=warning" psql -X -At -v ON_ERROR_STOP=1 -d "$1" -U "$2" -c "$3" 2>&1 || true; }
tr_check() { if [ "$2" = "$3" ]; then echo "ok - $1"; else echo "not ok - $1"; echo "# got '$2', expected '$3'"; fi; }
tr_match() { if [[ "$2" == *"$3"* ]]; then echo "ok - $1"; else echo "not ok - $1"; echo "# got '$2', expected it to contain '$3'"; fi; }

# Queries cache_query() ran in DB (a hit runs none).
tr_runs() {
	tr_q "$1" postgres "SELECT coalesce((jsonb_path_query_first(harden.metrics_json(),
	  '\$.metrics.harden_cache_queries_total.samples[*] ? (@.labels.database == \$db).value',
	  jsonb_build_object('db', current_database())))::bigint, 0)"
}

# tr_metric DB FAMILY: the family's sample for DB's label.
tr_metric() {
	tr_q "$1" postgres "SELECT coalesce((jsonb_path_query_first(harden.metrics_json(),
	  '\$.metrics.$2.samples[*] ? (@.labels.database == \$db).value',
	  jsonb_build_object('db', current_database())))::bigint, 0)"
}

tr_setup() {
	pgh_createdb "$tr_a" pg_harden
	pgh_createdb "$tr_b" pg_harden
	pgh_psql -d postgres -c "
		DROP ROLE IF EXISTS tr_reader; DROP ROLE IF EXISTS tr_attacker; DROP ROLE IF EXISTS tr_group;
		DROP ROLE IF EXISTS tr_group2;
		CREATE ROLE tr_reader LOGIN; CREATE ROLE tr_attacker LOGIN PASSWORD 'first';
		CREATE ROLE tr_group NOLOGIN; CREATE ROLE tr_group2 NOLOGIN;"
	pgh_psql -d "$tr_a" -c "
		CREATE SCHEMA app;
		CREATE TABLE app.t (id int, secret text);
		INSERT INTO app.t VALUES (1, 's1'), (2, 's2');
		CREATE VIEW app.v AS SELECT id FROM app.t;
		CREATE TABLE app.cols (id int, secret text);
		INSERT INTO app.cols VALUES (1, 'x');
		CREATE TABLE app.rls (id int, owner name);
		INSERT INTO app.rls VALUES (1, 'tr_reader'), (2, 'tr_reader');
		ALTER TABLE app.rls ENABLE ROW LEVEL SECURITY;
		CREATE POLICY p ON app.rls FOR SELECT USING (true);
		CREATE TABLE app.members (id int);
		INSERT INTO app.members VALUES (1), (2);
		ALTER TABLE app.members ENABLE ROW LEVEL SECURITY;
		CREATE POLICY m ON app.members FOR SELECT TO tr_group2 USING (true);
		CREATE TABLE app.grp (id int);
		INSERT INTO app.grp VALUES (1);
		CREATE FUNCTION app.f() RETURNS int LANGUAGE sql STABLE AS 'SELECT 42';
		REVOKE EXECUTE ON FUNCTION app.f() FROM PUBLIC;
		CREATE SCHEMA other;
		CREATE TABLE other.t (id int);
		INSERT INTO other.t VALUES (7);
		CREATE TABLE app.iso (id int);
		INSERT INTO app.iso VALUES (1);
		CREATE TABLE app.unrelated (id int);
		SELECT harden.cache_watch('app.unrelated');
		GRANT USAGE ON SCHEMA app, other TO tr_reader;
		GRANT SELECT ON app.v, app.t, app.rls, app.iso, app.members, other.t TO tr_reader;
		GRANT SELECT (id) ON app.cols TO tr_reader;
		GRANT SELECT ON app.grp TO tr_group;
		GRANT tr_group TO tr_reader;
		GRANT EXECUTE ON FUNCTION app.f() TO tr_reader;
		GRANT CREATE ON DATABASE $tr_a TO tr_attacker;
		GRANT USAGE ON SCHEMA harden TO tr_reader, tr_attacker;" >/dev/null
	pgh_psql -d "$tr_b" -c "GRANT CREATE ON DATABASE $tr_b TO tr_attacker;
		GRANT USAGE ON SCHEMA harden TO tr_attacker;
		GRANT CREATE ON SCHEMA public TO tr_attacker;" >/dev/null
	pgh_psql -d "$tr_a" -c "GRANT CREATE ON SCHEMA public TO tr_attacker;" >/dev/null
}

# tr_revoked NAME KEY SQL REVOKE EXPECT: tr_reader caches SQL under KEY (a
# second call is a hit), the owner runs REVOKE in another session, and the
# reader's next call must give EXPECT (an error or other rows), not the
# cached rows.
tr_revoked() {
	local name=$1 key=$2 sql=$3 revoke=$4 expect=$5 first runs out
	tr_q "$tr_a" tr_reader "SELECT harden.cache_query('$key', \$q\$$sql\$q\$)" >/dev/null
	first=$(tr_q "$tr_a" tr_reader "SELECT harden.cache_query('$key', \$q\$$sql\$q\$)")
	runs=$(tr_runs "$tr_a")
	tr_check "$name: the result is cached (a second call is a hit)" \
		"$(tr_q "$tr_a" tr_reader "SELECT harden.cache_query('$key', \$q\$$sql\$q\$)")/$(tr_runs "$tr_a")" "$first/$runs"
	tr_q "$tr_a" postgres "$revoke" >/dev/null
	out=$(tr_q "$tr_a" tr_reader "SELECT harden.cache_query('$key', \$q\$$sql\$q\$)")
	tr_match "$name: the next read sees the change, not the cached rows" "$out" "$expect"
}

track_checks() {
	tr_setup
	# The databases' background workers process the setup's invalidations
	# when they start; wait for that before counting hits.
	sleep 1

	# 1. Revocation takes effect on the next read.
	tr_revoked "REVOKE on a view" tr:v "SELECT id FROM app.v ORDER BY id" \
		"REVOKE SELECT ON app.v FROM tr_reader" "permission denied for view v"
	tr_revoked "REVOKE on a table" tr:t "SELECT id, secret FROM app.t ORDER BY id" \
		"REVOKE SELECT ON app.t FROM tr_reader" "permission denied for table t"
	tr_revoked "REVOKE on a column" tr:c "SELECT id FROM app.cols" \
		"REVOKE SELECT (id) ON app.cols FROM tr_reader" "permission denied for table cols"
	tr_revoked "REVOKE USAGE on a schema" tr:s "SELECT id FROM other.t" \
		"REVOKE USAGE ON SCHEMA other FROM tr_reader" "permission denied for schema other"
	tr_revoked "REVOKE EXECUTE on a function" tr:f "SELECT app.f() AS v" \
		"REVOKE EXECUTE ON FUNCTION app.f() FROM tr_reader" "permission denied for function f"
	tr_revoked "REVOKE of a role membership" tr:g "SELECT id FROM app.grp" \
		"REVOKE tr_group FROM tr_reader" "permission denied for table grp"
	tr_revoked "ALTER POLICY" tr:p "SELECT count(*) AS n FROM app.rls" \
		"ALTER POLICY p ON app.rls USING (false)" '[{"n": 0}]'

	# A GRANT of a role changes what the role's policies let it see.
	tr_revoked "GRANT of a role a policy names" tr:m "SELECT count(*) AS n FROM app.members" \
		"GRANT tr_group2 TO tr_reader" '[{"n": 2}]'

	# 2. Tenant isolation.
	local iso_sql="SELECT harden.cache_query('tr:iso', 'SELECT id FROM app.iso')" runs
	tr_q "$tr_a" tr_reader "$iso_sql" >/dev/null
	tr_q "$tr_a" tr_reader "$iso_sql" >/dev/null
	runs=$(tr_runs "$tr_a")
	tr_q "$tr_b" tr_attacker "ALTER ROLE tr_attacker PASSWORD 'second'" >/dev/null
	tr_check "another role changing its own password does not invalidate" \
		"$(tr_q "$tr_a" tr_reader "$iso_sql")/$(tr_runs "$tr_a")" "[{\"id\": 1}]/$runs"
	local db churn="DO \$\$ BEGIN FOR i IN 1..30 LOOP
		EXECUTE format('CREATE OR REPLACE FUNCTION pg_temp.x%s() RETURNS int LANGUAGE sql AS ''SELECT 1''', i % 3);
		EXECUTE format('CREATE TEMP VIEW tv%s AS SELECT %s AS n', i, i);
		END LOOP; END \$\$"
	for db in "$tr_b" "$tr_a"; do
		tr_q "$db" tr_attacker "$churn" >/dev/null
		tr_check "temporary functions and views of another session ($db) do not invalidate" \
			"$(tr_q "$tr_a" tr_reader "$iso_sql")/$(tr_runs "$tr_a")" "[{\"id\": 1}]/$runs"
	done
	tr_q "$tr_b" tr_attacker "CREATE OR REPLACE FUNCTION public.tr_f() RETURNS int LANGUAGE sql AS 'SELECT 1'" >/dev/null
	tr_check "functions replaced in another database do not invalidate" \
		"$(tr_q "$tr_a" tr_reader "$iso_sql")/$(tr_runs "$tr_a")" "[{\"id\": 1}]/$runs"

	# The attacker fills the table of generations from another database:
	# 1,200 tables, each watched, cached over and dropped (twice the table).
	local fill="DO \$\$ BEGIN FOR i IN 1..1200 LOOP
		EXECUTE format('CREATE TABLE public.fill%s (id int)', i);
		PERFORM harden.cache_watch(format('public.fill%s', i)::regclass);
		PERFORM harden.cache_query(format('fill:%s', i), format('SELECT count(*) FROM public.fill%s', i));
		IF i % 2 = 0 THEN EXECUTE format('DROP TABLE public.fill%s', i); END IF;
		END LOOP; END \$\$"
	tr_q "$tr_b" tr_attacker "$fill" >/dev/null
	tr_check "a tenant filling the generation table from another database does not invalidate" \
		"$(tr_q "$tr_a" tr_reader "$iso_sql")/$(tr_runs "$tr_a")" "[{\"id\": 1}]/$runs"
	tr_q "$tr_a" postgres "INSERT INTO app.unrelated VALUES (1)" >/dev/null
	tr_check "after it, a write to an unrelated watched table does not invalidate" \
		"$(tr_q "$tr_a" tr_reader "$iso_sql")/$(tr_runs "$tr_a")" "[{\"id\": 1}]/$runs"
	tr_q "$tr_a" tr_reader "SELECT harden.cache_query('tr:new', 'SELECT count(*) + 1 AS n FROM app.iso')" >/dev/null
	tr_check "after it, the first database still gets slots for new results" \
		"$(tr_q "$tr_a" tr_reader "SELECT count(*) FROM harden.cache_entries WHERE key = 'tr:new'")" "1"
	local pushed
	pushed=$(( $(tr_metric "$tr_b" harden_cache_generation_evictions_total) + $(tr_metric "$tr_b" harden_cache_generation_exhausted_total) ))
	tr_check "metrics() reports the attacker's database hitting its share" "$([ "$pushed" -gt 0 ] && echo yes)" yes
	tr_check "metrics() shows no eviction of the first database's generations" \
		"$(tr_metric "$tr_a" harden_cache_generation_evictions_total)" "0"
	# The same churn in the first database only costs that database.
	tr_q "$tr_a" tr_attacker "$fill" >/dev/null
	tr_q "$tr_a" tr_reader "$iso_sql" >/dev/null
	tr_check "churn in the same database is bounded: the reader's result is cached again" \
		"$(tr_q "$tr_a" tr_reader "SELECT count(*) FROM harden.cache_entries WHERE key = 'tr:iso'")" "1"
	# Both databases now hold half the table: a third one still gets its share.
	pgh_createdb pgh_track_c pg_harden
	tr_q pgh_track_c postgres "CREATE TABLE c (id int)" >/dev/null
	# (Its new background worker processes the setup's invalidations first.)
	sleep 1
	tr_q pgh_track_c postgres "SELECT harden.cache_query('tr:c', 'SELECT count(*) AS n FROM c')" >/dev/null
	tr_check "a newcomer database gets slots from the databases above their share" \
		"$(tr_q pgh_track_c postgres "SELECT count(*) FROM harden.cache_entries WHERE key = 'tr:c'")" "1"
}

# With harden.cache_track = off there are no hooks: a result over an
# unwatched table lives at most harden.cache_untracked_ttl and a write to
# it is not seen, while a watched table's writes still invalidate.
track_off_checks() {
	pgh_createdb pgh_track_off pg_harden
	tr_q pgh_track_off postgres "CREATE TABLE w (id int); CREATE TABLE u (id int);
		INSERT INTO w VALUES (1); INSERT INTO u VALUES (1); SELECT harden.cache_watch('w')" >/dev/null
	sleep 1
	tr_check "tracking off: the setting is off" "$(tr_q pgh_track_off postgres "SHOW harden.cache_track")" off
	tr_q pgh_track_off postgres "SELECT harden.cache_query('off:u', 'SELECT count(*) AS n FROM u', '1 day')" >/dev/null
	tr_q pgh_track_off postgres "SELECT harden.cache_query('off:w', 'SELECT count(*) AS n FROM w', '1 day')" >/dev/null
	tr_check "tracking off: an unwatched table's result is capped at harden.cache_untracked_ttl" \
		"$(tr_q pgh_track_off postgres "SELECT ttl <= interval '60 seconds' FROM harden.cache_entries WHERE key = 'off:u'")" t
	tr_check "tracking off: a watched table's result keeps its TTL" \
		"$(tr_q pgh_track_off postgres "SELECT ttl > interval '23 hours' FROM harden.cache_entries WHERE key = 'off:w'")" t
	tr_q pgh_track_off postgres "INSERT INTO w VALUES (2); INSERT INTO u VALUES (2)" >/dev/null
	tr_check "tracking off: a write to the watched table invalidates" \
		"$(tr_q pgh_track_off postgres "SELECT harden.cache_query('off:w', 'SELECT count(*) AS n FROM w', '1 day')")" '[{"n": 2}]'
	tr_check "tracking off: a write to the unwatched table is not seen (TTL-capped)" \
		"$(tr_q pgh_track_off postgres "SELECT harden.cache_query('off:u', 'SELECT count(*) AS n FROM u', '1 day')")" '[{"n": 1}]'
}

run_track() {
	local log="$PGH_TMP/out/track.log" n
	pgh_log "tracking: revocation and tenant isolation (cluster restarted with harden.cache_max_watched = 1024)"
	pgh_cluster_stop
	pgh_cluster_start "${PGH_CONF[@]}" "harden.cache_max_watched = 1024"
	track_checks 2>&1 | tee "$log"
	pgh_cluster_stop
	pgh_cluster_start "${PGH_CONF[@]}" "harden.cache_track = off"
	track_off_checks 2>&1 | tee -a "$log"
	n=$(grep -c '^ok ' "$log" || true)
	record "tracking" 0 "$n" "$(grep -c '^not ok ' "$log" || true)"
}
