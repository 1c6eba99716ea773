"""Shared plumbing of the operator commands: settings, cipher, one control connection."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

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


def print_change(command: str, act: Callable[[Any], Awaitable[object]]) -> int:
    """Run `act(conn)` in one control-database transaction and print what it returns as
    JSON (exit 0), or its refusal's code and detail on stderr (exit 2, nothing kept)."""
    import sys

    import msgspec

    from engine.contract.errors import ApiError

    async def work(conn: Any, cipher: Any, settings: Any) -> int:
        try:
            async with conn.transaction():
                result = await act(conn)
        except ApiError as exc:
            print(f"{command}: {exc.code}: {exc.detail}", file=sys.stderr)
            return 2
        sys.stdout.write(msgspec.json.format(msgspec.json.encode(result).decode()) + "\n")
        return 0

    return run_on_control(work)
