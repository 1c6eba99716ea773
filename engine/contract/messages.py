"""The wire types of the channel API (`/v1/`), one msgspec Struct per body.

Requests forbid unknown fields and carry their constraints (`Meta`); amounts
and rates stay strings here and are parsed into fen and Decimal by
`ledger.money` in the services, so that "5000.0" or 5000 are refused with a
precise code. IDs are strings of digits: 64-bit integers do not survive
JavaScript. The OpenAPI document is generated from these types.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

# A positive 63-bit ID as digits: up to 18 digits, or 19 up to 9219999999999999999
# (the top 0.04 % of the range, not reached for decades, is refused rather than
# overflowing BIGINT).
IdStr = Annotated[
    str,
    Meta(
        pattern=r"^([1-9][0-9]{0,17}|[1-8][0-9]{18}|9[01][0-9]{17}|92[01][0-9]{16})$",
        description="64-bit ID as a string of digits",
    ),
]
# As ledger.money parses it: no leading zero, at most 13 digits of yuan, two decimals.
AmountStr = Annotated[
    str,
    Meta(
        pattern=r"^(0|[1-9][0-9]{0,12})\.[0-9]{2}$",
        max_length=16,
        description="yuan with exactly two decimals",
        examples=["5000.00"],
    ),
]
RateStr = Annotated[
    str, Meta(max_length=12, description="annual rate in percent", examples=["4.35"])
]
Code = Annotated[str, Meta(min_length=1, max_length=48)]
Method = Literal[
    "equal_installment",
    "equal_principal",
    "interest_only",
    "bullet",
    "grace_then_equal_installment",
]
PrepayRule = Literal["reduce_nearest", "reduce_amount", "reduce_term"]
Reason = Annotated[str, Meta(min_length=1, max_length=200)]
Months = Annotated[int, Meta(ge=1, le=600)]
# An administrative area code (the ID number's first six digits): the declared residence.
RegionStr = Annotated[
    str, Meta(pattern=r"^[1-9][0-9]{5}$", description="6-digit area code", examples=["110105"])
]


class _Request(msgspec.Struct, forbid_unknown_fields=True):
    """Base of request bodies: unknown fields are refused (400 UNKNOWN_FIELD)."""


class CustomerCreate(_Request):
    tenant_id: Code
    name: Annotated[str, Meta(min_length=1, max_length=64)]
    id_number: Annotated[str, Meta(min_length=1, max_length=32)]
    phone: Annotated[str, Meta(min_length=1, max_length=20)]
    bank_card: Annotated[str, Meta(min_length=1, max_length=32)]
    # The declared residence: the regional rule of products that lend by residence.
    residence_region: RegionStr | None = None


class CustomerView(msgspec.Struct):
    customer_id: str
    tenant_id: str
    name_masked: str
    id_number_masked: str
    phone_masked: str
    bank_card_masked: str
    created_at: dt.datetime


class CardBind(_Request):
    """POST /v1/customers/{customer_id}/cards: a card the customer's money may use."""

    bank_card: Annotated[str, Meta(min_length=1, max_length=32)]


class CardView(msgspec.Struct):
    customer_id: str
    card_masked: str
    source: str  # "registered" (with the customer) | "added" (POST .../cards)
    bound_by_channel: str | None  # None: registered before bindings were recorded
    verified: bool  # four-factor verified when bound
    bound_at: dt.datetime


class CustomerCardsView(msgspec.Struct):
    customer_id: str
    cards: list[CardView]


class CreditLineCreate(_Request):
    customer_id: IdStr
    product_code: Code
    limit: AmountStr
    annual_rate_pct: RateStr
    repayment_methods: Annotated[list[Method], Meta(min_length=1, max_length=5)]
    max_term_months: Months
    expires_on: dt.date


class CreditLineView(msgspec.Struct):
    credit_line_id: str
    customer_id: str
    tenant_id: str
    product_code: str
    limit: str
    used: str
    available: str
    status: str
    status_reason: str | None
    annual_rate_pct: str
    repayment_methods: list[str]
    max_term_months: int
    expires_on: dt.date
    # Who froze it: "channel" (the channel may lift it), "rule" (a post-loan rule of the
    # day-end) or "operator" (only an operator lifts those); None when active.
    frozen_by: str | None = None
    product_version: int = 1  # the product's version the line was granted under


class StatusChange(_Request):
    reason: Reason


