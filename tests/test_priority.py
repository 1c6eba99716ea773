"""Batch work at a lower CPU priority (engine/runtime/priority.py): real processes and
the real PostgreSQL backends of the stack, reniced and read back from the kernel."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import msgspec
import pytest

from engine.eod.lease import shard_lease
from engine.relay.main import relay_pools
from engine.runtime.priority import autogroup_nice, lower_backend, lower_process, on_this_host
from engine.settings import EodSettings, ExternalSettings, Settings

# Renicing a backend of the `postgres` user takes root (or that user); CI runs as root.
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="renicing PostgreSQL needs root")


@pytest.fixture
def child() -> Iterator[int]:
    proc = subprocess.Popen(["sleep", "60"])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize(
    ("address", "local"),
    [
        (None, True),  # a Unix socket
        ("127.0.0.1", True),
        ("::1", True),
        ("10.1.2.3", False),  # what a remote server, or one behind a port mapping, sees
        ("172.17.0.2", False),
        ("2001:db8::2", False),
    ],
)
def test_only_a_server_that_sees_a_local_connection_is_on_this_host(
    address: str | None, local: bool
) -> None:
    assert on_this_host(address) is local


def test_a_process_is_lowered_and_never_raised(child: int) -> None:
    assert lower_process(7, child)
    assert os.getpriority(os.PRIO_PROCESS, child) == 7
    assert lower_process(3, child)  # already lower than asked: left as it is
    assert os.getpriority(os.PRIO_PROCESS, child) == 7
    assert not lower_process(0, child)
    assert os.getpriority(os.PRIO_PROCESS, child) == 7


@pytest.mark.skipif(autogroup_nice(os.getpid()) is None, reason="the kernel has no autogroups")
def test_a_session_leader_lowers_its_autogroup_and_a_member_does_not() -> None:
    script = (
        "import os, time; from engine.runtime.priority import lower_process; "
        "lower_process(6); print('ok', flush=True); time.sleep(30)"
    )
    for own_session, expected in ((True, 6), (False, autogroup_nice(os.getpid()))):
        proc = subprocess.Popen(
            [sys.executable, "-c", script],
            stdout=subprocess.PIPE,
            start_new_session=own_session,
            cwd=Path(__file__).resolve().parent.parent,
        )
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == b"ok"
            assert os.getpriority(os.PRIO_PROCESS, proc.pid) == 6
            assert autogroup_nice(proc.pid) == expected
        finally:
            proc.kill()
            proc.wait()
            assert proc.stdout is not None
            proc.stdout.close()


def test_a_vanished_process_is_reported_not_raised() -> None:
    proc = subprocess.Popen(["true"])
    proc.wait()
    assert not lower_process(10, proc.pid)


@needs_root
async def test_the_backend_of_a_connection_is_lowered(settings: Settings) -> None:
    dsn = settings.shards[0].dsn
    conn = await asyncpg.connect(dsn)
    try:
        pid = conn.get_server_pid()
        assert os.getpriority(os.PRIO_PROCESS, pid) == 0
        assert await lower_backend(conn, 12)
        assert os.getpriority(os.PRIO_PROCESS, pid) == 12
        # The backend still answers: a lower priority, not a stop.
        assert await conn.fetchval("SELECT 1") == 1
    finally:
        await conn.close()


@needs_root
async def test_the_day_end_lease_runs_at_the_configured_nice(settings: Settings) -> None:
    dsn = settings.shards[0].dsn
    async with shard_lease(dsn, "eod:test-priority", nice=15) as conn:
        assert os.getpriority(os.PRIO_PROCESS, conn.get_server_pid()) == 15
    async with shard_lease(dsn, "eod:test-priority") as conn:  # default: unchanged
        assert os.getpriority(os.PRIO_PROCESS, conn.get_server_pid()) == 0


@needs_root
@pytest.mark.parametrize("nice", [9, 0])
async def test_the_relay_pools_connections_run_at_relay_backend_nice(
    settings: Settings, nice: int
) -> None:
    external = msgspec.structs.replace(settings.external, relay_backend_nice=nice)
    pools = relay_pools(msgspec.structs.replace(settings, external=external))
    await pools.open()
    try:
        for pool in pools.by_name.values():
            async with pool.acquire() as conn:
                assert os.getpriority(os.PRIO_PROCESS, conn.get_server_pid()) == nice
    finally:
        await pools.close()


def test_nice_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match=r"eod\.nice"):
        EodSettings(nice=20)
    with pytest.raises(ValueError, match=r"eod\.nice"):
        EodSettings(nice=-1)
    with pytest.raises(ValueError, match="relay_nice"):
        ExternalSettings(relay_nice=20)
    with pytest.raises(ValueError, match="relay_backend_nice"):
        ExternalSettings(relay_backend_nice=-1)
