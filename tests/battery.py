"""The reliability battery's world and its bookkeeping (issue 17).

A `World` is an engine and a relay of their own on databases of their own
(tests/isolated.py: control and shard s0 on PostgreSQL server 0, shard s1 on server 1),
with fakes of their own (so `engine reconcile` sees only this world's money) and a
Redis of its own (it can be flushed, killed and paused). With `proxied`, the engine and
the relay reach each PostgreSQL server, Redis and the core through a FaultProxy:

    engine, relay ──► proxy pg0 ──► server 0 (control, s0)
                  ──► proxy pg1 ──► server 1 (s1)
                  ──► proxy redis ──► own redis-server
                  ──► proxy core ──► own fake core

A fault never touches the suite's shared databases, Redis or fakes.

Bursts: every request is made once with its Idempotency-Key (some cut off or refused
under the fault), then retried with the same key until each has a final answer; `Tally`
then says what was acknowledged, lost or doubled, and the world's invariants
(tests/invariants.py) and `engine reconcile` must be clean.

Counts scale with RELIABILITY=full (`make reliability`); `make test` runs a fast slice.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import re
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from engine.settings import Settings
from tests import invariants
from tests.api_client import BODIES_SEEN, PERSONAL_SENT, ApiClient, Reply, new_bank_card
from tests.conftest import ROOT, EngineProcess, Fakes, OwnRedis
from tests.fault_proxy import FaultProxy
from tests.isolated import Isolated

FULL = os.environ.get("RELIABILITY") == "full"
RESULTS = ROOT / ".run" / "reliability"
# Answers after which the same request with the same key may still succeed.
RETRYABLE = frozenset({409, 429, 500, 502, 503, 504})


def scaled(fast: int, full: int) -> int:
    """`fast` in make test, `full` under make reliability."""
    return full if FULL else fast


def shanghai_today() -> dt.date:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(hours=8)).date()


@dataclass
class Borrower:
    customer_id: str
    card: str  # the card registered with the customer: the one money moves to and from
    line_id: str
    loans: list[str] = field(default_factory=list)


@dataclass
class Op:
    """One money-moving request, made with its key until it has a final answer."""

    path: str
    body: dict[str, Any]
    key: str = field(default_factory=lambda: "rb-" + secrets.token_hex(10))
    first: Reply | None = None  # None: cut off (no answer); the outcome is unknown
    final: Reply | None = None

    @property
    def acknowledged(self) -> bool:
        return self.first is not None and self.first.status == 201

    def resource_id(self, reply: Reply | None) -> str | None:
        if reply is None or reply.status != 201:
            return None
        name = "loan_id" if self.path == "/v1/drawdowns" else "repayment_id"
        return str(reply.json[name])


@contextlib.asynccontextmanager
async def running(world: World, business_date: dt.date | None = None) -> AsyncIterator[World]:
    """`world` started for the block (a module's fixture) and stopped after it, whatever
    happens inside."""
    try:
        await world.start(business_date)
        yield world
    finally:
        await world.stop()


class World:
    def __init__(
        self, settings: Settings, tmp: Path, *, proxied: bool = True, workers: int = 2,
        extra_env: dict[str, str] | None = None, iso_env: dict[str, str] | None = None,
    ) -> None:  # fmt: skip
        self.tmp = tmp
        self.proxied = proxied
        self.workers = workers
        self.extra_env = extra_env or {}
        pg0, pg1 = (int(p) for p in os.environ.get("STACK_PG_PORTS", "55431 55432").split())
        self.pg_ports = {"pg0": pg0, "pg1": pg1}
        base = settings.control_dsn.rsplit("/", 1)[0]
        # iso_env reaches the engine, the relay and the CLIs (eod run, reconcile) alike.
        second = base.replace(f":{pg0}", f":{pg1}")
        self.iso = Isolated(base, tmp, iso_env, second_base=second)
        self.redis = OwnRedis(tmp)
        self.proxies: dict[str, FaultProxy] = {}
        self.fakes: Fakes | None = None
        self.engine: EngineProcess | None = None

    # --- life ---------------------------------------------------------------------------

    async def start(self, business_date: dt.date | None = None) -> None:
        await self.iso.create(business_date or shanghai_today())
        self.redis.start()
        (self.tmp / "fakes").mkdir(exist_ok=True)
        self.fakes = await asyncio.to_thread(Fakes, self.tmp / "fakes")
        if self.proxied:
            targets = {**self.pg_ports, "redis": self.redis.port, "core": self.fakes.core.port}
            self.proxies = {
                name: FaultProxy(port, seed=n).start()
                for n, (name, port) in enumerate(targets.items())
            }
        self.engine = EngineProcess(
            self.fakes, workers=self.workers, extra_env=self.engine_env() | self.extra_env
        )
        await asyncio.to_thread(self.engine.wait_ready)

    def engine_env(self) -> dict[str, str]:
        env = dict(self.iso.env)
        redis_port, core_url = self.redis.port, self.core_url
        if self.proxied:
            for name, proxy in self.proxies.items():
                if name.startswith("pg"):
                    real = f":{self.pg_ports[name]}/"
                    for key in ("ENGINE_CONTROL_DSN", "ENGINE_SHARD_DSNS"):
                        env[key] = env[key].replace(real, f":{proxy.port}/")
            redis_port = self.proxies["redis"].port
            core_url = f"http://127.0.0.1:{self.proxies['core'].port}"
        env["ENGINE_REDIS_URL"] = f"redis://:s3cret@127.0.0.1:{redis_port}/0"
        env["ENGINE_CORE_URL"] = core_url
        return env

    async def stop(self) -> None:
        for proc in (self.engine, self.fakes):
            if proc is not None:
                await asyncio.to_thread(proc.stop)
        for proxy in self.proxies.values():
            proxy.stop()
        if self.redis.proc is not None and self.redis.proc.poll() is None:
            self.redis.kill()
        await self.iso.drop()

    @property
    def core_url(self) -> str:
        assert self.fakes is not None
        return self.fakes.core.base_url

    def api(self, http: aiohttp.ClientSession) -> ApiClient:
        assert self.engine is not None
        return ApiClient(http, self.engine.base_url)

    def log_paths(self) -> list[Path]:
        """Every log of this world's processes: engine, relay, fakes."""
        assert self.engine is not None and self.fakes is not None
        procs = [self.engine, self.engine.relay, self.fakes.core, self.fakes.sms, self.fakes.bureau]
        return [p.log_path for p in procs if p is not None]

    # --- people and money ---------------------------------------------------------------

    async def borrowers(self, api: ApiClient, count: int) -> list[Borrower]:
        async def one() -> Borrower:
            card = new_bank_card()
            customer_id = await api.customer(bank_card=card)
            return Borrower(customer_id, card, await api.line(customer_id, limit="300000.00"))

        return list(await asyncio.gather(*(one() for _ in range(count))))

    async def disbursed(self, api: ApiClient, borrower: Borrower, amount: str) -> str:
        loan = await api.disbursed_loan(borrower.line_id, amount, disburse_to=borrower.card)
        borrower.loans.append(str(loan["loan_id"]))
        return str(loan["loan_id"])

    async def wait_settled(self, timeout_s: float = 90.0) -> None:
        await invariants.wait_settled(self.iso.shard_dsns, timeout_s)

    async def problems(self, accrued_through: dt.date | None = None) -> list[str]:
        async with aiohttp.ClientSession() as http:
            return await invariants.problems(
                self.iso.shard_dsns, http, self.core_url, accrued_through
            )

    def reconcile(self, day: dt.date | None = None) -> str:
        """`engine reconcile --date D` against this world's own core: '' when clean."""
        env = self.iso.env | {"ENGINE_CORE_URL": self.core_url}
        saved, self.iso.env = self.iso.env, env
        try:
            result = self.iso.cli("-m", "engine", "reconcile", "--date",
                                  str(day or shanghai_today()), timeout_s=120)  # fmt: skip
        finally:
            self.iso.env = saved
        return "" if result.returncode == 0 else result.stdout + result.stderr


def drawdown_op(borrower: Borrower, amount: str = "100.00", **fields: Any) -> Op:
    body = {
        "credit_line_id": borrower.line_id,
        "amount": amount,
        "term_months": 6,
        "repayment_method": "equal_installment",
        "disburse_to": borrower.card,
    } | fields
    return Op("/v1/drawdowns", body)


def repayment_op(borrower: Borrower, items: list[dict[str, Any]]) -> Op:
    body = {"customer_id": borrower.customer_id, "debit_from": borrower.card, "items": items}
    return Op("/v1/repayments", body)


IN_FLIGHT = [0]  # requests sent and not yet answered: a kill must catch some


async def send(api: ApiClient, op: Op, timeout_s: float = 15.0) -> Reply | None:
    """One attempt; None when the connection broke or no answer came in time."""
    IN_FLIGHT[0] += 1
    try:
        return await asyncio.wait_for(api.post(op.path, op.body, key=op.key), timeout_s)
    except (TimeoutError, aiohttp.ClientError):
        return None
    finally:
        IN_FLIGHT[0] -= 1


async def burst(api: ApiClient, ops: list[Op], concurrency: int = 32) -> None:
    """Every op once, `concurrency` at a time; its first answer (or None) is kept."""
    gate = asyncio.Semaphore(concurrency)

    async def one(op: Op) -> None:
        async with gate:
            op.first = await send(api, op)

    await asyncio.gather(*(one(op) for op in ops))


async def retry_until_final(api: ApiClient, ops: list[Op], timeout_s: float = 120.0) -> None:
    """Each op again with its own key until its answer is final (not cut off, not
    in flight, not 5xx); a repayment left `processing` is polled to its end."""
    for op in ops:
        if op.first is not None and op.first.status not in RETRYABLE:
            op.final = op.first
    deadline = time.monotonic() + timeout_s
    while (pending := [op for op in ops if op.final is None]) and time.monotonic() < deadline:
        replies = await asyncio.gather(*(send(api, op) for op in pending))
        for op, reply in zip(pending, replies, strict=True):
            if reply is not None and reply.status not in RETRYABLE:
                op.final = reply
        if any(op.final is None for op in pending):
            await asyncio.sleep(0.2)
    assert all(op.final is not None for op in ops), [op.key for op in ops if op.final is None]
    for op in ops:
        if op.path == "/v1/repayments" and op.final is not None and op.final.status == 201:
            op.final = await api.settled_repayment(op.final, timeout_s=60)


@dataclass
class Tally:
    """What one fault run did to money, for the assertions and RELIABILITY.md."""

    fault: str
    requests: int = 0
    cut_off: int = 0  # first attempt without an answer
    refused: int = 0  # first attempt answered 409/503/5xx, i.e. refused cleanly or to retry
    acknowledged: int = 0
    lost: int = 0  # acknowledged, but not in the books afterwards
    doubled: int = 0  # one key, two movements (or a retry naming another resource)
    server_errors: int = 0  # 5xx other than 503 on any attempt
    notes: list[str] = field(default_factory=list)

    def record(self) -> None:
        """Append to .run/reliability/results.jsonl (RELIABILITY.md is written from it)."""
        RESULTS.mkdir(parents=True, exist_ok=True)
        line = {"at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "full": FULL}
        line |= {k: v for k, v in self.__dict__.items() if k != "notes"}
        with (RESULTS / "results.jsonl").open("a") as out:
            out.write(json.dumps(line) + "\n")


async def books_of(world: World, ops: list[Op]) -> dict[str, set[str]]:
    """The loans on the ops' lines and the repayments of the ops' customers, now (taken
    before a burst, so `tally` counts only what the burst made)."""
    lines = {op.body["credit_line_id"] for op in ops if op.path == "/v1/drawdowns"}
    customers = {op.body["customer_id"] for op in ops if op.path == "/v1/repayments"}
    return await _in_books(world, lines, customers)


async def tally(world: World, fault: str, ops: list[Op], before: dict[str, set[str]]) -> Tally:
    """Compare each op's answers with the books: every acknowledged movement exists
    exactly once, every 201 retry names what the first 201 named, nothing else was made."""
    result = Tally(fault, requests=len(ops))
    for op in ops:
        if op.first is None:
            result.cut_off += 1
        elif op.first.status in RETRYABLE:
            result.refused += 1
        for reply in (op.first, op.final):
            if reply is not None and reply.status >= 500 and reply.status != 503:
                result.server_errors += 1
    result.acknowledged = sum(op.acknowledged for op in ops)
    named: dict[str, set[str]] = {"loan": set(), "repayment": set()}
    for op in ops:
        first, final = op.resource_id(op.first), op.resource_id(op.final)
        if first is not None and final != first:
            result.doubled += 1
            result.notes.append(f"{op.key}: acknowledged {first}, the retry names {final}")
        if final is not None:
            named["loan" if op.path == "/v1/drawdowns" else "repayment"].add(final)
    in_books = await books_of(world, ops)
    for kind in ("loan", "repayment"):
        result.lost += len(named[kind] - in_books[kind])
        extra = in_books[kind] - named[kind] - before[kind]
        result.doubled += len(extra)
        result.notes += [f"{kind} {i}: in the books, no key names it" for i in sorted(extra)]
    return result


async def _in_books(world: World, lines: set[str], customers: set[str]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {"loan": set(), "repayment": set()}
    for dsn in world.iso.shard_dsns:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            loans = await conn.fetch(
                "SELECT loan_id FROM loan WHERE credit_line_id = ANY($1::bigint[])",
                [int(x) for x in lines],
            )
            repayments = await conn.fetch(
                "SELECT repayment_id FROM repayment WHERE customer_id = ANY($1::bigint[])",
                [int(x) for x in customers],
            )
        finally:
            await conn.close()
        found["loan"] |= {str(r[0]) for r in loans}
        found["repayment"] |= {str(r[0]) for r in repayments}
    return found


_LONG_DIGITS = re.compile(rb"(?<![0-9A-Za-z_-])\d{11,}(?![0-9A-Za-z_-])")


def pii_problems(
    log_paths: list[Path] | dict[Path, int], bodies: list[bytes] | None = None
) -> list[str]:
    """Any personal number the tests sent, in clear, in a log or a response body; and any
    run of 11+ digits in a log (the engine masks every such run, IDs included). Given a
    dict, each log is read from its offset (what this session wrote)."""
    offsets = log_paths if isinstance(log_paths, dict) else dict.fromkeys(log_paths, 0)
    needles = [value.encode() for value in PERSONAL_SENT if len(value) >= 11]
    found = []
    for body in BODIES_SEEN if bodies is None else bodies:
        found += [f"a response body holds {n[:3]!r}…" for n in needles if n in body]
    for path, offset in offsets.items():
        if not path.exists():
            continue
        with path.open("rb") as log:
            log.seek(offset)
            text = log.read()
        found += [f"{path.name} holds {n[:3]!r}…" for n in needles if n in text]
        if path.name.startswith(("test-engine", "test-relay")):
            match = _LONG_DIGITS.search(text)
            if match:
                found.append(f"{path.name}: a run of digits in clear: {match.group()[:4]!r}…")
    return found


__all__ = [
    "FULL", "IN_FLIGHT", "Borrower", "Op", "Tally", "World", "books_of", "burst", "drawdown_op", "pii_problems",
    "repayment_op", "retry_until_final", "scaled", "send", "shanghai_today", "tally",
]  # fmt: skip