class DrawdownCreate(_Request):
    credit_line_id: IdStr
    amount: AmountStr
    term_months: Months
    repayment_method: Method
    disburse_to: Annotated[str, Meta(min_length=1, max_length=32)]
    grace_months: Annotated[int, Meta(ge=0, le=599)] = 0


class InstallmentView(msgspec.Struct):
    seq: int
    due_date: dt.date
    principal: str
    interest: str
    total: str
    principal_paid: str
    interest_paid: str
    penalty_unpaid: str
    penalty_paid: str
    status: Literal["paid", "overdue", "due", "pending"]


class PlanSummary(msgspec.Struct):
    installments: int
    first_due_date: dt.date
    first_payment: str
    maturity_date: dt.date
    total_interest: str
    total_repayment: str


class DrawdownView(msgspec.Struct):
    loan_id: str
    receipt_no: str
    status: str
    credit_line_id: str
    customer_id: str
    product_code: str
    principal: str
    annual_rate_pct: str
    repayment_method: str
    term_months: int
    grace_months: int
    start_date: dt.date
    disburse_to_masked: str
    plan: PlanSummary


class NextDue(msgspec.Struct):
    due_date: dt.date
    amount: str


DaysPastDue = Annotated[
    int,
    Meta(
        ge=0,
        description="days past due on the business date: since the oldest installment "
        "still unpaid after its due date (0: none)",
    ),
]
ClassificationStr = Annotated[
    str,
    Meta(
        description="five-category class (MONEY.md): normal 正常, special_mention 关注, "
        "substandard 次级, doubtful 可疑, loss 损失; the day-end's where it classified "
        "the loan, else the floor its days past due give"
    ),
]


class LoanView(msgspec.Struct):
    loan_id: str
    receipt_no: str
    customer_id: str
    credit_line_id: str
    product_code: str
    status: str
    principal: str
    outstanding_principal: str
    annual_rate_pct: str
    repayment_method: str
    term_months: int
    start_date: dt.date
    maturity_date: dt.date
    days_past_due: DaysPastDue
    classification: ClassificationStr
    next_due: NextDue | None
    disburse_to_masked: str
    requested_at: dt.datetime
    disbursed_at: dt.datetime | None
    failure_reason: str | None = None
    # The day-end's record: the class it gave the loan and since when (None: never late),
    # and the penalty and compound interest booked and unpaid.
    classification_since: Annotated[
        dt.date | None,
        Meta(description="the business date the day-end put the loan in its class"),
    ] = None
    penalty_accrued: Annotated[
        str,
        Meta(description="penalty and compound interest the day-ends booked, unpaid (yuan)"),
    ] = "0.00"


class ScheduleView(msgspec.Struct):
    loan_id: str
    plan_version: int
    installments: list[InstallmentView]


class LoanList(msgspec.Struct):
    customer_id: str
    loans: list[LoanView]


class PayoffQuoteView(msgspec.Struct):
    loan_id: str
    on: dt.date
    principal: str
    interest: str
    overdue_principal: str
    overdue_interest: str
    penalty: str
    total: str


class RepaymentItemCreate(_Request):
    loan_id: IdStr
    mode: Literal["due", "prepay", "payoff"]
    amount: AmountStr | None = None
    prepay_rule: PrepayRule | None = None


class RepaymentCreate(_Request):
    customer_id: IdStr
    items: Annotated[list[RepaymentItemCreate], Meta(min_length=1, max_length=20)]
    debit_from: Annotated[str, Meta(min_length=1, max_length=32)]


class Allocation(msgspec.Struct):
    penalty: str
    interest: str
    principal: str


class RepaymentItemView(msgspec.Struct):
    loan_id: str
    mode: str
    prepay_rule: str | None
    amount: str
    allocation: Allocation
    loan_status: str
    outstanding_principal: str
    plan: list[InstallmentView]


class RepaymentView(msgspec.Struct):
    repayment_id: str
    customer_id: str
    status: str
    total: str
    business_date: dt.date
    debit_from_masked: str
    items: list[RepaymentItemView]
    failure_reason: str | None = None


# --- Origination -------------------------------------------------------------


