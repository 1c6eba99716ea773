"""Inline debits sharing core calls (engine/relay/core_coalescing.py), against the
fake core: one debit alone goes at once; many at once go in few batch calls, each
debited once with its own answer; one queued past its wait is never sent; a core
that cannot be reached answers every queued debit NOT_SENT."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import aiohttp

from engine.adapters.core_bank import CoreBankClient, CoreResult, MoveKind, Outcome, Transfer
from engine.relay.core_coalescing import CoalescingCore
from tests import fakes_support
from tests.fakes_support import FakeProcess, Fakes, records

fakes = fakes_support.fakes
client = fakes_support.client

CARD = "6222020000001234"


class CountingCore(CoreBankClient):
    """The real HTTP adapter, noting the size of each batch call it makes."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, timeout_s: float) -> None:
        super().__init__(session, base_url, timeout_s)
        self.batches: list[int] = []

    async def move_batch(self, kind: MoveKind, transfers: Sequence[Transfer]) -> list[CoreResult]:
        self.batches.append(len(transfers))
        return await super().move_batch(kind, transfers)


async def _against_fake_core(
    fakes: Fakes,
    client: aiohttp.ClientSession,
    latency_ms: int,
    *,
    in_flight: int,
    queue_wait_s: float,
) -> tuple[FakeProcess, CountingCore, CoalescingCore]:
    """A fake core answering after `latency_ms`, the counting adapter, and its wrapper."""
    core = await fakes.core(FAKE_CORE_LATENCY_MS=str(latency_ms))
    inner = CountingCore(client, core.base_url, 5.0)
    return core, inner, CoalescingCore(inner, in_flight=in_flight, queue_wait_s=queue_wait_s)


async def test_a_debit_alone_goes_at_once_in_a_call_of_its_own(
    fakes: Fakes, client: aiohttp.ClientSession
) -> None:
    _, inner, coalescing = await _against_fake_core(fakes, client, 1, in_flight=1, queue_wait_s=3.0)
    for n in range(3):  # one after another: the one slot is free again for each
        async with asyncio.timeout(5):  # a slot still held after its call would strand it
            result = await coalescing.debit(f"R-alone-{n}", CARD, 100 + n, "repayment")
        assert result.outcome is Outcome.SUCCEEDED and result.core_txn_id
    assert inner.batches == [1, 1, 1]


async def test_concurrent_debits_share_calls_and_each_is_debited_once(
    fakes: Fakes, client: aiohttp.ClientSession
) -> None:
    core, inner, coalescing = await _against_fake_core(
        fakes, client, 100, in_flight=2, queue_wait_s=3.0
    )
    references = [f"R-many-{n}" for n in range(40)]
    results = await asyncio.gather(
        *(coalescing.debit(ref, CARD, 1000 + n, "repayment") for n, ref in enumerate(references))
    )
    assert all(r.outcome is Outcome.SUCCEEDED for r in results), results
    assert len({r.core_txn_id for r in results}) == 40  # each its own answer
    # Two went alone at once; the 38 that waited went in batches of at most 32.
    assert sum(inner.batches) == 40 and max(inner.batches) <= 32
    assert len(inner.batches) <= 4, inner.batches
    booked = [r for r in await records(client, core) if r["reference"] in references]
    assert sorted(r["reference"] for r in booked) == sorted(references)  # once each
    amounts = {r["reference"]: r["amount"] for r in booked}
    assert amounts["R-many-7"] == "10.07"  # each item with its own amount


async def test_a_debit_queued_past_its_wait_is_answered_not_sent_and_never_sent(
    fakes: Fakes, client: aiohttp.ClientSession
) -> None:
    core, inner, coalescing = await _against_fake_core(
        fakes, client, 400, in_flight=1, queue_wait_s=0.1
    )
    sending = asyncio.create_task(coalescing.debit("R-first", CARD, 100, "repayment"))
    await asyncio.sleep(0.05)  # its call is in flight: the next one waits for the slot
    late = await coalescing.debit("R-late", CARD, 100, "repayment")
    first = await sending
    assert first.outcome is Outcome.SUCCEEDED
    assert late == CoreResult(Outcome.NOT_SENT, reason="QUEUED_TOO_LONG")
    assert inner.batches == [1]
    assert "R-late" not in {r["reference"] for r in await records(client, core)}


async def test_a_core_that_cannot_be_reached_leaves_every_debit_not_sent(
    client: aiohttp.ClientSession,
) -> None:
    inner = CountingCore(client, "http://127.0.0.1:1", 1.0)  # nothing listens on port 1
    coalescing = CoalescingCore(inner, in_flight=1, queue_wait_s=3.0)
    results = await asyncio.gather(
        *(coalescing.debit(f"R-down-{n}", CARD, 100, "repayment") for n in range(5))
    )
    assert {r.outcome for r in results} == {Outcome.NOT_SENT}
    assert sum(inner.batches) == 5
