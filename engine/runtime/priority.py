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
can: a server on this host (as the server itself sees the connection: over a Unix
socket or a loopback address, not as the DSN spells it), and a runner allowed to
renice the server's processes (root, CAP_SYS_NICE, or the server's own user).
Anywhere else it is skipped with one log line: a remote database needs its own means
(cgroups, a resource group, a replica), and the day-end's governor still paces it.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import time
from pathlib import Path

import asyncpg

log = logging.getLogger(__name__)

NICE_MAX = 19
_said: set[str] = set()  # what was logged once already: pools open connections all day


def lower_process(nice: int, pid: int = 0) -> bool:
    """Make process `pid` (0: this one) at least `nice`; never raises its priority.
    False if the system would not let us (logged once)."""
    if nice <= 0:
        return False
    nice = min(nice, NICE_MAX)
    try:
        if os.getpriority(os.PRIO_PROCESS, pid) < nice:
            os.setpriority(os.PRIO_PROCESS, pid, nice)
    except OSError as exc:  # not ours to renice, or gone
        _say_once(f"process:{type(exc).__name__}", "could not lower a process's CPU priority",
                  pid=pid or os.getpid(), nice=nice, error=type(exc).__name__)  # fmt: skip
        return False
    if pid == 0:
        _lower_own_autogroup(nice)
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
    if current is None or current >= nice:
        return
    for attempt in range(2):
        try:
            Path("/proc/self/autogroup").write_text(str(nice))
            return
        except BlockingIOError:  # the kernel allows one change per 100 ms system-wide
            if attempt == 0:
                time.sleep(0.11)
        except OSError as exc:
            _say_once("autogroup", "could not lower this session's autogroup",
                      nice=nice, error=type(exc).__name__)  # fmt: skip
            return
    _say_once("autogroup", "could not lower this session's autogroup", nice=nice, error="EAGAIN")


def autogroup_nice(pid: int) -> int | None:
    """The nice of `pid`'s autogroup; None where the kernel has none."""
    try:  # "/autogroup-536 nice 0"
        return int(Path(f"/proc/{pid}/autogroup").read_text().rsplit("nice", 1)[1])
    except (OSError, IndexError, ValueError):
        return None


def on_this_host(server_address: str | None) -> bool:
    """Is a server on this host, by the address it sees its end of the connection at
    (`inet_server_addr()`: NULL over a Unix socket)?"""
    if server_address is None:
        return True
    try:
        return ipaddress.ip_address(server_address).is_loopback
    except ValueError:
        return False


def _is_backend(pid: int) -> bool:
    """A PostgreSQL backend here: a `postgres` process whose parent is one too (the
    postmaster), not a pooler's or another namespace's process of that number."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        parent = int(stat[stat.rindex(")") + 2 :].split()[1])
        names = (Path(f"/proc/{p}/comm").read_text().strip() for p in (pid, parent))
        return all(name == "postgres" for name in names)
    except (OSError, ValueError, IndexError):
        return False


async def lower_backend(conn: asyncpg.Connection, nice: int) -> bool:
    """Lower the PostgreSQL backend serving `conn` to `nice`, if it runs on this host
    and we may; True if it was lowered."""
    if nice <= 0:
        return False
    address = await conn.fetchval("SELECT host(inet_server_addr())")
    if not on_this_host(address):
        _say_once("remote", "the database is not on this host: its backends keep their priority")
        return False
    pid = conn.get_server_pid()
    if not _is_backend(pid):
        _say_once("not-backend", "no PostgreSQL backend of this pid on this host", pid=pid)
        return False
    return lower_process(nice, pid)


def _say_once(key: str, message: str, **extra: object) -> None:
    if key not in _said:
        _said.add(key)
        log.warning(message, extra=extra)
