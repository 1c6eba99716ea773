"""The shard map: 4096 logical shards onto a few physical databases.

The number of logical shards is fixed for the life of the system (it is baked
into every ID); the map from logical to physical is configuration, and is the
only thing that changes when shards move to new machines.

By default the logical shards are split into contiguous, equal ranges in the
order the physical shards are listed: with four physical shards, 0..1023 go to
the first, 1024..2047 to the second, and so on. Explicit ranges may be given
instead; they must cover every logical shard exactly once.
"""

from __future__ import annotations

import msgspec

LOGICAL_SHARDS = 4096


class PhysicalShard(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One PostgreSQL database holding a set of logical shards."""

    name: str
    dsn: str


class ShardRange(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Logical shards `first`..`last` (inclusive) live on physical shard `shard` (a name)."""

    first: int
    last: int
    shard: str


class ShardMapError(ValueError):
    """The configured shard map is not a partition of the logical shards."""


class ShardMap:
    """Resolves a logical shard to its physical shard in O(1)."""

    __slots__ = ("_by_logical", "physical")

    def __init__(
        self, physical: tuple[PhysicalShard, ...], ranges: tuple[ShardRange, ...] = ()
    ) -> None:
        if not physical:
            raise ShardMapError("at least one physical shard is required")
        names = [shard.name for shard in physical]
        if len(set(names)) != len(names):
            raise ShardMapError(f"physical shard names repeat: {names}")
        self.physical = physical
        if not ranges:
            ranges = even_ranges(physical)
        self._by_logical = _resolve(physical, ranges)

    def physical_for(self, logical_shard: int) -> PhysicalShard:
        if not 0 <= logical_shard < LOGICAL_SHARDS:
            raise ShardMapError(f"logical shard {logical_shard} out of range")
        return self._by_logical[logical_shard]

    def logical_shards_of(self, name: str) -> list[int]:
        return [n for n, shard in enumerate(self._by_logical) if shard.name == name]


def even_ranges(physical: tuple[PhysicalShard, ...]) -> tuple[ShardRange, ...]:
    count = len(physical)
    return tuple(
        ShardRange(
            first=index * LOGICAL_SHARDS // count,
            last=(index + 1) * LOGICAL_SHARDS // count - 1,
            shard=shard.name,
        )
        for index, shard in enumerate(physical)
    )


def _resolve(
    physical: tuple[PhysicalShard, ...], ranges: tuple[ShardRange, ...]
) -> tuple[PhysicalShard, ...]:
    by_name = {shard.name: shard for shard in physical}
    table: list[PhysicalShard | None] = [None] * LOGICAL_SHARDS
    for item in ranges:
        if item.shard not in by_name:
            raise ShardMapError(
                f"range {item.first}..{item.last} names unknown shard {item.shard!r}"
            )
        if not 0 <= item.first <= item.last < LOGICAL_SHARDS:
            raise ShardMapError(
                f"range {item.first}..{item.last} is outside 0..{LOGICAL_SHARDS - 1}"
            )
        for logical in range(item.first, item.last + 1):
            if table[logical] is not None:
                raise ShardMapError(f"logical shard {logical} is mapped twice")
            table[logical] = by_name[item.shard]
    missing = [n for n, shard in enumerate(table) if shard is None]
    if missing:
        raise ShardMapError(f"{len(missing)} logical shards are unmapped, first {missing[0]}")
    return tuple(shard for shard in table if shard is not None)
