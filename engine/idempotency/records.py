"""Idempotency of every POST that moves money or creates a resource.

    Redis (fast path)                        shard (durable, same transaction as the money)
    idem:{channel}:{key} = F|sha256          idempotency_record(channel_id, idem_key,
                         = D|sha256|status|body   request_sha256, status_code, response_body)

1. `claim()` sets the in-flight marker (SET NX, short TTL). If a marker is
   there: same request in flight -> 409 IDEMPOTENCY_IN_FLIGHT; finished ->
   replay; another request under the key -> 422 IDEMPOTENCY_KEY_REUSED.
2. The service checks the durable record inside its shard transaction, after
   taking its locks (`find_durable`), records the request's nonce (`record_nonce`),
   and writes the record before commit (`store_durable`). A concurrent twin blocks
   on the same lock or on the record's primary key and then replays.
3. `finish()` caches the response in Redis; `release()` drops the marker when
   the request failed without moving money, so a retry may run again.

If Redis lost its keys or is down, step 1 lets the request through and step 2
alone decides: slower, never a second movement (guarantee 3).
"""

from __future__ import annotations

import enum
import hashlib
import logging
import re
import struct

import asyncpg
import msgspec
from redis.exceptions import RedisError

from engine.contract.errors import BadRequest, Conflict, Unauthorized, Unprocessable
from engine.runtime import metrics
from engine.stores.redis_wire import RedisWire, Script

log = logging.getLogger(__name__)

# Longer than any request can run (pool acquire 2 s + statement time-outs), short
# enough that a retry after a crash is not kept waiting long. The shard, not
# this marker, is what prevents a second movement.
IN_FLIGHT_TTL_S = 15
DONE_TTL_S = 24 * 3600
KEY_RE = re.compile(r"^[\x21-\x7e]{1,64}$")

_IN_FLIGHT = b"F"
_DONE = b"D"
_STATUS = struct.Struct(">H")
_HASH_BYTES = 32


class AtOnce(enum.Enum):
    """What a one-statement booking found instead of booking (see `run_once`'s `at_once`)."""

    REPLAY = "replay"  # the key's durable record exists: answer it
    RECHECK = "recheck"  # what the booking rested on changed: redo it in a locked transaction


class StoredResponse(msgspec.Struct, frozen=True):
    status: int
    body: bytes


class Claim(msgspec.Struct, frozen=True):
    """One request's hold on its key."""

    channel_id: str
    key: str
    request_sha256: bytes
    # The signed request's X-Nonce, recorded in the shard with the idempotency record
    # (`record_nonce`); None for what no channel signed (the day-end's own debits).
    nonce: str | None = None

    @property
    def redis_key(self) -> str:
        return f"idem:{self.channel_id}:{self.key}"


def request_digest(method: str, path: str, body: bytes) -> bytes:
    return hashlib.sha256(method.encode() + b"\n" + path.encode() + b"\n" + body).digest()


def parse_key(header: str | None) -> str:
    if header is None:
        raise BadRequest("IDEMPOTENCY_KEY_REQUIRED", "the Idempotency-Key header is required")
    if not KEY_RE.match(header):
        raise BadRequest(
            "IDEMPOTENCY_KEY_INVALID", "Idempotency-Key must be 1-64 visible ASCII characters"
        )
    return header


def _reused() -> Unprocessable:
    return Unprocessable(
        "IDEMPOTENCY_KEY_REUSED", "this Idempotency-Key was used for a different request"
    )


def _decode_done(value: bytes) -> tuple[bytes, StoredResponse]:
    digest = value[1 : 1 + _HASH_BYTES]
    (status,) = _STATUS.unpack_from(value, 1 + _HASH_BYTES)
    return digest, StoredResponse(status, value[1 + _HASH_BYTES + _STATUS.size :])


