# test/replica/lib.sh: a streaming hot standby of the test cluster and a
# pgbouncer in front of it, for test/replica/*.sh (sourced after test/lib.sh,
# with the primary started by pgh_cluster_start).
#
#   pgh_standby_start NAME [extra conf lines...]
#       pg_basebackup -R of the primary into $PGH_TMP/NAME, started as the
#       server user on its own port and socket directory ($PGH_TMP/NAME.sock),
#       hot_standby on, pg_harden preloaded; sets PGH_STANDBY_PORT and
#       PGH_STANDBY_HOST.  Stopped and removed at cleanup.
#   pgh_standby_wait_replay [PORT [HOST]]
#       waits until the standby has replayed the primary's current WAL position.
#   pgh_standby_promote NAME
#   pgh_pgbouncer_start [extra [databases] lines...]
#       pgbouncer, pool_mode = transaction, on a free loopback port with its
#       socket in $PGH_TMP/pgbouncer; every database of the primary under its
#       own name, plus the extra entries; sets PGH_BOUNCER_PORT.  Stopped at
#       cleanup.

PGH_STANDBYS=()
PGH_BOUNCER_PID=""

pgh_replica_cleanup() {
	local d
	for d in "${PGH_STANDBYS[@]}"; do
		[ ! -f "$d/postmaster.pid" ] || pgh_as_server "$PGH_BIN/pg_ctl" -D "$d" -m immediate -w stop >/dev/null 2>&1 || true
	done
	PGH_STANDBYS=()
	if [ -n "$PGH_BOUNCER_PID" ]; then
		kill "$PGH_BOUNCER_PID" 2>/dev/null || true
		PGH_BOUNCER_PID=""
	fi
}
PGH_CLEANUP_HOOKS+=(pgh_replica_cleanup)

# pgh_standby_start NAME [extra conf lines...]
pgh_standby_start() {
	local name=$1 data="$PGH_TMP/$1" sock="$PGH_TMP/$1.sock"
	shift
	PGH_STANDBY_PORT=$(pgh_free_port)
	PGH_STANDBY_HOST=$sock
	rm -rf "$data" "$sock"
	pgh_as_server mkdir -p "$sock"
	PGH_STANDBYS+=("$data")
	# -R writes standby.signal and primary_conninfo (into postgresql.auto.conf,
	# after the primary's settings, which the lines below then override).
	pgh_as_server "$(pgh_bindir)/pg_basebackup" -h "$PGHOST" -p "$PGPORT" -U postgres \
		-D "$data" -R -X stream --no-sync --checkpoint=fast >"$data.basebackup.log" 2>&1 \
		|| { cat "$data.basebackup.log"; pgh_die "pg_basebackup failed"; }
	{
		echo "# pg_harden test standby"
		echo "port = $PGH_STANDBY_PORT"
		echo "unix_socket_directories = '$sock'"
		echo "hot_standby = on"
		echo "shared_preload_libraries = 'pg_harden'"
		# Replay is not held back by standby queries for long.
		echo "max_standby_streaming_delay = 5s"
		echo "wal_receiver_status_interval = 1s"
		for line in "$@"; do echo "$line"; done
	} | pgh_as_server tee -a "$data/postgresql.auto.conf" >/dev/null
	pgh_as_server env $(pgh_sanitizer_env) "$PGH_BIN/pg_ctl" -D "$data" -l "$PGH_TMP/server-$name.log" -w -t 60 start >/dev/null \
		|| { tail -n 30 "$PGH_TMP/server-$name.log"; pgh_die "standby $name did not start"; }
}

# pgh_standby_stop NAME [MODE]: stop it, keep the data directory.
pgh_standby_stop() {
	pgh_as_server "$PGH_BIN/pg_ctl" -D "$PGH_TMP/$1" -m "${2:-fast}" -w stop >/dev/null 2>&1 || true
}

# pgh_standby_restart NAME
pgh_standby_restart() {
	pgh_as_server env $(pgh_sanitizer_env) "$PGH_BIN/pg_ctl" -D "$PGH_TMP/$1" -l "$PGH_TMP/server-$1.log" -w -t 60 restart >/dev/null \
		|| { tail -n 30 "$PGH_TMP/server-$1.log"; return 1; }
}

# pgh_standby_wait_replay [PORT [HOST [SECONDS]]]: until the standby has
# replayed everything the primary has inserted into the WAL, including
# records after a commit that the walwriter flushes a moment later.
pgh_standby_wait_replay() {
	local port=${1:-$PGH_STANDBY_PORT} host=${2:-$PGH_STANDBY_HOST} lsn deadline
	deadline=$((SECONDS + ${3:-30}))
	lsn=$(pgh_psql -At -h "$PGHOST" -p "$PGPORT" -d postgres -c "SELECT pg_current_wal_insert_lsn()")
	while [ $SECONDS -lt $deadline ]; do
		[ "$(pgh_psql -At -h "$host" -p "$port" -d postgres \
			-c "SELECT pg_last_wal_replay_lsn() >= '$lsn'::pg_lsn" 2>/dev/null)" = t ] && return 0
		sleep 0.05
	done
	echo "# the standby on port $port did not replay $lsn in time"
	return 1
}

# pgh_standby_promote NAME: pg_ctl promote, waiting until it is done.
pgh_standby_promote() {
	pgh_as_server "$PGH_BIN/pg_ctl" -D "$PGH_TMP/$1" -w -t 60 promote >/dev/null
}

# pgh_pgbouncer_start [extra [databases] lines...]: transaction pooling in
# front of the primary, trust auth (a throwaway cluster); the pool is small
# so that clients share server connections.
pgh_pgbouncer_start() {
	local dir="$PGH_TMP/pgbouncer" extra
	PGH_BOUNCER_PORT=$(pgh_free_port)
	pgh_as_server mkdir -p "$dir"
	pgh_as_server tee "$dir/userlist.txt" >/dev/null <<<'"postgres" ""'
	extra=$(printf '%s\n' "$@")
	pgh_as_server tee "$dir/pgbouncer.ini" >/dev/null <<EOF
[databases]
* = host=$PGHOST port=$PGPORT
$extra

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGH_BOUNCER_PORT
unix_socket_dir = $dir
auth_type = trust
auth_file = $dir/userlist.txt
pool_mode = transaction
max_client_conn = 200
default_pool_size = 2
ignore_startup_parameters = extra_float_digits,options
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
EOF
	pgh_as_server pgbouncer -d "$dir/pgbouncer.ini" >/dev/null 2>&1 \
		|| { cat "$dir/pgbouncer.log" 2>/dev/null; pgh_die "pgbouncer did not start"; }
	local deadline=$((SECONDS + 20))
	while [ $SECONDS -lt $deadline ]; do
		[ -s "$dir/pgbouncer.pid" ] && PGH_BOUNCER_PID=$(cat "$dir/pgbouncer.pid")
		[ -n "$PGH_BOUNCER_PID" ] && [ -S "$dir/.s.PGSQL.$PGH_BOUNCER_PORT" ] && return 0
		sleep 0.1
	done
	cat "$dir/pgbouncer.log" 2>/dev/null
	pgh_die "pgbouncer did not open its socket"
}