Sha256Hex = Annotated[str, Meta(pattern=r"^[0-9a-f]{64}$", description="SHA-256, lowercase hex")]
AwareTime = Annotated[dt.datetime, Meta(tz=True)]
FreeText = Annotated[str, Meta(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f{}]+$")]


class Applicant(_Request):
    name: Annotated[str, Meta(min_length=1, max_length=64)]
    id_number: Annotated[str, Meta(min_length=1, max_length=32)]
    phone: Annotated[str, Meta(min_length=1, max_length=20)]
    bank_card: Annotated[str, Meta(min_length=1, max_length=32)]
    # The ID card's validity (有效期): `id_valid_until` or, for a long-term card (长期),
    # `id_long_term`. An ID past its validity is refused by the rules (ID_EXPIRED).
    id_valid_from: dt.date | None = None
    id_valid_until: dt.date | None = None
    id_long_term: bool = False
    residence_region: RegionStr | None = None  # declared residence (regional rule)


class Consent(_Request):
    credit_report: bool
    terms_version: Annotated[str, Meta(min_length=1, max_length=32)]
    # What the applicant was shown and when they agreed, as the channel knows it; the
    # engine's own rendering of the authorization (and the request's time) otherwise.
    text_sha256: Sha256Hex | None = None
    consented_at: AwareTime | None = None


class ApplicationCreate(_Request):
    tenant_id: Code
    product_code: Code
    channel_serial: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
    applicant: Applicant
    requested_amount: AmountStr
    requested_term_months: Months
    repayment_method: Method
    consent: Consent
    # References to documents (ID card images) kept by the channel: never the images.
    attachments: Annotated[list[Annotated[str, Meta(max_length=128)]], Meta(max_length=10)] = []


class DecisionView(msgspec.Struct):
    limit: str | None
    annual_rate_pct: str | None
    repayment_methods: list[str]
    max_term_months: int | None
    reasons: list[str]
    rule_set_version: str | None
    face_to_face_required: bool = False  # 面签 before the contract can be signed


class Step(msgspec.Struct):
    step: str
    at: dt.datetime


class ApplicationView(msgspec.Struct):
    application_id: str
    status: Literal["received", "pending_bureau", "pending_review", "approved", "refused"]
    channel_serial: str
    product_code: str
    decision: DecisionView | None
    customer_id: str | None
    credit_line_id: str | None
    contract_id: str | None
    steps: list[Step]


class ReviewQueue(msgspec.Struct):
    applications: list[ApplicationView]


class CollectionCaseView(msgspec.Struct):
    """A late loan handed to a loan officer by a post-loan rule (engine.eod)."""

    loan_id: str
    customer_id: str
    tenant_id: str
    branch_code: str
    officer_id: str
    status: Literal["open", "closed"]
    opened_on: dt.date
    dpd_at_open: Annotated[int, Meta(description="days past due when the rule opened it")]
    days_past_due: DaysPastDue
    classification: ClassificationStr
    receipt_no: str
    outstanding_principal: str
    closed_on: dt.date | None = None


class CollectionQueue(msgspec.Struct):
    cases: list[CollectionCaseView]


class Reassign(_Request):
    officer_id: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{1,32}$")]


class ReviewAction(_Request):
    reason: Reason


class ContractSign(_Request):
    confirmed: bool
    otp: Annotated[str, Meta(pattern=r"^[0-9]{6}$")]


class ContractSigned(msgspec.Struct):
    contract_id: str
    signed_at: dt.datetime
    document_sha256: str
    evidence_seq: int
    # The chain entry of the signature record (signer IP, device, code check); None
    # for contracts signed before signature records were kept.
    signature_evidence_seq: int | None = None


class OtpIssued(msgspec.Struct):
    contract_id: str
    phone_masked: str
    expires_at: dt.datetime
    resend_after_s: int
    attempts_left: int
    sms_reference: str


class FaceToFaceCreate(_Request):
    officer: FreeText  # the loan officer's name or staff number
    place: FreeText  # the branch or place of the meeting
    met_at: AwareTime


class FaceToFaceView(msgspec.Struct):
    required: bool
    reasons: list[str]
    officer: str | None = None
    place: str | None = None
    met_at: dt.datetime | None = None
    evidence_seq: int | None = None


class ChainPlace(msgspec.Struct):
    """Where a digest sits in the shard's hash chain."""

    evidence_seq: int
    prev_hash: str
    entry_hash: str
    at: dt.datetime


class ContractDocumentView(msgspec.Struct):
    kind: str
    text: str
    document_sha256: str
    chain: ChainPlace | None  # None until signed


class EvidenceRecordView(msgspec.Struct):
    kind: Literal["credit_query_consent", "face_to_face", "signature"]
    subject_id: str
    document: str
    document_sha256: str
    chain: ChainPlace


class ContractView(msgspec.Struct):
    contract_id: str
    application_id: str
    customer_id: str
    credit_line_id: str
    status: Literal["awaiting_face_to_face", "awaiting_signature", "signed"]
    signed_at: dt.datetime | None
    face_to_face: FaceToFaceView
    documents: list[ContractDocumentView]
    evidence: list[EvidenceRecordView]  # consent, face-to-face and signature records


# ---- operators, roles and the audit trail (engine/operators) ---------------------------

Login = Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9._-]{2,63}$")]
Password = Annotated[str, Meta(min_length=1, max_length=128)]
RoleName = Literal["union_admin", "bank_admin", "approver", "officer", "auditor"]
TenantCode = Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")]


