"""`acting_operator`: the dev token's operator (a union_admin) acts for the union;
`X-Acting-Tenant` (a member bank's admin, for tests) is honoured in dev and test only,
never in production."""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from engine.contract.errors import NotFound
from engine.http import keys as app_keys
from engine.http.admin_context import acting_operator
from engine.http.operator_auth import DEV_PRINCIPAL, PRINCIPAL
from engine.operators.principal import Principal
from engine.settings import Settings
from engine.stores.reference import ReferenceCache, ReferenceData, Tenant


def _request(settings: Settings, env: str, headers: dict[str, str]) -> web.Request:
    app = web.Application()
    app[app_keys.SETTINGS] = msgspec.structs.replace(settings, env=env)  # type: ignore[arg-type]
    cache = ReferenceCache(None, None, 1.0)  # type: ignore[arg-type]
    tenants: dict[str, Any] = {
        "union": Tenant("union", "省联社", "union"),
        "demo": Tenant("demo", "演示", "member_bank", "union", ("1101",)),
    }
    cache.current = ReferenceData(frozenset(tenants), {}, {}, dt.date(2026, 1, 1),
                                  tenant_info=tenants)  # fmt: skip
    app[app_keys.REFERENCE] = cache
    request = make_mocked_request("GET", "/v1/admin/products", headers=headers, app=app)
    request[PRINCIPAL] = DEV_PRINCIPAL  # the operator middleware's doing
    return request


def test_the_dev_token_acts_for_the_union(settings: Settings) -> None:
    acting = acting_operator(_request(settings, "test", {}))
    assert (acting.tenant_id, acting.union, acting.scope) == ("union", True, None)


def test_acting_as_a_member_bank_in_dev_and_test_only(settings: Settings) -> None:
    bank = acting_operator(_request(settings, "dev", {"X-Acting-Tenant": "demo"}))
    assert (bank.tenant_id, bank.union, bank.scope) == ("demo", False, "demo")
    prod = acting_operator(_request(settings, "prod", {"X-Acting-Tenant": "demo"}))
    assert (prod.tenant_id, prod.union) == ("union", True)  # the header is ignored
    with pytest.raises(NotFound):
        acting_operator(_request(settings, "test", {"X-Acting-Tenant": "nobody"}))


def test_a_member_banks_operator_acts_for_its_bank_whatever_it_sends(settings: Settings) -> None:
    request = _request(settings, "test", {"X-Acting-Tenant": "union"})
    request[PRINCIPAL] = Principal("op_1", "demo", frozenset({"bank_admin"}), login="b-admin")
    acting = acting_operator(request)
    assert (acting.tenant_id, acting.union, acting.scope) == ("demo", False, "demo")
