"""Fixtures against the real local stack (`ops/stack.sh up` and `engine migrate`
have run: `make test` does both first). Nothing here mocks PostgreSQL or Redis.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest
import redis.asyncio as aioredis
import uvloop

from engine.settings import Settings, load_settings
from tests.api_client import ApiClient

ROOT = Path(__file__).resolve().parent.parent
# The engine assumes production when ENGINE_ENV is unset; the suite is `test` (make test
# sets it too), for this process and every process it starts.
os.environ.setdefault("ENGINE_ENV", "test")


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Tests run on uvloop, as the engine, the relay and the fakes do."""
    return {"uvloop": uvloop.new_event_loop}


@pytest.fixture(scope="session")
def settings() -> Settings:
    return load_settings()


@pytest.fixture(scope="session")
async def shard_conns(settings: Settings) -> AsyncIterator[dict[str, asyncpg.Connection]]:
    conns = {s.name: await asyncpg.connect(s.dsn, timeout=10) for s in settings.shards}
    yield conns
    for conn in conns.values():
        await conn.close()


@pytest.fixture
async def scratch_db(settings: Settings) -> AsyncIterator[str]:
    """The DSN of a throw-away database on the first server, dropped afterwards."""
    base = settings.control_dsn.rsplit("/", 1)[0]
    name = f"scratch_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(base + "/postgres")
    await admin.execute(f"CREATE DATABASE {name}")
    try:
        yield f"{base}/{name}"
    finally:
        await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
        await admin.close()


