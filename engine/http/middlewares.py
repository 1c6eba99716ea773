"""Request id and error mapping, the outermost middlewares.

Every response carries `X-Request-Id` (the channel's own, if it sent a sane
one). Errors are rendered as problem+json; a 500 never shows a stack trace.
"""

from __future__ import annotations

import logging
import re
import secrets
import time

import msgspec
from aiohttp import web
from aiohttp.typedefs import Handler

from engine.contract.errors import ApiError, PayloadTooLarge, Problem
from engine.runtime import metrics
from engine.runtime.logs import REQUEST_CONTEXT
from sharding.pools import ShardBusyError, ShardUnavailableError

log = logging.getLogger("engine.http")

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_problem_encoder = msgspec.json.Encoder()

_HTTP_CODES = {
    400: "BAD_REQUEST",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
}


def problem_response(problem: Problem, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=_problem_encoder.encode(problem),
        status=problem.status,
        content_type="application/problem+json",
        headers=headers,
    )


def _request_id(request: web.Request) -> str:
    sent = request.headers.get("X-Request-Id", "")
    # token_urlsafe, not hex: a hex id can hold a long run of digits, which the
    # log scrubber would take for a card number and mask.
    return sent if _REQUEST_ID_RE.match(sent) else secrets.token_urlsafe(12)


@web.middleware
async def request_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = _request_id(request)
    request["request_id"] = request_id
    route = (
        request.match_info.route.resource.canonical
        if request.match_info.route.resource
        else "unmatched"
    )
    token = REQUEST_CONTEXT.set(
        {"request_id": request_id, "route": route, "method": request.method}
    )
    started = time.perf_counter()
    try:
        response = await _handle(request, handler, request_id)
        response.headers["X-Request-Id"] = request_id
        elapsed_s = time.perf_counter() - started
        metrics.HTTP_REQUESTS.labels(route, request.method, str(response.status)).inc()
        metrics.HTTP_DURATION.labels(route, request.method).observe(elapsed_s)
        log.info(
            "request",
            extra={
                "status": response.status,
                "duration_ms": round(elapsed_s * 1000, 2),
                "channel": request.get("channel_id", ""),
                "tenant": request.get("tenant_id", ""),
            },
        )
        return response
    finally:
        REQUEST_CONTEXT.reset(token)


async def _handle(request: web.Request, handler: Handler, request_id: str) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return problem_response(exc.problem(request_id), exc.headers)
    except ShardUnavailableError as exc:
        busy = isinstance(exc, ShardBusyError)
        code = "SHARD_BUSY" if busy else "SHARD_UNAVAILABLE"
        detail = (
            "the data store of this customer is overloaded; retry shortly"
            if busy
            else "the data store of this customer is unavailable; retry later"
        )
        problem = Problem(
            type=f"https://errors.lending-engine.example/{code.lower().replace('_', '-')}",
            title="Service unavailable",
            status=503,
            code=code,
            detail=detail,
            request_id=request_id,
        )
        return problem_response(problem, {"Retry-After": "1" if busy else "5"})
    except web.HTTPRequestEntityTooLarge:
        too_large = PayloadTooLarge("PAYLOAD_TOO_LARGE", "the request body is larger than allowed")
        return problem_response(too_large.problem(request_id))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, f"HTTP_{exc.status}")
        problem = Problem(
            type=f"https://errors.lending-engine.example/{code.lower().replace('_', '-')}",
            title=exc.reason,
            status=exc.status,
            code=code,
            detail=exc.reason,
            request_id=request_id,
        )
        return problem_response(problem)
    except Exception:
        log.exception("unhandled error")
        problem = Problem(
            type="https://errors.lending-engine.example/internal",
            title="Internal error",
            status=500,
            code="INTERNAL",
            detail="an internal error occurred; quote the request id when reporting it",
            request_id=request_id,
        )
        return problem_response(problem)
