"""The chart of accounts.

Two scopes of account live on every shard:

- **loan** accounts, one per loan and code (`owner_id` = the loan ID), with the
  customer's ID on the row: the customer side of the book;
- **internal** (bank-side) accounts, each striped into `INTERNAL_STRIPES`
  rows (`owner_id` = stripe number). A transaction touches one stripe, chosen
  from its own ID, so no single row is updated by every transaction; the
  account's balance is the sum of its stripes.

Signs: a leg's `amount_fen` is positive for a debit and negative for a credit.
Assets and expenses grow by debits; liabilities and income by credits.

    drawdown        Dr loan_principal            Cr disbursement_clearing
    paid out        Dr disbursement_clearing     Cr core_settlement
    accrual         Dr accrued_interest_receivable   Cr interest_income   (a day-end chunk)
    repayment       Dr core_settlement           Cr loan_principal, accrued_interest_receivable,
                                                    loan_penalty_receivable, income ...

Accrued interest is a control account over a sub-ledger (ledger migration 0023): the
day-end posts a chunk's interest in one posting, and `loan_accrual` keeps each loan's
share (accrued - settled). The loans' own `loan_interest_receivable` accounts hold only
what was booked before that and are no longer posted to.
"""

from __future__ import annotations

import enum

import msgspec

INTERNAL_STRIPES = 64  # rows per internal account: concurrent postings seldom share one


class Scope(enum.Enum):
    LOAN = "loan"
    INTERNAL = "internal"


class Kind(enum.Enum):
    ASSET = "asset"
    LIABILITY = "liability"
    INCOME = "income"
    EXPENSE = "expense"


class AccountSpec(msgspec.Struct, frozen=True):
    code: str
    name_zh: str
    kind: Kind
    scope: Scope


class Code(enum.StrEnum):
    LOAN_PRINCIPAL = "loan_principal"
    LOAN_INTEREST_RECEIVABLE = "loan_interest_receivable"
    LOAN_PENALTY_RECEIVABLE = "loan_penalty_receivable"
    ACCRUED_INTEREST_RECEIVABLE = "accrued_interest_receivable"
    DISBURSEMENT_CLEARING = "disbursement_clearing"
    CORE_SETTLEMENT = "core_settlement"
    INTEREST_INCOME = "interest_income"
    PENALTY_INCOME = "penalty_income"


CHART: dict[Code, AccountSpec] = {
    spec.code: spec  # type: ignore[misc]
    for spec in (
        AccountSpec(Code.LOAN_PRINCIPAL, "贷款本金", Kind.ASSET, Scope.LOAN),
        AccountSpec(Code.LOAN_INTEREST_RECEIVABLE, "应收利息", Kind.ASSET, Scope.LOAN),
        AccountSpec(Code.LOAN_PENALTY_RECEIVABLE, "应收罚息复利", Kind.ASSET, Scope.LOAN),
        AccountSpec(
            Code.ACCRUED_INTEREST_RECEIVABLE, "应收利息（计提汇总）", Kind.ASSET, Scope.INTERNAL
        ),
        AccountSpec(Code.DISBURSEMENT_CLEARING, "放款待清算", Kind.LIABILITY, Scope.INTERNAL),
        AccountSpec(Code.CORE_SETTLEMENT, "核心系统清算往来", Kind.ASSET, Scope.INTERNAL),
        AccountSpec(Code.INTEREST_INCOME, "贷款利息收入", Kind.INCOME, Scope.INTERNAL),
        AccountSpec(Code.PENALTY_INCOME, "罚息复利收入", Kind.INCOME, Scope.INTERNAL),
    )
}

assert set(CHART) == set(Code), "every code has exactly one spec"


def is_internal(code: Code) -> bool:
    return CHART[code].scope is Scope.INTERNAL
