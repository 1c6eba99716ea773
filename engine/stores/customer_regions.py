"""Data step `customer_regions` of `python -m engine migrate` (issue 19), each shard:
the regional rule's input for customers registered before it — `customer.id_region`,
the ID number's first six digits — read from the sealed ID number (the PII keys are
needed, as for `pii_row_binding`). Chunks of `CHUNK` customers, each one short
transaction; a step killed halfway is run again and goes on where it was (only rows
still without a region are read). Recorded once done in `data_migration`.
"""

from __future__ import annotations

from typing import Final

import asyncpg

from engine.security.pii import PiiCipher

STEP: Final = "customer_regions"
CHUNK: Final = 500
ID_NUMBER: Final = "id_number"  # engine.services.customers.ID_NUMBER


async def run(conn: asyncpg.Connection, cipher: PiiCipher) -> int | None:
    """Fill the regions of one shard's customers; how many, or None if done before."""
    if await conn.fetchval("SELECT 1 FROM data_migration WHERE name = $1", STEP):
        return None
    filled, after = 0, -1
    while True:
        async with conn.transaction():
            rows = await conn.fetch(
                f"""SELECT customer_id, id_number_ciphertext FROM customer
                    WHERE customer_id > $1 AND id_region IS NULL
                    ORDER BY customer_id LIMIT {CHUNK} FOR UPDATE""",
                after,
            )
            regions = [
                (
                    row["customer_id"],
                    cipher.decrypt(
                        bytes(row["id_number_ciphertext"]), context=ID_NUMBER,
                        row=row["customer_id"],
                    )[:6],
                )
                for row in rows
            ]  # fmt: skip
            if regions:
                await conn.executemany(
                    "UPDATE customer SET id_region = $2 WHERE customer_id = $1", regions
                )
        filled += len(regions)
        if len(rows) < CHUNK:
            break
        after = rows[-1]["customer_id"]
    await conn.execute("INSERT INTO data_migration (name) VALUES ($1)", STEP)
    return filled
