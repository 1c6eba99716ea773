"""loadtest.pg_waits: a backend known to wait is found waiting, under its application."""

from __future__ import annotations

import asyncio

import asyncpg

from engine.settings import Settings
from loadtest.pg_waits import sample


async def test_a_sleeping_backend_is_counted_under_its_application(settings: Settings) -> None:
    conn = await asyncpg.connect(
        settings.shards[0].dsn, server_settings={"application_name": "probe:waits"}
    )
    try:
        # Asleep well past the window, however long the sampler takes to connect.
        sleeping = asyncio.ensure_future(conn.execute("SELECT pg_sleep(4)"))
        await asyncio.sleep(0.2)
        shares = await sample(0.8, 0.1)
        await sleeping
    finally:
        await conn.close()
    found = {(app, kind, event): share for share, app, kind, event in shares}
    # Asleep for the whole window: on average one backend, give or take a sample.
    assert 0.7 <= found[("probe", "Timeout", "PgSleep")] <= 1.0
