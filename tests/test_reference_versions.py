"""A product version the reference data does not keep (engine/stores/reference.py): the
current terms for a product older than versions, but never for a version newer than
the data knows. A worker whose data is behind a product change reloads it before it
decides (`catch_up`, on the drawdown and repayment paths); where it has not, it refuses
for a moment (503 REFERENCE_DATA_BEHIND) rather than apply another version's rules."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import asyncpg
import msgspec
import pytest

from engine.contract.errors import ServiceUnavailable
from engine.security.pii import PiiCipher
from engine.settings import Settings
from engine.stores.reference import Product, ReferenceCache, ReferenceData

V1 = Product(
    product_code="p",
    tenant_id="t",
    name="测试",
    repayment_methods=("equal_installment",),
    term_months_min=1,
    term_months_max=12,
    bullet_term_months_max=12,
    grace_months_max=0,
    line_limit_max_fen=10_000_000,
    customer_cap_group=None,
    customer_outstanding_max_fen=None,
    annual_rate_pct_min=Decimal("3"),
    annual_rate_pct_max=Decimal("18"),
    penalty_multiplier=Decimal("1.5"),
    prepay_rule_default="reduce_term",
    version=1,
    prepay_rules=("reduce_term",),
)
V2 = msgspec.structs.replace(
    V1,
    version=2,
    prepay_rules=("reduce_nearest", "reduce_term"),
    prepay_rule_default="reduce_nearest",
)


def _data(current: Product, kept: list[Product]) -> ReferenceData:
    return ReferenceData(
        frozenset({"t"}),
        {},
        {"p": current},
        dt.date(2026, 12, 5),
        product_versions={("p", p.version): p for p in kept},
    )


def test_a_kept_version_is_its_own_terms() -> None:
    data = _data(V2, [V1, V2])
    assert data.product_terms("p", 1) == V1
    assert data.product_terms("p", 2) == V2


def test_a_version_newer_than_the_data_is_refused_not_taken_from_the_current() -> None:
    behind = _data(V1, [V1])  # a worker that has not yet loaded version 2
    with pytest.raises(ServiceUnavailable) as refused:
        behind.product_terms("p", 2)
    assert refused.value.code == "REFERENCE_DATA_BEHIND"
    assert refused.value.status == 503 and refused.value.headers["Retry-After"] == "1"


def test_a_product_the_data_does_not_know_is_refused_not_a_key_error() -> None:
    behind = _data(V1, [V1])
    assert behind.is_behind("q", 1) and behind.is_behind("p", 2)
    assert not behind.is_behind("p", 1)
    with pytest.raises(ServiceUnavailable) as refused:
        behind.product_terms("q", 1)  # adopted by another engine a moment ago
    assert refused.value.code == "REFERENCE_DATA_BEHIND"


def test_a_product_older_than_versions_uses_its_current_terms() -> None:
    legacy = _data(V2, [])  # written before product versions were kept
    assert legacy.product_terms("p", 1) == V2
    assert legacy.product_terms("p", 2) == V2


async def test_a_worker_behind_catches_up_before_it_decides(settings: Settings) -> None:
    """`ReferenceCache.catch_up`: the control database knows a version this data does
    not (simulated: the data set back before it): one reload, then the version's own
    terms; a version it keeps costs nothing."""
    crypto = settings.crypto
    cipher = PiiCipher.from_config(crypto.pii_keys, crypto.pii_key_version, crypto.pii_index_key)
    pool = await asyncpg.create_pool(settings.control_dsn, min_size=1, max_size=1)
    try:
        cache = ReferenceCache(pool, cipher, 60.0)
        loaded = await cache.load()
        code, version = next(iter(loaded.product_versions))
        current = loaded.products[code]
        behind = msgspec.structs.replace(
            loaded,
            products=loaded.products | {code: msgspec.structs.replace(current, version=0)},
            product_versions={k: v for k, v in loaded.product_versions.items() if k[0] != code},
        )
        cache.current = behind
        with pytest.raises(ServiceUnavailable):
            cache.data.product_terms(code, version)
        await cache.catch_up(code, version)
        assert cache.data is not behind  # reloaded
        assert cache.data.product_terms(code, version) == loaded.product_versions[(code, version)]
        kept = cache.data
        await cache.catch_up(code, version)
        assert cache.data is kept  # nothing to catch up: no reload
    finally:
        await pool.close()
