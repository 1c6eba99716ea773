"""Lower CPU priority (nice) for batch work, so the kernel serves online work first.

A day-end that shares a machine with online traffic costs the online p99 mostly in
run-queue waits: its runner and its PostgreSQL backends take the CPU a request needs
for the next millisecond. At nice 10 a runnable batch process gets about a tenth of a
nice-0 process's share while both want the CPU, and all of it while online is idle:
the batch still uses every spare cycle, it just yields first.

Two things are lowered: this process (`lower_process`; with its session's autogroup
when it leads one, for the kernel weighs sessions before processes), and the
PostgreSQL backend that serves one of its connections (`lower_backend`: every backend
is in the postmaster's group, so there nice alone weighs it against the online
requests' backends). The second works only where it
can: the server on this host (a loopback or Unix-socket DSN), and a runner allowed to
renice the server's processes (root, or the server's own user). Anywhere else it is
skipped with one log line: a remote database needs its own means (cgroups, a resource
group, a replica), and the day-end's governor still paces it.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg

log = logging.getLogger(__name__)

NICE_MAX = 19
_LOCAL_NAMES = frozenset({"", "localhost"})


def lower_process(nice: int, pid: int = 0) -> bool:
    """Make process `pid` (0: this one) at least `nice`; never raises its priority.
    False if the system would not let us (logged)."""
    if nice <= 0:
        return False
    nice = min(nice, NICE_MAX)
    try:
        if os.getpriority(os.PRIO_PROCESS, pid) < nice:
            os.setpriority(os.PRIO_PROCESS, pid, nice)
        if pid == 0:
            _lower_own_autogroup(nice)
    except OSError as exc:  # not ours to renice, gone, or no autogroup to write
        log.warning(
            "could not lower a process's CPU priority",
            extra={"pid": pid or os.getpid(), "nice": nice, "error": type(exc).__name__},
        )
        return False
    return True


def _lower_own_autogroup(nice: int) -> None:
    """With the kernel's autogroups (sched_autogroup_enabled: the default of most
    distributions), a process's nice counts only against its own session: each
    session's group gets an equal share of a busy CPU. A process that leads its
    session (`ops/engine.sh` starts the relay and the scheduler under setsid) lowers
    its whole group too; one started from a terminal leaves the terminal's alone."""
    if os.getsid(0) != os.getpid():
        return
    current = autogroup_nice(os.getpid())
    if current is not None and current < nice:
        Path("/proc/self/autogroup").write_text(str(nice))


def autogroup_nice(pid: int) -> int | None:
    """The nice of `pid`'s autogroup; None where the kernel has none."""
    try:  # "/autogroup-536 nice 0"
        return int(Path(f"/proc/{pid}/autogroup").read_text().rsplit("nice", 1)[1])
    except (OSError, IndexError, ValueError):
        return None


def is_local_dsn(dsn: str) -> bool:
    """True if the DSN's server is on this host (Unix socket, loopback, localhost)."""
    parts = urlsplit(dsn)
    host = parts.hostname or ""
    if host in _LOCAL_NAMES or host.startswith("/"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_postgres(pid: int) -> bool:
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return False
    return comm.startswith("postgres")


def lower_backend(conn: asyncpg.Connection, dsn: str, nice: int) -> bool:
    """Lower the PostgreSQL backend serving `conn` to `nice`, if the server is on this
    host and we may; True if it was lowered."""
    if nice <= 0:
        return False
    if not is_local_dsn(dsn):
        log.info("the database is not on this host: its backend keeps its priority")
        return False
    pid = conn.get_server_pid()
    if not _is_postgres(pid):  # a pooler or another namespace: not ours to touch
        log.info("no PostgreSQL process of this pid on this host", extra={"pid": pid})
        return False
    return lower_process(nice, pid)
