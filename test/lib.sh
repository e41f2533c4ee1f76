# test/lib.sh: shared by test/run.sh, test/demo/run.sh and test/bench/run.sh.
#
# Installs what is missing (Debian packages, as root), builds pg_harden,
# stages a private installation (the server binaries plus pg_harden) in a
# temporary directory, and runs a throwaway cluster from it.  Nothing is
# installed into the system's PostgreSQL, so it works as a normal user too.
# PostgreSQL refuses to run as root: as root the server runs as $PGH_USER.

set -euo pipefail

PGH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PG_CONFIG=${PG_CONFIG:-pg_config}
PGH_PACKAGES=(make gcc postgresql-15 postgresql-contrib postgresql-server-dev-15
	postgresql-15-pgtap libtap-parser-sourcehandler-pgtap-perl
	prometheus-postgres-exporter curl postgresql-15-hypopg libssl-dev
	redis-tools python3-redis netcat-openbsd pgbouncer)
PGH_USER=${PGH_USER:-postgres}
PGH_TMP=""
PGH_PORT=""
PGH_CLUSTER_UP=0
# Functions pgh_cleanup calls first (test/replica/lib.sh adds its own).
PGH_CLEANUP_HOOKS=()

pgh_log() { printf '== %s\n' "$*"; }
pgh_die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# pgh_ensure_packages [extra packages...]
pgh_ensure_packages() {
	local missing=() p sudo=()
	for p in "${PGH_PACKAGES[@]}" "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	if [ "$(id -u)" -ne 0 ]; then
		if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
			sudo=(sudo -n)
		else
			pgh_die "missing packages: ${missing[*]} (run as root, or: sudo apt-get install -y ${missing[*]})"
		fi
	fi
	pgh_log "installing ${missing[*]}"
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
		--no-install-recommends "${missing[@]}" >/dev/null
}

pgh_bindir() { "$PG_CONFIG" --bindir; }
pgh_pgxs_dir() { dirname "$(dirname "$("$PG_CONFIG" --pgxs)")"; }

# Run a command as the unprivileged server user when we are root.
pgh_as_server() {
	if [ "$(id -u)" -eq 0 ]; then
		runuser -u "$PGH_USER" -- "$@"
	else
		"$@"
	fi
}

pgh_ensure_server_user() {
	[ "$(id -u)" -eq 0 ] || return 0
	id "$PGH_USER" >/dev/null 2>&1 || useradd --system --no-create-home "$PGH_USER"
}

# Build in the checkout, then stage a relocated installation in $PGH_TMP/inst.
# PostgreSQL finds its share and lib directories relative to its binary, so a
# copy of the server binaries under the same relative layout uses the staged
# pg_harden files next to links to everything else.
pgh_build_and_stage() {
	local bindir sharedir pkglibdir inst b
	PGH_TMP=$(mktemp -d "${TMPDIR:-/tmp}/pg_harden.XXXXXX")
	trap pgh_cleanup EXIT
	# SANITIZE=nopreload when the server cannot start with the sanitizer
	# runtime preloaded (see pgh_sanitizer_env).
	if [ -n "${SANITIZE:-}" ]; then
		pgh_sanitizer_preload_works "$(pgh_bindir)/postgres" || SANITIZE=nopreload
		export SANITIZE
	fi
	pgh_log "building pg_harden${SANITIZE:+ with ASan and UBSan ($SANITIZE)}"
	# A build with sanitizers and one without do not mix: clean on a switch.
	local flavor=${SANITIZE:+sanitize-$SANITIZE}
	if [ "$(cat "$PGH_ROOT/.build-flavor" 2>/dev/null || true)" != "${flavor:-plain}" ]; then
		make -C "$PGH_ROOT" -s PG_CONFIG="$PG_CONFIG" clean >/dev/null
		echo "${flavor:-plain}" >"$PGH_ROOT/.build-flavor"
	fi
	make -C "$PGH_ROOT" -s PG_CONFIG="$PG_CONFIG" >/dev/null
	bindir=$(pgh_bindir)
	sharedir=$("$PG_CONFIG" --sharedir)
	pkglibdir=$("$PG_CONFIG" --pkglibdir)
	inst="$PGH_TMP/inst"
	make -C "$PGH_ROOT" -s PG_CONFIG="$PG_CONFIG" install DESTDIR="$inst" >/dev/null
	mkdir -p "$inst$bindir"
	for b in postgres initdb pg_ctl; do cp "$bindir/$b" "$inst$bindir/"; done
	cp -rsn "$sharedir/." "$inst$sharedir/"
	cp -rsn "$pkglibdir/." "$inst$pkglibdir/"
	PGH_BIN="$inst$bindir"
	mkdir -p "$PGH_TMP/out"
	pgh_ensure_server_user
	[ "$(id -u)" -ne 0 ] || chown -R "$PGH_USER" "$PGH_TMP"
}

