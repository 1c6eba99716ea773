"""Credit lines: granted within the product's bounds, read, frozen and unfrozen.

Origination will grant lines through `grant_line` as well, so the product's
checks live here once.
"""

from __future__ import annotations

import asyncpg

from engine.contract.errors import BadRequest, NotFound, Unprocessable
from engine.contract.messages import CreditLineCreate, CreditLineView
from engine.services import product_rules
from engine.services.context import Services
from engine.services.customers import lock_customer
from engine.stores.reference import Channel, Product
from ledger.money import MoneyFormatError, format_fen, format_rate_pct, parse_amount, parse_rate_pct
from sharding.ids import shard_of_id

_LINE_COLUMNS = """credit_line_id, customer_id, tenant_id, product_code, limit_fen, used_fen,
    annual_rate_pct, repayment_methods, max_term_months, expires_on, status, status_reason,
    frozen_by, application_id, contract_signed_at, product_version"""


def line_view(row: asyncpg.Record) -> CreditLineView:
    return CreditLineView(
        credit_line_id=str(row["credit_line_id"]),
        customer_id=str(row["customer_id"]),
        tenant_id=row["tenant_id"],
        product_code=row["product_code"],
        limit=format_fen(row["limit_fen"]),
        used=format_fen(row["used_fen"]),
        available=format_fen(row["limit_fen"] - row["used_fen"]),
        status=row["status"],
        status_reason=row["status_reason"],
        frozen_by=row["frozen_by"],
        annual_rate_pct=format_rate_pct(row["annual_rate_pct"]),
        repayment_methods=list(row["repayment_methods"]),
        max_term_months=row["max_term_months"],
        expires_on=row["expires_on"],
        product_version=row["product_version"],
    )


def _check_against_product(
    svc: Services, product: Product, body: CreditLineCreate
) -> tuple[int, object]:
    try:
        limit_fen = parse_amount(body.limit)
        rate = parse_rate_pct(body.annual_rate_pct)
    except MoneyFormatError as exc:
        raise BadRequest(exc.code, exc.detail) from exc
    if limit_fen > product.line_limit_max_fen:
        raise Unprocessable(
            "LIMIT_ABOVE_PRODUCT_MAX",
            f"product {product.product_code} allows lines up to "
            f"{format_fen(product.line_limit_max_fen)}",
        )
    if not product.annual_rate_pct_min <= rate <= product.annual_rate_pct_max:
        raise Unprocessable(
            "RATE_OUTSIDE_PRODUCT_BAND",
            "annual_rate_pct must be within "
            f"{product.annual_rate_pct_min}..{product.annual_rate_pct_max}",
        )
    unknown = sorted(set(body.repayment_methods) - set(product.repayment_methods))
    if unknown:
        raise Unprocessable("METHOD_NOT_ALLOWED", f"product does not offer {', '.join(unknown)}")
    if not product.term_months_min <= body.max_term_months <= product.term_months_max:
        raise Unprocessable(
            "TERM_OUTSIDE_PRODUCT",
            f"max_term_months must be within {product.term_months_min}..{product.term_months_max}",
        )
    if body.expires_on <= svc.business_date:
        raise Unprocessable("EXPIRY_INVALID", "expires_on must be after the business date")
    return limit_fen, rate


async def grant_line(
    svc: Services, conn: asyncpg.Connection, channel: Channel, body: CreditLineCreate
) -> CreditLineView:
    customer_id = int(body.customer_id)
    product = svc.product_for(channel, body.product_code)
    if product is None:
        raise Unprocessable("PRODUCT_UNKNOWN", f"no product {body.product_code!r} for this tenant")
    product_rules.check_active(product)
    product_rules.check_term(product, body.max_term_months)
    limit_fen, rate = _check_against_product(svc, product, body)
    customer = await lock_customer(conn, channel, customer_id)
    product_rules.check_region(
        svc.reference.data,
        channel.tenant_id,
        product,
        customer["id_region"],
        customer["residence_region"],
    )
    line_id = svc.ids.next_id(shard_of_id(customer_id))
    row = await conn.fetchrow(
        f"""INSERT INTO credit_line (credit_line_id, customer_id, tenant_id, product_code,
                limit_fen, annual_rate_pct, repayment_methods, max_term_months, expires_on,
                product_version)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
            RETURNING {_LINE_COLUMNS}""",
        line_id,
        customer_id,
        channel.tenant_id,
        product.product_code,
        limit_fen,
        rate,
        sorted(set(body.repayment_methods)),
        body.max_term_months,
        body.expires_on,
        product.version,
    )
    assert row is not None
    return line_view(row)


