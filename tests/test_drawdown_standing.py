"""A line granted before its customer was black-listed or flagged by the bureau check
refuses drawdowns with a clear code, and books nothing (issue 16)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.settings import Settings
from tests.api_client import ApiClient, new_id_number
from tests.conftest import EngineProcess
from tests.origination_helpers import import_list, shard_conn


async def _customer_with_line(api: ApiClient) -> tuple[str, str, str]:
    id_number = new_id_number()
    customer_id = await api.customer(id_number=id_number)
    line_id = await api.line(customer_id)
    first = await api.drawdown(line_id, "1000.00")
    assert first.status == 201, first  # in good standing when the line was granted
    return id_number, customer_id, line_id


async def _used_and_loans(settings: Settings, customer_id: str, line_id: str) -> tuple[int, int]:
    conn = await shard_conn(settings, customer_id)
    try:
        used = await conn.fetchval(
            "SELECT used_fen FROM credit_line WHERE credit_line_id = $1", int(line_id)
        )
        loans = await conn.fetchval(
            "SELECT count(*) FROM loan WHERE customer_id = $1", int(customer_id)
        )
    finally:
        await conn.close()
    return int(used), int(loans)


@pytest.mark.parametrize("tenant", ["demo", "*"])
async def test_black_listed_customer_cannot_draw(
    api: ApiClient, engine: EngineProcess, settings: Settings, tmp_path: Path, tenant: str
) -> None:
    id_number, customer_id, line_id = await _customer_with_line(api)
    before = await _used_and_loans(settings, customer_id, line_id)
    import_list(
        engine,
        tmp_path / "black.csv",
        "blacklist",
        f"tenant_id,id_number,reason\n{tenant},{id_number},court enforcement list\n",
    )
    refused = await api.drawdown(line_id, "1000.00")
    assert (refused.status, refused.json["code"]) == (422, "CUSTOMER_BLACKLISTED"), refused
    assert await _used_and_loans(settings, customer_id, line_id) == before


async def test_bureau_flag_stops_drawdowns_until_cleared(
    api: ApiClient, engine: EngineProcess, settings: Settings, tmp_path: Path
) -> None:
    id_number, customer_id, line_id = await _customer_with_line(api)
    header = "tenant_id,id_number,flag\n"
    out = import_list(
        engine, tmp_path / "flag.csv", "bureauflag", f"{header}demo,{id_number},BUREAU_OVERDUE\n"
    )
    assert "1 customers changed" in out
    before = await _used_and_loans(settings, customer_id, line_id)
    refused = await api.drawdown(line_id, "1000.00")
    assert (refused.status, refused.json["code"]) == (422, "CUSTOMER_BUREAU_FLAGGED"), refused
    assert "BUREAU_OVERDUE" in refused.json["detail"]
    assert await _used_and_loans(settings, customer_id, line_id) == before
    import_list(engine, tmp_path / "clear.csv", "bureauflag", f"{header}demo,{id_number},\n")
    assert (await api.drawdown(line_id, "1000.00")).status == 201


async def test_a_bad_flag_file_changes_nothing(
    api: ApiClient, engine: EngineProcess, tmp_path: Path
) -> None:
    from tests.conftest import run_cli

    id_number, _, line_id = await _customer_with_line(api)
    path = tmp_path / "bad.csv"
    path.write_text(
        f"tenant_id,id_number,flag\ndemo,{id_number},BUREAU_OVERDUE\ndemo,{id_number},lower case\n",
        "utf-8",
    )
    done = run_cli("bureauflag", "import", str(path), env=engine.env)
    assert done.returncode == 1 and "line 3" in done.stderr, done.stderr
    assert (await api.drawdown(line_id, "1000.00")).status == 201
