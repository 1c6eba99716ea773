"""`/metrics` and `/healthz` of a process that serves no HTTP API of its own (the relay,
the day-end scheduler), on loopback, for Prometheus."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from engine.runtime import metrics


async def start_metrics_site(port: int, host: str = "127.0.0.1") -> web.AppRunner:
    """Serve until the returned runner is cleaned up."""

    async def metrics_endpoint(request: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(body=b'{"status":"ok"}', content_type="application/json")

    app = web.Application()
    app.router.add_get("/metrics", metrics_endpoint)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
