"""Operations endpoints (no channel auth), on a listener of their own.

    public port (http.host:port)       /healthz          static: the load balancer's check
    ops listener (http.ops_host:port)  /healthz /readyz /metrics /openapi.json

`/readyz` probes every physical shard, the control database and Redis
concurrently, each within `PROBE_TIMEOUT_S`, and answers 200 only if all are
up; the body lists each with its state, so an SRE sees which one is down. It
takes a connection from every pool, and `/metrics` shows volumes per tenant:
neither belongs on the address channels reach (API.md, Operations endpoints). The
probe's result is shared by concurrent callers and reused for `READINESS_TTL_S`, so
however often it is asked, the pools are probed at most about once a second.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable

import asyncpg
import msgspec
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from engine.http import keys as app_keys
from engine.http.middlewares import request_middleware
from engine.http.openapi import build_openapi
from engine.runtime import metrics
from engine.stores.shards import acquire

PROBE_TIMEOUT_S = 1.0
READINESS_TTL_S = 1.0

_encoder = msgspec.json.Encoder()


class Probe(msgspec.Struct, frozen=True):
    name: str
    kind: str
    state: str  # "up" | "down"
    latency_ms: int
    error: str | None = None


class Readiness(msgspec.Struct, frozen=True):
    ready: bool
    components: list[Probe]


async def _probe(name: str, kind: str, check: Awaitable[object]) -> Probe:
    started = time.perf_counter()
    try:
        await asyncio.wait_for(check, timeout=PROBE_TIMEOUT_S)
    except (TimeoutError, OSError, asyncpg.PostgresError, ConnectionError) as exc:
        error = type(exc).__name__
        return Probe(name, kind, "down", int((time.perf_counter() - started) * 1000), error)
    except Exception as exc:  # a probe never fails the endpoint: report and go on
        return Probe(
            name, kind, "down", int((time.perf_counter() - started) * 1000), type(exc).__name__
        )
    return Probe(name, kind, "up", int((time.perf_counter() - started) * 1000))


async def _pg_select_one(pool: asyncpg.Pool) -> object:
    async with acquire(pool, PROBE_TIMEOUT_S) as conn:
        return await conn.fetchval("SELECT 1", timeout=PROBE_TIMEOUT_S)


async def readiness(app: web.Application) -> Readiness:
    pools = app[app_keys.SHARD_POOLS]
    checks = [_probe("control", "postgres", _pg_select_one(app[app_keys.CONTROL_POOL]))]
    checks += [_probe(name, "shard", _pg_select_one(pool)) for name, pool in pools.by_name.items()]
    checks.append(_probe("redis", "redis", app[app_keys.REDIS].ping()))
    probes = list(await asyncio.gather(*checks))
    return Readiness(all(p.state == "up" for p in probes), probes)


class _SharedReadiness:
    """One probe at a time for all callers, its answer reused for `READINESS_TTL_S`."""

    def __init__(self, api: web.Application) -> None:
        self._api = api
        self._running: asyncio.Task[Readiness] | None = None
        self._answer: Readiness | None = None
        self._answered_at = 0.0

    async def get(self) -> Readiness:
        now = time.monotonic()
        if self._answer is not None and now - self._answered_at < READINESS_TTL_S:
            return self._answer
        if self._running is None:
            self._running = asyncio.create_task(readiness(self._api))
            self._running.add_done_callback(self._done)
        # shielded: a caller that goes away does not cancel the others' probe
        return await asyncio.shield(self._running)

    def _done(self, task: asyncio.Task[Readiness]) -> None:
        self._running = None
        if not task.cancelled() and task.exception() is None:
            self._answer, self._answered_at = task.result(), time.monotonic()


async def healthz(request: web.Request) -> web.Response:
    return web.Response(body=b'{"status":"ok"}', content_type="application/json")


def setup_public_ops_routes(app: web.Application) -> None:
    """The public port's one operations route: a check that touches nothing."""
    app.router.add_get("/healthz", healthz)


def create_ops_app(api: web.Application) -> web.Application:
    """The operations listener's app; `api` is the channel API's app of the same worker,
    whose pools and Redis `/readyz` probes (started before this app is served)."""
    ops = web.Application(middlewares=[request_middleware])
    openapi_body = build_openapi()  # made once; the types do not change at run time
    shared = _SharedReadiness(api)

    async def openapi(request: web.Request) -> web.Response:
        return web.Response(body=openapi_body, content_type="application/json")

    async def readyz(request: web.Request) -> web.Response:
        result = await shared.get()
        return web.Response(
            body=_encoder.encode(result),
            status=200 if result.ready else 503,
            content_type="application/json",
        )

    ops.router.add_get("/healthz", healthz)
    ops.router.add_get("/readyz", readyz)
    ops.router.add_get("/openapi.json", openapi)
    ops.router.add_get("/metrics", metrics_endpoint)
    return ops


async def metrics_endpoint(request: web.Request) -> web.Response:
    body = await asyncio.get_running_loop().run_in_executor(None, metrics.render)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
