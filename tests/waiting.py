"""Waiting for a condition instead of sleeping a fixed time: a fixed sleep is either
too short on a loaded machine (a flake) or longer than needed everywhere else."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    *,
    timeout_s: float = 30.0,
    interval_s: float = 0.05,
) -> T:
    """Call `probe` until `done(result)` or `timeout_s` passed; returns the last result
    (the caller asserts on it, so a time-out fails with what was last seen)."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = await probe()
        if done(result) or time.monotonic() > deadline:
            return result
        await asyncio.sleep(interval_s)
