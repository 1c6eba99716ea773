"""A stateful property test against the running engine (issue 17, item 1): hypothesis'
RuleBasedStateMachine makes customers and lines, draws down with every method, repays
in every mode (due, prepay with each rule, payoff), retries earlier requests with the
same key, moves the business date and runs the day-end, in random order. After every
step (the relay having carried out every movement): each shard balanced, each line's
used amount its loans' outstanding principal, each loan's plan the calculator's (its
repayments replayed by ledger/), money at core equal to money in the ledger
(tests/invariants.py); and a retried key always names what it named first.

One world of its own (tests/battery.World), its business date some weeks back so the
date can move forward and installments fall due."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import aiohttp
import asyncpg
import pytest
import uvloop
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, precondition, rule

from engine.settings import Settings
from tests.battery import (
    Borrower,
    Op,
    World,
    drawdown_op,
    repayment_op,
    running,
    scaled,
    send,
    shanghai_today,
)

T = TypeVar("T")
START = shanghai_today() - dt.timedelta(days=120)
METHODS = ["equal_installment", "equal_principal", "interest_only", "bullet"]


class Engine:
    """The world and a loop of the machine's own (hypothesis calls rules synchronously)."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.loop = uvloop.new_event_loop()
        self.http = self.run(self._session())
        self.api = world.api(self.http)

    @staticmethod
    async def _session() -> aiohttp.ClientSession:
        return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        self.run(self.http.close())
        self.loop.close()


ENGINE: list[Engine] = []


class Lending(RuleBasedStateMachine):
    borrowers = Bundle("borrowers")
    loans = Bundle("loans")

    def __init__(self) -> None:
        super().__init__()
        self.engine = ENGINE[0]
        self.sent: list[Op] = []  # every request made, for retries with the same key

    def _send(self, op: Op) -> Any:
        reply = self.engine.run(send(self.engine.api, op))
        assert reply is not None and reply.status < 500, reply
        if reply.status == 201 and op.path == "/v1/repayments":
            reply = self.engine.run(self.engine.api.settled_repayment(reply))
        op.first = reply
        self.sent.append(op)
        return reply

    @rule(target=borrowers)
    def new_borrower(self) -> Borrower:
        [person] = self.engine.run(self.engine.world.borrowers(self.engine.api, 1))
        return person

    @rule(target=loans, who=borrowers, amount=st.integers(100, 20_000),
          method=st.sampled_from(METHODS), term=st.sampled_from([1, 3, 6, 12]))  # fmt: skip
    def drawdown(self, who: Borrower, amount: int, method: str, term: int) -> Any:
        reply = self._send(drawdown_op(who, f"{amount}.00", repayment_method=method,
                                       term_months=term))  # fmt: skip
        assert reply.status in (201, 422), reply
        return (who, reply.json["loan_id"]) if reply.status == 201 else (who, None)

    @rule(loan=loans, mode=st.sampled_from(["due", "prepay", "payoff"]),
          rule_=st.sampled_from(["reduce_nearest", "reduce_amount", "reduce_term"]),
          cash=st.integers(1, 3000))  # fmt: skip
    def repay(self, loan: tuple[Borrower, str | None], mode: str, rule_: str, cash: int) -> None:
        who, loan_id = loan
        if loan_id is None:
            return
        item: dict[str, Any] = {"loan_id": loan_id, "mode": mode}
        if mode == "prepay":
            item |= {"amount": f"{cash}.00", "prepay_rule": rule_}
        reply = self._send(repayment_op(who, [item]))
        assert reply.status in (201, 422), reply  # a refusal by the rules is clean
        if reply.status == 201:
            assert reply.json["status"] in ("succeeded", "failed"), reply

    @precondition(lambda self: bool(self.sent))
    @rule(pick=st.integers(0, 10_000))
    def retry_same_key(self, pick: int) -> None:
        op = self.sent[pick % len(self.sent)]
        again = self.engine.run(send(self.engine.api, op))
        assert again is not None, op.key
        first = op.first
        assert first is not None
        if first.status == 201:
            assert again.status == 201, (first, again)
            assert op.resource_id(again) == op.resource_id(first)

    @rule(days=st.integers(1, 20))
    def move_date(self, days: int) -> None:
        """Forward as `engine clock set` does (never past today: the day-end closes only
        dates that have begun), then until the engine dates its answers by it."""
        world = self.engine.world
        today = self.engine.run(world.iso.business_date())
        target = min(today + dt.timedelta(days=days), shanghai_today() - dt.timedelta(days=1))
        loans = [op.resource_id(op.first) for op in self.sent if op.path == "/v1/drawdowns"]
        self.engine.run(_set_date(world, target, [x for x in loans if x][-5:]))

    @rule()
    def day_end(self) -> None:
        world = self.engine.world
        today = self.engine.run(world.iso.business_date())
        if today >= shanghai_today() - dt.timedelta(days=1):
            return
        [outcome] = self.engine.run(world.iso.eod(today))
        assert outcome.closed, outcome

    @invariant()
    def books_whole(self) -> None:
        world = self.engine.world
        self.engine.run(world.wait_settled(60))
        assert self.engine.run(world.problems()) == []


async def _set_date(world: World, day: dt.date, loan_ids: list[str]) -> None:
    conn = await asyncpg.connect(world.iso.settings.control_dsn)
    try:
        await conn.execute("UPDATE business_clock SET business_date = $1", day)
    finally:
        await conn.close()
    # The engine reloads its reference data every 0.2 s in tests: wait until it quotes
    # on the new date (a day before it is refused with QUOTE_DATE_PAST once it has).
    deadline = asyncio.get_running_loop().time() + 10
    async with aiohttp.ClientSession() as http:
        api = world.api(http)
        while loan_ids and asyncio.get_running_loop().time() < deadline:
            codes = set()
            for loan_id in loan_ids:
                on = day - dt.timedelta(days=1)
                codes.add(
                    (await api.get(f"/v1/loans/{loan_id}/payoff-quote?on={on}")).json.get("code")
                )
            if "QUOTE_DATE_PAST" in codes or codes == {"LOAN_NOT_ACTIVE"}:
                return
            await asyncio.sleep(0.05)


@pytest.fixture(scope="module")
async def machine_world(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Any:
    world = World(settings, tmp_path_factory.mktemp("stateful"), proxied=False)
    async with running(world, business_date=START) as started:
        yield started


@pytest.fixture
def engine_of(machine_world: World) -> Iterator[Engine]:
    ENGINE[:] = [Engine(machine_world)]
    try:
        yield ENGINE[0]
    finally:
        ENGINE[0].close()


def test_lending_state_machine(engine_of: Engine) -> None:
    Lending.TestCase.settings = settings(
        max_examples=scaled(3, 12), stateful_step_count=scaled(12, 30), deadline=None,
        database=None, suppress_health_check=list(HealthCheck),
    )  # fmt: skip
    Lending.TestCase().runTest()
