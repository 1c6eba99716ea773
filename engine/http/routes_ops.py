"""Operations endpoints (no channel auth): `/healthz`, `/readyz`, `/openapi.json`.

`/readyz` probes every physical shard, the control database and Redis
concurrently, each within `PROBE_TIMEOUT_S`, and answers 200 only if all are
up; the body lists each with its state, so an SRE sees which one is down.
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
from engine.http.openapi import build_openapi
from engine.runtime import metrics
from engine.stores.shards import acquire

PROBE_TIMEOUT_S = 1.0

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


async def healthz(request: web.Request) -> web.Response:
    return web.Response(body=b'{"status":"ok"}', content_type="application/json")


async def readyz(request: web.Request) -> web.Response:
    result = await readiness(request.app)
    return web.Response(
        body=_encoder.encode(result),
        status=200 if result.ready else 503,
        content_type="application/json",
    )


def setup_ops_routes(app: web.Application) -> None:
    openapi_body = build_openapi()  # made once; the types do not change at run time

    async def openapi(request: web.Request) -> web.Response:
        return web.Response(body=openapi_body, content_type="application/json")

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/openapi.json", openapi)
    app.router.add_get("/metrics", metrics_endpoint)


async def metrics_endpoint(request: web.Request) -> web.Response:
    body = await asyncio.get_running_loop().run_in_executor(None, metrics.render)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
