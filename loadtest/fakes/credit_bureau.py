"""Fake credit bureau (征信): a person's credit report, drawn from the ID number's birth year.

    python -m loadtest.fakes.credit_bureau    FAKE_BUREAU_HOST:FAKE_BUREAU_PORT (127.0.0.1:18603)

    POST /bureau/v1/reports  {"query_id", "name", "id_number": 18 chars,
                              "purpose": "loan_approval"|"post_loan_management",
                              "as_of"?: "YYYY-MM-DD"}   (fake only: the report's date;
                                                         default today, Asia/Shanghai)
        -> 200 the report (below)
           503 {"error": "bureau_unavailable", "detail"}   by FAKE_BUREAU_FAIL_RATIO
           400 {"error", "detail"}   refused (bad field, ID check character wrong)
    GET  /fake/queries   every query received, in order: ID masked 110***********002X
    GET|POST /fake/knobs   GET /healthz   GET /metrics (fake_bureau_queries_total{outcome})

    arrive --latency_ms--> draw u in [0,1)
        u < fail_ratio                   503, recorded as "failed"
        u < fail_ratio + timeout_ratio   recorded as "timeout"; the report is sent
                                         only after timeout_hang_s
        otherwise                        200 with the report, recorded as "ok"

Every query is recorded (fsync'd JSON lines, reloaded at start-up), so a test
can count how often the engine asked. Knobs: FAKE_BUREAU_LATENCY_MS (50),
FAKE_BUREAU_FAIL_RATIO (0), FAKE_BUREAU_TIMEOUT_RATIO (0),
FAKE_BUREAU_TIMEOUT_HANG_S (30), FAKE_BUREAU_SEED, FAKE_BUREAU_RECORD_FILE.

Profiles, by the birth year in the ID number (characters 7..10); each report is
the same for the same ID number and date, and dated back from `as_of` (D):

    year  profile          what the report holds                      parsed indicators
    1950  current_overdue  a consumer loan 3 months overdue (8650.37   overdue_accounts_24m 2,
                           now), a card once 1 month late 10 months     max_overdue_months_24m 3,
                           ago, a clean mortgage; 1 loan inquiry       current_overdue 865037 fen,
                           1 month ago                                  queries_3m 1, accounts 3
    1951  multi_lending    5 loans opened 1..5 months ago at 4         lenders_6m 4, queries_3m 2,
                           institutions, an old card; 2 loan            accounts 6
                           inquiries in the last 3 months
    1952  many_queries     a card and a loan, both clean; 8 loan       queries_3m 8, accounts 2
                           inquiries in the last 3 months (6 banks)
    1953  thin_file        no accounts, no inquiries                   accounts 0, all zero
    else  clean            a card (one 1-month delay 30 months ago,    accounts 3, all zero
                           outside 24 months), a loan, a settled one;
                           inquiries of other kinds or older

The same profiles go to anyone whose name ends in 逾期 (current_overdue), 多头
(multi_lending), 多查 (many_queries) or 白户 (thin_file): the years above are past the
demo rules' age band, which now refuses them before any query.

The report is stateless: queries made here do not appear on later reports.
This module imports nothing from `engine/`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
from typing import Annotated, Any, Final, Literal

import msgspec
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter

from loadtest.fakes import SHANGHAI, BadRequest, json_response, read_json
from loadtest.fakes.knobs import Knobs
from loadtest.fakes.service import FakeSpec, FakeState

QUERY_ID_PATTERN: Final = r"^[A-Za-z0-9._:-]{1,64}$"
ID_NUMBER_PATTERN: Final = r"^[1-9][0-9]{16}[0-9X]$"
_ID_WEIGHTS: Final = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK_CHARS: Final = "10X98765432"

Profile = Literal["clean", "current_overdue", "multi_lending", "many_queries", "thin_file"]
PROFILE_BY_BIRTH_YEAR: Final[dict[int, Profile]] = {
    1950: "current_overdue",
    1951: "multi_lending",
    1952: "many_queries",
    1953: "thin_file",
}
PROFILE_BY_NAME_MARKER: Final[dict[str, Profile]] = {
    "逾期": "current_overdue",
    "多头": "multi_lending",
    "多查": "many_queries",
    "白户": "thin_file",
}
Outcome = Literal["ok", "failed", "timeout"]
OUTCOMES: Final[tuple[Outcome, ...]] = ("ok", "failed", "timeout")

# Fictional institutions: (code, name).
INSTITUTIONS: Final = (
    ("B101", "中原农村商业银行"),
    ("B102", "华东城市商业银行"),
    ("B103", "北方股份制银行"),
    ("B104", "南方村镇银行"),
    ("C201", "信达消费金融公司"),
    ("C202", "云端网络小额贷款公司"),
    ("C203", "速借小额贷款公司"),
    ("T301", "长江信托"),
)


class ReportRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Body of POST /bureau/v1/reports."""

    query_id: Annotated[str, msgspec.Meta(pattern=QUERY_ID_PATTERN)]
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    id_number: Annotated[str, msgspec.Meta(pattern=ID_NUMBER_PATTERN)]
    purpose: Literal["loan_approval", "post_loan_management"]
    as_of: dt.date | None = None  # fake only: the date the report is drawn up on


