"""Operators (loan officers reviewing applications, recording 面签, reading contracts) are
not channels: they send `X-Operator-Token`, whose SHA-256 must be one of
`origination.operator_token_sha256`.

The local stack's token is `demo-operator`; production configures its own
hashes (the tokens themselves are never stored).
"""

from __future__ import annotations

import hashlib
import hmac
import re

from aiohttp import web

from engine.contract.errors import Unauthorized
from engine.http import keys as app_keys

OPERATOR_PATHS = re.compile(
    r"^/v1/(review-queue|applications/[0-9]{1,19}/(approve|reject)|collection-queue"
    r"|collection-cases/[0-9]{1,19}/reassign|operator/credit-lines/[0-9]{1,19}/(freeze|unfreeze)"
    r"|contracts/[0-9]{1,19}/face-to-face"
    # Issue 19: the tenant tree, products and reports (engine.http.routes_admin, _reports).
    r"|admin/.*|reports/.*)$"
)
# Read by channels and operators alike: an operator's request is one with the token.
SHARED_READS = re.compile(r"^/v1/contracts/[0-9]{1,19}$")
OPERATOR_TOKEN_HEADER = "X-Operator-Token"  # noqa: S105 - a header name


def is_operator_request(request: web.Request) -> bool:
    if OPERATOR_PATHS.match(request.path) is not None:
        return True
    return (
        request.method == "GET"
        and SHARED_READS.match(request.path) is not None
        and OPERATOR_TOKEN_HEADER in request.headers
    )


def authenticate_operator(request: web.Request) -> None:
    token = request.headers.get(OPERATOR_TOKEN_HEADER, "")
    if not token:
        raise Unauthorized(
            "AUTH_OPERATOR_REQUIRED", "this endpoint is for operators: send X-Operator-Token"
        )
    digest = hashlib.sha256(token.encode()).hexdigest()
    allowed = request.app[app_keys.SETTINGS].origination.operator_token_sha256
    if not any(hmac.compare_digest(digest, known) for known in allowed):
        raise Unauthorized("AUTH_OPERATOR_UNKNOWN", "unknown operator token")
