"""Channel authentication for every `/v1/` call, exactly as API.md states it.

    X-Channel-Id, X-Timestamp, X-Nonce, X-Signature
    X-Signature = hex(HMAC-SHA256(secret,
                  METHOD\\nPATH_AND_QUERY\\nTIMESTAMP\\nNONCE\\nhex(SHA256(body))))

Checks, in order, each with its own 401 code: headers present
(AUTH_HEADERS_MISSING), channel known (AUTH_UNKNOWN_CHANNEL) and active
(AUTH_CHANNEL_DISABLED), timestamp within ±300 s (AUTH_TIMESTAMP_SKEW), nonce
well-formed (AUTH_NONCE_INVALID), signature (AUTH_BAD_SIGNATURE), nonce not
seen within 600 s (AUTH_NONCE_REPLAYED). The nonce is recorded only after the
signature checked out, so nobody can burn a channel's nonces.

If Redis is down the nonce cannot be checked: the request goes on (logged and
counted). A replayed money movement still cannot move money twice — the
idempotency record in the shard refuses it — and a replayed read returns what
its captor already saw. Slower and noisier, never wrong.
"""

from __future__ import annotations

import logging
import time

from aiohttp import web
from aiohttp.typedefs import Handler
from redis.exceptions import RedisError

from engine.contract.errors import Unauthorized
from engine.http import keys as app_keys
from engine.http.operator_auth import authenticate_operator, is_operator_request
from engine.idempotency.once import Caller
from engine.runtime import metrics
from engine.security.signing import NONCE_RE, verify
from engine.stores.redis_wire import RedisWire
from engine.stores.reference import Channel

log = logging.getLogger(__name__)

CLOCK_SKEW_S_MAX = 300
NONCE_TTL_S = 600
CHANNEL = web.RequestKey("channel", Channel)
BODY = web.RequestKey("body", bytes)


async def _nonce_is_fresh(client: RedisWire, channel_id: str, nonce: str) -> bool:
    try:
        stored = await client.set(f"nonce:{channel_id}:{nonce}", b"1", nx=True, ex=NONCE_TTL_S)
    except (RedisError, OSError) as exc:
        metrics.REDIS_ERRORS.inc()
        log.warning("nonce not checked: redis unavailable", extra={"error": type(exc).__name__})
        return True
    return bool(stored)


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
    if not verify(
        channel.secret, request.method, request.raw_path, timestamp, nonce, body, signature
    ):
        raise Unauthorized("AUTH_BAD_SIGNATURE", "the signature does not match")
    if not await _nonce_is_fresh(request.app[app_keys.REDIS], channel_id, nonce):
        raise Unauthorized("AUTH_NONCE_REPLAYED", "this nonce was used within the last 600 s")
    return channel


def caller_of(request: web.Request) -> Caller:
    """An authenticated request as the idempotency runner sees it."""
    return Caller(
        channel_id=request[CHANNEL].channel_id,
        method=request.method,
        path=request.path,
        body=request[BODY],
        idempotency_key=request.headers.get("Idempotency-Key"),
    )


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if is_operator_request(request):
        authenticate_operator(request)
        request[BODY] = await request.read()
    elif request.path.startswith("/v1/"):
        channel = await authenticate(request)
        request[CHANNEL] = channel
        request[BODY] = await request.read()
        request["channel_id"] = channel.channel_id
        request["tenant_id"] = channel.tenant_id
    return await handler(request)
