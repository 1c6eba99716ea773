"""Routing: which logical shard a customer or an ID belongs to.

The logical shard of a customer is a hash of the normalized national ID
number, so that finding a customer never needs a global lookup, and the same
person registered twice lands on the same shard (where a unique index refuses
the second). The hash is unkeyed and fixed forever: changing it would move
every customer.
"""

from __future__ import annotations

import hashlib

from sharding.ids import shard_of_id
from sharding.shard_map import LOGICAL_SHARDS

_ROUTING_SALT = b"lending-engine/routing/v1\x00"


def normalize_id_number(id_number: str) -> str:
    """Strip blanks and upper-case the check character ('x' -> 'X')."""
    return id_number.strip().upper()


def logical_shard_for_id_number(id_number: str) -> int:
    """The customer's logical shard, from the national ID number."""
    normalized = normalize_id_number(id_number)
    digest = hashlib.sha256(_ROUTING_SALT + normalized.encode("ascii")).digest()
    return int.from_bytes(digest[:8], "big") % LOGICAL_SHARDS


def logical_shard_for_id(entity_id: int) -> int:
    """The logical shard carried inside any 64-bit engine ID."""
    return shard_of_id(entity_id)
