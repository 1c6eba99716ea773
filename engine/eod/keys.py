"""Walking a step's rows in key order, a page at a time, in chunks.

A step's rows (loans overdue, customers with something due...) are found through an
index on something other than their key, so a query for "the next 200 after key k"
would read all of them each time. A page of up to `PAGE_MAX` keys is read in one
query instead and handed out a chunk at a time; the next page starts after the last
key of the page. Each chunk re-checks its rows under its locks: a row that changed
since the page was read is passed over.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg

PAGE_MAX = 50_000


async def chunks(
    conn: asyncpg.Connection, sql: str, args: tuple[object, ...], after: int, chunk: int
) -> AsyncIterator[list[int]]:
    """Chunks of the keys `sql` returns, ascending, after `after`. `sql` takes `args`,
    then the key to start after and the page size as its last two parameters."""
    assert 1 <= chunk <= PAGE_MAX, chunk
    while True:
        page = [int(r[0]) for r in await conn.fetch(sql, *args, after, PAGE_MAX)]
        for start in range(0, len(page), chunk):
            yield page[start : start + chunk]
        if len(page) < PAGE_MAX:
            return
        after = page[-1]
