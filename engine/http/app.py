"""The application factories: tests and `serve` build the apps the same way.

`create_app` is the channel API (the public port); `create_ops_app(api)` the operations
listener's, reading the API app's pools (`engine.http.routes_ops`)."""

from __future__ import annotations

from aiohttp import web

from engine.http import keys as app_keys
from engine.http import resources
from engine.http.auth import auth_middleware
from engine.http.middlewares import request_middleware
from engine.http.routes_admin import setup_admin_routes
from engine.http.routes_cards import setup_card_routes
from engine.http.routes_contracts import setup_contract_routes
from engine.http.routes_operators import setup_operator_routes
from engine.http.routes_ops import create_ops_app, setup_public_ops_routes
from engine.http.routes_origination import setup_origination_routes
from engine.http.routes_post_loan import setup_post_loan_routes
from engine.http.routes_reports import setup_report_routes
from engine.http.routes_v1 import setup_v1_routes
from engine.settings import Settings

__all__ = ["create_app", "create_ops_app"]


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        middlewares=[request_middleware, auth_middleware],
        client_max_size=settings.http.body_max_bytes,
    )
    app[app_keys.SETTINGS] = settings
    app.cleanup_ctx.extend(
        [
            resources.control_pool_ctx,
            resources.id_lease_ctx,
            resources.reference_ctx,
            resources.shard_pools_ctx,
            resources.redis_ctx,
            resources.services_ctx,
            resources.external_ctx,
        ]
    )
    setup_public_ops_routes(app)
    setup_v1_routes(app)
    setup_origination_routes(app)
    setup_contract_routes(app)
    setup_post_loan_routes(app)
    setup_card_routes(app)
    setup_operator_routes(app)
    setup_admin_routes(app)
    setup_report_routes(app)
    return app