@pytest.fixture
async def scratch(scratch_db: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to a throw-away database on the first server."""
    conn = await asyncpg.connect(scratch_db)
    try:
        yield conn
    finally:
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


# Every log of a process this session started (engines, relays, fakes, schedulers), with
# its size when the session first started it: the suite-end PII scan reads what this
# session wrote to each, whichever tests ran.
STARTED_LOGS: dict[Path, int] = {}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServiceProcess:
    """A real process of ours (`python -m MODULE ARGS`) on a free port, logging to .run/log."""

    def __init__(
        self, name: str, module: str, args: list[str], env: dict[str, str], port: int
    ) -> None:
        self.name = name
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.log_path = ROOT / ".run" / "log" / f"test-{name}-{port}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if self.log_path not in STARTED_LOGS:
            exists = self.log_path.exists()
            STARTED_LOGS[self.log_path] = self.log_path.stat().st_size if exists else 0
        self.env = dict(os.environ) | env
        self._argv = [sys.executable, "-m", module, *args]
        self.proc = self._spawn()

    def _spawn(self) -> subprocess.Popen[bytes]:
        log = self.log_path.open("ab")
        try:
            return subprocess.Popen(
                self._argv,
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()

    def wait_ready(self, path: str = "/healthz", timeout_s: float = 30.0) -> None:
        self.wait_for(f"{self.base_url}{path}", timeout_s)

    def wait_for(self, url: str, timeout_s: float = 30.0) -> None:
        """Until `url` answers 200; fails at once if this process has exited."""
        import urllib.request

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: see {self.log_path}")
            try:
                with urllib.request.urlopen(url, timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready in {timeout_s}s: see {self.log_path}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait(timeout=10)

    def kill(self) -> None:
        """SIGKILL the whole process group: no clean-up runs."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 9)
            self.proc.wait(timeout=10)

    def restart(self) -> None:
        self.stop()
        self.proc = self._spawn()


class OwnRedis:
    """A redis-server of this test's own, with a password, that can be killed."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is installed by ops/stack.sh"
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--requirepass", "s3cret", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while (
            subprocess.run(
                ["redis-cli", "-p", str(self.port), "-a", "s3cret", "--no-auth-warning", "ping"],
                capture_output=True,
                check=False,
            ).stdout.strip()
            != b"PONG"
        ):
            assert time.monotonic() < deadline, "own redis-server did not start"
            time.sleep(0.05)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path)
    server.start()
    yield server
    if server.proc is not None and server.proc.poll() is None:
        server.kill()


class Fakes:
    """The fake core banking and SMS gateway of loadtest/fakes, on free ports."""

    def __init__(self, directory: Path) -> None:
        core_port, sms_port = free_port(), free_port()
        self.core = ServiceProcess(
            "fake-core",
            "loadtest.fakes.core_bank",
            [],
            {
                "FAKE_CORE_PORT": str(core_port),
                "FAKE_CORE_RECORD_FILE": str(directory / "core.jsonl"),
                "FAKE_CORE_LATENCY_MS": "5",
                "FAKE_CORE_TIMEOUT_HANG_S": "2",
            },
            core_port,
        )
        self.sms = ServiceProcess(
            "fake-sms",
            "loadtest.fakes.sms_gateway",
            [],
            {"FAKE_SMS_PORT": str(sms_port), "FAKE_SMS_RECORD_FILE": str(directory / "sms.jsonl")},
            sms_port,
        )
        bureau_port = free_port()
        self.bureau = ServiceProcess(
            "fake-bureau",
            "loadtest.fakes.credit_bureau",
            [],
            {
                "FAKE_BUREAU_PORT": str(bureau_port),
                "FAKE_BUREAU_RECORD_FILE": str(directory / "bureau.jsonl"),
                "FAKE_BUREAU_LATENCY_MS": "5",
                "FAKE_BUREAU_TIMEOUT_HANG_S": "2",
            },
            bureau_port,
        )
        self.core.wait_ready()
        self.sms.wait_ready()
        self.bureau.wait_ready()

    def engine_env(self) -> dict[str, str]:
        """How the engine and the relay reach the fakes, with test-sized time-outs."""
        return {
            "ENGINE_CORE_URL": self.core.base_url,
            "ENGINE_SMS_URL": self.sms.base_url,
            "ENGINE_BUREAU_URL": self.bureau.base_url,
            "ENGINE_BUREAU_TIMEOUT_S": "3",
            "ENGINE_CORE_TIMEOUT_S": "1",
            "ENGINE_INLINE_DEBIT_WAIT_S": "1",
            "ENGINE_RELAY_LEASE_S": "4",
            "ENGINE_NOT_FOUND_FINAL_S": "3",
        }

    def stop(self) -> None:
        self.core.stop()
        self.sms.stop()
        self.bureau.stop()


class EngineProcess(ServiceProcess):
    """A real `python -m engine serve` (and, unless told not to, a relay) for tests over HTTP."""

    def __init__(self, fakes: Fakes, workers: int = 2, extra_env: dict[str, str] | None = None,
                 relay: bool = True) -> None:  # fmt: skip
        port = free_port()
        self.ops_port = free_port()
        env = (
            {
                "ENGINE_ENV": "test",
                "ENGINE_HTTP_PORT": str(port),
                "ENGINE_OPS_PORT": str(self.ops_port),
                "ENGINE_WORKERS": str(workers),
                "ENGINE_REFERENCE_REFRESH_S": "0.2",
                "ENGINE_RELAY_METRICS_PORT": str(free_port()),
            }
            | fakes.engine_env()
            | (extra_env or {})
        )
        super().__init__("engine", "engine", ["serve"], env, port)
        self.fakes = fakes
        # /readyz, /metrics and /openapi.json: the operations listener, not the API port
        self.ops_url = f"http://127.0.0.1:{self.env['ENGINE_OPS_PORT']}"
        self.relay = ServiceProcess("relay", "engine", ["relay"], env, port) if relay else None

    def wait_ready(self, path: str = "/healthz", timeout_s: float = 30.0) -> None:
        """The engine, and the relay's metrics site (a test may scrape it first)."""
        super().wait_ready(path, timeout_s)
        if self.relay is not None:
            port = self.env["ENGINE_RELAY_METRICS_PORT"]
            self.relay.wait_for(f"http://127.0.0.1:{port}/healthz", timeout_s)

    def stop(self) -> None:
        if self.relay is not None:
            self.relay.stop()
        super().stop()


@pytest.fixture(scope="session")
def fakes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fakes]:
    started = Fakes(tmp_path_factory.mktemp("fakes"))
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="session")
def engine(fakes: Fakes) -> Iterator[EngineProcess]:
    proc = EngineProcess(fakes)
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
