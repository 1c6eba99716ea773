"""Fixtures against the real local stack (`ops/stack.sh up` and `engine migrate`
have run: `make test` does both first). Nothing here mocks PostgreSQL or Redis.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest
import redis.asyncio as aioredis

from engine.settings import Settings, load_settings
from tests.api_client import ApiClient

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def settings() -> Settings:
    return load_settings()


@pytest.fixture(scope="session")
async def shard_conns(settings: Settings) -> AsyncIterator[dict[str, asyncpg.Connection]]:
    conns = {s.name: await asyncpg.connect(s.dsn, timeout=10) for s in settings.shards}
    yield conns
    for conn in conns.values():
        await conn.close()


@pytest.fixture(scope="session")
async def control_conn(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(settings.control_dsn, timeout=10)
    yield conn
    await conn.close()


@pytest.fixture(scope="session")
async def redis_client(settings: Settings) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(settings.redis.url)
    yield client
    await client.aclose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EngineProcess:
    """A real `python -m engine serve` on a free port, for tests over HTTP."""

    def __init__(self, workers: int = 2, extra_env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = ROOT / ".run" / "log" / f"test-engine-{self.port}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.update(
            {
                "ENGINE_ENV": "test",
                "ENGINE_HTTP_PORT": str(self.port),
                "ENGINE_WORKERS": str(workers),
                "ENGINE_REFERENCE_REFRESH_S": "0.2",
            }
        )
        env.update(extra_env or {})
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engine", "serve"],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        import urllib.request

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"engine exited: see {self.log_path}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/healthz", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"engine not ready in {timeout_s}s: see {self.log_path}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait(timeout=10)
        self._log.close()


@pytest.fixture(scope="session")
def engine() -> Iterator[EngineProcess]:
    proc = EngineProcess()
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(limit=300)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=60)
    ) as session:
        yield session


@pytest.fixture(scope="session")
def api(engine: EngineProcess, http: aiohttp.ClientSession) -> ApiClient:
    return ApiClient(http, engine.base_url)


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ) | {"ENGINE_ENV": "test"} | (env or {})
    return subprocess.run(
        [sys.executable, "-m", "engine", *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        check=False,
    )


async def stack_command(*args: str) -> None:
    """`ops/stack.sh ARGS` without blocking the event loop; fails the test if it fails."""
    import asyncio

    proc = await asyncio.create_subprocess_exec(str(ROOT / "ops" / "stack.sh"), *args)
    assert await proc.wait() == 0, args
