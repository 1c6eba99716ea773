"""Cards bound to customers (issue 21, item 2): a drawdown pays, and a repayment debits,
only a card bound to the loan's customer — else 422 CARD_NOT_BOUND, nothing written.

    customer_card (customer_id, card_index, card_masked, source, channel_id, idem_key,
                   verified, bound_at)                               append-only (trigger)

- `registered`: the card given with the customer (POST /v1/customers, or an approved
  application), bound in the registration's transaction; for customers registered
  before, by migrate's data step (`engine.stores.pii_rebind`).
- `added`: through POST /v1/customers/{id}/cards — signed and idempotent like every
  POST, the card checked by the four-factor verification (name, ID number and phone of
  the customer, the new card: the card must be theirs) before anything is written, at
  most `ADDED_CARDS_MAX` per customer, each row naming the channel and the key that
  bound it, and a log line (masked card) for the audit.

A card is known by its keyed hash only (`PiiCipher.index`, context bank_card), as an
ID number is: the table can be searched without holding any card number. So a channel
that holds its secret, however compromised, cannot pay a customer's drawdown to a card
of its own or debit a stranger's card: it would have to pass the verification with the
customer's own identity and the card's real holder.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Final

import asyncpg
import msgspec

from engine.contract.errors import Conflict, NotFound, Unprocessable
from engine.contract.messages import CardView, CustomerCardsView
from engine.security.identity import mask_bank_card
from engine.security.pii import PiiCipher
from engine.stores.reference import Channel

log = logging.getLogger(__name__)

BANK_CARD: Final = "bank_card"  # the PII context of a card number
ADDED_CARDS_MAX: Final = 10


class Holder(msgspec.Struct, frozen=True):
    """What the four-factor verification of a new card asks about its customer."""

    name: str
    id_number: str
    phone: str


def card_index(cipher: PiiCipher, card: str) -> bytes:
    return cipher.index(card, context=BANK_CARD)


async def require_bound(conn: asyncpg.Connection, customer_id: int, index: bytes) -> None:
    """Refuse (422 CARD_NOT_BOUND) a card that is not bound to the customer."""
    refuse_unbound(
        await conn.fetchval(
            "SELECT true FROM customer_card WHERE customer_id = $1 AND card_index = $2",
            customer_id,
            index,
        )
    )


def refuse_unbound(bound: bool | None) -> None:
    """422 CARD_NOT_BOUND unless `bound` (read by `require_bound`, or with the line)."""
    if not bound:
        raise Unprocessable(
            "CARD_NOT_BOUND",
            "the card is not bound to this customer: use the registered card, or bind "
            "another with POST /v1/customers/{customer_id}/cards",
        )


async def register(
    conn: asyncpg.Connection, cipher: PiiCipher, customer_id: int, card: str, channel_id: str
) -> None:
    """The registration's card, bound in the registration's transaction."""
    assert conn.is_in_transaction()
    await conn.execute(
        """INSERT INTO customer_card (customer_id, card_index, card_masked, source,
               channel_id, verified)
           VALUES ($1, $2, $3, 'registered', $4, false)""",
        customer_id,
        card_index(cipher, card),
        mask_bank_card(card),
        channel_id,
    )


async def holder(
    conn: asyncpg.Connection, cipher: PiiCipher, channel: Channel, customer_id: int
) -> Holder:
    """The customer's name, ID number and phone (this channel's tenant, or 404)."""
    row = await conn.fetchrow(
        """SELECT tenant_id, name_ciphertext, id_number_ciphertext, phone_ciphertext
           FROM customer WHERE customer_id = $1""",
        customer_id,
    )
    if row is None or row["tenant_id"] != channel.tenant_id:
        raise NotFound("CUSTOMER_NOT_FOUND", f"no customer {customer_id}")
    return Holder(
        name=cipher.decrypt(bytes(row["name_ciphertext"]), context="name", row=customer_id),
        id_number=cipher.decrypt(
            bytes(row["id_number_ciphertext"]), context="id_number", row=customer_id
        ),
        phone=cipher.decrypt(bytes(row["phone_ciphertext"]), context="phone", row=customer_id),
    )


async def bind(
    conn: asyncpg.Connection,
    cipher: PiiCipher,
    channel: Channel,
    customer_id: int,
    *,
    card: str,
    idem_key: str,
) -> CardView:
    """Bind a card the four-factor verification found to be the customer's (the caller
    verified it), in the caller's transaction with the idempotency record."""
    tenant = await conn.fetchval(
        "SELECT tenant_id FROM customer WHERE customer_id = $1 FOR UPDATE", customer_id
    )
    if tenant != channel.tenant_id:
        raise NotFound("CUSTOMER_NOT_FOUND", f"no customer {customer_id}")
    added = await conn.fetchval(
        "SELECT count(*) FROM customer_card WHERE customer_id = $1 AND source = 'added'",
        customer_id,
    )
    if added >= ADDED_CARDS_MAX:
        raise Unprocessable(
            "CARD_LIMIT_REACHED", f"a customer may have at most {ADDED_CARDS_MAX} added cards"
        )
    bound_at = await conn.fetchval(
        """INSERT INTO customer_card (customer_id, card_index, card_masked, source,
               channel_id, idem_key, verified)
           VALUES ($1, $2, $3, 'added', $4, $5, true)
           ON CONFLICT DO NOTHING RETURNING bound_at""",
        customer_id,
        card_index(cipher, card),
        mask_bank_card(card),
        channel.channel_id,
        idem_key,
    )
    if bound_at is None:
        raise Conflict("CARD_ALREADY_BOUND", "this card is already bound to the customer")
    log.info(
        "card bound",
        extra={
            "customer_id": customer_id,
            "card": mask_bank_card(card),
            "channel": channel.channel_id,
        },
    )
    return _view(customer_id, mask_bank_card(card), "added", channel.channel_id, True, bound_at)


async def cards_of(
    conn: asyncpg.Connection, channel: Channel, customer_id: int, _today: dt.date
) -> CustomerCardsView:
    tenant = await conn.fetchval(
        "SELECT tenant_id FROM customer WHERE customer_id = $1", customer_id
    )
    if tenant != channel.tenant_id:
        raise NotFound("CUSTOMER_NOT_FOUND", f"no customer {customer_id}")
    rows = await conn.fetch(
        """SELECT card_masked, source, channel_id, verified, bound_at FROM customer_card
           WHERE customer_id = $1 ORDER BY bound_at, card_masked""",
        customer_id,
    )
    return CustomerCardsView(
        customer_id=str(customer_id),
        cards=[
            _view(customer_id, r["card_masked"], r["source"], r["channel_id"], r["verified"],
                  r["bound_at"])
            for r in rows
        ],
    )  # fmt: skip


def _view(  # noqa: PLR0917 - one view's fields, in order
    customer_id: int,
    masked: str,
    source: str,
    channel_id: str | None,
    verified: bool,
    bound_at: dt.datetime,
) -> CardView:
    return CardView(
        customer_id=str(customer_id),
        card_masked=masked,
        source=source,
        bound_by_channel=channel_id,
        verified=verified,
        bound_at=bound_at,
    )
