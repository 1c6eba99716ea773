"""The data step of issue 21's migrations: personal data re-sealed bound to its row.

Before, a blob's AES-GCM associated data was its column alone, so a ciphertext copied
into another customer's row opened there. Now it is the column and the row's id
(`engine.security.pii`), and nothing opens the old form but this step:

    shard    customer (name, id_number, phone, bank_card)   by customer_id
             loan (disburse_to), repayment (debit_from)     by loan_id, repayment_id
             application (applicant)                        by application_id
             + each customer's registered card entered in `customer_card` (bound cards)
    control  channel (secret)                               by channel_id

`python -m engine migrate` runs it after the SQL migrations, on each database whose
`data_migration` table does not name it yet. A row is handled in chunks of `CHUNK`
rows, each chunk one short transaction; a blob that already opens bound to its row is
left as it is, so a step killed halfway is simply run again. A blob that opens neither
way stops the step, naming the table, column and row (never the data): the keys are
wrong, or the row was tampered with.

Run it with the engine and the relay stopped (as for ledger migration 0009): a process
of the earlier version would go on writing blobs of the old form, which the new
version refuses to open.
"""

from __future__ import annotations

from typing import Final, NamedTuple

import asyncpg

from engine.security.identity import mask_bank_card
from engine.security.pii import PiiCipher, PiiError

STEP: Final = "pii_row_binding"
CHUNK: Final = 500
BANK_CARD: Final = "bank_card"  # engine.services.customers.BANK_CARD


class Table(NamedTuple):
    name: str
    key: str  # the row id its blobs are bound to
    columns: tuple[tuple[str, str], ...]  # (column, context)


SHARD_TABLES: Final = (
    Table("customer", "customer_id", (("name_ciphertext", "name"),
                                      ("id_number_ciphertext", "id_number"),
                                      ("phone_ciphertext", "phone"),
                                      ("bank_card_ciphertext", BANK_CARD))),
    Table("loan", "loan_id", (("disburse_to_ciphertext", BANK_CARD),)),
    Table("repayment", "repayment_id", (("debit_from_ciphertext", BANK_CARD),)),
    Table("application", "application_id", (("applicant_ciphertext", "applicant"),)),
)  # fmt: skip
CONTROL_TABLES: Final = (
    Table("channel", "channel_id", (("secret_ciphertext", "channel_secret"),)),
)


class RebindError(RuntimeError):
    """A sealed value that opens neither bound to its row nor to its column alone."""


def _rebound(cipher: PiiCipher, blob: bytes, *, context: str, row: int | str) -> tuple[bytes, str]:
    """The blob sealed bound to `row` (itself if it already is), and its plaintext."""
    try:
        return blob, cipher.decrypt(blob, context=context, row=row)
    except PiiError:
        pass
    plain = cipher.open_unbound(blob, context=context)  # PiiError: neither form
    return cipher.encrypt(plain, context=context, row=row), plain


async def _table(conn: asyncpg.Connection, cipher: PiiCipher, table: Table) -> int:
    """Re-seal one table, chunk by chunk; returns how many rows changed."""
    name, key, columns = table
    names = ", ".join(column for column, _ in columns)
    changed = 0
    after: int | str = "" if name == "channel" else -1  # below every key: ids are positive
    while True:
        async with conn.transaction():
            rows = await conn.fetch(
                f"SELECT {key}, {names} FROM {name} "
                f"WHERE {key} > $1 ORDER BY {key} LIMIT {CHUNK} FOR UPDATE",
                after,
            )
            updates: list[tuple[object, ...]] = []
            cards: list[tuple[object, ...]] = []
            for row in rows:
                update, card = _row(cipher, table, row)
                if update is not None:
                    updates.append(update)
                if card is not None:
                    cards.append(card)
            # One pipelined round trip per chunk, not one per row (millions of rows).
            if updates:
                sets = ", ".join(f"{column} = ${n}" for n, (column, _) in enumerate(columns, 2))
                await conn.executemany(f"UPDATE {name} SET {sets} WHERE {key} = $1", updates)
            if cards:
                await conn.executemany(
                    """INSERT INTO customer_card (customer_id, card_index, card_masked, source,
                           verified)
                       VALUES ($1, $2, $3, 'registered', false) ON CONFLICT DO NOTHING""",
                    cards,
                )
            changed += len(updates)
        if len(rows) < CHUNK:
            return changed
        after = rows[-1][key]


def _row(
    cipher: PiiCipher, table: Table, row: asyncpg.Record
) -> tuple[tuple[object, ...] | None, tuple[object, ...] | None]:
    """The row's UPDATE arguments (key, then every column sealed to the row) if any
    column was of the old form, and a customer's registered card to bind."""
    name, key, columns = table
    row_id = row[key]
    sealed_all: list[bytes] = []
    card: tuple[object, ...] | None = None
    changed = False
    for column, context in columns:
        blob = bytes(row[column])
        try:
            sealed, plain = _rebound(cipher, blob, context=context, row=row_id)
        except PiiError:
            raise RebindError(
                f"{name}.{column} of {key} {row_id} opens with none of the configured keys"
            ) from None
        changed = changed or sealed is not blob
        sealed_all.append(sealed)
        if name == "customer" and context == BANK_CARD:
            card = (row_id, cipher.index(plain, context=BANK_CARD), mask_bank_card(plain))
    return ((row_id, *sealed_all) if changed else None), card


async def run(conn: asyncpg.Connection, cipher: PiiCipher, *, shard: bool) -> dict[str, int] | None:
    """Run the step on one database unless it is done; the rows changed per table, or
    None if it had run before."""
    if await conn.fetchval("SELECT 1 FROM data_migration WHERE name = $1", STEP):
        return None
    changed = {
        table.name: await _table(conn, cipher, table)
        for table in (SHARD_TABLES if shard else CONTROL_TABLES)
    }
    await conn.execute("INSERT INTO data_migration (name) VALUES ($1)", STEP)
    return changed