pgh_free_port() {
	local p
	for _ in $(seq 1 50); do
		p=$((20000 + RANDOM % 40000))
		if ! grep -qi ":$(printf '%04X' "$p") " /proc/net/tcp /proc/net/tcp6 2>/dev/null \
			&& [ ! -e "$PGH_TMP/.s.PGSQL.$p" ]; then
			echo "$p"; return 0
		fi
	done
	pgh_die "no free port found"
}

# pgh_cluster_start [extra postgresql.conf lines...]
pgh_cluster_start() {
	PGH_PORT=${PGH_PORT:-$(pgh_free_port)}
	pgh_cluster_up "$PGH_TMP/data" "$PGH_PORT" "$PGH_TMP/server.log" "$@"
	PGH_CLUSTER_UP=1
	export PGHOST="$PGH_TMP" PGPORT="$PGH_PORT" PGUSER=postgres PGDATABASE=postgres
}

# pgh_cluster_up DATADIR PORT LOGFILE [extra postgresql.conf lines...]:
# initdb (once) and start a preloaded cluster with its socket in $PGH_TMP.
pgh_cluster_up() {
	local data=$1 port=$2 log=$3
	shift 3
	if [ ! -d "$data" ]; then
		pgh_as_server "$PGH_BIN/initdb" -D "$data" -U postgres --auth=trust \
			--no-sync -E UTF8 --locale=C >"$data.initdb.log" 2>&1 \
			|| { cat "$data.initdb.log"; pgh_die "initdb failed"; }
	fi
	{
		echo "# pg_harden throwaway cluster"
		echo "listen_addresses = ''"
		echo "unix_socket_directories = '$PGH_TMP'"
		echo "port = $port"
		echo "shared_preload_libraries = 'pg_harden'"
		echo "fsync = off"
		echo "max_connections = 100"
		echo "log_line_prefix = '%m [%p] %d '"
		[ -z "${SANITIZE:-}" ] || echo "jit = off"
		for line in "$@"; do echo "$line"; done
	} | pgh_as_server tee "$data/postgresql.auto.conf" >/dev/null
	pgh_as_server env $(pgh_sanitizer_env) "$PGH_BIN/pg_ctl" -c -D "$data" -l "$log" -w -t 60 start >/dev/null \
		|| { tail -n 30 "$log"; pgh_die "server did not start"; }
}

# A second, fresh cluster next to the first (for dump and restore):
# pgh_other_cluster_start NAME [extra conf lines...] sets PGH_OTHER_PORT;
# pgh_cleanup stops it too.
PGH_OTHER=()
pgh_other_cluster_start() {
	local name=$1
	shift
	PGH_OTHER_PORT=$(pgh_free_port)
	rm -rf "$PGH_TMP/$name"
	PGH_OTHER+=("$PGH_TMP/$name")
	pgh_cluster_up "$PGH_TMP/$name" "$PGH_OTHER_PORT" "$PGH_TMP/server-$name.log" "$@"
}
pgh_other_cluster_stop() {
	local d
	for d in "${PGH_OTHER[@]}"; do
		[ ! -f "$d/postmaster.pid" ] || pgh_as_server "$PGH_BIN/pg_ctl" -D "$d" -m fast -w stop >/dev/null 2>&1 || true
	done
	PGH_OTHER=()
}

