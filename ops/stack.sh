#!/usr/bin/env bash
# The local stack: two PostgreSQL servers (two shard databases each, plus the
# control database on the first) and one Redis, all under .run/ on our own
# ports. Idempotent: `up` on a running stack only checks it.
#
#   ops/stack.sh up | down | status | stop-pg N | start-pg N | kill-pg N | purge
#
# Overrides (environment): STACK_RUN_DIR, STACK_PG_PORTS ("55431 55432"),
# STACK_REDIS_PORT (56379), STACK_PG_BIN (dir with initdb/pg_ctl), STACK_PG_ROOT.
#
# Run as root, the PostgreSQL servers run as the `postgres` user, which must be
# able to reach their files. A checkout under a 0700 directory (root's home, a
# `mktemp -d`) is out of its reach: then the servers' files (data, sockets, server
# logs) live under STACK_PG_ROOT, by default /var/tmp/lending-engine/<hash of the
# run directory>, and `.run/pg` links to it. `purge` (make clean) deletes them.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
run_dir=${STACK_RUN_DIR:-$here/.run}
read -r -a pg_ports <<<"${STACK_PG_PORTS:-55431 55432}"
redis_port=${STACK_REDIS_PORT:-56379}

# Databases per server: the control database lives beside shards 0 and 1.
pg_databases() {
  case "$1" in
    0) echo "control shard_0 shard_1" ;;
    1) echo "shard_2 shard_3" ;;
    *) echo "" ;;
  esac
}

die() { echo "stack: $*" >&2; exit 1; }
log() { echo "stack: $*" >&2; }

find_pg_bin() {
  if [[ -n "${STACK_PG_BIN:-}" ]]; then echo "$STACK_PG_BIN"; return; fi
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  echo "$dir"
}

ensure_binaries() {
  local pg_bin
  pg_bin=$(find_pg_bin)
  if [[ -n "$pg_bin" && -x "$pg_bin/pg_ctl" ]] && command -v redis-server >/dev/null; then
    return
  fi
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    log "installing postgresql and redis-server with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql redis-server >/dev/null
  else
    die "PostgreSQL server binaries and redis-server are required: install the Debian packages 'postgresql' and 'redis-server' (or set STACK_PG_BIN)"
  fi
}

