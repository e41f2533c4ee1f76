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
	postgresql-15-pgtap libtap-parser-sourcehandler-pgtap-perl)
PGH_USER=${PGH_USER:-postgres}
PGH_TMP=""
PGH_PORT=""
PGH_CLUSTER_UP=0

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
	pgh_log "building pg_harden"
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
	local data="$PGH_TMP/data"
	PGH_PORT=${PGH_PORT:-$(pgh_free_port)}
	if [ ! -d "$data" ]; then
		pgh_as_server "$PGH_BIN/initdb" -D "$data" -U postgres --auth=trust \
			--no-sync -E UTF8 --locale=C >"$PGH_TMP/initdb.log" 2>&1 \
			|| { cat "$PGH_TMP/initdb.log"; pgh_die "initdb failed"; }
	fi
	{
		echo "# pg_harden throwaway cluster"
		echo "listen_addresses = ''"
		echo "unix_socket_directories = '$PGH_TMP'"
		echo "port = $PGH_PORT"
		echo "shared_preload_libraries = 'pg_harden'"
		echo "fsync = off"
		echo "max_connections = 100"
		echo "log_line_prefix = '%m [%p] %d '"
		for line in "$@"; do echo "$line"; done
	} | pgh_as_server tee "$data/postgresql.auto.conf" >/dev/null
	pgh_as_server "$PGH_BIN/pg_ctl" -D "$data" -l "$PGH_TMP/server.log" -w -t 60 start >/dev/null \
		|| { tail -n 30 "$PGH_TMP/server.log"; pgh_die "server did not start"; }
	PGH_CLUSTER_UP=1
	export PGHOST="$PGH_TMP" PGPORT="$PGH_PORT" PGUSER=postgres PGDATABASE=postgres
}

pgh_cluster_stop() {
	[ "$PGH_CLUSTER_UP" -eq 1 ] || return 0
	pgh_as_server "$PGH_BIN/pg_ctl" -D "$PGH_TMP/data" -m fast -w stop >/dev/null 2>&1 || true
	PGH_CLUSTER_UP=0
}

pgh_cleanup() {
	pgh_cluster_stop
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
