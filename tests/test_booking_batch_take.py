"""What one group booking takes from its queue, and how it lays out its arguments:
pure functions of `engine.services.booking_batch`, no database."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.services import booking_batch
from engine.services.booking_batch import ARGS, _take, _Waiting, array_literal, batch_args
from loadtest.bench_book import booking_args

LINE, CUSTOMER, TODAY, TXN = 5, 11, 7, 37
DAYS = (dt.date(2026, 11, 30), dt.date(2026, 12, 1))

# (line, customer, day, cancelled) per queued drawdown
_items = st.lists(
    st.tuples(st.integers(1, 6), st.integers(1, 6), st.sampled_from(DAYS), st.booleans()),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(items=_items, batch_max=st.integers(1, 8))
def test_a_batch_is_one_day_no_line_or_customer_twice_and_the_rest_stays_in_order(
    items: list[tuple[int, int, dt.date, bool]], batch_max: int
) -> None:
    loop = asyncio.new_event_loop()
    try:
        queue: deque[_Waiting] = deque()
        for n, (line, customer, day, cancelled) in enumerate(items):
            args = list(booking_args(n))
            args[LINE], args[CUSTOMER], args[TODAY] = line, customer, day
            waiting = _Waiting(tuple(args), loop.create_future())
            if cancelled:
                waiting.answer.cancel()
            queue.append(waiting)
        before = list(queue)
        batch = _take(queue, batch_max)
    finally:
        loop.close()
    live = [w for w in before if not w.answer.done()]
    assert len(batch) <= batch_max
    assert all(not w.answer.done() for w in batch)
    assert len({w.args[LINE] for w in batch}) == len(batch)
    assert len({w.args[CUSTOMER] for w in batch}) == len(batch)
    assert len({w.args[TODAY] for w in batch}) <= 1
    # Nothing live is lost or doubled, and what stays keeps its order.
    assert sorted(map(id, batch + list(queue))) == sorted(
        map(id, live + [w for w in queue if w.answer.done()])
    )
    assert [w for w in queue if not w.answer.done()] == [w for w in live if w not in batch]
    if before and not before[0].answer.done():
        assert batch[0] is before[0]  # the oldest goes first


@pytest.mark.parametrize("count", [1, 2, 5])
def test_batch_arguments_line_up_with_each_drawdown(count: int) -> None:
    items = [booking_args(n, line_id=n + 1) for n in range(count)]
    arrays = batch_args(items)
    # one business date instead of one per drawdown, then the group call's lock time-out
    assert len(arrays) == ARGS + 2
    # book_drawdowns' lock time-out, then the nonces record_request_nonces takes
    assert arrays[-2] == booking_batch.GROUP_LOCK_TIMEOUT
    assert batch_args(items, lock_timeout=None)[-2] is None
    assert arrays[-1] == [item[booking_batch._NONCE] for item in items]
    arrays = arrays[:-2]
    per_drawdown = [a for i, a in enumerate(arrays) if i not in (TODAY, 38, 39, 40, 41, 42)]
    assert all(isinstance(a, list) and len(a) == count for a in per_drawdown)
    assert arrays[TODAY] == items[0][TODAY]
    for index in booking_batch._PLAN:
        assert arrays[index] == [array_literal(item[index]) for item in items]
    leg_txns, codes, owners, customers, amounts = arrays[38:43]
    assert len({len(leg_txns), len(codes), len(owners), len(customers), len(amounts)}) == 1
    for item in items:
        mine = [k for k, txn in enumerate(leg_txns) if txn == item[TXN]]
        assert [amounts[k] for k in mine] == item[41]
        assert [codes[k] for k in mine] == item[38]
    assert sum(amounts) == 0  # every posting balanced, so all of them together
