"""The fakes of loadtest/fakes as real subprocesses on free ports, for their own tests.

Shared by tests/test_fakes.py and tests/test_fake_bureau.py. Everything goes over
HTTP, as the engine's adapters do: no fake module is imported here. Each test
starts its own fakes with a temporary record file, so knobs set by one test
never leak into another.

    CORE, SMS, BUREAU   which fake: its module, environment prefix and record route
    FakeProcess         one fake: `start` (returns once /healthz answers), `stop`,
                        `run_until_exit` (for a fake that must refuse to start)
    Fakes               starts fakes for one test and stops them all at its end
    fakes, client       the fixtures; a test module takes them by naming them at its
                        top (`fakes = fakes_support.fakes`), which for its tests also
                        stands in for conftest.py's session-wide `fakes` (the stack's)
    call                one HTTP call -> (status, JSON or text)
    records             the fake's record (GET /fake/records, /fake/messages, /fake/queries)
    set_knobs           POST /fake/knobs
    metrics             GET /metrics, as text
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp
import pytest

from tests.conftest import ROOT, STARTED_LOGS, free_port

CALL_TIMEOUT = aiohttp.ClientTimeout(total=5)
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0


class FakeKind(NamedTuple):
    module: str  # python -m loadtest.fakes.<module>
    prefix: str  # of its environment variables
    records_route: str  # every record it keeps, in order


CORE = FakeKind("core_bank", "FAKE_CORE", "/fake/records")
SMS = FakeKind("sms_gateway", "FAKE_SMS", "/fake/messages")
BUREAU = FakeKind("credit_bureau", "FAKE_BUREAU", "/fake/queries")


class FakeProcess:
    """One fake as a subprocess: `python -m loadtest.fakes.<module>`."""

    def __init__(
        self, kind: FakeKind, record_path: Path, log_directory: Path, env: dict[str, str]
    ) -> None:
        self.kind = kind
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.record_path = record_path
        self.log_path = log_directory / f"{kind.module}-{self.port}.log"
        STARTED_LOGS.setdefault(self.log_path, 0)  # the suite-end PII scan reads it too
        self.env = dict(os.environ) | env
        self.env |= {
            f"{kind.prefix}_HOST": "127.0.0.1",
            f"{kind.prefix}_PORT": str(self.port),
            f"{kind.prefix}_RECORD_FILE": str(record_path),
        }
        self.proc: asyncio.subprocess.Process | None = None

    async def _spawn(self, stdout: Any, stderr: Any) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            f"loadtest.fakes.{self.kind.module}",
            cwd=ROOT,
            env=self.env,
            stdout=stdout,
            stderr=stderr,
        )

    async def start(self) -> None:
        assert self.proc is None
        with self.log_path.open("ab") as log:
            self.proc = await self._spawn(log, asyncio.subprocess.STDOUT)
        await self._wait_ready()

    async def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        timeout = aiohttp.ClientTimeout(total=0.5)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while time.monotonic() < deadline:
                if self.proc.returncode is not None:
                    raise RuntimeError(f"{self.kind.module} exited: {self.log_path.read_text()}")
                try:
                    async with session.get(f"{self.base_url}/healthz") as resp:
                        if resp.status == 200:
                            return
                except (aiohttp.ClientError, TimeoutError):
                    pass
                await asyncio.sleep(0.05)
        raise RuntimeError(f"{self.kind.module} not ready in {START_TIMEOUT_S} s")

    async def stop(self) -> None:
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)

    async def run_until_exit(self) -> tuple[int, bytes]:
        """Start the fake and wait for it to exit: (exit status, stderr)."""
        proc = await self._spawn(asyncio.subprocess.DEVNULL, asyncio.subprocess.PIPE)
        try:
            _, stderr = await asyncio.wait_for(proc.communicate(), START_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        assert proc.returncode is not None
        return proc.returncode, stderr


class Fakes:
    """Starts fakes for one test (1 ms latency unless `env` says otherwise)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started: list[FakeProcess] = []

    def new(self, kind: FakeKind, record_path: Path | None = None, **env: str) -> FakeProcess:
        """A fake not started yet, with its own record file unless `record_path` is given."""
        path = record_path or self.directory / f"{kind.module}-{len(self.started)}.jsonl"
        env = {f"{kind.prefix}_LATENCY_MS": "1"} | env
        return FakeProcess(kind, path, self.directory, env)

    async def start(
        self, kind: FakeKind, record_path: Path | None = None, **env: str
    ) -> FakeProcess:
        fake = self.new(kind, record_path, **env)
        self.started.append(fake)
        await fake.start()
        return fake

    async def core(self, record_path: Path | None = None, **env: str) -> FakeProcess:
        return await self.start(CORE, record_path, **env)

    async def sms(self, record_path: Path | None = None, **env: str) -> FakeProcess:
        return await self.start(SMS, record_path, **env)

    async def bureau(self, record_path: Path | None = None, **env: str) -> FakeProcess:
        return await self.start(BUREAU, record_path, **env)


@pytest.fixture
async def fakes(tmp_path: Path) -> AsyncIterator[Fakes]:
    launcher = Fakes(tmp_path)
    try:
        yield launcher
    finally:
        await asyncio.gather(*(fake.stop() for fake in launcher.started))


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=CALL_TIMEOUT) as session:
        yield session


async def call(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    body: Any = None,
    timeout_s: float | None = None,
) -> tuple[int, Any]:
    timeout = aiohttp.ClientTimeout(total=timeout_s) if timeout_s else CALL_TIMEOUT
    async with session.request(method, url, json=body, timeout=timeout) as resp:
        if resp.content_type == "application/json":
            return resp.status, await resp.json()
        return resp.status, await resp.text()


async def records(session: aiohttp.ClientSession, fake: FakeProcess) -> list[dict[str, Any]]:
    status, body = await call(session, "GET", f"{fake.base_url}{fake.kind.records_route}")
    assert status == 200 and isinstance(body, list), (status, body)
    return body


async def set_knobs(
    session: aiohttp.ClientSession, fake: FakeProcess, **knobs: Any
) -> tuple[int, Any]:
    """POST /fake/knobs: (200, the knobs now in force) or (400, the error)."""
    return await call(session, "POST", f"{fake.base_url}/fake/knobs", knobs)


async def metrics(session: aiohttp.ClientSession, fake: FakeProcess) -> str:
    status, text = await call(session, "GET", f"{fake.base_url}/metrics")
    assert status == 200 and isinstance(text, str), (status, text)
    return text
