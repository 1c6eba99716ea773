"""Routing and IDs: golden values that must never change, and ID invariants."""

from __future__ import annotations

import pytest

from sharding.ids import (
    EPOCH_MS,
    RUN_AHEAD_MS_MAX,
    SEQ_PER_MS,
    IdExhaustedError,
    IdGenerator,
    WorkerLeaseLostError,
    compose_id,
    ms_of_id,
    shard_of_id,
)
from sharding.routing import logical_shard_for_id, logical_shard_for_id_number, normalize_id_number
from sharding.shard_map import LOGICAL_SHARDS, PhysicalShard, ShardMap, ShardMapError, ShardRange

# Changing any of these moves customers between shards: a data migration, not a refactor.
GOLDEN = {
    "11010519491231002X": 2093,
    "110105194912310021": 31,
    "440524188001010014": 3381,
    "320311770706001": 799,
}


@pytest.mark.parametrize(("id_number", "shard"), sorted(GOLDEN.items()))
def test_id_number_routing_golden(id_number: str, shard: int) -> None:
    assert logical_shard_for_id_number(id_number) == shard


def test_id_number_routing_normalizes() -> None:
    assert logical_shard_for_id_number(" 11010519491231002x ") == GOLDEN["11010519491231002X"]
    assert normalize_id_number(" 11010519491231002x") == "11010519491231002X"


def test_routing_spreads_over_logical_shards() -> None:
    shards = {logical_shard_for_id_number(f"1101051990{n:08d}") for n in range(20000)}
    assert len(shards) > LOGICAL_SHARDS * 0.95


def test_id_carries_shard_and_time() -> None:
    entity_id = compose_id(123_456_789, 4095, 127, 7)
    assert shard_of_id(entity_id) == 4095
    assert logical_shard_for_id(entity_id) == 4095
    assert ms_of_id(entity_id) == EPOCH_MS + 123_456_789
    assert 0 < entity_id < 1 << 63


def test_ids_unique_and_ordered_under_burst() -> None:
    clock = [EPOCH_MS + 10_000]
    gen = IdGenerator(5, lambda: True, clock_ms=lambda: clock[0])
    ids = [gen.next_id(7) for _ in range(SEQ_PER_MS * 50)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert all(shard_of_id(i) == 7 for i in ids)
    # 50 ms worth of IDs were borrowed from the future, within the bound.
    assert ms_of_id(ids[-1]) - clock[0] == 49


def test_ids_refuse_to_run_far_ahead_of_clock() -> None:
    gen = IdGenerator(1, lambda: True, clock_ms=lambda: EPOCH_MS + 5)
    for _ in range(SEQ_PER_MS * (RUN_AHEAD_MS_MAX + 1)):
        gen.next_id(0)
    with pytest.raises(IdExhaustedError):
        gen.next_id(0)
    # Another shard has its own sequence.
    gen.next_id(1)


def test_ids_refused_without_lease() -> None:
    gen = IdGenerator(1, lambda: False)
    with pytest.raises(WorkerLeaseLostError):
        gen.next_id(0)


def test_two_workers_never_collide() -> None:
    clock = lambda: EPOCH_MS + 42  # noqa: E731
    a = IdGenerator(1, lambda: True, clock_ms=clock)
    b = IdGenerator(2, lambda: True, clock_ms=clock)
    ids = [g.next_id(3) for _ in range(100) for g in (a, b)]
    assert len(set(ids)) == len(ids)


def _four() -> tuple[PhysicalShard, ...]:
    return tuple(PhysicalShard(f"s{n}", f"postgresql://x/{n}") for n in range(4))


def test_shard_map_even_ranges() -> None:
    shard_map = ShardMap(_four())
    assert shard_map.physical_for(0).name == "s0"
    assert shard_map.physical_for(1023).name == "s0"
    assert shard_map.physical_for(1024).name == "s1"
    assert shard_map.physical_for(4095).name == "s3"
    assert len(shard_map.logical_shards_of("s2")) == 1024


def test_shard_map_explicit_ranges_must_partition() -> None:
    ranges = (ShardRange(0, 99, "s0"), ShardRange(100, 4095, "s1"))
    assert ShardMap(_four(), ranges).physical_for(100).name == "s1"
    with pytest.raises(ShardMapError, match="unmapped"):
        ShardMap(_four(), (ShardRange(0, 4094, "s0"),))
    with pytest.raises(ShardMapError, match="twice"):
        ShardMap(_four(), (ShardRange(0, 4095, "s0"), ShardRange(5, 5, "s1")))
    with pytest.raises(ShardMapError, match="unknown"):
        ShardMap(_four(), (ShardRange(0, 4095, "nope"),))
    with pytest.raises(ShardMapError):
        ShardMap(_four()).physical_for(4096)