class OperatorLogin(_Request):
    login: Login
    password: Password


class OperatorView(msgspec.Struct):
    operator_id: str
    tenant_id: str
    login: str
    roles: list[str]
    status: Literal["active", "disabled"]
    locked_until: str | None = None


class OperatorSessionView(msgspec.Struct):
    token: str  # send as X-Operator-Token; shown once
    expires_at: dt.datetime
    operator: OperatorView


class SessionEnded(msgspec.Struct):
    ended: bool


class OperatorList(msgspec.Struct):
    operators: list[OperatorView]


class OperatorCreate(_Request):
    tenant_id: TenantCode
    login: Login
    password: Annotated[str, Meta(min_length=12, max_length=128)]
    roles: Annotated[list[RoleName], Meta(min_length=1, max_length=5)]


class OperatorRoles(_Request):
    roles: Annotated[list[RoleName], Meta(min_length=1, max_length=5)]


class OperatorPassword(_Request):
    password: Annotated[str, Meta(min_length=12, max_length=128)]


class ChannelSecretView(msgspec.Struct):
    channel_id: str
    secret: str  # shown once; engines use it within reference_refresh_s


class RuleSetImported(msgspec.Struct):
    product_code: str
    version: str
    status: Literal["stored", "unchanged"]
    note: str


class WhitelistImported(msgspec.Struct):
    imported: int


class AuditEntryView(msgspec.Struct):
    seq: int
    at: dt.datetime
    operator_id: str
    operator_login: str
    tenant_id: str
    action: str
    target: str
    before: Any
    after: Any
    outcome: Literal["ok", "refused"]
    code: str
    request_id: str
    hash: str  # hex


class AuditPage(msgspec.Struct):
    entries: list[AuditEntryView]
    next_after_seq: int | None  # pass as after_seq for the next page; None: no more


# ---- issue 19: tenants, two-level products, reports (operators, /v1/admin, /v1/reports) ----

ProductCode = Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9-]{0,47}$")]
RegionCode = Annotated[str, Meta(pattern=r"^([0-9]{2}|[0-9]{4}|[0-9]{6})$")]
MultiplierStr = Annotated[str, Meta(pattern=r"^[0-9]\.[0-9]{1,4}$", examples=["1.5"])]
# One line of text: no control characters (PostgreSQL stores no NUL).
Name = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[^\u0000-\u001f]+$")]
LoanKind = Literal["consumer", "business"]
RegionSource = Literal["id_number", "residence"]


class TemplateBody(_Request):
    """The union's product template: the ranges its member banks' adoptions live in."""

    name: Name
    loan_kind: LoanKind
    repayment_methods: Annotated[list[Method], Meta(min_length=1)]
    term_months_min: Months
    term_months_max: Months
    bullet_term_months_max: Annotated[int, Meta(ge=1, le=12)]
    grace_months_max: Annotated[int, Meta(ge=0, le=60)]
    line_limit_min: AmountStr
    line_limit_max: AmountStr
    annual_rate_pct_floor: RateStr
    annual_rate_pct_cap: RateStr
    penalty_multiplier_min: MultiplierStr
    penalty_multiplier_max: MultiplierStr
    prepay_rules: Annotated[list[PrepayRule], Meta(min_length=1)]
    customer_cap_group: ProductCode | None = None
    customer_outstanding_max: AmountStr | None = None
    region_source: RegionSource = "id_number"


class TemplateCreate(TemplateBody, kw_only=True):
    template_code: ProductCode


class TemplateView(msgspec.Struct):
    template_code: str
    version: int
    name: str
    loan_kind: str
    repayment_methods: list[str]
    term_months_min: int
    term_months_max: int
    bullet_term_months_max: int
    grace_months_max: int
    line_limit_min: str
    line_limit_max: str
    annual_rate_pct_floor: str
    annual_rate_pct_cap: str
    penalty_multiplier_min: str
    penalty_multiplier_max: str
    prepay_rules: list[str]
    customer_cap_group: str | None
    customer_outstanding_max: str | None
    region_source: str


