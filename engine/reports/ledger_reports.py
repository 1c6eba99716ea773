"""Reports of a member bank or of the union, computed from the ledger of every shard so
that they reconcile to the fen with the trial balance (`python -m engine ledger
trial-balance --accounts`).

    daily-flow              on a business date: applications received and of those the
                            approved (count, amount asked / line granted), drawdowns booked
                            and voided (the loan_principal legs of `drawdown` and
                            `drawdown_void` postings), repayments (their core_settlement
                            legs) and the principal they repaid
    outstanding-by-product  loan_principal balances by member bank and product: the
                            running account totals for the business date or later, the
                            legs posted on or before the date for an earlier one
    asset-quality           the same balances by the five-category class of the day-end
                            (`loan_class_change`: the latest change on or before the date;
                            none: normal); overdue = not normal (a paid-up loan is cured
                            back to normal); NPL = substandard + doubtful + loss

Scope: a list of member banks, or None for the union: every loan of every bank, plus
postings to loan accounts no loan row owns (`(unattributed)`: the ledger's own test
postings), so that the union's total is the trial balance's. Money in fen here; the
views format it as decimal strings, ratios with six places, half-up.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
from collections import defaultdict
from collections.abc import Awaitable, Callable
from decimal import ROUND_HALF_UP, Decimal
from typing import TypeVar

import asyncpg

from engine.contract.messages import (
    AssetQualityReport,
    AssetQualityRow,
    DailyFlowReport,
    DailyFlowRow,
    FlowLine,
    OutstandingReport,
    OutstandingRow,
)
from engine.stores.shards import acquire
from ledger.money import format_fen
from sharding.pools import ShardPools

T = TypeVar("T")
Report = DailyFlowReport | OutstandingReport | AssetQualityReport

UNATTRIBUTED = "(unattributed)"
CLASSES = ("normal", "special_mention", "substandard", "doubtful", "loss")
NPL_CLASSES = ("substandard", "doubtful", "loss")
RATIO_PLACES = Decimal("0.000001")

# A loan's principal balance on `$2`: the account's running totals (as of now) when
# `$3` (the date is the business date or later), else its legs posted on or before.
_BALANCES = """
    SELECT a.owner_id AS loan_id, (a.debit_total_fen - a.credit_total_fen) AS fen
    FROM ledger_account a WHERE a.code = 'loan_principal' AND $3
    UNION ALL
    SELECT g.owner_id, sum(g.amount_fen) FROM ledger_leg g JOIN ledger_txn t USING (txn_id)
    WHERE g.code = 'loan_principal' AND NOT $3 AND t.business_date <= $2
    GROUP BY g.owner_id"""


async def _each_shard(
    pools: ShardPools, work: Callable[[asyncpg.Connection], Awaitable[T]]
) -> list[T]:
    async def one(name: str) -> T:
        async with acquire(pools.pool(name), timeout_s=30.0) as conn:
            return await work(conn)

    return list(await asyncio.gather(*(one(name) for name in pools.by_name)))


def ratio(part_fen: int, whole_fen: int) -> str:
    if whole_fen == 0:
        return str(Decimal(0).quantize(RATIO_PLACES))
    return str((Decimal(part_fen) / Decimal(whole_fen)).quantize(RATIO_PLACES, ROUND_HALF_UP))


def scope_label(scope: list[str] | None) -> str:
    return "union" if scope is None else ",".join(scope)


# ---- outstanding by product ---------------------------------------------------------------


async def outstanding_by_product(
    pools: ShardPools, scope: list[str] | None, on: dt.date, today: dt.date
) -> OutstandingReport:
    sql = f"""WITH bal AS ({_BALANCES})
        SELECT coalesce(l.tenant_id, '{UNATTRIBUTED}') AS tenant_id,
               coalesce(l.product_code, '(none)') AS product_code,
               count(*) FILTER (WHERE b.fen <> 0) AS loans, sum(b.fen)::bigint AS fen
        FROM bal b LEFT JOIN loan l ON l.loan_id = b.loan_id
        WHERE $1::text[] IS NULL OR l.tenant_id = ANY($1)
        GROUP BY 1, 2"""
    pages = await _each_shard(pools, lambda c: c.fetch(sql, scope, on, on >= today))
    loans: dict[tuple[str, str], int] = defaultdict(int)
    fen: dict[tuple[str, str], int] = defaultdict(int)
    for page in pages:
        for r in page:
            key = (r["tenant_id"], r["product_code"])
            loans[key] += r["loans"]
            fen[key] += r["fen"]
    rows = [
        OutstandingRow(
            tenant, product, loans[(tenant, product)], format_fen(fen[(tenant, product)])
        )
        for tenant, product in sorted(fen)
        if fen[(tenant, product)] != 0 or loans[(tenant, product)] != 0
    ]
    return OutstandingReport(
        report="outstanding-by-product",
        scope=scope_label(scope),
        date=on,
        rows=rows,
        total_outstanding_principal=format_fen(sum(fen.values())),
    )


# ---- asset quality ------------------------------------------------------------------------


def _quality_row(tenant: str, by_class: dict[str, int], overdue_loans: int) -> AssetQualityRow:
    total = sum(by_class.values())
    npl = sum(by_class[c] for c in NPL_CLASSES)
    overdue = total - by_class["normal"]
    return AssetQualityRow(
        tenant_id=tenant,
        outstanding_principal=format_fen(total),
        normal=format_fen(by_class["normal"]),
        special_mention=format_fen(by_class["special_mention"]),
        substandard=format_fen(by_class["substandard"]),
        doubtful=format_fen(by_class["doubtful"]),
        loss=format_fen(by_class["loss"]),
        overdue_principal=format_fen(overdue),
        overdue_loans=overdue_loans,
        npl=format_fen(npl),
        npl_ratio=ratio(npl, total),
        overdue_ratio=ratio(overdue, total),
    )


async def asset_quality(
    pools: ShardPools, scope: list[str] | None, on: dt.date, today: dt.date,
    classified_on: dt.date | None,
) -> AssetQualityReport:  # fmt: skip
    sql = f"""WITH bal AS ({_BALANCES})
        SELECT coalesce(l.tenant_id, '{UNATTRIBUTED}') AS tenant_id,
               coalesce((SELECT c.to_class FROM loan_class_change c
                         WHERE c.loan_id = b.loan_id AND c.business_date <= $2
                         ORDER BY c.business_date DESC LIMIT 1), 'normal') AS class,
               count(*) AS loans, sum(b.fen)::bigint AS fen
        FROM bal b LEFT JOIN loan l ON l.loan_id = b.loan_id
        WHERE b.fen <> 0 AND ($1::text[] IS NULL OR l.tenant_id = ANY($1))
        GROUP BY 1, 2"""
    pages = await _each_shard(pools, lambda c: c.fetch(sql, scope, on, on >= today))
    by_tenant: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(CLASSES, 0))
    overdue_loans: dict[str, int] = defaultdict(int)
    for page in pages:
        for r in page:
            by_tenant[r["tenant_id"]][r["class"]] += r["fen"]
            if r["class"] != "normal":
                overdue_loans[r["tenant_id"]] += r["loans"]
    total = dict.fromkeys(CLASSES, 0)
    for classes in by_tenant.values():
        for name, fen in classes.items():
            total[name] += fen
    return AssetQualityReport(
        report="asset-quality",
        scope=scope_label(scope),
        date=on,
        classified_on=classified_on,
        rows=[_quality_row(t, by_tenant[t], overdue_loans[t]) for t in sorted(by_tenant)],
        total=_quality_row("total", total, sum(overdue_loans.values())),
    )


# ---- daily flow ---------------------------------------------------------------------------

_FLOW_SQL = """
    SELECT 'applications' AS what, tenant_id, count(*) AS n,
           coalesce(sum(requested_amount_fen), 0)::bigint AS fen, 0::bigint AS principal
    FROM application WHERE business_date = $2 AND ($1::text[] IS NULL OR tenant_id = ANY($1))
    GROUP BY tenant_id
    UNION ALL
    SELECT 'approvals', a.tenant_id, count(*), coalesce(sum(cl.limit_fen), 0)::bigint, 0
    FROM application a JOIN credit_line cl ON cl.credit_line_id = a.credit_line_id
    WHERE a.business_date = $2 AND a.status = 'approved'
      AND ($1::text[] IS NULL OR a.tenant_id = ANY($1))
    GROUP BY a.tenant_id
    UNION ALL
    SELECT t.kind, coalesce(l.tenant_id, '(unattributed)'), count(DISTINCT t.txn_id),
           abs(sum(g.amount_fen))::bigint, 0
    FROM ledger_txn t JOIN ledger_leg g USING (txn_id) LEFT JOIN loan l ON l.loan_id = g.owner_id
    WHERE t.business_date = $2 AND t.kind IN ('drawdown', 'drawdown_void')
      AND g.code = 'loan_principal' AND ($1::text[] IS NULL OR l.tenant_id = ANY($1))
    GROUP BY 1, 2
    UNION ALL
    SELECT 'repayment', r.tenant_id, count(DISTINCT t.txn_id),
           coalesce(sum(g.amount_fen) FILTER (WHERE g.code = 'core_settlement'), 0)::bigint,
           coalesce(-sum(g.amount_fen) FILTER (WHERE g.code = 'loan_principal'), 0)::bigint
    FROM ledger_txn t JOIN ledger_leg g USING (txn_id)
    JOIN repayment r ON r.repayment_id = t.ref_id
    WHERE t.business_date = $2 AND t.kind = 'repayment'
      AND ($1::text[] IS NULL OR r.tenant_id = ANY($1))
    GROUP BY 2"""
_FLOW_KINDS = {
    "applications": "applications",
    "approvals": "approvals",
    "drawdown": "drawdowns",
    "drawdown_void": "drawdowns_voided",
    "repayment": "repayments",
}


def _flow_row(tenant: str, counts: dict[str, tuple[int, int]], principal_fen: int) -> DailyFlowRow:
    def line(name: str) -> FlowLine:
        n, fen = counts.get(name, (0, 0))
        return FlowLine(count=n, amount=format_fen(fen))

    return DailyFlowRow(
        tenant_id=tenant,
        applications=line("applications"),
        approvals=line("approvals"),
        drawdowns=line("drawdowns"),
        drawdowns_voided=line("drawdowns_voided"),
        repayments=line("repayments"),
        repaid_principal=format_fen(principal_fen),
    )


async def daily_flow(pools: ShardPools, scope: list[str] | None, on: dt.date) -> DailyFlowReport:
    pages = await _each_shard(pools, lambda c: c.fetch(_FLOW_SQL, scope, on))
    counts: dict[str, dict[str, tuple[int, int]]] = defaultdict(dict)
    principal: dict[str, int] = defaultdict(int)
    for page in pages:
        for r in page:
            name = _FLOW_KINDS[r["what"]]
            n, fen = counts[r["tenant_id"]].get(name, (0, 0))
            counts[r["tenant_id"]][name] = (n + r["n"], fen + r["fen"])
            principal[r["tenant_id"]] += r["principal"]
    total: dict[str, tuple[int, int]] = {}
    for by_name in counts.values():
        for name, (n, fen) in by_name.items():
            was = total.get(name, (0, 0))
            total[name] = (was[0] + n, was[1] + fen)
    return DailyFlowReport(
        report="daily-flow",
        scope=scope_label(scope),
        date=on,
        rows=[_flow_row(t, counts[t], principal[t]) for t in sorted(counts)],
        total=_flow_row("total", total, sum(principal.values())),
    )


# ---- CSV ----------------------------------------------------------------------------------


def to_csv(report: Report) -> str:
    """One line per row and a `total` line; the same figures as the JSON."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if isinstance(report, OutstandingReport):
        writer.writerow(["date", "tenant_id", "product_code", "loans", "outstanding_principal"])
        for o in report.rows:
            writer.writerow([report.date, o.tenant_id, o.product_code, o.loans,
                             o.outstanding_principal])  # fmt: skip
        writer.writerow([report.date, "total", "", "", report.total_outstanding_principal])
    elif isinstance(report, AssetQualityReport):
        fields = list(AssetQualityRow.__struct_fields__)
        writer.writerow(["date", *fields])
        for q in [*report.rows, report.total]:
            writer.writerow([report.date, *(getattr(q, f) for f in fields)])
    else:
        head = ["date", "tenant_id"]
        for name in ("applications", "approvals", "drawdowns", "drawdowns_voided", "repayments"):
            head += [f"{name}_count", f"{name}_amount"]
        writer.writerow([*head, "repaid_principal"])
        for f in [*report.rows, report.total]:
            cells: list[object] = [report.date, f.tenant_id]
            for line in (f.applications, f.approvals, f.drawdowns, f.drawdowns_voided,
                         f.repayments):  # fmt: skip
                cells += [line.count, line.amount]
            writer.writerow([*cells, f.repaid_principal])
    return out.getvalue()
