"""What every day-end step needs, made once per runner and passed explicitly."""

from __future__ import annotations

from dataclasses import dataclass

from engine.eod.governor import Governor
from engine.eod.rules import RuleSet
from engine.security.pii import PiiCipher
from engine.settings import EodSettings
from engine.stores.reference import ReferenceCache
from sharding.ids import IdGenerator


@dataclass(frozen=True)
class EodContext:
    settings: EodSettings
    ids: IdGenerator
    cipher: PiiCipher
    reference: ReferenceCache
    rules: RuleSet
    shard: str  # the physical shard's name, for metrics and logs
    logical_shard: int  # one of its logical shards: the shard bits of IDs made here
    governor: Governor  # the pace: how long to rest after each chunk
