"""The inline half of a repayment's debit: try core within a bounded wait.

After phase A commits, the request itself claims its debit from the outbox (the
card read in the same statement) and runs it through the relay's own code
(`Relay.process`) with a core client whose time-out is `inline_debit_wait_s`. A
definite answer completes the repayment before the response; anything else leaves
the row to the relay (`processing`). The answer is the one the completion stored
with the idempotency record: built by the group completion itself
(`engine.services.repayment_completion`), or else read back as it is (the response
a retry of the request would replay).
"""

from __future__ import annotations

import logging
from typing import Any

from engine.idempotency.once import status_of
from engine.relay import batch as relay_batch
from engine.relay.executor import Relay
from engine.services.context import Services
from engine.services.repayment_opening import Opened
from engine.stores import outbox
from engine.stores.shards import read, shard_connection
from sharding.ids import shard_of_id

log = logging.getLogger(__name__)

_CARD_SQL = """(SELECT debit_from_ciphertext FROM repayment r
                WHERE r.repayment_id = c.ref_id) AS secret"""


async def debit_inline(
    svc: Services,
    executor: Relay,
    *,
    lease_s: float,
    channel_id: str,
    idem_key: str,
    customer_id: int,
    repayment_id: int,
    opened: Opened | None = None,
) -> bytes | None:
    """The final response body, or None if the repayment is still `processing`.
    `opened`: phase A wrote the debit's row already claimed for us (and stamped the
    send time), with the card: nothing to claim or read before the call."""
    logical = shard_of_id(customer_id)
    shard = svc.pools.physical_for(logical).name
    try:
        secret: bytes | None
        completion_read: tuple[dict[str, Any], ...] = ()
        if opened is not None:
            claimed, secret = opened.claimed, opened.card_ciphertext
            completion_read = opened.read
        else:
            async with shard_connection(svc.pools, logical) as conn:
                got = await outbox.claim_one_with(conn, repayment_id, "debit", lease_s, _CARD_SQL)
            if got is None:
                return None
            claimed, record = got
            # The card read with the claim, which stamped the send time: nothing more
            # to read before the call.
            secret = None if record["secret"] is None else bytes(record["secret"])
        known = (
            relay_batch.NOTHING_KNOWN
            if secret is None
            else relay_batch.Prefetched({("debit", repayment_id): secret}, {})
        )
        body = await executor.process(shard, claimed, known, completion_read)
        if body is not None:  # completed at once: the answer it stored
            return body
        stored = await read(
            svc.pools,
            logical,
            lambda c: c.fetchval(
                """SELECT response_body FROM idempotency_record
                   WHERE channel_id = $1 AND idem_key = $2""",
                channel_id,
                idem_key,
            ),
        )
        if stored is None:  # phase A stored it in the same commit as the repayment
            raise RuntimeError(f"repayment {repayment_id}: no stored answer")
    except Exception:  # the relay finishes what the request could not: never fail the answer
        log.exception(
            "inline debit failed; the relay will complete it", extra={"repayment_id": repayment_id}
        )
        return None
    body = bytes(stored)
    return None if status_of(body) == "processing" else body
