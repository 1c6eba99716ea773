"""What every service call needs, made once per process and passed explicitly."""

from __future__ import annotations

import datetime as dt

import msgspec

from engine.contract.errors import NotFound
from engine.security.pii import PiiCipher
from engine.services.booking_batch import DrawdownBatches
from engine.services.repayment_opening import OpeningBatches
from engine.stores.redis_wire import RedisWire
from engine.stores.reference import Channel, Product, ReferenceCache
from sharding.ids import IdGenerator
from sharding.pools import ShardPools


class Services(msgspec.Struct, frozen=True):
    pools: ShardPools
    ids: IdGenerator
    cipher: PiiCipher
    reference: ReferenceCache
    redis: RedisWire
    bookings: DrawdownBatches
    # Repayments' phase A, grouped per shard database (the engine's; None: each alone).
    openings: OpeningBatches | None = None

    @property
    def business_date(self) -> dt.date:
        return self.reference.data.business_date

    def product_for(self, channel: Channel, product_code: str) -> Product | None:
        product = self.reference.data.products.get(product_code)
        if product is None or product.tenant_id != channel.tenant_id:
            return None
        return product


def parse_id(text: str, what: str) -> int:
    """An ID from the wire (already pattern-checked) or a path segment (not)."""
    if not (text.isascii() and text.isdigit()) or len(text) > 19 or not 0 < int(text) < 1 << 63:
        raise NotFound(f"{what.upper()}_NOT_FOUND", f"no {what.replace('_', ' ')} {text[:24]!r}")
    return int(text)
