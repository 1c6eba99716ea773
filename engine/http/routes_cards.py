"""`/v1/customers/{customer_id}/cards`: the cards bound to a customer (engine.services.cards).

    POST  {"bank_card"} ─► the customer's name, ID number and phone (this tenant's, or 404)
          ─► four-factor verification of the new card (not theirs: 422 CARD_NOT_VERIFIED;
             no answer: 503 IDENTITY_VERIFICATION_UNAVAILABLE) ─► run once per key:
             bind it (CARD_ALREADY_BOUND, CARD_LIMIT_REACHED) ─► 201 the binding
    GET   every card bound to the customer, masked, with who bound it and when

The verification is made before the key is claimed and outside any transaction (it is
a call to another system); nothing is written unless it says the card is theirs.
"""

from __future__ import annotations

import asyncpg
from aiohttp import web

from engine.contract.codec import decode, encode, json_response
from engine.contract.errors import BadRequest, ServiceUnavailable, Unprocessable
from engine.contract.messages import CardBind, CardView
from engine.http import keys as app_keys
from engine.http.auth import BODY, CHANNEL, caller_of
from engine.idempotency.once import run_once
from engine.security.identity import IdentityError, mask_bank_card, parse_bank_card
from engine.services import cards
from engine.services.context import parse_id
from engine.stores.shards import read
from sharding.ids import shard_of_id


async def bind_card(request: web.Request) -> web.Response:
    svc, channel = request.app[app_keys.SERVICES], request[CHANNEL]
    customer_id = parse_id(request.match_info["customer_id"], "customer")
    body = decode(request[BODY], CardBind)
    try:
        card = parse_bank_card(body.bank_card)
    except IdentityError as exc:
        raise BadRequest(exc.code, exc.detail) from exc
    shard = shard_of_id(customer_id)
    holder = await read(
        svc.pools, shard, lambda c: cards.holder(c, svc.cipher, channel, customer_id)
    )
    check = await request.app[app_keys.VERIFIER].verify(
        holder.name, holder.id_number, holder.phone, card
    )
    if check.verified is None:
        raise ServiceUnavailable(
            "IDENTITY_VERIFICATION_UNAVAILABLE",
            "the identity verification service did not answer; retry later",
            headers={"Retry-After": "5"},
        )
    if not check.verified:
        cards.log.warning(
            "card binding refused by verification",
            extra={"customer_id": str(customer_id), "card": mask_bank_card(card),
                   "channel": channel.channel_id, "mismatch": ",".join(check.mismatch)},
        )  # fmt: skip
        raise Unprocessable(
            "CARD_NOT_VERIFIED",
            "the four-factor verification did not find this card to be the customer's",
        )
    key = request.headers.get("Idempotency-Key", "")

    async def work(conn: asyncpg.Connection) -> tuple[CardView, int]:
        view = await cards.bind(conn, svc.cipher, channel, customer_id, card=card, idem_key=key)
        return view, customer_id

    return await run_once(caller_of(request), svc, shard, work)


async def list_cards(request: web.Request) -> web.Response:
    svc, channel = request.app[app_keys.SERVICES], request[CHANNEL]
    customer_id = parse_id(request.match_info["customer_id"], "customer")
    today = svc.business_date
    view = await read(
        svc.pools,
        shard_of_id(customer_id),
        lambda c: cards.cards_of(c, channel, customer_id, today),
    )
    return json_response(encode(view))


def setup_card_routes(app: web.Application) -> None:
    app.router.add_route("POST", "/v1/customers/{customer_id}/cards", bind_card)
    app.router.add_route("GET", "/v1/customers/{customer_id}/cards", list_cards)
