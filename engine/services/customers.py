"""Registering customers: identity checked, personal data encrypted, one per tenant.

The customer's shard comes from the ID number, so the same person registered
twice lands on the same shard, where the unique keyed hash of the ID number
refuses the second (409 CUSTOMER_EXISTS with the existing ID).
"""

from __future__ import annotations

import asyncpg

from engine.contract.errors import BadRequest, Conflict, Forbidden, NotFound
from engine.contract.messages import CustomerCreate, CustomerView
from engine.security.identity import (
    IdentityError,
    mask_bank_card,
    mask_id_number,
    mask_phone,
    parse_bank_card,
    parse_id_number,
    parse_phone,
)
from engine.services import cards
from engine.services.context import Services
from engine.stores.reference import Channel
from sharding.routing import logical_shard_for_id_number

ID_NUMBER = "id_number"
PHONE = "phone"
BANK_CARD = "bank_card"
NAME = "name"


def mask_name(name: str) -> str:
    return name[:1] + "*" * (len(name) - 1)


class NewCustomer:
    """A validated registration, ready to insert on `logical_shard`."""

    def __init__(self, svc: Services, channel: Channel, body: CustomerCreate) -> None:
        if body.tenant_id != channel.tenant_id:
            raise Forbidden(
                "TENANT_FORBIDDEN", "a channel may only register customers of its own tenant"
            )
        try:
            self.id_number = parse_id_number(body.id_number, today=svc.business_date)
            self.phone = parse_phone(body.phone)
            self.bank_card = parse_bank_card(body.bank_card)
        except IdentityError as exc:
            raise BadRequest(exc.code, exc.detail) from exc
        self.name = body.name.strip()
        if not self.name:
            raise BadRequest("NAME_INVALID", "name must not be blank")
        self.tenant_id = body.tenant_id
        # The regional rule's inputs (engine.services.product_rules): the ID number's
        # area code and the declared residence.
        self.id_region = self.id_number.value[:6]
        self.residence_region = body.residence_region
        self.channel_id = channel.channel_id  # who registered it: bound its card
        self.logical_shard = logical_shard_for_id_number(self.id_number.value)


async def insert_customer(
    svc: Services, conn: asyncpg.Connection, new: NewCustomer
) -> CustomerView:
    cipher = svc.cipher
    index = cipher.index(new.id_number.value, context=ID_NUMBER)
    customer_id = svc.ids.next_id(new.logical_shard)
    row = await conn.fetchrow(
        """INSERT INTO customer (customer_id, tenant_id, name_ciphertext, id_number_ciphertext,
               id_number_index, phone_ciphertext, bank_card_ciphertext, id_number_masked,
               phone_masked, bank_card_masked, birth_date, id_region, residence_region)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
           ON CONFLICT (tenant_id, id_number_index) DO NOTHING
           RETURNING created_at""",
        customer_id,
        new.tenant_id,
        cipher.encrypt(new.name, context=NAME, row=customer_id),
        cipher.encrypt(new.id_number.value, context=ID_NUMBER, row=customer_id),
        index,
        cipher.encrypt(new.phone, context=PHONE, row=customer_id),
        cipher.encrypt(new.bank_card, context=BANK_CARD, row=customer_id),
        mask_id_number(new.id_number.value),
        mask_phone(new.phone),
        mask_bank_card(new.bank_card),
        new.id_number.birth_date,
        new.id_region,
        new.residence_region,
    )
    if row is None:
        existing = await conn.fetchval(
            "SELECT customer_id FROM customer WHERE tenant_id = $1 AND id_number_index = $2",
            new.tenant_id,
            index,
        )
        raise Conflict(
            "CUSTOMER_EXISTS",
            "a customer with this ID number exists in this tenant",
            extra={"customer_id": str(existing)},
        )
    # The registered card is the first bound to the customer (engine.services.cards).
    await cards.register(conn, cipher, customer_id, new.bank_card, new.channel_id)
    return CustomerView(
        customer_id=str(customer_id),
        tenant_id=new.tenant_id,
        name_masked=mask_name(new.name),
        id_number_masked=mask_id_number(new.id_number.value),
        phone_masked=mask_phone(new.phone),
        bank_card_masked=mask_bank_card(new.bank_card),
        created_at=row["created_at"],
    )


async def lock_customer(
    conn: asyncpg.Connection, channel: Channel, customer_id: int, *, lock: bool = False
) -> asyncpg.Record:
    """The customer row of this channel's tenant, or 404 as if it did not exist."""
    sql = """SELECT customer_id, tenant_id, bank_card_masked, id_region, residence_region
             FROM customer WHERE customer_id = $1"""
    row = await conn.fetchrow(sql + (" FOR UPDATE" if lock else ""), customer_id)
    if row is None or row["tenant_id"] != channel.tenant_id:
        raise NotFound("CUSTOMER_NOT_FOUND", f"no customer {customer_id}")
    return row
