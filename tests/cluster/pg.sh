#!/usr/bin/env bash
# A throwaway PostgreSQL for tests/cluster.rs, the same way scripts/test starts one
# (start_postgres): initdb in a temp dir, trust auth, 127.0.0.1 only, durability off.
# The cluster test needs its own server because it stops and restarts it.
#
#   pg.sh init  PORT       creates a dir under /tmp (printed on stdout), initdb DIR/data and
#                          starts it on 127.0.0.1:PORT
#   pg.sh start DIR        start it again (same port)
#   pg.sh stop  DIR        pg_ctl stop -m fast (what an operator's restart does)
#   pg.sh kill  DIR        pg_ctl stop -m immediate (clean-up)
# Runs the server as the `postgres` user when invoked as root (PostgreSQL refuses root).
set -euo pipefail

usage="usage: pg.sh init PORT | pg.sh start|stop|kill DIR"
cmd=${1:?$usage}
arg=${2:?$usage}
dir=$arg

pg_bin=$(dirname "$(command -v initdb 2>/dev/null || ls -1 /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n1)")
[ -x "$pg_bin/initdb" ] || { echo "PostgreSQL (initdb) not found: install postgresql" >&2; exit 1; }
as_pg=()
if [ "$(id -u)" = 0 ]; then
  id -u postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
  as_pg=(runuser -u postgres --)
fi

start() {
  local port
  port=$(cat "$dir/port")
  "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 30 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=200 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
    start >/dev/null || { cat "$dir/log" >&2; exit 1; }
}

case $cmd in
  init)
    port=$arg
    # Its own dir under /tmp: the caller's temp dir is root-only (mode 0700).
    dir=$(mktemp -d /tmp/unicred-cluster-pg.XXXXXX)
    [ ${#as_pg[@]} -eq 0 ] || chown postgres "$dir"
    echo "$port" >"$dir/port"
    "${as_pg[@]}" "$pg_bin/initdb" -D "$dir/data" -U postgres --auth=trust >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; exit 1; }
    start
    echo "$dir"
    ;;
  start) start ;;
  stop) "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >/dev/null ;;
  kill) "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$dir/data" -m immediate -w -t 30 stop >/dev/null 2>&1 || true ;;
  *) echo "unknown command $cmd" >&2; exit 2 ;;
esac
