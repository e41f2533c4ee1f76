# State machines: single-row status updates (pgbench) on four identical
# tables -- no trigger, the pg_harden trigger without and with its audit
# trail, and the same rules as a table-driven PL/pgSQL trigger that audits
# the same columns -- then one 100k-row UPDATE per table, where the
# trigger's own cost dominates.
# Sourced by run.sh: bench_pgbench, bench_record and bench_sql come from it.

FSM_ROWS=100000
FSM_CASES=(plain fsm fsm_audit plpgsql)
declare -A FSM_NAME=(
	[plain]="UPDATE, no trigger"
	[fsm]="UPDATE, pg_harden trigger"
	[fsm_audit]="UPDATE, pg_harden trigger + audit"
	[plpgsql]="UPDATE, PL/pgSQL trigger + audit"
)

fsm_sql() { bench_sql -At "$@"; }
fsm_ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

bench_sql <<'SQL'
SELECT harden.fsm_define('bench_cycle', 'a -> b -> c -> a');
CREATE TABLE bench_fsm_rules (from_state text, to_state text, PRIMARY KEY (from_state, to_state));
INSERT INTO bench_fsm_rules VALUES ('a', 'b'), ('b', 'c'), ('c', 'a');
-- What a hand-written audit keeps: the same columns as harden.fsm_log.
CREATE TABLE bench_fsm_audit_log (
    id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp(),
    machine text NOT NULL, table_name text NOT NULL, row_key jsonb NOT NULL,
    from_state text, to_state text NOT NULL, role text NOT NULL, txid xid8 NOT NULL, reason text);
CREATE FUNCTION bench_fsm_plpgsql() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IS NOT DISTINCT FROM OLD.status THEN
        RETURN NEW;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM bench_fsm_rules WHERE from_state = OLD.status AND to_state = NEW.status) THEN
        RAISE EXCEPTION 'invalid transition for % row %: % -> %', TG_TABLE_NAME, NEW.id, OLD.status, NEW.status
            USING ERRCODE = 'PH201';
    END IF;
    INSERT INTO bench_fsm_audit_log (machine, table_name, row_key, from_state, to_state, role, txid, reason)
    VALUES ('bench_cycle', TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, jsonb_build_object('id', NEW.id),
            OLD.status, NEW.status, current_user, pg_current_xact_id(),
            nullif(current_setting('harden.reason', true), ''));
    RETURN NEW;
END $$;
DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['plain', 'fsm', 'fsm_audit', 'plpgsql'] LOOP
        EXECUTE format('CREATE TABLE %I (id int PRIMARY KEY, status text NOT NULL, pad text)', 'bench_fsm_' || t);
        EXECUTE format('INSERT INTO %I SELECT i, ''a'', repeat(''x'', 40) FROM generate_series(1, %s) i',
                       'bench_fsm_' || t, 100000);
    END LOOP;
END $$;
SELECT harden.fsm_attach('bench_fsm_fsm', 'status', 'bench_cycle', audit => false);
SELECT harden.fsm_attach('bench_fsm_fsm_audit', 'status', 'bench_cycle');
CREATE TRIGGER bench_fsm BEFORE UPDATE OF status ON bench_fsm_plpgsql
    FOR EACH ROW EXECUTE FUNCTION bench_fsm_plpgsql();
VACUUM ANALYZE bench_fsm_plain, bench_fsm_fsm, bench_fsm_fsm_audit, bench_fsm_plpgsql;
SQL

for c in 1 8; do
	for t in "${FSM_CASES[@]}"; do
		bench_pgbench fsm "${FSM_NAME[$t]}" $c "fsm_update_$t.sql" "${FSM_NAME[plain]}"
	done
	r=$(fsm_ratio "${BASE_TPS["fsm|${FSM_NAME[fsm_audit]}|$c"]}" "${BASE_TPS["fsm|${FSM_NAME[plpgsql]}|$c"]}")
	bench_record fsm "pg_harden + audit vs PL/pgSQL + audit" $c "$r" x "tps ratio"
	printf '  %-40s %3s clients %10s x\n' "pg_harden + audit vs PL/pgSQL + audit" $c "$r"
done

# Every transition was checked: rejections stayed at zero.
[ "$(fsm_sql -c "SELECT coalesce(sum(rejections), 0) FROM harden.fsm_stats WHERE machine = 'bench_cycle'")" = 0 ] \
	|| pgh_die "the bench_cycle machine rejected updates"

# One statement moving every row: best of 3 runs per table, interleaved.
out=$(fsm_sql -F ' ' <<'SQL'
CREATE TEMP TABLE fsm_bulk (what text, ms float8);
DO $$
DECLARE
    t text;
    s timestamptz;
BEGIN
    FOR run IN 1..3 LOOP
        FOREACH t IN ARRAY ARRAY['plain', 'fsm', 'fsm_audit', 'plpgsql'] LOOP
            s := clock_timestamp();
            EXECUTE format('UPDATE %I SET status = CASE status WHEN ''a'' THEN ''b'' WHEN ''b'' THEN ''c'' ELSE ''a'' END',
                           'bench_fsm_' || t);
            INSERT INTO fsm_bulk VALUES (t, 1000 * extract(epoch FROM clock_timestamp() - s));
        END LOOP;
    END LOOP;
END $$;
SELECT string_agg(round(ms)::text, ' ' ORDER BY array_position(ARRAY['plain', 'fsm', 'fsm_audit', 'plpgsql'], what))
  FROM (SELECT what, min(ms) AS ms FROM fsm_bulk GROUP BY what) b;
SQL
)
read -r bulk_plain bulk_fsm bulk_audit bulk_plpgsql <<<"$out"
declare -A FSM_BULK=([plain]=$bulk_plain [fsm]=$bulk_fsm [fsm_audit]=$bulk_audit [plpgsql]=$bulk_plpgsql)
for t in "${FSM_CASES[@]}"; do
	note=""
	[ "$t" = plain ] || note="$(fsm_ratio "${FSM_BULK[$t]}" "$bulk_plain") x no trigger; trigger cost $(awk -v a="${FSM_BULK[$t]}" -v b="$bulk_plain" -v n="$FSM_ROWS" 'BEGIN { printf "%.2f", (a - b) * 1000 / n }') us/row"
	bench_record fsm "${FSM_ROWS} rows in one ${FSM_NAME[$t]}" 1 "${FSM_BULK[$t]}" ms "$note"
	printf '  %-40s %3s clients %10s ms   %s\n' "bulk: ${FSM_NAME[$t]}" 1 "${FSM_BULK[$t]}" "$note"
done
r=$(awk -v p="$bulk_plpgsql" -v f="$bulk_audit" -v b="$bulk_plain" 'BEGIN { printf "%.2f", (p - b) / (f - b) }')
bench_record fsm "bulk trigger cost: PL/pgSQL / pg_harden (both audited)" 1 "$r" x "target >= 2"
printf '  %-40s %3s clients %10s x\n' "bulk trigger cost PL/pgSQL / pg_harden" 1 "$r"