class QueryRecord(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One line of queries.jsonl and of GET /fake/queries: one query received."""

    query_id: str
    id_number_masked: str
    name_masked: str
    purpose: str
    profile: str
    outcome: Outcome
    report_id: str
    received_at: str  # ISO 8601, +08:00


def id_number_check_ok(id_number: str) -> bool:
    """GB 11643-1999 check character (the fake refuses what a bureau would)."""
    total = sum(int(d) * w for d, w in zip(id_number[:17], _ID_WEIGHTS, strict=True))
    return _ID_CHECK_CHARS[total % 11] == id_number[17]


def profile_for(id_number: str, name: str = "") -> Profile:
    """By the birth year, else by a marker at the end of the name (applicants of working
    age, whom the age rules let through to the bureau)."""
    by_year = PROFILE_BY_BIRTH_YEAR.get(int(id_number[6:10]))
    if by_year is not None:
        return by_year
    return next(
        (p for marker, p in PROFILE_BY_NAME_MARKER.items() if name.endswith(marker)), "clean"
    )


def mask_id_number(id_number: str) -> str:
    return id_number[:3] + "*" * (len(id_number) - 7) + id_number[-4:]


def mask_name(name: str) -> str:
    return name[:1] + "*" * (len(name) - 1)


def decide(knobs: Knobs, draw: float) -> Outcome:
    """Pure: the outcome of one query from a uniform draw in [0, 1)."""
    assert 0.0 <= draw < 1.0
    if draw < knobs.fail_ratio:
        return "failed"
    if draw < knobs.fail_ratio + knobs.timeout_ratio:
        return "timeout"
    return "ok"


# ---- the report ------------------------------------------------------------------------


def months_before(day: dt.date, months: int) -> dt.date:
    """The same day `months` calendar months earlier, clamped to the month's end."""
    index = day.year * 12 + day.month - 1 - months
    year, month = divmod(index, 12)
    month += 1
    next_month = dt.date(year + (month == 12), month % 12 + 1, 1)
    return dt.date(year, month, min(day.day, (next_month - dt.timedelta(days=1)).day))


def _month(day: dt.date) -> str:
    return f"{day.year:04d}-{day.month:02d}"


def _institution(index: int) -> dict[str, str]:
    code, name = INSTITUTIONS[index % len(INSTITUTIONS)]
    return {"code": code, "name": name}


class _Builder:
    """Accounts and inquiries of one report; `pick` spreads institutions by the ID's hash."""

    def __init__(self, id_number: str, as_of: dt.date) -> None:
        digest = hashlib.sha256(id_number.encode()).digest()
        self.offset = digest[0]
        self.as_of = as_of
        self.last_month = months_before(as_of, 1)  # the latest month reported
        self.accounts: list[dict[str, Any]] = []
        self.inquiries: list[dict[str, Any]] = []

    def pick(self, index: int) -> dict[str, str]:
        return _institution(self.offset + index)

    def account(
        self,
        kind: str,
        institution: dict[str, str],
        opened_months_ago: int,
        statuses: str,
        *,
        amount: str,
        balance: str = "0.00",
        overdue: tuple[str, int] = ("0.00", 0),
        closed_months_ago: int | None = None,
    ) -> None:
        """One account; `statuses` end with the last reported month (or the closing month)."""
        opened_on = months_before(self.as_of, opened_months_ago)
        end = (
            self.last_month
            if closed_months_ago is None
            else months_before(self.as_of, closed_months_ago)
        )
        start_index = end.year * 12 + end.month - len(statuses)
        start = dt.date(start_index // 12, start_index % 12 + 1, 1)
        status = "settled" if closed_months_ago is not None else "normal"
        if overdue[1] > 0:
            status = "overdue"
        self.accounts.append(
            {
                "account_id": f"A{len(self.accounts) + 1:03d}",
                "institution": institution,
                "type": kind,
                "currency": "CNY",
                "opened_on": opened_on.isoformat(),
                "closed_on": None if closed_months_ago is None else end.isoformat(),
                "credit_limit" if kind == "credit_card" else "loan_amount": amount,
                "balance": balance,
                "status": status,
                "current_overdue": {"amount": overdue[0], "months": overdue[1]},
                "repayment_history": {
                    "start_month": _month(start),
                    "end_month": _month(end),
                    "statuses": statuses,
                },
            }
        )

    def inquiry(self, days_ago: int, institution: dict[str, str], reason: str) -> None:
        day = self.as_of - dt.timedelta(days=days_ago)
        self.inquiries.append(
            {"date": day.isoformat(), "institution": institution, "reason": reason}
        )


def _clean(b: _Builder) -> None:
    card_history = "N" * 5 + "1" + "N" * 30  # the delay 30 months ago: outside 24 months
    b.account("credit_card", b.pick(0), 60, card_history, amount="30000.00", balance="2150.00")
    b.account("consumer_loan", b.pick(1), 14, "N" * 13, amount="50000.00", balance="31200.00")
    b.account(
        "business_loan", b.pick(2), 40, "N" * 23 + "C", amount="100000.00", closed_months_ago=16
    )
    b.inquiry(33, b.pick(3), "credit_card_approval")
    b.inquiry(20, b.pick(0), "post_loan_management")
    b.inquiry(150, b.pick(1), "loan_approval")


def _current_overdue(b: _Builder) -> None:
    card_history = "N" * 14 + "1" + "N" * 9  # 1 month late, 10 months ago
    b.account("credit_card", b.pick(0), 48, card_history, amount="20000.00", balance="5400.00")
    b.account(
        "consumer_loan",
        b.pick(4),
        20,
        "N" * 16 + "123",
        amount="30000.00",
        balance="18650.37",
        overdue=("8650.37", 3),
    )
    b.account("mortgage", b.pick(1), 70, "N" * 24, amount="600000.00", balance="412000.00")
    b.inquiry(31, b.pick(5), "loan_approval")
    b.inquiry(12, b.pick(4), "post_loan_management")


def _multi_lending(b: _Builder) -> None:
    b.account("credit_card", b.pick(0), 36, "N" * 24, amount="10000.00", balance="800.00")
    lenders = (4, 4, 5, 6, 7)  # five loans at four institutions
    for months_ago, lender in zip((1, 2, 3, 4, 5), lenders, strict=True):
        b.account("consumer_loan", b.pick(lender), months_ago, "N" * months_ago, amount="8000.00")
    for days_ago, lender in ((15, 1), (50, 2), (125, 4), (160, 5)):
        b.inquiry(days_ago, b.pick(lender), "loan_approval")


def _many_queries(b: _Builder) -> None:
    b.account("credit_card", b.pick(0), 30, "N" * 24, amount="15000.00", balance="3000.00")
    b.account("consumer_loan", b.pick(1), 10, "N" * 9, amount="20000.00", balance="12000.00")
    for number, days_ago in enumerate((3, 9, 15, 22, 30, 41, 55, 70)):
        b.inquiry(days_ago, b.pick(2 + number % 6), "loan_approval")
    b.inquiry(12, b.pick(2), "credit_card_approval")
    b.inquiry(44, b.pick(3), "credit_card_approval")
    b.inquiry(130, b.pick(4), "loan_approval")


def _thin_file(_b: _Builder) -> None:
    pass


_PROFILES: Final = {
    "clean": _clean,
    "current_overdue": _current_overdue,
    "multi_lending": _multi_lending,
    "many_queries": _many_queries,
    "thin_file": _thin_file,
}


def build_report(
    request: ReportRequest, as_of: dt.date, report_id: str, report_time: str
) -> dict[str, Any]:
    """Pure: the report of `request.id_number` drawn up on `as_of` (see the module's table)."""
    profile = profile_for(request.id_number, request.name)
    builder = _Builder(request.id_number, as_of)
    _PROFILES[profile](builder)
    return {
        "header": {
            "report_id": report_id,
            "report_time": report_time,
            "query_id": request.query_id,
            "query_reason": request.purpose,
            "reporting_institution": "fake credit reference center",
        },
        "subject": {
            "name_masked": mask_name(request.name),
            "id_type": "resident_id",
            "id_number_masked": mask_id_number(request.id_number),
        },
        "summary": {
            "account_count": len(builder.accounts),
            "inquiry_count": len(builder.inquiries),
        },
        "credit_accounts": builder.accounts,
        "inquiries": builder.inquiries,
        "public_records": [],
    }


# ---- the server ------------------------------------------------------------------------


class BureauMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.queries = Counter(
            "fake_bureau_queries_total",
            "Report queries to the fake credit bureau by outcome.",
            ["outcome"],
            registry=registry,
        )
        for outcome in (*OUTCOMES, "bad_request"):
            self.queries.labels(outcome)  # every series exists from the start, at zero


class Bureau(FakeState[QueryRecord, BureauMetrics]):
    """The fake's state: every query received (`records`), in order, and the knobs in force."""

    async def query(self, body: ReportRequest) -> tuple[QueryRecord, dict[str, Any]]:
        knobs = self.knobs  # as at arrival: the hang the caller sees is the one it drew
        await asyncio.sleep(knobs.latency_ms / 1000)
        outcome = decide(knobs, self.rng.random())
        now = dt.datetime.now(SHANGHAI)
        as_of = body.as_of or now.date()
        report_id = f"R{as_of:%Y%m%d}{len(self.records) + 1:08d}"
        report_time = f"{as_of.isoformat()}T{now.time().isoformat(timespec='seconds')}+08:00"
        record = QueryRecord(
            query_id=body.query_id,
            id_number_masked=mask_id_number(body.id_number),
            name_masked=mask_name(body.name),
            purpose=body.purpose,
            profile=profile_for(body.id_number, body.name),
            outcome=outcome,
            report_id=report_id,
            received_at=now.isoformat(timespec="milliseconds"),
        )
        self.records.append(record)
        await self.journal.append(record)
        return record, build_report(body, as_of, report_id, report_time)


BUREAU = web.AppKey("bureau", Bureau)

_report_decoder = msgspec.json.Decoder(ReportRequest)


async def reports(request: web.Request) -> web.StreamResponse:
    bureau = request.app[BUREAU]
    metrics = bureau.metrics
    try:
        body = await read_json(request, _report_decoder)
        if not id_number_check_ok(body.id_number):
            raise BadRequest("invalid_id_number", "the ID number's check character is wrong")
    except (BadRequest, msgspec.MsgspecError):
        metrics.queries.labels("bad_request").inc()
        raise
    hang_s = bureau.knobs.timeout_hang_s
    record, report = await bureau.query(body)
    metrics.queries.labels(record.outcome).inc()
    if record.outcome == "failed":
        detail = "the credit reference service is busy; query again later"
        return json_response({"error": "bureau_unavailable", "detail": detail}, 503)
    if record.outcome == "timeout":
        await asyncio.sleep(hang_s)
    return json_response(report)


class VerifyRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Four-factor identity verification (四要素核验): name, ID number, phone, card."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    id_number: Annotated[str, msgspec.Meta(min_length=18, max_length=18)]
    phone: Annotated[str, msgspec.Meta(pattern=r"^1[3-9][0-9]{9}$")]
    bank_card: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{12,19}$")]


_verify_decoder = msgspec.json.Decoder(VerifyRequest)


async def verify(request: web.Request) -> web.StreamResponse:
    """`POST /verify/v1/four-factors` -> {"verified": bool, "mismatch": [fields]}.

    Deterministic test rules: a phone or a card ending in 0000 does not belong to
    the person, nor does the name 不符; everything else matches. Latency applies.
    """
    body = await read_json(request, _verify_decoder)
    await asyncio.sleep(request.app[BUREAU].knobs.latency_ms / 1000)
    mismatch = [
        field
        for field, wrong in (
            ("name", body.name == "不符"),
            ("phone", body.phone.endswith("0000")),
            ("bank_card", body.bank_card.endswith("0000")),
        )
        if wrong
    ]
    return json_response({"verified": not mismatch, "mismatch": mismatch})


FAKE: FakeSpec[QueryRecord, BureauMetrics, Bureau] = FakeSpec(
    name="fake credit bureau",
    env_prefix="FAKE_BUREAU",
    default_port=18603,
    default_record_file=".run/fake-bureau/queries.jsonl",
    default_knobs=Knobs(latency_ms=50),
    supported_knobs=frozenset({"latency_ms", "fail_ratio", "timeout_ratio", "timeout_hang_s"}),
    record_type=QueryRecord,
    records_route="/fake/queries",
    state_key=BUREAU,
    new_metrics=BureauMetrics,
    new_state=Bureau,
    routes=(web.post("/bureau/v1/reports", reports), web.post("/verify/v1/four-factors", verify)),
)

if __name__ == "__main__":
    FAKE.main()
