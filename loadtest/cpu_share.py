"""CPU time of every process on this machine, grouped by role, from /proc.

    before = cpu_by_role(); ...measured run...; spent = cpu_by_role() - before

On a shared 2-core machine the question "where does a drawdown's CPU go" is
answered per role: PostgreSQL, the engine's workers, the relay, the fakes,
Redis, this client, and everything else. Linux only (returns {} elsewhere).
"""

from __future__ import annotations

import os
from pathlib import Path

ROLES = ("postgres", "engine", "relay", "fakes", "redis", "client", "other")
_TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


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
        spent[_role(int(entry.name), cmdline, stat)] += ticks / _TICKS_PER_S
    return spent


def per_operation_ms(
    before: dict[str, float], after: dict[str, float], ops: int
) -> dict[str, float]:
    """Milliseconds of CPU per operation, by role, between two readings."""
    if not ops or not before:
        return {}
    return {role: (after[role] - before[role]) * 1000 / ops for role in ROLES}
