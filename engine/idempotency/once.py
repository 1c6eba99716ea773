"""Running one money-moving POST exactly once per (channel, Idempotency-Key).

    claim in Redis ─► shard transaction: durable record? replay
                                         : record the nonce, work, store record ─► commit
                  ─► cache the response in Redis

A twin that raced us to the shard fails on the record's primary key, or with
a business refusal computed after our commit; in both cases the durable record
now exists and is replayed instead. See `engine.idempotency.records` for the states.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

import asyncpg
import msgspec
from aiohttp import web

from engine.contract.codec import encode, json_response
from engine.contract.errors import ApiError, Conflict, Unprocessable
from engine.idempotency import records as idempotency
from engine.idempotency.records import AtOnce, Claim, StoredResponse
from engine.runtime import metrics
from engine.stores.redis_wire import RedisWire
from engine.stores.shards import in_transaction, read
from sharding.pools import ShardPools

log = logging.getLogger(__name__)

Work = Callable[[asyncpg.Connection], Awaitable[tuple[msgspec.Struct, int]]]
# Books in one statement outside a transaction, durable record included, or says why not.
Booking = Callable[[Claim], Awaitable[StoredResponse | AtOnce]]
After = Callable[[], Awaitable[bytes | None]]
REPLAYED_HEADERS = {"Idempotent-Replayed": "true"}


class Caller(msgspec.Struct, frozen=True):
    """What a request's key is scoped by and its digest covers (the HTTP layer fills it
    in from an authenticated request)."""

    channel_id: str
    method: str
    path: str
    body: bytes
    idempotency_key: str | None  # the header as sent; None if absent
    nonce: str | None = None  # X-Nonce: recorded in the shard with the durable record


class Stores(Protocol):
    """Where the key lives: the shards (durable record) and Redis (fast path)."""

    @property
    def pools(self) -> ShardPools: ...

    @property
    def redis(self) -> RedisWire: ...


class _Status(msgspec.Struct):
    status: str = ""


_status_decoder = msgspec.json.Decoder(_Status)


def status_of(body: bytes) -> str:
    """The `status` field of a stored JSON answer, or "" if it has none."""
    try:
        return _status_decoder.decode(body).status
    except msgspec.DecodeError:
        return ""


class _Replay(Exception):
    def __init__(self, stored: StoredResponse) -> None:
        super().__init__("replay")
        self.stored = stored


def _replay(stored: StoredResponse) -> web.Response:
    metrics.IDEMPOTENCY_REPLAYS.inc()
    return json_response(stored.body, stored.status, REPLAYED_HEADERS)


class _Once:
    """One request's way through the key: its claim, its shard, what counts as final."""

    def __init__(
        self, svc: Stores, logical_shard: int, claim: Claim, pending_states: frozenset[str]
    ) -> None:
        self.svc = svc
        self.logical_shard = logical_shard
        self.claim = claim
        self.pending_states = pending_states

    async def durable(self) -> StoredResponse | None:
        claim = self.claim
        return await read(
            self.svc.pools, self.logical_shard, lambda conn: idempotency.find_durable(conn, claim)
        )

    async def release(self) -> None:
        await idempotency.release(self.svc.redis, self.claim)

    async def after_refusal(self, exc: ApiError | asyncpg.UniqueViolationError) -> web.Response:
        """The work refused, or lost a race to a twin: replay the twin's record if there
        is one, else refuse. The in-flight marker goes on every path that does not end
        in a cached answer — a key reused for another request (the record read raises
        IDEMPOTENCY_KEY_REUSED) included, or the genuine retry would be told the same
        for the marker's whole TTL."""
        try:
            stored = await self.durable()
        except BaseException:
            await self.release()
            raise
        if stored is not None:
            return await self.replay(stored)
        await self.release()
        raise exc from None

    async def replay(self, stored: StoredResponse) -> web.Response:
        """Answer a stored response; cache it in Redis only if it is final."""
        if status_of(stored.body) in self.pending_states:
            await idempotency.release(self.svc.redis, self.claim)
        else:
            await idempotency.finish(self.svc.redis, self.claim, stored)
        return _replay(stored)

    async def claim_fast_path(self) -> StoredResponse | None:
        try:
            return await idempotency.claim(self.svc.redis, self.claim)
        except Unprocessable:
            metrics.IDEMPOTENCY_CONFLICTS.inc()
            raise
        except Conflict:
            # The marker is held: the first request is still at work (before its commit,
            # or in its second phase, e.g. a repayment's inline debit, its record still
            # pending), or its process died after committing and before caching the
            # answer. A final record is replayed; a pending one is not the answer yet,
            # so the twin is told to retry (409, Retry-After) until the marker goes.
            stored = await self.durable()
            if stored is None or status_of(stored.body) in self.pending_states:
                metrics.IDEMPOTENCY_CONFLICTS.inc()
                raise
            return stored