# Run a command as the postgres user when we are root (initdb refuses root).
as_pg() {
  if [[ $(id -u) -eq 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

# Can the postgres user open files below this directory (search permission on it and
# on every directory above it)?
pg_can_reach() {
  [[ $(id -u) -ne 0 ]] && return 0
  runuser -u postgres -- test -x "$1" 2>/dev/null
}

# Where the servers' own files live: the run directory if postgres can reach it,
# else a directory of their own outside the checkout (see the header).
resolve_pg_root() {
  mkdir -p "$run_dir"
  if [[ -L "$run_dir/pg" ]]; then
    readlink -f "$run_dir/pg"
  elif [[ -n "${STACK_PG_ROOT:-}" ]]; then
    echo "$STACK_PG_ROOT"
  elif pg_can_reach "$run_dir"; then
    echo "$run_dir"
  else
    echo "/var/tmp/lending-engine/$(readlink -f "$run_dir" | sha1sum | cut -c1-12)"
  fi
}

pg_root=$(resolve_pg_root)
sock_dir=$pg_root/sock
pg_log_dir=$pg_root/log

pg_data() { echo "$pg_root/pg$1"; }

pg_running() {
  local data; data=$(pg_data "$1")
  [[ -f "$data/postmaster.pid" ]] && as_pg "$(find_pg_bin)/pg_ctl" -D "$data" status >/dev/null 2>&1
}

init_pg() {
  local n=$1 port=${pg_ports[$1]} data; data=$(pg_data "$1")
  [[ -f "$data/PG_VERSION" ]] && return
  log "initdb server $n in $data"
  mkdir -p "$data"
  [[ $(id -u) -eq 0 ]] && chown postgres:postgres "$data"
  chmod 700 "$data"
  as_pg "$(find_pg_bin)/initdb" -D "$data" -U postgres --auth=trust --encoding=UTF8 \
    --locale=C.UTF-8 >"$run_dir/initdb$n.log" 2>&1 || die "initdb failed: see $run_dir/initdb$n.log"
  # Settings for a ledger on this 2-core machine. Durability stays: fsync and
  # synchronous_commit on; commit_delay lets concurrent commits share a flush.
  cat >>"$data/postgresql.conf" <<CONF

# --- lending engine local stack ---
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$sock_dir'
max_connections = 200
shared_buffers = 1GB
effective_cache_size = 4GB
work_mem = 16MB
maintenance_work_mem = 256MB
wal_buffers = 16MB
max_wal_size = 4GB
min_wal_size = 512MB
checkpoint_completion_target = 0.9
synchronous_commit = on
fsync = on
full_page_writes = on
commit_delay = 200
commit_siblings = 4
random_page_cost = 1.1
jit = off
log_min_duration_statement = 1000
log_lock_waits = on
deadlock_timeout = 500ms
idle_in_transaction_session_timeout = 60s
lock_timeout = 0
# Per-statement counts and times for the SRE and for profiling (pg_stat_statements view).
shared_preload_libraries = 'pg_stat_statements'
CONF
}

start_pg() {
  local n=$1 data; data=$(pg_data "$1")
  init_pg "$n"
  if pg_running "$n"; then return; fi
  log "starting PostgreSQL server $n on 127.0.0.1:${pg_ports[$n]}"
  as_pg "$(find_pg_bin)/pg_ctl" -D "$data" -l "$pg_log_dir/pg$n.log" -w -t 60 start >/dev/null \
    || die "PostgreSQL server $n did not start: see $pg_log_dir/pg$n.log"
  local db
  for db in $(pg_databases "$n"); do
    if ! psql_q "$n" postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1; then
      psql_q "$n" postgres -c "CREATE DATABASE $db" >/dev/null
    fi
  done
}

stop_pg() {
  local n=$1 mode=${2:-fast} data; data=$(pg_data "$1")
  if pg_running "$n"; then
    log "stopping PostgreSQL server $n (mode $mode)"
    as_pg "$(find_pg_bin)/pg_ctl" -D "$data" -m "$mode" -w -t 60 stop >/dev/null
  fi
}

# A crash, not a shutdown: SIGKILL to the postmaster and every backend, so that the
# next start runs crash recovery (what a power cut does to acknowledged commits).
kill_pg() {
  local n=$1 data pid; data=$(pg_data "$1")
  [[ -f "$data/postmaster.pid" ]] || return 0
  pid=$(head -n 1 "$data/postmaster.pid")
  log "killing PostgreSQL server $n (SIGKILL to postmaster $pid and its children)"
  pkill -KILL -P "$pid" 2>/dev/null || true
  kill -KILL "$pid" 2>/dev/null || true
  local i
  for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
}

psql_q() {
  local n=$1 db=$2; shift 2
  psql -X -q -h 127.0.0.1 -p "${pg_ports[$n]}" -U postgres -d "$db" "$@"
}

redis_running() { redis-cli -h 127.0.0.1 -p "$redis_port" ping >/dev/null 2>&1; }

start_redis() {
  redis_running && return
  log "starting Redis on 127.0.0.1:$redis_port"
  mkdir -p "$run_dir/redis"
  # Redis holds only the idempotency fast path and nonces: the durable record
  # is in PostgreSQL, so no persistence here.
  redis-server --daemonize yes --bind 127.0.0.1 --port "$redis_port" --save "" \
    --appendonly no --dir "$run_dir/redis" --pidfile "$run_dir/redis/redis.pid" \
    --logfile "$run_dir/redis/redis.log" --maxmemory 1gb --maxmemory-policy volatile-lru >/dev/null
  local i
  for i in $(seq 1 50); do redis_running && return; sleep 0.1; done
  die "Redis did not start: see $run_dir/redis/redis.log"
}

stop_redis() {
  if redis_running; then
    log "stopping Redis"
    redis-cli -h 127.0.0.1 -p "$redis_port" shutdown nosave >/dev/null 2>&1 || true
  fi
}

prepare_dirs() {
  mkdir -p "$run_dir/log" "$pg_root" "$sock_dir" "$pg_log_dir"
  if [[ "$pg_root" != "$run_dir" && ! -e "$run_dir/pg" ]]; then
    # The default place is ours: a umask of 077 must not lock the servers out of it.
    [[ -z "${STACK_PG_ROOT:-}" ]] && chmod 755 "$pg_root" "$(dirname "$pg_root")"
    pg_can_reach "$pg_root" || die "the postgres user cannot reach $pg_root: set STACK_PG_ROOT to a directory it can (e.g. under /var/tmp)"
    log "the postgres user cannot reach $run_dir: PostgreSQL's files go to $pg_root (.run/pg)"
    ln -s "$pg_root" "$run_dir/pg"
  fi
  if [[ $(id -u) -eq 0 ]]; then
    chown postgres:postgres "$sock_dir" "$pg_log_dir"
  fi
}

purge() {
  local n
  for n in "${!pg_ports[@]}"; do
    if pg_running "$n"; then die "server $n is running: ops/stack.sh down first"; fi
  done
  if [[ "$pg_root" != "$run_dir" && -d "$pg_root" ]]; then
    log "deleting $pg_root"
    rm -rf "$pg_root"
  fi
  rm -f "$run_dir/pg"
}

status() {
  local n rc=0
  for n in "${!pg_ports[@]}"; do
    if pg_running "$n"; then echo "postgres $n 127.0.0.1:${pg_ports[$n]} up"; else echo "postgres $n 127.0.0.1:${pg_ports[$n]} down"; rc=1; fi
  done
  if redis_running; then echo "redis 127.0.0.1:$redis_port up"; else echo "redis 127.0.0.1:$redis_port down"; rc=1; fi
  return $rc
}

cmd=${1:-}
case "$cmd" in
  up)
    ensure_binaries; prepare_dirs
    for n in "${!pg_ports[@]}"; do start_pg "$n"; done
    start_redis ;;
  down)
    for n in "${!pg_ports[@]}"; do stop_pg "$n"; done
    stop_redis ;;
  status) status ;;
  stop-pg) stop_pg "${2:?server number}" "${3:-fast}" ;;
  start-pg) prepare_dirs; start_pg "${2:?server number}" ;;
  kill-pg) kill_pg "${2:?server number}" ;;
  purge) purge ;;
  *) die "usage: ops/stack.sh up|down|status|stop-pg N [fast|immediate]|start-pg N|kill-pg N|purge" ;;
esac
