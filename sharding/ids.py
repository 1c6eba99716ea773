"""64-bit IDs that are time-ordered and carry their logical shard.

    bit 63     62 ........ 22   21 ..... 10   9 ...... 3   2 .. 0
    [  0  ][ ms since epoch ][ logical shard ][ worker ][  seq  ]
             41 bits (69 y)     12 bits         7 bits    3 bits

Any loan, credit line, repayment or customer ID routes to its shard without a
lookup (`shard_of_id`). Uniqueness: a worker number is leased exclusively
(see `sharding.worker_lease`), and within one worker the pair (ms, seq) is
unique per logical shard. When a worker issues more than 8 IDs for one shard
in one millisecond it borrows the next millisecond, but never runs more than
`RUN_AHEAD_MS_MAX` ahead of the clock: the lease outlives that by far, so a
worker that crashed and a new holder of its number never overlap.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sharding.shard_map import LOGICAL_SHARDS

EPOCH_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
TIME_BITS = 41
SHARD_BITS = 12
WORKER_BITS = 7
SEQ_BITS = 3
WORKERS = 1 << WORKER_BITS
SEQ_PER_MS = 1 << SEQ_BITS
RUN_AHEAD_MS_MAX = 1_000

_SHARD_SHIFT = WORKER_BITS + SEQ_BITS
_TIME_SHIFT = SHARD_BITS + _SHARD_SHIFT

assert 1 + TIME_BITS + SHARD_BITS + WORKER_BITS + SEQ_BITS == 64
assert 1 << SHARD_BITS == LOGICAL_SHARDS


class IdExhaustedError(RuntimeError):
    """More IDs were asked for one shard than the clock allows; the caller should back off."""


class WorkerLeaseLostError(RuntimeError):
    """The worker number is not (or no longer) leased: issuing IDs could collide."""


def compose_id(ms: int, logical_shard: int, worker: int, seq: int) -> int:
    assert 0 <= ms < 1 << TIME_BITS, ms
    assert 0 <= logical_shard < LOGICAL_SHARDS, logical_shard
    assert 0 <= worker < WORKERS, worker
    assert 0 <= seq < SEQ_PER_MS, seq
    return (ms << _TIME_SHIFT) | (logical_shard << _SHARD_SHIFT) | (worker << SEQ_BITS) | seq


def shard_of_id(entity_id: int) -> int:
    if not 0 < entity_id < 1 << 63:
        raise ValueError(f"not an engine ID: {entity_id}")
    return (entity_id >> _SHARD_SHIFT) & (LOGICAL_SHARDS - 1)


def ms_of_id(entity_id: int) -> int:
    """Unix milliseconds at which the ID was issued (for audits and debugging)."""
    return (entity_id >> _TIME_SHIFT) + EPOCH_MS


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class IdGenerator:
    """Issues IDs for one leased worker number. Not thread-safe; one per process."""

    __slots__ = ("_clock_ms", "_last", "_lease_valid", "worker")

    def __init__(
        self,
        worker: int,
        lease_valid: Callable[[], bool],
        clock_ms: Callable[[], int] = _wall_ms,
    ) -> None:
        if not 0 <= worker < WORKERS:
            raise ValueError(f"worker {worker} outside 0..{WORKERS - 1}")
        self.worker = worker
        self._lease_valid = lease_valid
        self._clock_ms = clock_ms
        # Per logical shard: (ms since epoch, next seq). Bounded by LOGICAL_SHARDS entries.
        self._last: dict[int, tuple[int, int]] = {}

    def next_id(self, logical_shard: int) -> int:
        if not self._lease_valid():
            raise WorkerLeaseLostError(f"worker {self.worker} lease is not valid")
        now = self._clock_ms() - EPOCH_MS
        last_ms, seq = self._last.get(logical_shard, (-1, 0))
        if now > last_ms:
            ms, seq = now, 0
        elif seq < SEQ_PER_MS:
            ms = last_ms
        else:
            ms, seq = last_ms + 1, 0
            if ms - now > RUN_AHEAD_MS_MAX:
                raise IdExhaustedError(
                    f"shard {logical_shard} is issuing IDs faster than the clock"
                )
        self._last[logical_shard] = (ms, seq + 1)
        return compose_id(ms, logical_shard, self.worker, seq)
