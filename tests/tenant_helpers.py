"""The second member bank of the demo data (`demo2`, regions 4201) for the tests that
cross tenants: its channel's client and customers of its region."""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any

import aiohttp

from engine.security.identity import make_id_number
from engine.stores.control_admin import DEMO2_CHANNEL, DEMO2_SECRET
from tests.api_client import ApiClient, new_bank_card, new_phone
from tests.conftest import EngineProcess

OPERATOR = {"X-Operator-Token": "demo-operator"}


def bank_b(engine: EngineProcess, http: aiohttp.ClientSession) -> ApiClient:
    return ApiClient(http, engine.base_url, channel=DEMO2_CHANNEL, secret=DEMO2_SECRET)


def id_number_in(region6: str) -> str:
    # Born 1975-1994: inside every demo rule set's age band (and its 30+ points) in 2026-2030.
    birth = dt.date(1975, 1, 1) + dt.timedelta(days=secrets.randbelow(7_000))
    return make_id_number(region6, birth, f"{secrets.randbelow(1000):03d}")


async def customer_b(api_b: ApiClient, **fields: Any) -> str:
    """A demo2 customer from Wuhan (420102)."""
    return await api_b.customer(
        tenant_id="demo2", id_number=id_number_in("420102"), phone=new_phone(),
        bank_card=new_bank_card(), **fields,
    )  # fmt: skip


def as_bank(tenant: str) -> dict[str, str]:
    """Operator headers acting as a member bank's admin (dev and test only)."""
    return OPERATOR | {"X-Acting-Tenant": tenant}
