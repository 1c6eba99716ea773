"""The OpenAPI document lists every route the engine serves under /v1/, with the security
scheme that route really checks: what schemathesis covers is then the whole API."""

from __future__ import annotations

import json

from engine.http.app import create_app
from engine.http.openapi import build_openapi
from engine.http.operator_auth import OPERATOR_PATHS
from engine.settings import Settings


def test_every_v1_route_is_documented(settings: Settings) -> None:
    app = create_app(settings)  # routes are added here; nothing connects until start-up
    served = {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
        and route.resource.canonical.startswith("/v1/")
        and route.method != "HEAD"
    }
    doc = json.loads(build_openapi())
    documented = {(method, path) for path, ops in doc["paths"].items() for method in ops}
    assert documented == served


def test_operator_routes_use_the_operator_scheme() -> None:
    doc = json.loads(build_openapi())
    assert set(doc["components"]["securitySchemes"]) == {"channelSignature", "operatorToken"}
    for path, ops in doc["paths"].items():
        concrete = path.replace("{", "").replace("}", "")
        for digits in ("application_id", "loan_id", "line_id", "contract_id"):
            concrete = concrete.replace(digits, "12345")
        concrete = concrete.replace("operator_id", "op_0123456789abcdef")
        for op in ops.values():
            if path == "/v1/operator/login":  # the way to a token needs none
                assert op["security"] == [], path
                continue
            [scheme] = op["security"]
            # GET /v1/contracts/{id} is read by both: documented as the channel's
            operator = OPERATOR_PATHS.match(concrete) is not None
            want = "operatorToken" if operator else "channelSignature"
            assert set(scheme) == {want}, path
            headers = {p["name"] for p in op["parameters"] if p["in"] == "header"}
            assert ("X-Signature" in headers) == (want == "channelSignature"), path
