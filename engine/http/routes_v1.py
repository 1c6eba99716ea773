"""The channel API `/v1/`: thin handlers that decode, route to a shard, call a
service, and encode. Authentication runs before them (`engine.http.auth`)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Awaitable, Callable

import asyncpg
import msgspec
from aiohttp import web
from prometheus_client import Counter

from engine.contract.codec import decode, encode, json_response
from engine.contract.errors import ApiError, BadRequest
from engine.contract.messages import (
    CreditLineCreate,
    CreditLineView,
    CustomerCreate,
    CustomerView,
    DrawdownCreate,
    DrawdownView,
    RepaymentCreate,
    RepaymentView,
    StatusChange,
)
from engine.http import keys as app_keys
from engine.http.auth import BODY, CHANNEL, caller_of
from engine.idempotency.once import run_once
from engine.idempotency.records import AtOnce, Claim, StoredResponse
from engine.relay.inline import debit_inline
from engine.runtime import metrics
from engine.services import credit_lines, customers, drawdowns, loans, repayments
from engine.services.context import Services, parse_id
from engine.services.repayment_opening import Opened
from engine.stores.reference import Channel
from engine.stores.shards import in_transaction, read
from ledger.money import parse_amount
from sharding.ids import shard_of_id


def _svc(request: web.Request) -> Services:
    return request.app[app_keys.SERVICES]


async def create_customer(request: web.Request) -> web.Response:
    svc, channel = _svc(request), request[CHANNEL]
    body = decode(request[BODY], CustomerCreate)
    new = customers.NewCustomer(svc, channel, body)

    async def work(conn: asyncpg.Connection) -> tuple[CustomerView, int]:
        view = await customers.insert_customer(svc, conn, new)
        return view, int(view.customer_id)

    return await run_once(caller_of(request), svc, new.logical_shard, work)


async def create_credit_line(request: web.Request) -> web.Response:
    svc, channel = _svc(request), request[CHANNEL]
    body = decode(request[BODY], CreditLineCreate)
    customer_id = int(body.customer_id)

    async def work(conn: asyncpg.Connection) -> tuple[CreditLineView, int]:
        return await credit_lines.grant_line(svc, conn, channel, body), customer_id

    return await run_once(caller_of(request), svc, shard_of_id(customer_id), work)


def _status_handler(status: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        svc, channel = _svc(request), request[CHANNEL]
        line_id = parse_id(request.match_info["line_id"], "credit_line")
        body = decode(request[BODY], StatusChange)
        view = await in_transaction(
            svc.pools,
            shard_of_id(line_id),
            lambda c: credit_lines.set_line_status(c, channel, line_id, status, body.reason),
        )
        return json_response(encode(view))

    return handler


async def create_drawdown(request: web.Request) -> web.Response:
    svc, channel = _svc(request), request[CHANNEL]
    body = decode(request[BODY], DrawdownCreate)
    line_id = int(body.credit_line_id)
    booked: list[DrawdownView] = []

    async def at_once(claim: Claim) -> StoredResponse | AtOnce:
        outcome = await drawdowns.draw_down_at_once(svc, channel, body, claim)
        if isinstance(outcome, AtOnce):
            return outcome
        booked.append(outcome[0])
        return outcome[1]

    async def work(conn: asyncpg.Connection) -> tuple[DrawdownView, int]:
        view, customer_id = await drawdowns.draw_down(svc, conn, channel, body)
        booked.append(view)
        return view, customer_id

    response = await _counted(
        metrics.DRAWDOWNS,
        channel,
        lambda: booked[-1].product_code if booked else "n/a",
        run_once(caller_of(request), svc, shard_of_id(line_id), work, at_once=at_once),
    )
    if booked and REPLAYED not in response.headers:
        labels = (channel.tenant_id, channel.channel_id, booked[-1].product_code)
        metrics.DRAWDOWN_AMOUNT.labels(*labels).inc(parse_amount(booked[-1].principal))
    return response


REPLAYED = "Idempotent-Replayed"


async def _counted(
    counter: Counter,
    channel: Channel,
    third_label: Callable[[], str],
    call: Awaitable[web.Response],
) -> web.Response:
    """Count a money request as accepted, refused (4xx) or error, by tenant and channel;
    a replayed answer is not a new request and is not counted here."""
    try:
        response = await call
    except ApiError as exc:
        outcome = "refused" if exc.status < 500 else "error"
        counter.labels(channel.tenant_id, channel.channel_id, third_label(), outcome).inc()
        raise
    except Exception:
        counter.labels(channel.tenant_id, channel.channel_id, third_label(), "error").inc()
        raise
    if REPLAYED not in response.headers:
        counter.labels(channel.tenant_id, channel.channel_id, third_label(), "accepted").inc()
    return response


async def get_payoff_quote(request: web.Request) -> web.Response:
    svc, channel = _svc(request), request[CHANNEL]
    loan_id = parse_id(request.match_info["loan_id"], "loan")
    today = svc.business_date
    on_text = request.query.get("on")
    try:
        on = dt.date.fromisoformat(on_text) if on_text else today
    except ValueError as exc:
        raise BadRequest("DATE_INVALID", "on must be a date YYYY-MM-DD") from exc
    view = await read(
        svc.pools,
        shard_of_id(loan_id),
        lambda c: loans.quote_payoff(c, channel, loan_id, on, today),
    )
    return json_response(encode(view))


async def create_repayment(request: web.Request) -> web.Response:
    started = time.perf_counter()
    svc, channel = _svc(request), request[CHANNEL]
    body = decode(request[BODY], RepaymentCreate)
    customer_id = int(body.customer_id)
    key = request.headers.get("Idempotency-Key", "")
    created: list[int] = []
    opened: list[Opened] = []  # phase A at once wrote the debit's row as our claim
    lease_s = request.app[app_keys.SETTINGS].external.relay_lease_s

    async def work(conn: asyncpg.Connection) -> tuple[RepaymentView, int]:
        view = await repayments.repay(svc, conn, channel, body, key)
        created.append(int(view.repayment_id))
        return view, customer_id

    async def debit() -> bytes | None:
        # Phase A is everything before the debit: at once or under locks, retries included.
        metrics.REPAYMENT_PHASE.labels("open").observe(time.perf_counter() - started)
        repayment_id = created[-1]  # the attempt that committed, if a retry ran
        held = opened[-1] if opened and opened[-1].claimed.ref_id == repayment_id else None
        return await debit_inline(
            svc,
            request.app[app_keys.INLINE_RELAY],
            lease_s=lease_s,
            channel_id=channel.channel_id,
            idem_key=key,
            customer_id=customer_id,
            repayment_id=repayment_id,
            opened=held,
        )

    modes = {item.mode for item in body.items}
    mode = modes.pop() if len(modes) == 1 else "combined"
    return await _counted(
        metrics.REPAYMENTS,
        channel,
        lambda: mode,
        run_once(
            caller_of(request),
            svc,
            shard_of_id(customer_id),
            work,
            after=debit,
            pending_states=frozenset({"processing"}),
            at_once=lambda claim: repayments.open_at_once(
                svc, channel, body, claim, created, lease_s=lease_s, opened=opened
            ),
        ),
    )


ReadView = Callable[[asyncpg.Connection, Channel, int, dt.date], Awaitable[msgspec.Struct]]


def _reader(
    param: str, what: str, fetch: ReadView
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """A GET of one resource: the ID from the path routes it to its shard, `fetch` reads
    it there for this channel (404 if absent or another tenant's), on the business date."""

    async def handler(request: web.Request) -> web.Response:
        svc, channel = _svc(request), request[CHANNEL]
        entity_id = parse_id(request.match_info[param], what)
        today = svc.business_date
        view = await read(
            svc.pools, shard_of_id(entity_id), lambda c: fetch(c, channel, entity_id, today)
        )
        return json_response(encode(view))

    return handler


async def _line(
    conn: asyncpg.Connection, channel: Channel, line_id: int, _: dt.date
) -> CreditLineView:
    return credit_lines.line_view(await credit_lines.fetch_line(conn, channel, line_id))


async def _repayment(
    conn: asyncpg.Connection, channel: Channel, repayment_id: int, today: dt.date
) -> RepaymentView:
    return await repayments.repayment_view(conn, channel.tenant_id, repayment_id, today)


def setup_v1_routes(app: web.Application) -> None:
    add = app.router.add_route
    add("POST", "/v1/customers", create_customer)
    add(
        "GET",
        "/v1/customers/{customer_id}/loans",
        _reader("customer_id", "customer", loans.customer_loans),
    )
    add("POST", "/v1/credit-lines", create_credit_line)
    add("GET", "/v1/credit-lines/{line_id}", _reader("line_id", "credit_line", _line))
    add("POST", "/v1/credit-lines/{line_id}/freeze", _status_handler("frozen"))
    add("POST", "/v1/credit-lines/{line_id}/unfreeze", _status_handler("active"))
    add("POST", "/v1/drawdowns", create_drawdown)
    add("GET", "/v1/loans/{loan_id}", _reader("loan_id", "loan", loans.get_loan))
    add("GET", "/v1/loans/{loan_id}/schedule", _reader("loan_id", "loan", loans.get_schedule))
    add("GET", "/v1/loans/{loan_id}/payoff-quote", get_payoff_quote)
    add("POST", "/v1/repayments", create_repayment)
    add("GET", "/v1/repayments/{repayment_id}", _reader("repayment_id", "repayment", _repayment))
