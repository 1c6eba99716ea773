"""The relay's database work for a claimed batch, done in bulk.

    claim ≤ batch ─► prefetch: every card, phone and paid loan's SMS facts, one query
                 ─► send each (bounded concurrency)
                 ─► paid loans: one `complete_disbursements` call; SMS sent: one UPDATE
                 ─► anything else (inquiries, refusals, debits): one by one, as before

Per drawdown that leaves the relay a share of three statements instead of about
eleven. A row sent on its own (`Relay.process`, a repayment's inline debit) takes
the same steps with NOTHING_KNOWN prefetched.
"""

from __future__ import annotations

import asyncpg
import msgspec

from engine.services.disbursement import PaidLoan
from engine.stores.outbox import Claimed

_PREFETCH_SQL = """
SELECT 'disburse' AS kind, loan_id AS id, disburse_to_ciphertext AS secret, loan_id,
       customer_id, tenant_id, channel_id, principal_fen, disburse_to_masked, receipt_no
FROM loan WHERE loan_id = ANY($1::bigint[])
UNION ALL
SELECT 'debit', repayment_id, debit_from_ciphertext, NULL, NULL, NULL, NULL, NULL, NULL, NULL
FROM repayment WHERE repayment_id = ANY($2::bigint[])
UNION ALL
SELECT 'sms', customer_id, phone_ciphertext, NULL, NULL, NULL, NULL, NULL, NULL, NULL
FROM customer WHERE customer_id = ANY($3::bigint[])
"""


class Prefetched(msgspec.Struct, frozen=True):
    """Encrypted cards and phones by (kind, reference ID); the paid loans' SMS facts."""

    secrets: dict[tuple[str, int], bytes]
    loans: dict[int, PaidLoan]

    def secret(self, row: Claimed) -> bytes | None:
        key = row.customer_id if row.kind == "sms" else row.ref_id
        return self.secrets.get((row.kind, key))


# For a row handled on its own, or a batch whose prefetch failed: each send reads its
# own card or phone.
NOTHING_KNOWN = Prefetched({}, {})


def first_sends(rows: list[Claimed]) -> dict[str, list[int]]:
    """The IDs whose secrets a batch needs: first sends of money, and every SMS."""
    wanted: dict[str, list[int]] = {"disburse": [], "debit": [], "sms": []}
    for row in rows:
        if row.kind == "sms":
            wanted["sms"].append(row.customer_id)
        elif row.kind in ("disburse", "debit") and not row.needs_inquiry:
            wanted[row.kind].append(row.ref_id)
    return wanted


async def prefetch(conn: asyncpg.Connection, rows: list[Claimed]) -> Prefetched:
    wanted = first_sends(rows)
    secrets: dict[tuple[str, int], bytes] = {}
    loans: dict[int, PaidLoan] = {}
    if not any(wanted.values()):
        return Prefetched(secrets, loans)
    for record in await conn.fetch(
        _PREFETCH_SQL, wanted["disburse"], wanted["debit"], wanted["sms"]
    ):
        if record["secret"] is not None:  # else the row's own read finds it missing
            secrets[(record["kind"], record["id"])] = bytes(record["secret"])
        if record["kind"] == "disburse":
            loans[record["id"]] = PaidLoan(**{f: record[f] for f in PaidLoan.__struct_fields__})
    return Prefetched(secrets, loans)
