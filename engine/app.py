"""The application factory: tests and `serve` build the app the same way."""

from __future__ import annotations

from aiohttp import web

from engine import app_keys, resources
from engine.middlewares import request_middleware
from engine.routes_ops import setup_ops_routes
from engine.settings import Settings


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        middlewares=[request_middleware],
        client_max_size=settings.http.body_max_bytes,
    )
    app[app_keys.SETTINGS] = settings
    app.cleanup_ctx.extend(
        [
            resources.control_pool_ctx,
            resources.id_lease_ctx,
            resources.shard_pools_ctx,
            resources.redis_ctx,
        ]
    )
    setup_ops_routes(app)
    return app