async def claim(client: RedisWire, claim_: Claim) -> StoredResponse | None:
    """Take the in-flight marker, or say why not (raises), or return a finished response."""
    marker = _IN_FLIGHT + claim_.request_sha256
    try:
        if await client.set(claim_.redis_key, marker, nx=True, ex=IN_FLIGHT_TTL_S):
            return None
        value = await client.get(claim_.redis_key)
    except (RedisError, OSError) as exc:
        metrics.REDIS_ERRORS.inc()
        log.warning("idempotency fast path unavailable", extra={"error": type(exc).__name__})
        return None
    if value is None:  # expired between the two calls: the durable record decides
        return None
    assert isinstance(value, bytes), type(value)
    if value[:1] == _IN_FLIGHT:
        if value[1:] != claim_.request_sha256:
            raise _reused()
        raise Conflict(
            "IDEMPOTENCY_IN_FLIGHT",
            "a request with this Idempotency-Key is still being processed",
            headers={"Retry-After": "1"},
        )
    digest, stored = _decode_done(value)
    if digest != claim_.request_sha256:
        raise _reused()
    return stored


async def finish(client: RedisWire, claim_: Claim, response: StoredResponse) -> None:
    value = _DONE + claim_.request_sha256 + _STATUS.pack(response.status) + response.body
    try:
        await client.set(claim_.redis_key, value, ex=DONE_TTL_S)
    except (RedisError, OSError) as exc:
        metrics.REDIS_ERRORS.inc()
        log.warning("idempotency response not cached", extra={"error": type(exc).__name__})


# Deletes the key only while it still holds this request's own in-flight marker: a
# marker that expired and was taken by another request, or a finished answer, stays.
_RELEASE = Script(
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
)


async def release(client: RedisWire, claim_: Claim) -> None:
    """Drop this request's in-flight marker (and nothing else), so a retry may run."""
    try:
        marker = _IN_FLIGHT + claim_.request_sha256
        await client.run_script(_RELEASE, (claim_.redis_key,), (marker,))
    except (RedisError, OSError) as exc:
        metrics.REDIS_ERRORS.inc()
        log.warning("idempotency marker not released", extra={"error": type(exc).__name__})


async def find_durable(conn: asyncpg.Connection, claim_: Claim) -> StoredResponse | None:
    row = await conn.fetchrow(
        """SELECT request_sha256, status_code, response_body FROM idempotency_record
           WHERE channel_id = $1 AND idem_key = $2""",
        claim_.channel_id,
        claim_.key,
    )
    if row is None:
        return None
    if bytes(row["request_sha256"]) != claim_.request_sha256:
        raise _reused()
    return StoredResponse(int(row["status_code"]), bytes(row["response_body"]))


async def store_durable(
    conn: asyncpg.Connection, claim_: Claim, customer_id: int, response: StoredResponse
) -> None:
    assert conn.is_in_transaction(), "the record commits with the money or not at all"
    await conn.execute(
        """INSERT INTO idempotency_record
               (channel_id, idem_key, customer_id, request_sha256, status_code, response_body)
           VALUES ($1, $2, $3, $4, $5, $6)""",
        claim_.channel_id,
        claim_.key,
        customer_id,
        claim_.request_sha256,
        response.status,
        response.body,
    )


async def record_nonce(conn: asyncpg.Connection, claim_: Claim) -> None:
    """The request's nonce in the shard, in the transaction that writes its idempotency
    record: a captured request resent after Redis lost its nonces finds it here, under
    its own key or another one, and is refused before anything is written."""
    assert conn.is_in_transaction(), "the nonce commits with the record or not at all"
    if claim_.nonce is None:
        return
    inserted = await conn.fetchval(
        """INSERT INTO request_nonce (channel_id, nonce) VALUES ($1, $2)
           ON CONFLICT DO NOTHING RETURNING true""",
        claim_.channel_id,
        claim_.nonce,
    )
    if inserted is None:
        metrics.NONCE_REPLAYS.labels("shard").inc()
        raise Unauthorized("AUTH_NONCE_REPLAYED", "this nonce was used before")
