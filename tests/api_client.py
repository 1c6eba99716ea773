"""A signing client of the channel API for tests, and makers of valid test data."""

from __future__ import annotations

import datetime as dt
import json
import secrets
from typing import Any

import aiohttp
from multidict import CIMultiDict

from engine.security.identity import make_id_number
from engine.security.signing import signed_headers

DEMO_CHANNEL = "demo"
DEMO_SECRET = "demo-secret"

# Everything personal sent, and every response body seen, during the session:
# the last test checks that no body and no log line repeats a full number.
PERSONAL_SENT: set[str] = set()
BODIES_SEEN: list[bytes] = []
_PERSONAL_FIELDS = ("id_number", "phone", "bank_card", "disburse_to", "debit_from")


def new_id_number(birth: dt.date | None = None) -> str:
    """A valid, almost surely unused ID number (random birth date and sequence)."""
    if birth is None:
        birth = dt.date(1960, 1, 1) + dt.timedelta(days=secrets.randbelow(14_000))
    return make_id_number("110105", birth, f"{secrets.randbelow(1000):03d}")


def new_bank_card(prefix: str = "622202") -> str:
    body = prefix + "".join(str(secrets.randbelow(10)) for _ in range(18 - len(prefix)))
    total = 0
    for position, char in enumerate(reversed(body)):
        digit = int(char)
        if position % 2 == 0:
            digit = digit * 2 - 9 if digit * 2 > 9 else digit * 2
        total += digit
    return body + str((10 - total % 10) % 10)


def new_phone() -> str:
    return f"139{secrets.randbelow(10**8):08d}"


class Reply:
    def __init__(self, status: int, body: bytes, headers: CIMultiDict[str]) -> None:
        self.status = status
        self.raw = body
        self.headers = headers
        self.json: Any = json.loads(body) if body else None

    def __repr__(self) -> str:
        return f"Reply({self.status}, {self.raw[:300]!r})"


class ApiClient:
    def __init__(self, session: aiohttp.ClientSession, base_url: str, channel: str = DEMO_CHANNEL,
                 secret: str = DEMO_SECRET) -> None:  # fmt: skip
        self.session = session
        self.base_url = base_url
        self.channel = channel
        self.secret = secret
        # Cards are bound to customers (issue 21): the registered card of each customer
        # this client made, and each line's customer, so drawdowns pay a bound card.
        self.cards: dict[str, str] = {}
        self.line_customers: dict[str, str] = {}

    def card_of(self, customer_id: str) -> str:
        """The card this client registered for the customer."""
        return self.cards[customer_id]

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        key: str | None = None,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        sign: bool = True,
    ) -> Reply:
        data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
        sent: dict[str, str] = {"Content-Type": "application/json"}
        if method == "POST" and key is None:
            key = secrets.token_hex(12)
        if sign:  # version 2: the key is signed too
            sent.update(
                signed_headers(self.channel, self.secret, method, path, data, idempotency_key=key)
            )
        if key:
            sent["Idempotency-Key"] = key
        sent.update(headers or {})
        if isinstance(body, dict):
            PERSONAL_SENT.update(
                str(body[f]) for f in _PERSONAL_FIELDS if isinstance(body.get(f), str)
            )
        async with self.session.request(
            method, self.base_url + path, data=data, headers=sent
        ) as resp:
            reply = Reply(resp.status, await resp.read(), CIMultiDict(resp.headers))
        BODIES_SEEN.append(reply.raw)
        return reply

    async def post(self, path: str, body: Any = None, **kwargs: Any) -> Reply:
        return await self.request("POST", path, body, **kwargs)

    async def get(self, path: str, **kwargs: Any) -> Reply:
        return await self.request("GET", path, **kwargs)

    # Makers of whole resources, asserting success.
    async def customer(self, **fields: str) -> str:
        body = {
            "tenant_id": "demo",
            "name": "测试客户",
            "id_number": new_id_number(),
            "phone": new_phone(),
            "bank_card": new_bank_card(),
        } | fields
        reply = await self.post("/v1/customers", body)
        assert reply.status == 201, reply
        customer_id = str(reply.json["customer_id"])
        self.cards[customer_id] = body["bank_card"]
        return customer_id

    async def line(self, customer_id: str, **fields: Any) -> str:
        body = {
            "customer_id": customer_id,
            "product_code": "demo-credit",
            "limit": "100000.00",
            "annual_rate_pct": "4.35",
            "repayment_methods": [
                "equal_installment",
                "equal_principal",
                "interest_only",
                "bullet",
            ],
            "max_term_months": 24,
            "expires_on": "2030-12-31",
        } | fields
        reply = await self.post("/v1/credit-lines", body)
        assert reply.status == 201, reply
        line_id = str(reply.json["credit_line_id"])
        self.line_customers[line_id] = customer_id
        return line_id

    async def drawdown(
        self, line_id: str, amount: str = "1000.00", *, key: str | None = None, **fields: Any
    ) -> Reply:
        body = {
            "credit_line_id": line_id,
            "amount": amount,
            "term_months": 12,
            "repayment_method": "equal_installment",
            "disburse_to": self._bound_card(line_id),
        } | fields
        return await self.post("/v1/drawdowns", body, key=key)

    def _bound_card(self, line_id: str) -> str:
        """The registered card of the line's customer, when this client made both."""
        customer_id = self.line_customers.get(line_id)
        return self.cards[customer_id] if customer_id in self.cards else new_bank_card()

    async def wait_for_loan(
        self, loan_id: str, status: str = "disbursed", timeout_s: float = 20.0
    ) -> Any:
        """Poll GET /v1/loans/{id} until it reaches `status` (as a channel would)."""
        import asyncio
        import time

        deadline = time.monotonic() + timeout_s
        while True:
            loan = (await self.get(f"/v1/loans/{loan_id}")).json
            if loan["status"] == status or time.monotonic() > deadline:
                assert loan["status"] == status, loan
                return loan
            await asyncio.sleep(0.05)

    async def disbursed_loan(self, line_id: str, amount: str = "1000.00", **fields: Any) -> Any:
        """Draw down and wait until core has paid the card; returns the drawdown answer."""
        reply = await self.drawdown(line_id, amount, **fields)
        assert reply.status == 201, reply
        await self.wait_for_loan(reply.json["loan_id"])
        return reply.json

    async def settled_repayment(self, reply: Reply, timeout_s: float = 30.0) -> Reply:
        """A repayment answered `processing` (core slower than the inline wait) polled to
        its final state, as a channel would; other answers are returned as they are."""
        import asyncio
        import time

        deadline = time.monotonic() + timeout_s
        while (
            reply.status == 201
            and reply.json["status"] == "processing"
            and time.monotonic() < deadline
        ):
            await asyncio.sleep(0.1)
            reply.json = (await self.get(f"/v1/repayments/{reply.json['repayment_id']}")).json
        return reply


async def channel_known(base_url: str, channel: str, secret: str, probes: int = 12) -> bool:
    """`probes` answers in a row, each on a fresh connection (so over every worker: each
    loads a new channel on its own refresh), authenticate `channel`: a loan that does not
    exist is 404, not 401."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
        client = ApiClient(s, base_url, channel, secret)
        for _ in range(probes):
            if (await client.get("/v1/loans/1")).status != 404:
                return False
    return True