async def run_once(
    caller: Caller,
    svc: Stores,
    logical_shard: int,
    work: Work,
    *,
    status: int = 201,
    after: After | None = None,
    pending_states: frozenset[str] = frozenset(),
    at_once: Booking | None = None,
) -> web.Response:
    """Run `work` once per key; `after`, if given, runs after the commit (a second
    phase) and returns the final body, or None when the outcome is not final yet —
    then Redis keeps nothing and a retry reads the durable record, which the
    second phase updates when it completes. A stored answer whose `status` is one of
    `pending_states` is never cached in Redis either, so a retry always sees the
    shard's latest; while the first request still holds the key, a twin finding such
    an answer is 409 IDEMPOTENCY_IN_FLIGHT (the first's answer is not known yet).

    `at_once`, if given, is tried first: the common case booked in one statement
    and one commit. When it finds the record it is a replay; when it finds that
    what it rested on changed (AtOnce.RECHECK), or meets a deadlock, `work` runs
    in a locked transaction as usual and finds out why."""
    key = idempotency.parse_key(caller.idempotency_key)
    digest = idempotency.request_digest(caller.method, caller.path, caller.body)
    claim = Claim(caller.channel_id, key, digest, caller.nonce)
    once = _Once(svc, logical_shard, claim, pending_states)
    cached = await once.claim_fast_path()
    if cached is not None:
        return _replay(cached)

    async def transaction(conn: asyncpg.Connection) -> StoredResponse:
        stored = await idempotency.find_durable(conn, claim)
        if stored is not None:
            raise _Replay(stored)
        await idempotency.record_nonce(conn, claim)
        view, customer_id = await work(conn)
        response = StoredResponse(status, encode(view))
        await idempotency.store_durable(conn, claim, customer_id, response)
        return response

    async def commit() -> StoredResponse:
        if at_once is not None:
            try:
                outcome = await at_once(claim)
            except (asyncpg.DeadlockDetectedError, asyncpg.SerializationError):
                outcome = AtOnce.RECHECK
            if isinstance(outcome, StoredResponse):
                return outcome
            if outcome is AtOnce.REPLAY and (stored := await once.durable()) is not None:
                raise _Replay(stored)
        return await in_transaction(svc.pools, logical_shard, transaction)

    try:
        response = await commit()
    except _Replay as replay:
        return await once.replay(replay.stored)
    except (ApiError, asyncpg.UniqueViolationError) as exc:
        return await once.after_refusal(exc)
    except BaseException:
        await once.release()
        raise
    if after is not None:
        try:
            final_body = await after()
        except Exception:  # phase one is committed and durable: answer it, finish later
            log.exception("second phase failed; the committed answer stands")
            final_body = None
        if final_body is None:
            await idempotency.release(svc.redis, claim)
            return json_response(response.body, response.status)
        response = StoredResponse(response.status, final_body)
    await idempotency.finish(svc.redis, claim, response)
    return json_response(response.body, response.status)
