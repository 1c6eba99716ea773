#!/usr/bin/env bash
# Run the engine (and later the relay and fakes) in the background for `make up`.
#   ops/engine.sh start | stop | status
# start returns once /readyz answers 200 (or fails after READY_TIMEOUT_S).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
run_dir=${STACK_RUN_DIR:-$here/.run}
pid_file=$run_dir/engine.pid
port=${ENGINE_HTTP_PORT:-8080}
host=${ENGINE_HTTP_HOST:-127.0.0.1}
ready_timeout_s=${READY_TIMEOUT_S:-60}

running() { [[ -f "$pid_file" ]] && kill -0 "$(cat "$pid_file")" 2>/dev/null; }

start() {
  mkdir -p "$run_dir/log"
  if ! running; then
    # setsid: the engine and its workers form their own process group, so stop
    # can signal all of them and nothing is left behind.
    setsid "$here/.venv/bin/python" -m engine serve >>"$run_dir/log/engine.log" 2>&1 </dev/null &
    echo $! >"$pid_file"
  fi
  local i
  for i in $(seq 1 $((ready_timeout_s * 5))); do
    if curl -fsS "http://$host:$port/readyz" >/dev/null 2>&1; then
      echo "engine: ready on http://$host:$port (log: $run_dir/log/engine.log)" >&2; return 0
    fi
    running || { echo "engine: exited during start-up; see $run_dir/log/engine.log" >&2; tail -n 20 "$run_dir/log/engine.log" >&2; return 1; }
    sleep 0.2
  done
  echo "engine: not ready after ${ready_timeout_s}s; see $run_dir/log/engine.log" >&2
  return 1
}

stop() {
  running || { rm -f "$pid_file"; return 0; }
  local pid; pid=$(cat "$pid_file")
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  local i
  for i in $(seq 1 150); do
    kill -0 -- "-$pid" 2>/dev/null || break
    sleep 0.2
  done
  kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$pid_file"
  echo "engine: stopped" >&2
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) if running; then echo "engine up (pid $(cat "$pid_file"))"; else echo "engine down"; exit 1; fi ;;
  *) echo "usage: ops/engine.sh start|stop|status" >&2; exit 2 ;;
esac
