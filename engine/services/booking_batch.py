"""Group booking: the drawdowns (or repayments' completions) that reach a shard
database together, in one statement.

The lanes below are generic (`GroupBatches`); a `GroupKind` says what they book: its
statement, how a batch's arguments are laid out, which items may not share a call
(drawdowns: a line or a customer; all of one business date) and its metrics.
`DrawdownBatches` books drawdowns through `book_drawdowns`; `RepaymentBatches`
(engine/services/repayment_completion.py) completes repayments whose debit core took
through `complete_repayments`. What follows is told for drawdowns; repayments' lanes
work the same way, with their own batch size (`repayment_batch_max`).

    drawdown ─► expecting(shard): read its line, plan ─► book(shard, args)
                                                            │
    lane of the shard's database: queue ◄───────────────────┘
      fewer than in_flight (2) calls out? ─► a sender: wait for the drawdowns still
      reading their line (≤ gather_s) ─► book_drawdowns(up to 32 of the queue)
      ─► each caller gets its outcome ─► again while the queue holds any

A drawdown booked alone costs PostgreSQL about 0.85 ms of CPU, most of it per
statement (executor start-up, relation and index locks) and per commit; eight booked
by one `book_drawdowns` call (ledger migration 0010) about 0.45 ms each
(`python -m loadtest.bench_book --batch 8`). A lane has at most `in_flight` calls
out at a time; what queues meanwhile leaves together when one returns. Before a call
leaves, it waits for the drawdowns of its shard that are reading their line
(`expecting`), at most
`gather_s`: under load a shard's drawdowns are seldom in the same phase at the same
moment, so without it the calls would mostly carry one. A lone drawdown waits for
nothing; a quiet shard books as before, a busy one in batches that grow with the load.

A batch never holds two drawdowns of one credit line or of one customer: the second
waits for a later call, where its line's checks see the first one's writes (a call
out at the same time waits for the line's lock, which the first holds to its commit).

Each answer is "booked", "recheck" or "replay"; a lone drawdown goes through
`book_drawdowns` too, for its lock time-out. A call that fails (a lock held longer
than its 250 ms lock time-out, a constraint) is one statement
outside a transaction, so nothing of it was written — or, if the connection broke
after its commit, all of it: each of its drawdowns answers "recheck", and the
caller's locked path finds the durable record or books it alone, waiting for its own
line only. A shard that cannot be reached fails the call and everything queued
behind it at once (503), rather than one time-out after another. A request cancelled
while queued is dropped from the queue; `booking_batch_max` 1 turns all of this off.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Final, cast

import asyncpg
from prometheus_client import Counter, Histogram

from engine.runtime import metrics
from engine.stores.shards import read
from sharding.pools import ShardBusyError, ShardPools, ShardUnavailableError

log = logging.getLogger(__name__)

BATCH_MAX: Final = 32
# Calls out at once per shard database and process. With one, a call that is slow for
# any reason (a descheduled backend, a slow WAL flush, a lock) holds up every drawdown
# queued behind it; with two, the queue still drains. (Saturated throughput was the
# same or better with two; the half-load p99 moved too much from run to run to rank.)
IN_FLIGHT: Final = 2
QUEUE_MAX: Final = 1024  # drawdowns waiting for one database, per process: then 503 SHARD_BUSY
# The longest a call waits for drawdowns already reading their line (see `expecting`).
GATHER_S: Final = 0.005
# One drawdown's 45 arguments (engine/services/drawdowns.py lays them out): the
# idempotency record 0-4, the checks 5-9 (5: the line), the loan 10-25 (11: the
# customer), the plan's columns 26-36, the posting 37-41, the payment order 42-43, the
# request's nonce 44. `book_drawdowns` (ledger migration 0011) takes 0-43 each as an
# array, then a lock time-out; `record_request_nonces` (0017) the nonces of those it
# booked, in the same statement (a replayed one fails the call: each is redone alone).
ARGS: Final = 45
_TODAY, _LINE, _CUSTOMER = 7, 5, 11
_PLAN = range(26, 37)
_TXN, _CODES, _OWNERS, _CUSTOMERS, _AMOUNTS = 37, 38, 39, 40, 41
_NONCE = 44
_LEG_COLUMNS = (_CODES, _OWNERS, _CUSTOMERS, _AMOUNTS)
BATCH_SQL: Final = "SELECT record_request_nonces(book_drawdowns({}), $1, ${})".format(
    # the business date once (one more array), then the lock time-out; then the nonces
    ", ".join(f"${n}" for n in range(1, ARGS + 2)),
    ARGS + 2,
)
# A group call is a statement of its own: one line held by a long transaction must not
# stall every drawdown of the shard behind it. It then fails whole, writing nothing.
GROUP_LOCK_TIMEOUT: Final = "250ms"

Args = tuple[object, ...]


class _Waiting:
    __slots__ = ("answer", "args")

    def __init__(self, args: Args, answer: asyncio.Future[str]) -> None:
        self.args = args
        self.answer = answer


class _Lane:
    """One shard database's queue, the drawdowns on their way to it, and the tasks
    that send its calls."""

    __slots__ = ("arrived", "booking", "expected", "queue", "senders")

    def __init__(self) -> None:
        self.queue: collections.deque[_Waiting] = collections.deque()
        self.senders: set[asyncio.Task[None]] = set()  # each: a call in flight, or about to
        self.expected = 0  # inside `expecting`
        self.booking = 0  # inside `book`: queued, or in a call
        self.arrived = asyncio.Event()

    @property
    def coming(self) -> int:
        """Drawdowns reading their line or planning, that will queue soon."""
        return self.expected - self.booking


class GroupKind:
    """What a lane books: its statement, how a batch's arguments are laid out, which
    of its items may not share a call, and its metrics. Drawdowns (`DRAWDOWNS`),
    repayments' openings (engine/services/repayment_opening.py) and their completions
    (engine/services/repayment_completion.py) are three."""

    name: str = "drawdown"
    args: int = ARGS
    # Its metrics: the size of each call, and the calls that failed whole.
    batch_size: Histogram = metrics.BOOKING_BATCH
    batch_failures: Counter = metrics.BOOKING_BATCH_FAILED

    def keys(self, args: Args) -> tuple[object, tuple[object, ...]]:
        """(what every item of one call shares, what no two items of a call may share)."""
        return args[_TODAY], (("line", args[_LINE]), ("customer", args[_CUSTOMER]))

    async def call(
        self, conn: asyncpg.Connection, items: Sequence[Args], lock_timeout: str | None
    ) -> object:
        return await conn.fetchval(BATCH_SQL, *batch_args(items, lock_timeout=lock_timeout))

    def observe(self, n: int) -> None:
        self.batch_size.observe(n)

    def failed(self) -> None:
        self.batch_failures.inc()


DRAWDOWNS: Final = GroupKind()


class GroupBatches:
    """A lane per shard database for one `GroupKind` (see the module's docstring)."""

    def __init__(
        self,
        pools: ShardPools,
        kind: GroupKind,
        batch_max: int = BATCH_MAX,
        gather_s: float = GATHER_S,
        in_flight: int = IN_FLIGHT,
    ) -> None:
        self._kind = kind
        self._pools = pools
        self._batch_max = batch_max
        self._gather_s = gather_s
        self._in_flight = in_flight
        self._lanes: dict[str, _Lane] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def _lane(self, logical_shard: int) -> _Lane:
        """The lane of the shard's database (one per physical shard)."""
        name = self._pools.physical_for(logical_shard).name
        lane = self._lanes.get(name)
        if lane is None:
            lane = self._lanes[name] = _Lane()
        return lane

    @contextlib.contextmanager
    def expecting(self, logical_shard: int) -> Iterator[None]:
        """Around a drawdown's way to `book`: a call about to leave waits for it (up to
        `gather_s`), so that drawdowns read at the same time are booked together."""
        lane = self._lane(logical_shard)
        lane.expected += 1
        try:
            yield
        finally:
            lane.expected -= 1
            lane.arrived.set()

    async def book(self, logical_shard: int, args: Args) -> str:
        """Book one item (its `kind.args` arguments) with whatever else is waiting."""
        assert len(args) == self._kind.args, len(args)
        if self._batch_max == 1:  # group booking off: each alone, at once, as before
            self._kind.observe(1)
            return await read(self._pools, logical_shard, lambda c: _alone(c, self._kind, args))
        lane = self._lane(logical_shard)
        if len(lane.queue) >= QUEUE_MAX:
            raise ShardBusyError(self._pools.physical_for(logical_shard).name, None)
        answer: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        lane.queue.append(_Waiting(args, answer))
        lane.arrived.set()
        if len(lane.senders) < self._in_flight:
            try:
                sender = asyncio.create_task(self._drain(logical_shard, lane))
            except BaseException:  # the loop is closing: this one is not booked
                answer.cancel()
                raise
            lane.senders.add(sender)
            self._tasks.add(sender)
            sender.add_done_callback(functools.partial(self._drained, lane))
        lane.booking += 1
        try:
            return await answer
        finally:
            lane.booking -= 1

    def _drained(self, lane: _Lane, sender: asyncio.Task[None]) -> None:
        self._tasks.discard(sender)
        if sender in lane.senders:  # cancelled before it ran (shutdown)
            lane.senders.discard(sender)
            if not lane.senders:  # nobody waits on
                while lane.queue:
                    _fail(lane.queue.popleft(), asyncio.CancelledError())

    async def _drain(self, logical_shard: int, lane: _Lane) -> None:
        sender = asyncio.current_task()
        assert sender is not None
        try:
            await self._calls(logical_shard, lane)
        except BaseException as exc:
            if isinstance(exc, Exception):  # a bug: the batch's callers have it already
                log.exception("group booking lane failed", extra={"kind": self._kind.name})
            if len(lane.senders) == 1:  # the last one: nobody waits on
                while lane.queue:
                    _fail(lane.queue.popleft(), exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            # In the step that found the queue empty: no book() in between.
            lane.senders.discard(sender)

    async def _calls(self, logical_shard: int, lane: _Lane) -> None:
        while lane.queue:
            await self._gather(lane)
            batch = _take(lane.queue, self._batch_max, self._kind.keys)
            if not batch:  # the other sender took them, or they were cancelled
                continue
            try:
                outcomes = await self._call(logical_shard, batch)
            except ShardUnavailableError as exc:  # no connection: the calls after it neither
                for waiting in (*batch, *lane.queue):
                    _fail(waiting, exc)
                lane.queue.clear()
                continue
            except BaseException as exc:  # the callers get it; cancellation ends the lane
                for waiting in batch:
                    _fail(waiting, exc)
                if not isinstance(exc, Exception):
                    raise
                continue
            try:
                for waiting, outcome in zip(batch, outcomes, strict=True):
                    if not waiting.answer.done():  # its request may have been cancelled
                        waiting.answer.set_result(outcome)
            finally:  # a bug above must not leave anyone of the batch waiting
                for waiting in batch:
                    _fail(waiting, RuntimeError(f"no outcome for this {self._kind.name}"))

    async def _gather(self, lane: _Lane) -> None:
        """Until no drawdown is on its way that has not queued, the batch is full, or
        `gather_s` has passed. A lone drawdown does not wait at all."""
        deadline = asyncio.get_running_loop().time() + self._gather_s
        while lane.coming > 0 and len(lane.queue) < self._batch_max:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return
            lane.arrived.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await lane.arrived.wait()

    async def _call(self, logical_shard: int, batch: list[_Waiting]) -> list[str]:
        """The batch's outcomes, in order. A shard that could not be reached before the
        statement was sent raises; any other failure sends each drawdown back
        ("recheck") to be booked alone."""
        self._kind.observe(len(batch))
        items = [waiting.args for waiting in batch]
        sent = False

        async def statement(conn: asyncpg.Connection) -> object:
            nonlocal sent
            sent = True
            return await self._kind.call(conn, items, GROUP_LOCK_TIMEOUT)

        try:
            outcomes = await read(self._pools, logical_shard, statement)
        except Exception as exc:
            if isinstance(exc, ShardUnavailableError) and not sent:
                raise  # no connection: nothing was sent, and nothing queued would go
            # One statement: all of it written, or none of it (or, if the connection
            # broke after it was sent, unknown): the locked path finds out for each.
            self._kind.failed()
            log.warning(
                "group booking failed; each is redone alone",
                extra={"kind": self._kind.name, "n": len(batch), "error": type(exc).__name__},
            )
            return ["recheck"] * len(batch)
        if not isinstance(outcomes, list) or len(outcomes) != len(batch):
            raise RuntimeError(f"{self._kind.name} batch answered {outcomes!r} for {len(batch)}")
        return [str(outcome) for outcome in outcomes]


class DrawdownBatches(GroupBatches):
    """The drawdowns' lanes."""

    def __init__(
        self,
        pools: ShardPools,
        batch_max: int = BATCH_MAX,
        gather_s: float = GATHER_S,
        in_flight: int = IN_FLIGHT,
    ) -> None:
        super().__init__(pools, DRAWDOWNS, batch_max, gather_s, in_flight)


async def book_alone(conn: asyncpg.Connection, args: Args) -> str:
    """One drawdown through `book_drawdowns`, waiting for locks as long as the caller's
    transaction allows (the locked path, and group booking turned off)."""
    return await _alone(conn, DRAWDOWNS, args)


async def _alone(conn: asyncpg.Connection, kind: GroupKind, args: Args) -> str:
    outcomes = await kind.call(conn, [args], None)
    assert isinstance(outcomes, list) and len(outcomes) == 1, outcomes
    return str(outcomes[0])


def _fail(waiting: _Waiting, exc: BaseException) -> None:
    if waiting.answer.done():
        return
    if isinstance(exc, asyncio.CancelledError):
        waiting.answer.cancel()
    else:
        waiting.answer.set_exception(exc)


def _take(
    queue: collections.deque[_Waiting],
    batch_max: int,
    keys: Callable[[Args], tuple[object, tuple[object, ...]]] = DRAWDOWNS.keys,
) -> list[_Waiting]:
    """Up to `batch_max` from the front of the queue, all of one group (a business
    date) and no two sharing a key (drawdowns: a line or a customer); the others stay,
    in order, for the next call. Those whose request was cancelled are dropped:
    nothing of theirs is booked."""
    batch: list[_Waiting] = []
    taken: set[object] = set()
    passed: list[_Waiting] = []
    group = keys(queue[0].args)[0] if queue else None
    while queue and len(batch) < batch_max and len(passed) < batch_max:
        waiting = queue.popleft()
        if waiting.answer.done():
            continue
        its_group, its_keys = keys(waiting.args)
        if its_group != group or any(key in taken for key in its_keys):
            passed.append(waiting)
            continue
        taken.update(its_keys)
        batch.append(waiting)
    queue.extendleft(reversed(passed))
    return batch


def array_literal(values: Sequence[object]) -> str:
    """A PostgreSQL array literal of numbers, dates and NULLs (no quoting needed)."""
    return "{" + ",".join("NULL" if value is None else str(value) for value in values) + "}"


def item_columns(items: Sequence[Args], stop: int, shared: int) -> list[object]:
    """Arguments 0..stop-1 of a group call's items, each as one array (a column), but
    argument `shared`, which every item of a call has the same: once."""
    out: list[object] = []
    for index in range(stop):
        column = [item[index] for item in items]
        out.append(column[0] if index == shared else column)
    return out


def flattened_rows(items: Sequence[Args], index: int, width: int) -> list[list[object]]:
    """Argument `index` of each item, a list of rows of `width` values (a repayment's
    loans), flattened into one list naming each row's item (from 1), then one list per
    value: the per-row arrays of a group call."""
    owner: list[object] = []
    columns: list[list[object]] = [[] for _ in range(width)]
    for r, item in enumerate(items, start=1):
        rows = item[index]
        assert isinstance(rows, list)
        for row in rows:
            owner.append(r)
            for column, value in zip(columns, row, strict=True):
                column.append(value)
    return [owner, *columns]


def batch_args(
    items: Sequence[Args], *, lock_timeout: str | None = GROUP_LOCK_TIMEOUT
) -> list[object]:
    """`book_drawdowns`' arguments: each of a drawdown's as an array, but one business
    date, each plan column as one array literal per drawdown, and the legs flattened,
    each naming its transaction; last the lock time-out (None: the caller's)."""
    columns = list(zip(*items, strict=True))
    out: list[object] = [list(column) for column in columns[:_TODAY]]
    out.append(columns[_TODAY][0])
    out.extend(list(column) for column in columns[_TODAY + 1 : _PLAN.start])
    out.extend([array_literal(plan) for plan in columns[index]] for index in _PLAN)
    out.append(list(columns[_TXN]))
    legs: tuple[list[object], ...] = ([], [], [], [], [])
    for item in items:
        codes = item[_CODES]
        assert isinstance(codes, list)
        legs[0].extend([item[_TXN]] * len(codes))
        for leg_column, index in zip(legs[1:], _LEG_COLUMNS, strict=True):
            leg_column.extend(cast("list[object]", item[index]))
    out.extend(legs)
    out.extend(list(column) for column in columns[_AMOUNTS + 1 : _NONCE])
    out.append(lock_timeout)
    out.append(list(columns[_NONCE]))
    return out
