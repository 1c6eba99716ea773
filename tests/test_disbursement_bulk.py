"""The relay settles core's "paid" for a batch in one call (`complete_disbursements`):
each loan is booked once, its SMS queued once, and a second answer for the same
loans — a late duplicate, or an inquiry racing the relay — changes nothing."""

from __future__ import annotations

import asyncio

import asyncpg

from engine.settings import Settings
from ledger.chart import Code
from sharding.ids import shard_of_id
from tests.api_client import ApiClient

LOANS = 4


async def _counts(conn: asyncpg.Connection, loan_ids: list[int]) -> tuple[int, int, int]:
    row = await conn.fetchrow(
        """SELECT (SELECT count(*) FROM ledger_txn WHERE ref_id = ANY($1)
                     AND kind = 'disbursement') AS postings,
                  (SELECT count(*) FROM outbox WHERE ref_id = ANY($1) AND kind = 'sms') AS sms,
                  (SELECT count(*) FROM loan WHERE loan_id = ANY($1)
                     AND status = 'disbursed') AS disbursed""",
        loan_ids,
    )
    assert row is not None
    return int(row["postings"]), int(row["sms"]), int(row["disbursed"])


async def test_a_batch_is_booked_once_and_a_second_answer_changes_nothing(
    api: ApiClient, settings: Settings
) -> None:
    customer_id = await api.customer()
    line_id = await api.line(customer_id, limit="50000.00")
    answers = await asyncio.gather(*(api.disbursed_loan(line_id, "500.00") for _ in range(LOANS)))
    loan_ids = sorted(int(a["loan_id"]) for a in answers)
    shard = settings.shard_map().physical_for(shard_of_id(int(customer_id)))
    conn = await asyncpg.connect(shard.dsn)
    try:
        assert await _counts(conn, loan_ids) == (LOANS, LOANS, LOANS)
        claims = await conn.fetch(
            """SELECT outbox_id, attempts, ref_id FROM outbox
               WHERE kind = 'disburse' AND ref_id = ANY($1) ORDER BY ref_id""",
            loan_ids,
        )
        assert all(
            r["state"] == "done"
            for r in await conn.fetch(
                "SELECT state FROM outbox WHERE kind = 'disburse' AND ref_id = ANY($1)", loan_ids
            )
        )
        balance_before = await conn.fetchval(
            """SELECT sum(debit_total_fen - credit_total_fen) FROM ledger_account
               WHERE code = $1""",
            str(Code.CORE_SETTLEMENT),
        )
        n = len(claims)
        disbursed = await conn.fetch(
            """SELECT * FROM complete_disbursements($1, $2, $3, $4, $5, $6,
                   $7::jsonb[], current_date, 0, $8, $9)""",
            [r["outbox_id"] for r in claims],
            [r["attempts"] for r in claims],
            [r["ref_id"] for r in claims],
            ["DUPLICATE"] * n,
            [-(i + 1) for i in range(n)],  # never used: nothing may be posted
            [-(i + 1) for i in range(n)],
            ['{"kind": "drawdown", "text": "x"}'] * n,
            str(Code.DISBURSEMENT_CLEARING),
            str(Code.CORE_SETTLEMENT),
        )
        assert disbursed == []
        assert await _counts(conn, loan_ids) == (LOANS, LOANS, LOANS)
        outcomes = await conn.fetch(
            "SELECT outcome FROM outbox WHERE kind = 'disburse' AND ref_id = ANY($1)", loan_ids
        )
        assert "DUPLICATE" not in {r["outcome"] for r in outcomes}
        balance_after = await conn.fetchval(
            """SELECT sum(debit_total_fen - credit_total_fen) FROM ledger_account
               WHERE code = $1""",
            str(Code.CORE_SETTLEMENT),
        )
        assert balance_after == balance_before
    finally:
        await conn.close()
