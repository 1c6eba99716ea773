"""CPU time of every process on this machine, grouped by role, from /proc.

    before = cpu_by_role(); ...measured run...; spent = cpu_by_role() - before

On a shared 2-core machine the question "where does a drawdown's CPU go" is
answered per role: PostgreSQL, the engine's workers, the relay, the day-end's
runner ("eod"), the fakes, Redis, this client, and everything else. With the stack's environment set
(ops/stack-env.sh: STACK_RUN_DIR, STACK_REDIS_PORT) only this checkout's processes
count in their roles: the PostgreSQL backends of its own servers, its own Python
processes, its Redis; other stacks' processes on the machine are "other". Linux only
(returns {} elsewhere).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

ROLES = ("postgres", "engine", "relay", "eod", "fakes", "redis", "client", "other")
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
    if "engine eod" in cmdline:  # a day-end run or its scheduler
        return "eod"
    if "engine serve" in cmdline:
        return "engine"
    if "loadtest.fakes" in cmdline:
        return "fakes"
    if "redis-server" in cmdline:
        return "redis"
    return "other"


def _parse_stat(stat: str) -> tuple[int, float]:
    """(ppid, seconds of user and system CPU) from a /proc/<pid>/stat line."""
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICKS_PER_S  # utime, stime


def _scan() -> Iterator[tuple[int, int, str, str, float]]:
    """Every process now: pid, ppid, command line, stat line, seconds of CPU."""
    proc = Path("/proc")
    if not proc.is_dir():
        return
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # the process ended meanwhile
            continue
        ppid, spent = _parse_stat(stat)
        yield int(entry.name), ppid, cmdline, stat, spent


def _processes() -> dict[int, tuple[str, float]]:
    """Every process now: its role (or "other") and its seconds of user and system CPU."""
    stack = _this_stack()
    return {
        pid: (_role(pid, cmdline, stat) if _mine(pid, cmdline, ppid, stack) else "other", spent)
        for pid, ppid, cmdline, stat, spent in _scan()
    }


def process_cpu_s(pid: int) -> float | None:
    """Seconds of user and system CPU of one process, None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return _parse_stat(stat)[1]


def command_cpu_s(fragment: str) -> float:
    """Seconds of CPU so far of this stack's processes whose command line holds
    `fragment` (e.g. "relay --lane batch")."""
    stack = _this_stack()
    return sum(
        spent
        for pid, ppid, cmdline, _, spent in _scan()
        if fragment in cmdline and _mine(pid, cmdline, ppid, stack)
    )


def _by_role(processes: dict[int, tuple[str, float]]) -> dict[str, float]:
    spent = dict.fromkeys(ROLES, 0.0)
    for role, seconds in processes.values():
        spent[role] += seconds
    return spent


def cpu_by_role() -> dict[str, float]:
    """Seconds of user and system CPU each role's processes have used so far."""
    processes = _processes()
    return _by_role(processes) if processes else {}


class CpuSampler:
    """`cpu_by_role` over a stretch in which processes come and go (a day-end run and
    its database backends): sampled every second, a process that ended keeps the CPU
    it had at its last sample (at most a second of it is missed)."""

    def __init__(self) -> None:
        self._seen: dict[int, tuple[str, float]] = {}

    def sample(self) -> None:
        self._seen.update(_processes())

    def by_role(self) -> dict[str, float]:
        return _by_role(self._seen) if self._seen else {}


@contextlib.asynccontextmanager
async def cpu_spent() -> AsyncIterator[dict[str, float]]:
    """CPU seconds by role spent while the block runs (a `CpuSampler` sampled every
    second); the dict yielded is filled when the block ends."""
    sampler = CpuSampler()
    sampler.sample()
    first = sampler.by_role()
    spent: dict[str, float] = {}

    async def every_second() -> None:
        while True:
            await asyncio.sleep(1.0)
            sampler.sample()

    task = asyncio.create_task(every_second())
    try:
        yield spent
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sampler.sample()
        spent.update({role: s - first.get(role, 0.0) for role, s in sampler.by_role().items()})


def per_operation_ms(
    before: dict[str, float], after: dict[str, float], ops: int
) -> dict[str, float]:
    """Milliseconds of CPU per operation, by role, between two readings."""
    if not ops or not before:
        return {}
    return {role: (after[role] - before[role]) * 1000 / ops for role in ROLES}


def priorities_of(role: str) -> str:
    """The CPU priority of this stack's `role` processes, as "nice N, session M" (the
    nice of their autogroup, which is what the kernel weighs against other sessions:
    engine/runtime/priority.py); "none running" if there are none."""
    seen = set()
    for pid, (found, _) in _processes().items():
        if found != role:
            continue
        try:
            nice = os.getpriority(os.PRIO_PROCESS, pid)
        except OSError:  # gone meanwhile
            continue
        try:
            group = Path(f"/proc/{pid}/autogroup").read_text().rsplit("nice", 1)[1].strip()
        except (OSError, IndexError):  # no autogroups here (disabled, or a cgroup's)
            group = "-"
        seen.add(f"nice {nice}, session {group}")
    return "; ".join(sorted(seen)) or "none running"