class TemplateList(msgspec.Struct):
    templates: list[TemplateView]


class ProductValues(_Request):
    """A member bank's own values, each inside its template's range; a PATCH sends the
    ones it changes."""

    name: Name | None = None
    repayment_methods: Annotated[list[Method], Meta(min_length=1)] | None = None
    term_months_min: Months | None = None
    term_months_max: Months | None = None
    bullet_term_months_max: Annotated[int, Meta(ge=1, le=12)] | None = None
    grace_months_max: Annotated[int, Meta(ge=0, le=60)] | None = None
    line_limit_max: AmountStr | None = None
    annual_rate_pct_min: RateStr | None = None
    annual_rate_pct_max: RateStr | None = None
    penalty_multiplier: MultiplierStr | None = None
    prepay_rule_default: PrepayRule | None = None
    # The rules a prepayment may use, among the template's; the default must be one.
    prepay_rules: Annotated[list[PrepayRule], Meta(min_length=1)] | None = None
    customer_outstanding_max: AmountStr | None = None
    region_source: RegionSource | None = None


class ProductAdopt(ProductValues, kw_only=True):
    """A member bank adopts a union template as its product `product_code`; values not
    given are the template's (its widest range, its caps)."""

    product_code: ProductCode
    template_code: ProductCode
    tenant_id: TenantCode | None = None  # the union names the bank; a bank adopts for itself


class ProductView(msgspec.Struct):
    product_code: str
    tenant_id: str
    template_code: str
    version: int
    status: str
    status_reason: str | None
    name: str
    loan_kind: str
    repayment_methods: list[str]
    term_months_min: int
    term_months_max: int
    bullet_term_months_max: int
    grace_months_max: int
    line_limit_max: str
    annual_rate_pct_min: str
    annual_rate_pct_max: str
    penalty_multiplier: str
    prepay_rule_default: str
    prepay_rules: list[str]
    customer_cap_group: str | None
    customer_outstanding_max: str | None
    region_source: str


class ProductList(msgspec.Struct):
    products: list[ProductView]


class ProductVersionView(msgspec.Struct):
    version: int
    changed_by: str
    created_at: dt.datetime
    terms: ProductView


class ProductVersionList(msgspec.Struct):
    product_code: str
    versions: list[ProductVersionView]


class TenantCreate(_Request):
    tenant_id: TenantCode
    name: Name
    region_codes: Annotated[list[RegionCode], Meta(max_length=64)] = []


class TenantChange(_Request):
    name: Name | None = None
    region_codes: Annotated[list[RegionCode], Meta(max_length=64)] | None = None


class TenantView(msgspec.Struct):
    tenant_id: str
    name: str
    kind: str
    parent_id: str | None
    region_codes: list[str]
    channels: list[str]


class TenantList(msgspec.Struct):
    tenants: list[TenantView]


class FlowLine(msgspec.Struct):
    count: int
    amount: str


class DailyFlowRow(msgspec.Struct):
    tenant_id: str
    applications: FlowLine
    approvals: FlowLine
    drawdowns: FlowLine
    drawdowns_voided: FlowLine
    repayments: FlowLine
    repaid_principal: str


class DailyFlowReport(msgspec.Struct):
    report: Literal["daily-flow"]
    scope: str
    date: dt.date
    rows: list[DailyFlowRow]
    total: DailyFlowRow


class OutstandingRow(msgspec.Struct):
    tenant_id: str
    product_code: str
    loans: int
    outstanding_principal: str


class OutstandingReport(msgspec.Struct):
    report: Literal["outstanding-by-product"]
    scope: str
    date: dt.date
    rows: list[OutstandingRow]
    total_outstanding_principal: str


class AssetQualityRow(msgspec.Struct):
    tenant_id: str
    outstanding_principal: str
    normal: str
    special_mention: str
    substandard: str
    doubtful: str
    loss: str
    overdue_principal: str
    overdue_loans: int
    npl: str
    npl_ratio: str  # (substandard + doubtful + loss) / outstanding, 6 places
    overdue_ratio: str


class AssetQualityReport(msgspec.Struct):
    report: Literal["asset-quality"]
    scope: str
    date: dt.date
    classified_on: dt.date | None  # the day-end whose five-category classification is used
    rows: list[AssetQualityRow]
    total: AssetQualityRow
