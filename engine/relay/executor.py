"""`python -m engine relay`: carries out the outboxes of every shard.

    per physical shard:  claim ≤ batch (SKIP LOCKED, leased) ─► prefetch its cards and
                         phones (one query) ─► at most `relay_concurrency` calls in flight
                         ─► first sends of money: up to 32 per core call (payments/batch)
                         ─► SMS: up to 32 per gateway call (send-batch)
                         ─► payments core made and SMS sent: settled in bulk, one
                            statement each; anything else one by one, each in its own
                            shard transaction (`engine.relay.batch`)

    money (disburse, debit)   first time: send.  Afterwards (time-out, unclear answer,
                              a relay that died mid-call): inquire, never send again.
                              "Not found" long after the send means it never arrived:
                              then it goes out, same reference, as its first delivery.
    sms                       send; retried a few times; never affects money.

Several relays may run at once; a claimed row is leased, and every answer is
applied under the business row's lock from the state it expects, so a late
duplicate answer changes nothing. Waits are bounded: every call has a
time-out, every retry a capped backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import asyncpg

from engine.adapters.core_bank import (
    TRANSFER_BATCH_MAX,
    CoreBank,
    CoreResult,
    MoveKind,
    Outcome,
    Transfer,
)
from engine.adapters.sms import SEND_BATCH_MAX, Sms, SmsGateway
from engine.relay import batch as relay_batch
from engine.runtime import metrics
from engine.security.pii import PiiCipher
from engine.services.disbursement import (
    Disbursed,
    Paid,
    complete_disbursement,
    complete_disbursements,
    observe,
)
from engine.services.repayment_completion import RepaymentBatches, complete_at_once, read_many
from engine.services.repayments import complete_repayment
from engine.settings import ExternalSettings
from engine.stores import outbox
from engine.stores.outbox import Claimed
from engine.stores.reference import ReferenceCache
from engine.stores.shards import RETRIES_MAX, acquire
from sharding.ids import IdGenerator
from sharding.pools import ShardPools

log = logging.getLogger("engine.relay")

_DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncio.TimeoutError)
T = TypeVar("T")
# A send that waited this long for a free slot after its claim stamps its send time again.
MARK_AGAIN_AFTER_S = 1.0
# Outbox kinds that move money, and the core call that moves it.
_MOVE_KINDS: dict[str, MoveKind] = {"disburse": "payment", "debit": "debit"}
# Extra kinds of outbox rows (e.g. "bureau") handled by another module's step.
KindHandler = Callable[[str, Claimed], Awaitable[object]]


class Relay:
    def __init__(
        self,
        *,
        pools: ShardPools,
        ids: IdGenerator,
        cipher: PiiCipher,
        reference: ReferenceCache,
        core: CoreBank,
        sms: SmsGateway,
        settings: ExternalSettings,
        handlers: dict[str, KindHandler] | None = None,
        lanes: Sequence[str] = outbox.LANES,
    ) -> None:
        self.pools = pools
        self.lanes = tuple(lanes)
        self._ids = ids
        self._cipher = cipher
        self._reference = reference
        self._core = core
        self._sms = sms
        self._settings = settings
        self._slots = asyncio.Semaphore(settings.relay_concurrency)
        self.handlers = dict(handlers or {})
        self.repayments = RepaymentBatches(pools, batch_max=settings.repayment_batch_max)

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.gather(*(self._drain(name, stop) for name in self.pools.by_name))

    async def _drain(self, shard: str, stop: asyncio.Event) -> None:
        pool = self.pools.pool(shard)
        empty = 0  # claims in a row that found nothing
        while not stop.is_set():
            try:
                async with acquire(pool, self.pools.limits.acquire_timeout_s) as conn:
                    rows = await outbox.claim(
                        conn,
                        self._settings.relay_batch_max,
                        self._settings.relay_lease_s,
                        self.lanes,
                    )
            except _DB_ERRORS as exc:
                log.warning(
                    "outbox claim failed", extra={"shard": shard, "error": type(exc).__name__}
                )
                await _sleep_or_stop(stop, self._settings.relay_backoff_max_s)
                continue
            except Exception:  # the loop must outlive anything: a dead relay moves no money
                log.exception("outbox claim failed unexpectedly", extra={"shard": shard})
                await pool.expire_connections()  # a connection in a bad state is not reused
                await _sleep_or_stop(stop, self._settings.relay_backoff_max_s)
                continue
            if not rows:
                empty += 1
                first = self._settings.relay_idle_poll_s
                most = self._settings.relay_idle_poll_max_s or first
                await _sleep_or_stop(stop, idle_wait_s(empty, first, most))
                continue
            empty = 0
            claimed_at = time.monotonic()
            await self._batch(shard, rows, claimed_at)
            if len(rows) < self._settings.relay_batch_max:
                gathered_at = claimed_at + self._settings.relay_gather_s
                await _sleep_or_stop(stop, gathered_at - time.monotonic())

    async def _batch(self, shard: str, rows: list[Claimed], claimed_at: float) -> None:
        """Send a claimed batch; settle what went well in bulk, the rest one by one.
        Money and SMS go separately, so a slow gateway never holds up a payment's
        settlement."""
        try:
            try:
                async with acquire(self.pools.pool(shard)) as conn:
                    known = await relay_batch.prefetch(conn, rows)
            except Exception as exc:  # each row then reads its own secret
                log.warning("outbox prefetch failed", extra={"shard": shard, "error": repr(exc)})
                known = relay_batch.NOTHING_KNOWN
            await asyncio.gather(
                self._moves(shard, [r for r in rows if r.kind != "sms"], known, claimed_at),
                self._texts(shard, [r for r in rows if r.kind == "sms"], known),
            )
        except Exception:  # the loop must outlive anything; the rows' leases bring them back
            log.exception("outbox batch failed", extra={"shard": shard, "n": len(rows)})

    async def _moves(
        self, shard: str, rows: list[Claimed], known: relay_batch.Prefetched, claimed_at: float
    ) -> None:
        # First sends go to core up to TRANSFER_BATCH_MAX per call; inquiries and rows
        # of other kinds one by one.
        fresh = [r for r in rows if r.kind in _MOVE_KINDS and not r.needs_inquiry]
        alone = [r for r in rows if r.kind not in _MOVE_KINDS or r.needs_inquiry]
        chunks = [
            chunk
            for kind in _MOVE_KINDS
            for chunk in _chunks([r for r in fresh if r.kind == kind], TRANSFER_BATCH_MAX)
        ]
        sent, answered = await asyncio.gather(
            asyncio.gather(*(self._send(shard, chunk, known, claimed_at) for chunk in chunks)),
            asyncio.gather(
                *(self._guarded(r, self._deliver(shard, r, known, claimed_at)) for r in alone)
            ),
        )
        answers = [answer for chunk_answers in sent for answer in chunk_answers] + answered
        paid: list[Paid] = []
        others: list[tuple[Claimed, CoreResult]] = []
        for row, answer in zip([r for c in chunks for r in c] + alone, answers, strict=True):
            if answer is None:  # handled, or failed and logged: its lease brings it back
                continue
            loan = known.loans.get(row.ref_id)
            if _paid(row, answer) and loan is not None:
                paid.append(Paid(row, answer.core_txn_id or "", loan))
            else:
                others.append((row, answer))
        taken = [r for r, a in others if r.kind == "debit" and a.outcome is Outcome.SUCCEEDED]
        reads = await self._completion_reads(shard, taken)
        await asyncio.gather(
            self._settle_paid(shard, paid),
            *(
                self._guarded(row, self.apply(shard, row, answer, reads.get(row.ref_id, ())))
                for row, answer in others
            ),
        )

    async def _completion_reads(
        self, shard: str, debits: list[Claimed]
    ) -> dict[int, list[dict[str, Any]]]:
        """Phase B's read of the debits core took, one statement for them all (a day-end
        sends hundreds at once); a repayment missing from it reads its own, as alone."""
        if len(debits) < 2:
            return {}
        try:
            async with acquire(self.pools.pool(shard)) as conn:
                return await read_many(conn, [row.ref_id for row in debits])
        except _DB_ERRORS as exc:
            log.warning("completion read failed", extra={"shard": shard, "error": repr(exc)})
            return {}

    async def _texts(self, shard: str, rows: list[Claimed], known: relay_batch.Prefetched) -> None:
        chunks = _chunks(rows, SEND_BATCH_MAX)
        sent = await asyncio.gather(*(self._text(shard, chunk, known) for chunk in chunks))
        texted: list[Claimed] = []
        refused: list[Claimed] = []
        for chunk, answers in zip(chunks, sent, strict=True):
            for row, answer in zip(chunk, answers, strict=True):
                if answer is True:
                    texted.append(row)
                elif answer is False:
                    refused.append(row)
        await asyncio.gather(
            self._settle_texted(shard, texted),
            *(self._guarded(row, self._sms_refused(shard, row)) for row in refused),
        )

    async def _send(
        self, shard: str, rows: list[Claimed], known: relay_batch.Prefetched, claimed_at: float
    ) -> list[CoreResult | None]:
        """First sends of one kind in one core call; each row's answer, None for a row
        that failed before the call (logged; its lease brings it back, to be inquired)."""
        async with self._slots:
            built = await asyncio.gather(
                *(self._guarded(row, self._transfer(shard, row, known, claimed_at)) for row in rows)
            )
            ready = [(row, t) for row, t in zip(rows, built, strict=True) if t is not None]
            if not ready:
                return [None] * len(rows)
            try:
                kind = _MOVE_KINDS[rows[0].kind]
                results = await self._core.move_batch(kind, [t for _, t in ready])
                if len(results) != len(ready):
                    raise ValueError(f"{len(results)} answers for {len(ready)} transfers")
            except Exception:  # each row's lease brings it back, to be inquired
                log.exception("core batch failed", extra={"shard": shard, "n": len(ready)})
                return [None] * len(rows)
        by_row = {row.outbox_id: result for (row, _), result in zip(ready, results, strict=True)}
        return [by_row.get(row.outbox_id) for row in rows]

    async def _transfer(
        self, shard: str, row: Claimed, known: relay_batch.Prefetched, claimed_at: float
    ) -> Transfer:
        card = await self._card(shard, row, known, claimed_at)
        return Transfer(str(row.payload["reference"]), card, _amount(row), _memo(row))

    async def _deliver(
        self, shard: str, row: Claimed, known: relay_batch.Prefetched, claimed_at: float
    ) -> CoreResult | None:
        """Core's answer, within the relay's bound on calls in flight."""
        async with self._slots:
            return await self._answer(shard, row, known, claimed_at)

    async def _answer(
        self, shard: str, row: Claimed, known: relay_batch.Prefetched, claimed_at: float
    ) -> CoreResult | None:
        """Core's answer to a money row's send or inquiry; None when a handler did it all."""
        if row.kind in self.handlers:
            await self.handlers[row.kind](shard, row)
            return None
        reference = str(row.payload["reference"])
        if row.needs_inquiry:
            return await self._core.inquire(reference)
        card = await self._card(shard, row, known, claimed_at)
        move = self._core.pay if row.kind == "disburse" else self._core.debit
        return await move(reference, card, _amount(row), _memo(row))

    async def _card(
        self, shard: str, row: Claimed, known: relay_batch.Prefetched, claimed_at: float
    ) -> str:
        """The card a first send pays or debits, as the send starts."""
        secret = known.secret(row)
        if secret is None or time.monotonic() - claimed_at > MARK_AGAIN_AFTER_S:
            # The claim stamped the send time; a send that waited for a slot this
            # long stamps it again, so "long after the send" counts from the send.
            return await self._card_and_mark_sent(shard, row)
        return self._cipher.decrypt(secret, context="bank_card", row=row.ref_id)

    async def _text(
        self, shard: str, rows: list[Claimed], known: relay_batch.Prefetched
    ) -> list[bool | None]:
        """Send up to SEND_BATCH_MAX messages in one call; whether each went out (None:
        failed before the call, logged, its lease brings it back)."""
        try:
            async with self._slots:
                messages = []
                for row in rows:
                    secret = known.secret(row) or await self._phone_ciphertext(shard, row)
                    phone = self._cipher.decrypt(secret, context="phone", row=row.customer_id)
                    messages.append(Sms(f"S{row.outbox_id}", phone, str(row.payload["text"])))
                answers: list[bool | None] = list(await self._sms.send_batch(messages))
            if len(answers) != len(rows):
                raise ValueError(f"{len(answers)} answers for {len(rows)} messages")
            return answers
        except Exception:
            log.exception("SMS batch failed", extra={"shard": shard, "n": len(rows)})
            return [None] * len(rows)

    async def _settle_paid(self, shard: str, paid: list[Paid]) -> None:
        if not paid:
            return
        data = self._reference.data
        try:
            done = await self._in_transaction(
                shard, lambda conn: complete_disbursements(conn, self._ids, data, paid)
            )
            observe(done)
        except Exception:  # one bad row must not hold up the rest: settle them singly
            log.exception("bulk disbursement failed; settling one by one", extra={"n": len(paid)})
            await asyncio.gather(
                *(
                    self._guarded(
                        p.claimed,
                        self.apply(shard, p.claimed, CoreResult(Outcome.SUCCEEDED, p.core_txn_id)),
                    )
                    for p in paid
                )
            )

    async def _settle_texted(self, shard: str, texted: list[Claimed]) -> None:
        if not texted:
            return
        try:
            async with acquire(self.pools.pool(shard)) as conn:
                await outbox.finish_many(conn, texted, "sent")
        except _DB_ERRORS as exc:  # leases run out; an SMS may go twice, money never
            log.warning("SMS rows not closed", extra={"shard": shard, "error": repr(exc)})

    async def _guarded(self, row: Claimed, work: Awaitable[T]) -> T | None:
        try:
            return await work
        except Exception:  # the lease runs out and the row is inquired again: log, go on
            log.exception("outbox row failed", extra={"outbox_id": row.outbox_id, "kind": row.kind})
            return None

    async def process(
        self,
        shard: str,
        row: Claimed,
        known: relay_batch.Prefetched = relay_batch.NOTHING_KNOWN,
        completion_read: Sequence[Mapping[str, Any]] = (),
    ) -> bytes | None:
        """One claimed row, on its own (a repayment's inline debit): with nothing
        prefetched a send reads its card and stamps its send time itself. Returns the
        repayment's stored answer if it was completed at once (`completion_read`: phase
        B's read as the request's phase A left it, see `complete_at_once`)."""
        if row.kind == "sms":
            await self._texts(shard, [row], known)
            return None
        started = time.perf_counter()
        result = await self._answer(shard, row, known, time.monotonic())
        answered = time.perf_counter()
        metrics.REPAYMENT_PHASE.labels("debit").observe(answered - started)
        if result is None:
            return None
        body = await self.apply(shard, row, result, completion_read)
        if result.outcome in (Outcome.SUCCEEDED, Outcome.FAILED):  # phase B ran, not a deferral
            metrics.REPAYMENT_PHASE.labels("complete").observe(time.perf_counter() - answered)
        return body

    async def apply(
        self,
        shard: str,
        row: Claimed,
        result: CoreResult,
        completion_read: Sequence[Mapping[str, Any]] = (),
    ) -> bytes | None:
        """Turn core's answer into the business change, or a later retry (never a resend).
        Returns the answer of a repayment completed at once (else None)."""
        outcome = result.outcome
        if outcome is Outcome.NOT_FOUND:
            # Core has no record. Long after our last send that proves the send never
            # arrived (nothing can still be on its way), so delivering it now is the
            # first delivery, not a second; before that, ask again later.
            if row.last_sent_at is None or await self._sent_long_ago(shard, row):
                outcome = Outcome.NOT_SENT
            else:
                outcome = Outcome.UNKNOWN
        if outcome in (Outcome.SUCCEEDED, Outcome.FAILED):
            succeeded = outcome is Outcome.SUCCEEDED
            text = (result.core_txn_id or "") if succeeded else (result.reason or "FAILED")
            if succeeded and row.kind == "debit":
                # Phase B read once and booked with the shard's other completions; what
                # that cannot do is done alone under locks below.
                body = await complete_at_once(
                    self.pools,
                    batches=self.repayments,
                    ids=self._ids,
                    reference=self._reference.data,
                    claimed=row,
                    outcome=text,
                    known=completion_read,
                )
                if body is not None:
                    return body
                metrics.REPAYMENT_COMPLETED.labels("locked").inc()
            done = await self._in_transaction(
                shard, lambda conn: self._complete(conn, row, succeeded, text)
            )
            observe(done)
            return None
        state = "pending" if outcome is Outcome.NOT_SENT else "unknown"
        delay_s = _backoff_s(row.attempts, self._settings.relay_backoff_max_s)
        await self._in_transaction(
            shard, lambda conn: outbox.defer(conn, row, state, delay_s, result.reason)
        )
        return None

    async def _complete(
        self, conn: asyncpg.Connection, row: Claimed, succeeded: bool, outcome: str
    ) -> list[Disbursed]:
        data = self._reference.data
        if row.kind == "disburse":
            return await complete_disbursement(
                conn, self._ids, data, row, succeeded=succeeded, outcome=outcome
            )
        await complete_repayment(conn, self._ids, data, row, succeeded=succeeded, outcome=outcome)
        return []

    async def _sent_long_ago(self, shard: str, row: Claimed) -> bool:
        async with acquire(self.pools.pool(shard)) as conn:
            age_s = await conn.fetchval(
                "SELECT extract(epoch FROM now() - $1::timestamptz)::float8", row.last_sent_at
            )
        return float(age_s) > self._settings.not_found_final_s

    async def _card_and_mark_sent(self, shard: str, row: Claimed) -> str:
        """The card to pay or debit, read as the send starts (one connection, no transaction)."""
        sql = (
            "SELECT disburse_to_ciphertext FROM loan WHERE loan_id = $1"
            if row.kind == "disburse"
            else "SELECT debit_from_ciphertext FROM repayment WHERE repayment_id = $1"
        )
        async with acquire(self.pools.pool(shard)) as conn:
            blob = await conn.fetchval(sql, row.ref_id)
            await outbox.mark_sent(conn, row)
        return self._cipher.decrypt(bytes(blob), context="bank_card", row=row.ref_id)

    async def _phone_ciphertext(self, shard: str, row: Claimed) -> bytes:
        async with acquire(self.pools.pool(shard)) as conn:
            blob = await conn.fetchval(
                "SELECT phone_ciphertext FROM customer WHERE customer_id = $1", row.customer_id
            )
        return bytes(blob)

    async def _sms_refused(self, shard: str, row: Claimed) -> None:
        """The gateway did not take it: try again later, or give up after
        `sms_attempts_max` (one statement: its own transaction)."""
        async with acquire(self.pools.pool(shard)) as conn:
            if row.attempts >= self._settings.sms_attempts_max:
                await outbox.finish(conn, row, "failed", "gave up")
                return
            delay_s = _backoff_s(row.attempts, self._settings.relay_backoff_max_s)
            await outbox.defer(conn, row, "pending", delay_s, "gateway refused")

    async def _in_transaction(
        self, shard: str, work: Callable[[asyncpg.Connection], Awaitable[T]]
    ) -> T:
        for attempt in range(RETRIES_MAX + 1):
            try:
                async with acquire(self.pools.pool(shard)) as conn, conn.transaction():
                    return await work(conn)
            except (asyncpg.SerializationError, asyncpg.DeadlockDetectedError):
                if attempt == RETRIES_MAX:
                    raise
                await asyncio.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")


def _paid(row: Claimed, answer: CoreResult) -> bool:
    return row.kind == "disburse" and answer.outcome is Outcome.SUCCEEDED


def _memo(row: Claimed) -> str:
    return f"{row.kind} {row.ref_id}"


def _chunks(rows: list[Claimed], size: int) -> list[list[Claimed]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def _amount(row: Claimed) -> int:
    assert row.amount_fen is not None and row.amount_fen > 0, row
    return row.amount_fen


def _backoff_s(attempts: int, cap_s: float) -> float:
    """Capped exponential backoff with jitter, so many rows do not retry in step."""
    base: float = min(cap_s, 0.2 * 2.0 ** min(attempts, 10))
    return base * (0.5 + random.random() / 2)


def idle_wait_s(empty_claims: int, first_s: float, max_s: float) -> float:
    """The wait after the `empty_claims`-th empty claim in a row: `first_s`, doubled by
    each further one, at most `max_s`. One claim that finds rows starts it over."""
    doubled: float = first_s * 2.0 ** min(max(empty_claims, 1) - 1, 32)
    return min(max_s, doubled)


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    if seconds <= 0:
        return
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
