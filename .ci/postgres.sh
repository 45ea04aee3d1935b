#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the store's tests (FEDPLANE_TEST_POSTGRES).
#
#   eval "$(.ci/postgres.sh start DIR)"   # initdb into DIR, start, print the export
#   .ci/postgres.sh stop DIR              # stop it (DIR is left for the caller to remove)
#
# It takes Debian's server binaries (apt-get install postgresql), the newest
# major under /usr/lib/postgresql. The cluster listens on 127.0.0.1 only, on
# the first free port from a random start, with trust authentication for
# loopback and its own socket directory (nothing outside DIR is touched).
# PostgreSQL refuses to run as root: as root the cluster runs as the
# postgres user, which Debian's package creates.
set -euo pipefail

usage() {
	echo "usage: $0 start|stop DIR" >&2
	exit 2
}
[ $# -eq 2 ] || usage
cmd=$1
dir=$2

bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$bindir" ] || [ ! -x "$bindir/postgres" ]; then
	echo "postgres.sh: no PostgreSQL server under /usr/lib/postgresql (apt-get install postgresql)" >&2
	exit 1
fi

# as runs a command as the cluster's owner.
as() {
	if [ "$(id -u)" -eq 0 ]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

case $cmd in
start)
	mkdir -p "$dir"
	if [ "$(id -u)" -eq 0 ]; then
		chown postgres: "$dir"
	fi
	as "$bindir/initdb" --pgdata="$dir/data" --username=postgres --auth=trust \
		--encoding=UTF8 --locale=C.UTF-8 --no-sync >"$dir/initdb.log" 2>&1 ||
		{ cat "$dir/initdb.log" >&2; exit 1; }
	port=$((20000 + RANDOM % 20000))
	for _ in $(seq 1 20); do
		if as "$bindir/pg_ctl" --pgdata="$dir/data" --wait --timeout=60 --log="$dir/server.log" \
			-o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir -c fsync=off -c max_connections=200" \
			start >/dev/null 2>&1; then
			echo "export FEDPLANE_TEST_POSTGRES='postgres://postgres@127.0.0.1:$port/postgres?sslmode=disable'"
			exit 0
		fi
		port=$((port + 1)) # taken, most likely: the log says
	done
	echo "postgres.sh: the server did not start; its log:" >&2
	cat "$dir/server.log" >&2
	exit 1
	;;
stop)
	if [ -f "$dir/data/postmaster.pid" ]; then
		as "$bindir/pg_ctl" --pgdata="$dir/data" --mode=fast --wait stop >/dev/null
	fi
	;;
*)
	usage
	;;
esac
