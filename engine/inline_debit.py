"""The inline half of a repayment's debit: try core within a bounded wait.

After phase A commits, the request itself claims its debit from the outbox and
runs it through the relay's own code (`Relay.process`) with a core client whose
time-out is `inline_debit_wait_s`. A definite answer completes the repayment
before the response; anything else leaves the row to the relay (`processing`).
"""

from __future__ import annotations

import logging

from engine import outbox
from engine.relay import Relay
from engine.services.context import Services
from engine.services.repayments import repayment_view
from engine.shard_access import read, shard_connection
from engine.wire import encode
from sharding.ids import shard_of_id

log = logging.getLogger(__name__)


async def debit_inline(
    svc: Services,
    executor: Relay,
    *,
    lease_s: float,
    tenant_id: str,
    customer_id: int,
    repayment_id: int,
) -> bytes | None:
    """The final response body, or None if the repayment is still `processing`."""
    logical = shard_of_id(customer_id)
    shard = svc.pools.physical_for(logical).name
    try:
        async with shard_connection(svc.pools, logical) as conn:
            claimed = await outbox.claim_one(conn, repayment_id, "debit", lease_s)
        if claimed is None:
            return None
        await executor.process(shard, claimed)
        today = svc.business_date
        view = await read(
            svc.pools, logical, lambda c: repayment_view(c, tenant_id, repayment_id, today)
        )
    except Exception:  # the relay finishes what the request could not: never fail the answer
        log.exception(
            "inline debit failed; the relay will complete it", extra={"repayment_id": repayment_id}
        )
        return None
    return None if view.status == "processing" else encode(view)