# A drawdown also reads its customer's standing, which may have changed since the line
# was granted: listed on the black list (by ID number, this tenant's or every tenant's),
# or flagged by the day-end's bureau check or an import. Subqueries, not a join, so that
# FOR UPDATE locks the line alone (line first, then customer: the drawdowns' lock order).
_STANDING_COLUMNS = """,
    EXISTS (SELECT 1 FROM customer cu JOIN blacklist_entry b USING (id_number_index)
            WHERE cu.customer_id = credit_line.customer_id
              AND b.tenant_id IN (credit_line.tenant_id, '*')) AS blacklisted,
    (SELECT cu.bureau_flag FROM customer cu
     WHERE cu.customer_id = credit_line.customer_id) AS bureau_flag,
    (SELECT array[cu.id_region, cu.residence_region] FROM customer cu
     WHERE cu.customer_id = credit_line.customer_id) AS regions"""


_CARD_BOUND_COLUMN = """,
    EXISTS (SELECT 1 FROM customer_card cc
            WHERE cc.customer_id = credit_line.customer_id AND cc.card_index = $2) AS card_bound"""


async def fetch_line(
    conn: asyncpg.Connection,
    channel: Channel,
    line_id: int,
    *,
    lock: bool = False,
    standing: bool = False,
    card_index: bytes | None = None,
) -> asyncpg.Record:
    """The line of this channel's tenant (locked if asked), or 404 as if it did not exist;
    with `standing`, its customer's too (`blacklisted`, `bureau_flag`); with `card_index`,
    whether that card is bound to its customer (`card_bound`), in the same round trip."""
    columns = _LINE_COLUMNS + (_STANDING_COLUMNS if standing else "")
    args: list[object] = [line_id]
    if card_index is not None:
        columns += _CARD_BOUND_COLUMN
        args.append(card_index)
    sql = f"SELECT {columns} FROM credit_line WHERE credit_line_id = $1"
    row = await conn.fetchrow(sql + (" FOR UPDATE" if lock else ""), *args)
    if row is None or row["tenant_id"] != channel.tenant_id:
        raise NotFound("CREDIT_LINE_NOT_FOUND", f"no credit line {line_id}")
    return row


async def set_line_status(
    conn: asyncpg.Connection,
    channel: Channel,
    line_id: int,
    status: str,
    reason: str,
    *,
    by: str = "channel",
) -> CreditLineView:
    """Freeze or unfreeze a line. A freeze by a post-loan rule or an operator is lifted
    only by an operator: a channel asking gets `CREDIT_LINE_FROZEN_BY_BANK`. An
    operator's unfreeze also waives the freeze rule for the line until the customer's
    loans are cured (the day-end's `cure` ends it), an operator's freeze ends it."""
    assert status in ("active", "frozen") and by in ("channel", "operator"), (status, by)
    line = await fetch_line(conn, channel, line_id, lock=True)
    if by == "channel" and line["frozen_by"] in ("rule", "operator"):
        raise Unprocessable(
            "CREDIT_LINE_FROZEN_BY_BANK",
            f"the line was frozen by the bank ({line['status_reason']}): only an operator "
            "can change it",
        )
    row = await conn.fetchrow(
        f"""UPDATE credit_line SET status = $2, status_reason = $3, updated_at = now(),
                frozen_by = CASE WHEN $2 = 'frozen' THEN $4 END,
                rule_freeze_waived = CASE WHEN $4 = 'operator' THEN $2 = 'active'
                                          ELSE rule_freeze_waived END
            WHERE credit_line_id = $1 RETURNING {_LINE_COLUMNS}""",
        line_id,
        status,
        reason,
        by,
    )
    assert row is not None
    return line_view(row)
