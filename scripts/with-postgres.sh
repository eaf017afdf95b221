#!/usr/bin/env bash
# Runs a command with a throwaway PostgreSQL server on a loopback port, named to the tests by
# DEKM_TEST_POSTGRES=postgres://dekm@127.0.0.1:PORT/postgres (a role that may create databases;
# every test makes its own). The server lives in a temporary directory and is stopped and
# removed when the command ends.
#
#   scripts/with-postgres.sh cargo test --workspace
#
# PostgreSQL comes from Debian's package; when it is missing and this runs as root with
# apt-get, it is installed. When it cannot be had or started, the command still runs, without
# DEKM_TEST_POSTGRES, and the PostgreSQL tests print SKIPPED with this script's reason.
set -uo pipefail


find_bin() {
  command -v "$1" 2>/dev/null && return
  ls /usr/lib/postgresql/*/bin/"$1" 2>/dev/null | sort -V | tail -1
}

initdb=$(find_bin initdb)
if [ -z "$initdb" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "with-postgres: installing Debian's postgresql package" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) \
    >/dev/null 2>&1
  initdb=$(find_bin initdb)
fi
if [ -z "$initdb" ]; then
  reason="initdb not found and postgresql could not be installed"
  echo "with-postgres: no PostgreSQL for the tests: $reason" >&2
  exec "$@"
fi
bin=$(dirname "$initdb")

dir=$(mktemp -d /tmp/dekm-pg.XXXXXX)
as_owner=()
if [ "$(id -u)" = 0 ]; then
  # PostgreSQL refuses to run as root.
  if ! id postgres >/dev/null 2>&1; then
    useradd --system --no-create-home postgres >/dev/null 2>&1
  fi
  chown postgres "$dir"
  as_owner=(runuser -u postgres --)
fi
port=$(( 20000 + RANDOM % 30000 ))
cleanup() {
  "${as_owner[@]}" "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1
  rm -rf "$dir"
}
if ! "${as_owner[@]}" "$bin/initdb" -D "$dir/data" -U dekm --auth=trust >"$dir/initdb.log" 2>&1; then
  echo "with-postgres: no PostgreSQL for the tests: initdb failed: $(tail -3 "$dir/initdb.log")" >&2
  rm -rf "$dir"
  exec "$@"
fi
if ! "${as_owner[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
  -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=200" \
  start >/dev/null 2>&1; then
  echo "with-postgres: no PostgreSQL for the tests: the server did not start: $(tail -3 "$dir/server.log")" >&2
  cleanup
  exec "$@"
fi
trap cleanup EXIT
export DEKM_TEST_POSTGRES="postgres://dekm@127.0.0.1:$port/postgres"
echo "with-postgres: PostgreSQL $("$bin/pg_ctl" --version | awk '{print $3}') on 127.0.0.1:$port" >&2
"$@"
