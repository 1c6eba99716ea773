#!/usr/bin/env bash
# The environment of a second local stack, for a second checkout whose suite runs
# beside the first one's (each its own PostgreSQL servers, Redis and data):
#
#   eval "$(ops/stack-env.sh 62000)"   # PostgreSQL 62000 and 62001, Redis 62002
#
# (A base of 61000 or more: a port in the ephemeral range, 32768-60999, may be held
# by an outgoing connection, and the server then fails to bind.)
#   make test
#
# Prints export lines for STACK_RUN_DIR (this checkout's .run), STACK_PG_PORTS,
# STACK_REDIS_PORT and the engine's ENGINE_CONTROL_DSN, ENGINE_SHARD_DSNS and
# ENGINE_REDIS_URL, all pointing at the same ports.
set -euo pipefail
base=${1:?usage: ops/stack-env.sh BASE_PORT}
[[ $base =~ ^[0-9]+$ ]] && ((base >= 1024 && base <= 65530)) || { echo "stack-env: BASE_PORT must be 1024..65530" >&2; exit 2; }
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
pg0=$base pg1=$((base + 1)) redis=$((base + 2))
pg() { echo "postgresql://postgres@127.0.0.1:$1/$2"; }
cat <<ENV
export STACK_RUN_DIR=$here/.run STACK_PG_PORTS="$pg0 $pg1" STACK_REDIS_PORT=$redis
export ENGINE_CONTROL_DSN=$(pg "$pg0" control)
export ENGINE_SHARD_DSNS=shard_0=$(pg "$pg0" shard_0),shard_1=$(pg "$pg0" shard_1),shard_2=$(pg "$pg1" shard_2),shard_3=$(pg "$pg1" shard_3)
export ENGINE_REDIS_URL=redis://127.0.0.1:$redis/0
ENV