# With SANITIZE set, the environment that loads the sanitizer runtime into
# the server (PostgreSQL itself is not instrumented, so leak detection is
# off; reports go to $PGH_TMP/sanitizer/{asan,ubsan}.PID).  The runtime is
# preloaded (LD_PRELOAD) where the server starts with it; on glibc 2.36
# (Debian 12) a preloaded ASan runtime deadlocks in postgres's first
# bindtextdomain(), so there it is loaded with pg_harden.so instead
# (verify_asan_link_order=0, SANITIZE=nopreload): our code is instrumented
# (globals, heap memory from malloc, UBSan in full) but without stack checks,
# which need ASan to intercept PostgreSQL's siglongjmp out of an error.
pgh_sanitizer_preload() { echo "$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)"; }
pgh_sanitizer_preload_works() {
	timeout 10 env LD_PRELOAD="$(pgh_sanitizer_preload)" ASAN_OPTIONS=detect_leaks=0 "$1" -V >/dev/null 2>&1
}
pgh_sanitizer_env() {
	[ -n "${SANITIZE:-}" ] || return 0
	local dir="$PGH_TMP/sanitizer" opts
	mkdir -p "$dir"
	[ "$(id -u)" -ne 0 ] || chown "$PGH_USER" "$dir"
	opts="detect_leaks=0:abort_on_error=1:disable_coredump=1:log_path=$dir/asan"
	if [ "$SANITIZE" = nopreload ]; then
		opts="$opts:verify_asan_link_order=0"
	else
		echo "LD_PRELOAD=$(pgh_sanitizer_preload)"
	fi
	echo "ASAN_OPTIONS=$opts"
	echo "UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=0:log_path=$dir/ubsan"
}

# pgh_sanitizer_findings: the sanitizer reports that point into pg_harden's
# sources (ASan's SUMMARY lines, UBSan's "runtime error" lines), counted.
# Empty without SANITIZE.
pgh_sanitizer_findings() {
	[ -n "${SANITIZE:-}" ] && [ -d "$PGH_TMP/sanitizer" ] || return 0
	cat "$PGH_TMP/sanitizer"/* 2>/dev/null \
		| grep -E 'SUMMARY: AddressSanitizer|runtime error' \
		| grep -E '(^|[ /])src/[a-z_]+\.[ch]:' | sed 's/^ *//' | sort | uniq -c | sort -rn || true
}

pgh_cluster_stop() {
	[ "$PGH_CLUSTER_UP" -eq 1 ] || return 0
	pgh_as_server "$PGH_BIN/pg_ctl" -D "$PGH_TMP/data" -m fast -w stop >/dev/null 2>&1 || true
	PGH_CLUSTER_UP=0
}

pgh_cleanup() {
	local hook
	for hook in "${PGH_CLEANUP_HOOKS[@]}"; do "$hook"; done
	pgh_cluster_stop
	pgh_other_cluster_stop
	if [ -n "$PGH_TMP" ] && [ -z "${PGH_KEEP:-}" ]; then
		rm -rf "$PGH_TMP"
	elif [ -n "$PGH_TMP" ]; then
		echo "kept $PGH_TMP"
	fi
}

pgh_psql() { PGOPTIONS="-c client_min_messages=warning" psql -X -v ON_ERROR_STOP=1 -q "$@"; }

# pgh_createdb NAME [extensions...]
pgh_createdb() {
	local db=$1 ext
	shift
	pgh_psql -d postgres -c "DROP DATABASE IF EXISTS \"$db\"" -c "CREATE DATABASE \"$db\""
	for ext in "$@"; do pgh_psql -d "$db" -c "CREATE EXTENSION \"$ext\""; done
}

# The test lists, as the Makefile defines them.
pgh_list() { make -C "$PGH_ROOT" -s list-tests | sed -n "s/^$1=//p"; }
