#!/usr/bin/env bash
# A real Prometheus for the local stack, from the machine's own binaries
# (Debian package `prometheus`: prometheus + promtool), data under .run/.
# Idempotent: `up` on a running server only waits for it to be ready.
#
#   ops/prometheus.sh up | down | status | check | test
#
#   up      start prometheus on 127.0.0.1:9090 (scraping ops/prometheus/prometheus.yml),
#           return once /-/ready answers
#   down    stop the prometheus this script started; nothing is left running
#   check   promtool check config + check rules
#   test    promtool test rules (unit tests of the alerts)
#
# Overrides (environment): STACK_RUN_DIR, PROMETHEUS_LISTEN (127.0.0.1:9090),
# READY_TIMEOUT_S (60).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
run_dir=${STACK_RUN_DIR:-$here/.run}
config_dir=$here/ops/prometheus
listen=${PROMETHEUS_LISTEN:-127.0.0.1:9090}
port=${listen##*:}
pid_file=$run_dir/prometheus.pid
data_dir=$run_dir/prometheus
log_file=$run_dir/log/prometheus.log
ready_timeout_s=${READY_TIMEOUT_S:-60}
stop_timeout_s=30
# Local data stays bounded: whichever limit comes first.
retention_time=7d
retention_size=1GB

die() { echo "prometheus: $*" >&2; exit 1; }
log() { echo "prometheus: $*" >&2; }

have_binaries() { command -v prometheus >/dev/null && command -v promtool >/dev/null; }

# Something listening on our port (ss if present, else a bash connect).
port_in_use() {
  if command -v ss >/dev/null; then
    [[ -n $(ss -Htln "sport = :$port" 2>/dev/null) ]]
  else
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
  fi
}

# The Debian package's own service: we run our own process, so a system
# prometheus that the package started is stopped again.
stop_package_service() {
  if command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
    systemctl disable --now prometheus >/dev/null 2>&1 || true
  elif [[ -x /etc/init.d/prometheus ]]; then
    /etc/init.d/prometheus stop >/dev/null 2>&1 || true
  fi
}

install_package() {
  log "installing the Debian package 'prometheus' with apt-get"
  # policy-rc.d answering 101 keeps the package's postinst from starting its
  # service; it is removed again unless it was there before.
  local policy=/usr/sbin/policy-rc.d made_policy=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    made_policy=1
  fi
  local rc=0
  {
    apt-get update -qq \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  } || rc=$?
  [[ $made_policy -eq 1 ]] && rm -f "$policy"
  [[ $rc -eq 0 ]] || die "apt-get install prometheus failed (exit $rc)"
  stop_package_service
}

ensure_binaries() {
  have_binaries && return
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    install_package
    have_binaries || die "the package 'prometheus' is installed but prometheus/promtool are not on PATH"
  else
    die "prometheus and promtool are required: install the Debian package 'prometheus' (apt-get install prometheus)"
  fi
}

running() { [[ -f "$pid_file" ]] && kill -0 "$(cat "$pid_file")" 2>/dev/null; }

ready() { curl -fsS --max-time 2 "http://$listen/-/ready" >/dev/null 2>&1; }

wait_ready() {
  local i
  for i in $(seq 1 $((ready_timeout_s * 5))); do
    if ready; then
      log "ready on http://$listen (data: $data_dir, log: $log_file)"
      return 0
    fi
    if ! running; then
      tail -n 20 "$log_file" >&2 || true
      die "exited during start-up; see $log_file"
    fi
    sleep 0.2
  done
  die "not ready after ${ready_timeout_s}s; see $log_file"
}

up() {
  ensure_binaries
  mkdir -p "$run_dir/log" "$data_dir"
  if ! running; then
    rm -f "$pid_file"
    if port_in_use; then
      die "port $port is taken by another process (a system prometheus? stop it with" \
        "'service prometheus stop' or set PROMETHEUS_LISTEN): $(ss -Htlnp "sport = :$port" 2>/dev/null || true)"
    fi
    # setsid: its own process group, so down signals exactly what up started.
    setsid prometheus \
      --config.file="$config_dir/prometheus.yml" \
      --storage.tsdb.path="$data_dir" \
      --storage.tsdb.retention.time="$retention_time" \
      --storage.tsdb.retention.size="$retention_size" \
      --web.listen-address="$listen" \
      >>"$log_file" 2>&1 </dev/null &
    echo $! >"$pid_file"
  fi
  wait_ready
}

down() {
  running || { rm -f "$pid_file"; return 0; }
  local pid i
  pid=$(cat "$pid_file")
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  # Prometheus flushes its head block on TERM: give it time before KILL.
  for i in $(seq 1 $((stop_timeout_s * 5))); do
    kill -0 -- "-$pid" 2>/dev/null || break
    sleep 0.2
  done
  kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$pid_file"
  log "stopped"
}

status() {
  if running && ready; then
    echo "prometheus http://$listen up (pid $(cat "$pid_file"))"
  else
    echo "prometheus http://$listen down"
    return 1
  fi
}

check() {
  ensure_binaries
  promtool check config "$config_dir/prometheus.yml"
  promtool check rules "$config_dir/alert-rules.yml"
}

unit_test() {
  ensure_binaries
  promtool test rules "$config_dir/alert-rules.test.yml"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  check) check ;;
  test) unit_test ;;
  *) die "usage: ops/prometheus.sh up|down|status|check|test" ;;
esac
