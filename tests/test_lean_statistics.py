"""Ledger 0024: ANALYZE skips the columns read whole (the plan's arrays, payloads,
stored responses, ciphertexts) and keeps the ones searched, on every shard. A later
migration that rebuilt one of these tables would silently bring the costly element
statistics back (1.3-1.7 s of CPU per ANALYZE of loan_plan on the bench book)."""

from __future__ import annotations

import asyncpg

SKIPPED = {
    "loan_plan": {
        "seq", "due_date", "principal_fen", "interest_fen", "balance_after_fen",
        "principal_paid_fen", "interest_paid_fen", "penalty_unpaid_fen",
        "compound_unpaid_fen", "accrued_through", "penalty_paid_fen",
    },
    "outbox": {"payload", "last_error"},
    "repayment": {"request_items", "debit_from_ciphertext"},
    "idempotency_record": {"response_body", "request_sha256"},
    "loan": {"disburse_to_ciphertext"},
}  # fmt: skip
SEARCHED = {
    "loan_plan": {"loan_id", "next_due_date"},
    "outbox": {"outbox_id", "next_attempt_at", "state", "ref_id"},
    "repayment": {"repayment_id", "customer_id"},
    "idempotency_record": {"channel_id", "idem_key", "created_at"},
    "loan": {"loan_id", "customer_id", "status"},
}


async def test_analyze_skips_what_is_read_whole_on_every_shard(
    shard_conns: dict[str, asyncpg.Connection],
) -> None:
    for shard, conn in shard_conns.items():
        rows = await conn.fetch(
            """SELECT c.relname, a.attname, coalesce(a.attstattarget, -1) AS target
               FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
               WHERE c.relname = ANY($1::text[]) AND c.relkind = 'r'
                 AND a.attnum > 0 AND NOT a.attisdropped""",
            list(SKIPPED),
        )
        skipped: dict[str, set[str]] = {}
        for row in rows:
            if row["target"] == 0:
                skipped.setdefault(row["relname"], set()).add(row["attname"])
        assert skipped == SKIPPED, shard
        targets = {(r["relname"], r["attname"]): r["target"] for r in rows}
        for table, columns in SEARCHED.items():
            for column in columns:
                assert targets[(table, column)] != 0, (shard, table, column)
