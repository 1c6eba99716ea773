"""Issue 21, item 8: personal data sealed bound to its row. A ciphertext copied into
another customer's row no longer opens there; rows sealed the old way (the column
alone as associated data) are re-sealed once by `migrate`'s data step, which also
enters each customer's registered card among the cards bound to them."""

from __future__ import annotations

import json
import os

import asyncpg
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from engine.migrate import SHARD_MIGRATIONS
from engine.security.pii import DEV_KEYS, PiiCipher, PiiError, dev_cipher
from engine.settings import Settings
from engine.stores import pii_rebind
from sharding.ids import shard_of_id
from sharding.migrations import apply_migrations, load_migrations
from tests.api_client import ApiClient


def _old_form(plaintext: str, context: str) -> bytes:
    """A blob as the engine sealed it before issue 21: the column name alone as AAD."""
    nonce = os.urandom(12)
    sealed = AESGCM(DEV_KEYS[1]).encrypt(nonce, plaintext.encode(), context.encode())
    return b"\x01" + nonce + sealed


def _cipher(settings: Settings) -> PiiCipher:
    crypto = settings.crypto
    return PiiCipher.from_config(crypto.pii_keys, crypto.pii_key_version, crypto.pii_index_key)


async def test_a_ciphertext_copied_into_another_customers_row_does_not_open(
    api: ApiClient, settings: Settings
) -> None:
    """Someone who can write the table but holds no key copies customer A's sealed phone
    and card into B's row: read as B's (as the relay reads a phone, the day-end a card),
    they refuse to open, instead of handing A's numbers out as B's."""
    cipher = _cipher(settings)
    a, b = await api.customer(), await api.customer()
    conns = {}
    for customer in (a, b):
        dsn = settings.shard_map().physical_for(shard_of_id(int(customer))).dsn
        conns[customer] = await asyncpg.connect(dsn)
    try:
        sql = "SELECT phone_ciphertext, bank_card_ciphertext FROM customer WHERE customer_id = $1"
        a_row, b_row = [await conns[c].fetchrow(sql, int(c)) for c in (a, b)]
        assert a_row is not None and b_row is not None
        await conns[b].execute(
            """UPDATE customer SET phone_ciphertext = $2, bank_card_ciphertext = $3
               WHERE customer_id = $1""",
            int(b), a_row["phone_ciphertext"], a_row["bank_card_ciphertext"],
        )  # fmt: skip
        copied = await conns[b].fetchrow(sql, int(b))
        assert copied is not None
        for column, context in (
            ("phone_ciphertext", "phone"),
            ("bank_card_ciphertext", "bank_card"),
        ):
            with pytest.raises(PiiError):
                cipher.decrypt(bytes(copied[column]), context=context, row=int(b))
        card = cipher.decrypt(
            bytes(copied["bank_card_ciphertext"]), context="bank_card", row=int(a)
        )
        assert card == api.card_of(a)  # it is A's: only A's row opens it
    finally:
        await conns[b].execute(
            """UPDATE customer SET phone_ciphertext = $2, bank_card_ciphertext = $3
               WHERE customer_id = $1""",
            int(b), b_row["phone_ciphertext"], b_row["bank_card_ciphertext"],
        )  # fmt: skip
        for conn in conns.values():
            await conn.close()


async def _customer(conn: asyncpg.Connection, customer_id: int, seal: object) -> None:
    assert callable(seal)
    await conn.execute(
        """INSERT INTO customer (customer_id, tenant_id, name_ciphertext, id_number_ciphertext,
               id_number_index, phone_ciphertext, bank_card_ciphertext, id_number_masked,
               phone_masked, bank_card_masked, birth_date)
           VALUES ($1, 'demo', $2, $3, $4, $5, $6, 'x', 'x', 'x', '1980-01-01')""",
        customer_id, seal("张三", "name"), seal("11010519491231002X", "id_number"),
        os.urandom(32), seal("13812345678", "phone"), seal(f"62220212345678{customer_id}", "bank_card"),
    )  # fmt: skip


async def test_the_data_step_reseals_old_rows_once(scratch_db: str) -> None:
    cipher = dev_cipher()
    conn = await asyncpg.connect(scratch_db)
    try:
        await apply_migrations(conn, load_migrations(SHARD_MIGRATIONS))
        await _customer(conn, 10001, _old_form)
        await _customer(conn, 10002, _old_form)
        await _customer(conn, 10003, lambda p, c: cipher.encrypt(p, context=c, row=10003))
        await conn.execute(
            """INSERT INTO repayment (repayment_id, customer_id, tenant_id, channel_id, status,
                   total_fen, debit_from_masked, business_date, debit_from_ciphertext)
               VALUES (20001, 10001, 'demo', 'demo', 'failed', 100, 'x', '2026-01-01', $1)""",
            _old_form("6222021234567890128", "bank_card"),
        )
        applicant = json.dumps({"name": "李四"})
        await conn.execute(
            """INSERT INTO application (application_id, tenant_id, channel_id, channel_serial,
                   product_code, id_number_index, applicant_ciphertext, requested_amount_fen,
                   requested_term_months, repayment_method, terms_version, status)
               VALUES (30001, 'demo', 'demo', 's1', 'demo-credit', $1, $2, 100, 12,
                       'bullet', 'v1', 'refused')""",
            os.urandom(32),
            _old_form(applicant, "applicant"),
        )
        changed = await pii_rebind.run(conn, cipher, shard=True)
        assert changed == {"customer": 2, "loan": 0, "repayment": 1, "application": 1}
        for customer_id in (10001, 10002, 10003):
            row = await conn.fetchrow(
                "SELECT phone_ciphertext, bank_card_ciphertext FROM customer WHERE customer_id = $1",
                customer_id,
            )
            assert row is not None
            assert cipher.decrypt(row["phone_ciphertext"], context="phone", row=customer_id) == (
                "13812345678"
            )
            card = f"62220212345678{customer_id}"
            bound = await conn.fetchval(
                """SELECT source FROM customer_card WHERE customer_id = $1 AND card_index = $2""",
                customer_id,
                cipher.index(card, context="bank_card"),
            )
            assert bound == "registered"
        blob = await conn.fetchval("SELECT debit_from_ciphertext FROM repayment")
        assert cipher.decrypt(blob, context="bank_card", row=20001) == "6222021234567890128"
        blob = await conn.fetchval("SELECT applicant_ciphertext FROM application")
        assert cipher.decrypt(blob, context="applicant", row=30001) == applicant
        assert await pii_rebind.run(conn, cipher, shard=True) is None  # once

        # A blob no key opens stops the step and names where it is (never what).
        await conn.execute("DELETE FROM data_migration")
        await _customer(conn, 10004, lambda p, c: os.urandom(40))
        with pytest.raises(
            pii_rebind.RebindError, match=r"customer\.name_ciphertext of customer_id 10004"
        ):
            await pii_rebind.run(conn, cipher, shard=True)
    finally:
        await conn.close()
