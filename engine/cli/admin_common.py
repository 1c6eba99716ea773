"""Shared plumbing of the operator commands: settings, cipher, one control connection."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def run_on_control(work: Callable[..., Awaitable[T]]) -> T:
    """Run `work(conn, cipher, settings)` on a fresh control-database connection."""
    import asyncio

    import asyncpg

    from engine.security.pii import PiiCipher
    from engine.settings import load_settings

    async def main() -> T:
        settings = load_settings()
        crypto = settings.crypto
        cipher = PiiCipher.from_config(
            crypto.pii_keys, crypto.pii_key_version, crypto.pii_index_key
        )
        conn = await asyncpg.connect(settings.control_dsn, timeout=10)
        try:
            return await work(conn, cipher, settings)
        finally:
            await conn.close()

    return asyncio.run(main())
