"""The union's regulatory limits, as rules of every product (issue 19), checked when an
application is received, when a line is granted and at every drawdown:

    PRODUCT_PAUSED                the member bank paused the product: no new lines or
                                  drawdowns (loans already made keep servicing)
    REGION_NOT_SERVED             a member bank lends online only to customers of its
                                  registered regions (the 2021 notice on internet lending
                                  by local banks); the customer's region is the ID number's
                                  area code or the declared residence, as the product says
    TERM_EXCEEDS_REGULATORY_MAX   a consumer loan runs at most 60 months (five years)

A customer registered before regions were kept gets one from `migrate`'s data step
(`engine.stores.customer_regions`); one still without (written straight into a shard,
as the load test's seeding does) is not checked (logged), rather than refused.
"""

from __future__ import annotations

import logging

from engine.contract.errors import Unprocessable
from engine.stores.reference import Product, ReferenceData

log = logging.getLogger(__name__)

CONSUMER_TERM_MONTHS_MAX = 60  # the regulator's five years for consumer loans


def check_active(product: Product) -> None:
    if product.paused:
        raise Unprocessable(
            "PRODUCT_PAUSED",
            f"product {product.product_code} is paused by the bank: no new lines or drawdowns",
        )


def check_term(product: Product, term_months: int) -> None:
    if product.loan_kind == "consumer" and term_months > CONSUMER_TERM_MONTHS_MAX:
        raise Unprocessable(
            "TERM_EXCEEDS_REGULATORY_MAX",
            f"a consumer loan may run at most {CONSUMER_TERM_MONTHS_MAX} months (5 years)",
        )


def customer_region(product: Product, id_region: str | None, residence: str | None) -> str | None:
    """The region the product's rule reads: the ID number's area code or the residence."""
    return residence if product.region_source == "residence" else id_region


def check_region(
    reference: ReferenceData,
    tenant_id: str,
    product: Product,
    id_region: str | None,
    residence: str | None,
) -> None:
    tenant = reference.tenant_info.get(tenant_id)
    if tenant is None or tenant.is_union:
        return  # the union lends through its member banks; nothing of its own is regional
    region = customer_region(product, id_region, residence)
    if region is None and product.region_source == "id_number":
        log.info("regional rule not applied: customer without a recorded region")
        return
    if region is None:
        raise Unprocessable(
            "REGION_NOT_SERVED",
            f"product {product.product_code} lends by declared residence: "
            "residence_region is required",
        )
    if not tenant.serves(region):
        raise Unprocessable(
            "REGION_NOT_SERVED",
            f"{tenant_id} lends online only in its registered regions "
            f"({', '.join(tenant.region_codes) or 'none registered'}); "
            f"the customer's region {region[:4]}.. is not one of them",
        )
