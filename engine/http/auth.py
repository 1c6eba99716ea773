"""Channel authentication for every `/v1/` call, exactly as API.md states it.

    X-Channel-Id, X-Timestamp, X-Nonce, X-Signature (engine.security.signing)
    version 2: METHOD, PATH_AND_QUERY, TIMESTAMP, NONCE, hex(SHA256(body)),
               X-Channel-Id, Idempotency-Key ("" for GET)
    version 1: the first five only; accepted during the channel's changeover window

Checks, in order, each with its own code: headers present (401
AUTH_HEADERS_MISSING), channel known (AUTH_UNKNOWN_CHANNEL) and active
(AUTH_CHANNEL_DISABLED), timestamp within ±300 s (AUTH_TIMESTAMP_SKEW), nonce
well-formed (AUTH_NONCE_INVALID), signature (AUTH_BAD_SIGNATURE; a right version-1
signature after the channel's window: AUTH_SIGNATURE_VERSION_RETIRED), the channel's
rate limit (429 RATE_LIMITED with Retry-After), nonce not seen within 600 s
(AUTH_NONCE_REPLAYED). The limit and the nonce are one Redis call
(`engine.stores.channel_gate`), made only after the signature checked out, so nobody
without the secret can spend a channel's nonces or its rate.

Redis runs without persistence: down, or restarted with its keys lost, it cannot say
whether a nonce was seen. The request then goes on (logged and counted), and what
matters is checked again where it cannot be lost: a POST run under an idempotency key
records its nonce in the shard in the same transaction as its idempotency record
(`engine.idempotency.once`), so a captured money movement resent after a Redis restart
is refused there (AUTH_NONCE_REPLAYED), under its own key or — signature version 1 —
another one. A replayed read returns what its captor already saw.
"""

from __future__ import annotations

import datetime as dt
import logging
import time

from aiohttp import web
from aiohttp.typedefs import Handler

from engine.contract.errors import TooManyRequests, Unauthorized
from engine.http import keys as app_keys
from engine.http.operator_auth import handle_operator_request, operator_route
from engine.idempotency.once import Caller
from engine.runtime import metrics
from engine.security.signing import HEADER_IDEMPOTENCY_KEY, NONCE_RE, key_to_sign, verify
from engine.stores.channel_gate import NONCE_TTL_S, retry_after_header
from engine.stores.reference import Channel

log = logging.getLogger(__name__)

CLOCK_SKEW_S_MAX = 300
CHANNEL = web.RequestKey("channel", Channel)
BODY = web.RequestKey("body", bytes)
NONCE = web.RequestKey("nonce", str)
SIGNATURE_VERSION = web.RequestKey("signature_version", int)


def _signature_version(request: web.Request, channel: Channel, body: bytes) -> int:
    """2 or 1 for a right signature, or the refusal."""
    headers = request.headers
    timestamp, nonce, signature = headers["X-Timestamp"], headers["X-Nonce"], headers["X-Signature"]
    key = key_to_sign(request.method, headers.get(HEADER_IDEMPOTENCY_KEY))
    method, path = request.method, request.raw_path
    if verify(
        channel.secret, method, path, timestamp, nonce, body, signature,
        channel_id=channel.channel_id, idempotency_key=key,
    ):  # fmt: skip
        return 2
    if not verify(channel.secret, method, path, timestamp, nonce, body, signature, version=1):
        raise Unauthorized("AUTH_BAD_SIGNATURE", "the signature does not match")
    until = channel.signature_v1_until
    if until is None or until <= dt.datetime.now(dt.UTC):
        raise Unauthorized(
            "AUTH_SIGNATURE_VERSION_RETIRED",
            "signature version 1 is no longer accepted for this channel: sign version 2, "
            "which adds the channel id and the Idempotency-Key (API.md)",
        )
    metrics.SIGNATURE_V1.labels(channel.channel_id).inc()
    return 1


async def authenticate(request: web.Request) -> Channel:
    headers = request.headers
    channel_id = headers.get("X-Channel-Id")
    timestamp = headers.get("X-Timestamp")
    nonce = headers.get("X-Nonce")
    signature = headers.get("X-Signature")
    if not (channel_id and timestamp and nonce and signature):
        raise Unauthorized(
            "AUTH_HEADERS_MISSING",
            "X-Channel-Id, X-Timestamp, X-Nonce and X-Signature are required",
        )
    channel = request.app[app_keys.REFERENCE].data.channels.get(channel_id)
    if channel is None:
        raise Unauthorized("AUTH_UNKNOWN_CHANNEL", "unknown channel")
    if not channel.active:
        raise Unauthorized("AUTH_CHANNEL_DISABLED", "this channel is disabled")
    well_formed = timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12
    if not well_formed or abs(int(timestamp) - int(time.time())) > CLOCK_SKEW_S_MAX:
        raise Unauthorized(
            "AUTH_TIMESTAMP_SKEW", f"X-Timestamp must be unix seconds within ±{CLOCK_SKEW_S_MAX} s"
        )
    if not NONCE_RE.fullmatch(nonce):
        raise Unauthorized(
            "AUTH_NONCE_INVALID", "X-Nonce must be 16-64 characters of [A-Za-z0-9_-]"
        )
    body = await request.read()
    request[SIGNATURE_VERSION] = _signature_version(request, channel, body)
    admission = await request.app[app_keys.GATE].admit(channel, nonce)
    if admission.retry_after_s > 0:
        metrics.RATE_LIMITED.labels(channel_id).inc()
        raise TooManyRequests(
            "RATE_LIMITED",
            "this channel is over its request rate; retry after the Retry-After seconds",
            headers={"Retry-After": retry_after_header(admission.retry_after_s)},
        )
    if admission.nonce_fresh is False:
        metrics.NONCE_REPLAYS.labels("redis").inc()
        raise Unauthorized(
            "AUTH_NONCE_REPLAYED", f"this nonce was used within the last {NONCE_TTL_S} s"
        )
    return channel


def caller_of(request: web.Request) -> Caller:
    """An authenticated request as the idempotency runner sees it."""
    return Caller(
        channel_id=request[CHANNEL].channel_id,
        method=request.method,
        path=request.path,
        body=request[BODY],
        idempotency_key=request.headers.get("Idempotency-Key"),
        nonce=request[NONCE],
    )


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    route = operator_route(request)
    if route is not None:
        request[BODY] = await request.read()
        return await handle_operator_request(request, handler, route)
    if request.path.startswith("/v1/"):
        channel = await authenticate(request)
        request[CHANNEL] = channel
        request[BODY] = await request.read()
        request[NONCE] = request.headers["X-Nonce"]
        request["channel_id"] = channel.channel_id
        request["tenant_id"] = channel.tenant_id
    return await handler(request)
