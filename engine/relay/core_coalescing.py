"""Core calls made at the same moment, sent together: a repayment's inline debit.

Each repayment request debits its card inline (engine/relay/inline.py). Alone, that is
one HTTP call to core per repayment: on repayment day, hundreds a second, each paying
for its own request and answer on both sides. `CoalescingCore` wraps the inline core
client: a debit goes out at once while fewer than `in_flight` calls are in flight;
otherwise it waits for the first of them to end and goes with the others that waited,
up to TRANSFER_BATCH_MAX in one `move_batch` call (`POST /core/v1/debits/batch`). At a
quiet hour every debit still goes alone and waits for nothing; under load the calls
carry several debits each.

    debit ──► queue ──► a free call slot: up to 32 queued debits in one batch call
                  └──► queued longer than `queue_wait_s` when a slot frees: NOT_SENT
                       (never sent; the relay sends it later, as its first delivery)

What each answer means is core's item answer (`CoreBankClient.move_batch`): a batch
call that fails whole is every item's failure (time-out: UNKNOWN, resolved by
inquiry). A core that withholds a whole batch's answer for one slow item makes every
debit of that call wait for the time-out: they answer `processing` and the relay
inquires, as for any unclear debit. Inquiries and payments are not coalesced here.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import time
from collections.abc import Sequence
from typing import Final, cast

import msgspec

from engine.adapters.core_bank import (
    TRANSFER_BATCH_MAX,
    CoreBank,
    CoreResult,
    MoveKind,
    Outcome,
    StatementRow,
    Transfer,
)
from engine.runtime import metrics

QUEUE_MAX: Final = 1024  # debits waiting for a slot; beyond this one goes alone


class _Waiting(msgspec.Struct):
    transfer: Transfer
    answer: asyncio.Future[CoreResult]
    queued_at: float


class CoalescingCore:
    """A `CoreBank` whose concurrent debits share core calls (see the module)."""

    def __init__(self, inner: CoreBank, *, in_flight: int, queue_wait_s: float) -> None:
        assert in_flight >= 1 and queue_wait_s > 0
        self._inner = inner
        self._in_flight = in_flight
        self._queue_wait_s = queue_wait_s
        self._queue: collections.deque[_Waiting] = collections.deque()
        self._calls: set[asyncio.Task[None]] = set()

    async def debit(self, reference: str, card: str, amount_fen: int, memo: str) -> CoreResult:
        if len(self._queue) >= QUEUE_MAX:
            return await self._inner.debit(reference, card, amount_fen, memo)
        waiting = _Waiting(
            Transfer(reference, card, amount_fen, memo),
            asyncio.get_running_loop().create_future(),
            time.monotonic(),
        )
        self._queue.append(waiting)
        if len(self._calls) < self._in_flight:
            self._calls.add(asyncio.create_task(self._send_queued()))
        return await waiting.answer

    async def _send_queued(self) -> None:
        """One call slot: send what is queued, a batch at a time, until nothing is. The
        slot is given back right after the queue is found empty, with no await between
        (a done callback runs a step later: a debit queued meanwhile found every slot
        taken and no call left to send it)."""
        try:
            await self._drain()
        finally:
            self._calls.discard(cast("asyncio.Task[None]", asyncio.current_task()))

    async def _drain(self) -> None:
        while self._queue:
            batch = self._next_batch()
            if not batch:
                continue
            try:
                results = await self._inner.move_batch("debit", [w.transfer for w in batch])
                if len(results) != len(batch):
                    raise ValueError(f"{len(results)} answers for {len(batch)} debits")
            except Exception as exc:  # core may have acted: every item is resolved by inquiry
                results = [CoreResult(Outcome.UNKNOWN, reason=type(exc).__name__)] * len(batch)
            metrics.CORE_DEBIT_BATCH.observe(len(batch))
            for waiting, result in zip(batch, results, strict=True):
                if not waiting.answer.done():
                    waiting.answer.set_result(result)

    def _next_batch(self) -> list[_Waiting]:
        """Up to TRANSFER_BATCH_MAX queued debits; one queued too long is answered
        NOT_SENT instead (it never left), one whose caller went away is dropped."""
        batch: list[_Waiting] = []
        now = time.monotonic()
        while self._queue and len(batch) < TRANSFER_BATCH_MAX:
            waiting = self._queue.popleft()
            if waiting.answer.done():
                continue
            if now - waiting.queued_at > self._queue_wait_s:
                waiting.answer.set_result(CoreResult(Outcome.NOT_SENT, reason="QUEUED_TOO_LONG"))
                continue
            batch.append(waiting)
        return batch

    async def pay(self, reference: str, card: str, amount_fen: int, memo: str) -> CoreResult:
        return await self._inner.pay(reference, card, amount_fen, memo)

    async def move_batch(self, kind: MoveKind, transfers: Sequence[Transfer]) -> list[CoreResult]:
        return await self._inner.move_batch(kind, transfers)

    async def inquire(self, reference: str) -> CoreResult:
        return await self._inner.inquire(reference)

    async def statement(self, day: dt.date) -> list[StatementRow]:
        return await self._inner.statement(day)
