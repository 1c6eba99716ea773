"""CPU time of every process on this machine, grouped by role, from /proc.

    before = cpu_by_role(); ...measured run...; spent = cpu_by_role() - before

On a shared 2-core machine the question "where does a drawdown's CPU go" is
answered per role: PostgreSQL, the engine's workers, the relay, the fakes,
Redis, this client, and everything else. With the stack's environment set
(ops/stack-env.sh: STACK_RUN_DIR, STACK_REDIS_PORT) only this checkout's processes
count in their roles: the PostgreSQL backends of its own servers, its own Python
processes, its Redis; other stacks' processes on the machine are "other". Linux only
(returns {} elsewhere).
"""

from __future__ import annotations

import os
from pathlib import Path

ROLES = ("postgres", "engine", "relay", "fakes", "redis", "client", "other")
_TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _this_stack() -> tuple[set[int], str, str] | None:
    """This checkout's postmasters, its Python and its Redis port, when the stack's
    environment names them (ops/stack-env.sh): on a machine shared with other stacks,
    their PostgreSQL, engines and fakes are then "other", not ours."""
    run_dir = os.environ.get("STACK_RUN_DIR")
    if not run_dir:
        return None
    postmasters: set[int] = set()
    for pid_file in Path(run_dir).glob("pg*/postmaster.pid"):
        try:
            postmasters.add(int(pid_file.read_text().split()[0]))
        except (OSError, ValueError, IndexError):
            continue
    python = str(Path(run_dir).resolve().parent / ".venv" / "bin" / "python")
    return postmasters, python, os.environ.get("STACK_REDIS_PORT", "")


def _mine(pid: int, cmdline: str, ppid: int, stack: tuple[set[int], str, str] | None) -> bool:
    if stack is None or pid == os.getpid():
        return True
    postmasters, python, redis_port = stack
    if pid in postmasters or ppid in postmasters:
        return True
    if cmdline.startswith(python):
        return True
    return "redis-server" in cmdline and bool(redis_port) and f":{redis_port}" in cmdline


def _role(pid: int, cmdline: str, stat: str) -> str:
    if pid == os.getpid():
        return "client"
    if "postgres" in cmdline or "(postgres)" in stat:
        return "postgres"
    if "engine relay" in cmdline:
        return "relay"
    if "engine serve" in cmdline:
        return "engine"
    if "loadtest.fakes" in cmdline:
        return "fakes"
    if "redis-server" in cmdline:
        return "redis"
    return "other"


def cpu_by_role() -> dict[str, float]:
    """Seconds of user and system CPU each role's processes have used so far."""
    spent = dict.fromkeys(ROLES, 0.0)
    proc = Path("/proc")
    if not proc.is_dir():
        return {}
    stack = _this_stack()
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # the process ended meanwhile
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        ticks = int(fields[11]) + int(fields[12])  # utime, stime
        pid, ppid = int(entry.name), int(fields[1])
        role = _role(pid, cmdline, stat) if _mine(pid, cmdline, ppid, stack) else "other"
        spent[role] += ticks / _TICKS_PER_S
    return spent


def per_operation_ms(
    before: dict[str, float], after: dict[str, float], ops: int
) -> dict[str, float]:
    """Milliseconds of CPU per operation, by role, between two readings."""
    if not ops or not before:
        return {}
    return {role: (after[role] - before[role]) * 1000 / ops for role in ROLES}
