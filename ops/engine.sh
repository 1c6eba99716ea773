#!/usr/bin/env bash
# The project's own processes in the background, for `make up` / `make down`:
#   fake-core, fake-sms (loadtest/fakes), engine (HTTP API), relay (outbox: online
#   rows), relay-batch (the day-end's outbox rows, at its priority: ledger 0025),
#   eod (the day-end scheduler).
#
#   ops/engine.sh start [NAME...] | stop [NAME...] | status
#
# start returns once each is ready (the engine: /readyz on its operations listener
# is 200) or fails after
# READY_TIMEOUT_S; every process runs in its own process group, so stop leaves
# nothing behind. Knobs of the fakes pass through (FAKE_CORE_LATENCY_MS, ...).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
run_dir=${STACK_RUN_DIR:-$here/.run}
py=$here/.venv/bin/python
# The local stack: the engine itself assumes production (its own keys) when unset.
export ENGINE_ENV=${ENGINE_ENV:-dev}
ops_port=${ENGINE_OPS_PORT:-8081}
ops_host=${ENGINE_OPS_HOST:-127.0.0.1}
ready_timeout_s=${READY_TIMEOUT_S:-60}
all=(fake-core fake-sms fake-bureau engine relay relay-batch eod)

command_of() {
  case "$1" in
    fake-core) echo "$py -m loadtest.fakes.core_bank" ;;
    fake-sms) echo "$py -m loadtest.fakes.sms_gateway" ;;
    fake-bureau) echo "$py -m loadtest.fakes.credit_bureau" ;;
    engine) echo "$py -m engine serve" ;;
    relay) echo "$py -m engine relay --lane online" ;;
    # The day-end's outbox rows (ledger 0025), at the day-end's CPU priority; idle most
    # of the day, so an idle shard is asked at most once a second, not ten times.
    relay-batch) echo "env ENGINE_RELAY_METRICS_PORT=${ENGINE_RELAY_BATCH_METRICS_PORT:-9103} ENGINE_RELAY_NICE=${ENGINE_EOD_NICE:-19} ENGINE_RELAY_BACKEND_NICE=${ENGINE_EOD_NICE:-19} ENGINE_RELAY_IDLE_POLL_MAX_S=${ENGINE_RELAY_BATCH_IDLE_POLL_MAX_S:-1} $py -m engine relay --lane batch" ;;
    # The scheduled day-end yields to online traffic above the load test's drawdown SLO.
    eod) echo "env ENGINE_EOD_ONLINE_P99_MS=${ENGINE_EOD_ONLINE_P99_MS:-200} $py -m engine eod schedule" ;;
    *) echo "engine.sh: unknown process $1" >&2; exit 2 ;;
  esac
}

ready_url() {
  case "$1" in
    fake-core) echo "http://127.0.0.1:${FAKE_CORE_PORT:-18601}/healthz" ;;
    fake-sms) echo "http://127.0.0.1:${FAKE_SMS_PORT:-18602}/healthz" ;;
    fake-bureau) echo "http://127.0.0.1:${FAKE_BUREAU_PORT:-18603}/healthz" ;;
    engine) echo "http://$ops_host:$ops_port/readyz" ;;
    relay) echo "http://127.0.0.1:${ENGINE_RELAY_METRICS_PORT:-9101}/metrics" ;;
    relay-batch) echo "http://127.0.0.1:${ENGINE_RELAY_BATCH_METRICS_PORT:-9103}/metrics" ;;
    eod) echo "http://127.0.0.1:${ENGINE_EOD_METRICS_PORT:-9102}/healthz" ;;
  esac
}

pid_file() { echo "$run_dir/$1.pid"; }
running() { [[ -f "$(pid_file "$1")" ]] && kill -0 "$(cat "$(pid_file "$1")")" 2>/dev/null; }

start_one() {
  local name=$1 log="$run_dir/log/$1.log"
  if ! running "$name"; then
    # setsid: its own process group, so stop can signal it and all its children.
    # shellcheck disable=SC2046
    setsid $(command_of "$name") >>"$log" 2>&1 </dev/null &
    echo $! >"$(pid_file "$name")"
  fi
  local i url; url=$(ready_url "$name")
  for i in $(seq 1 $((ready_timeout_s * 5))); do
    if curl -fsS "$url" >/dev/null 2>&1; then
      echo "engine.sh: $name ready (log: $log)" >&2; return 0
    fi
    running "$name" || { echo "engine.sh: $name exited during start-up; see $log" >&2; tail -n 20 "$log" >&2; return 1; }
    sleep 0.2
  done
  echo "engine.sh: $name not ready after ${ready_timeout_s}s; see $log" >&2
  return 1
}

stop_one() {
  local name=$1 pid
  running "$name" || { rm -f "$(pid_file "$name")"; return 0; }
  pid=$(cat "$(pid_file "$name")")
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  local i
  for i in $(seq 1 150); do
    kill -0 -- "-$pid" 2>/dev/null || break
    sleep 0.2
  done
  kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$(pid_file "$name")"
  echo "engine.sh: $name stopped" >&2
}

action=${1:-}; shift || true
names=("$@"); [[ ${#names[@]} -gt 0 ]] || names=("${all[@]}")
mkdir -p "$run_dir/log"
case "$action" in
  start) for n in "${names[@]}"; do start_one "$n"; done ;;
  stop) for ((i=${#names[@]}-1; i>=0; i--)); do stop_one "${names[$i]}"; done ;;
  status) for n in "${names[@]}"; do if running "$n"; then echo "$n up"; else echo "$n down"; fi; done ;;
  *) echo "usage: ops/engine.sh start|stop|status [fake-core fake-sms fake-bureau engine relay relay-batch eod]" >&2; exit 2 ;;
esac
