"""The credit bureau (征信): query a person's report, read it into a few standard indicators.

    BureauClient.report(query_id, name, id_number)
        POST {base_url}/bureau/v1/reports {"query_id", "name", "id_number", "purpose"}
        200 + a JSON object        -> BureauResult(OK, raw=<the report as sent>)
        time-out, 5xx, no connection, 4xx, unreadable or oversized body
                                   -> BureauResult(UNAVAILABLE, reason=...)   never raises

    parse_report(raw, as_of)   pure; the windows count back from `as_of`
        header.report_id, header.report_time ............ report_id, report_date
        credit_accounts[] ................................ accounts_total
            .repayment_history {end_month, statuses}  --> overdue_accounts_24m,
            .current_overdue {amount, months}              max_overdue_months_24m
            .current_overdue.amount (summed) ............. current_overdue_fen
            .opened_on, .institution.code ................ lenders_6m (distinct institutions)
        inquiries[] {date, reason: "loan_approval"} ...... queries_3m

The raw report, bureau-like (unknown keys are ignored; bureaus add fields):

    {"header": {"report_id": "R2026...", "report_time": "2026-05-01T10:00:00+08:00", ...},
     "credit_accounts": [{"account_id": "A1", "institution": {"code": "B102", "name": ...},
                          "type": "consumer_loan", "opened_on": "2025-01-15",
                          "current_overdue": {"amount": "0.00", "months": 0},
                          "repayment_history": {"end_month": "2026-04", "statuses": "NNN1NN"}}],
     "inquiries": [{"date": "2026-04-03", "institution": {...}, "reason": "loan_approval"}]}

What may be absent, and what absence means (a bureau omits empty sections):

    required   header.report_id, header.report_time; per account: account_id, opened_on;
               per inquiry: date, reason
    optional   subject, summary, public_records (not read); credit_accounts, inquiries
               (absent = none); per account: institution (absent: not counted as a lender),
               current_overdue (absent = nothing overdue now), repayment_history
               (absent = no monthly record), closed_on, balance, credit_limit, status, type

Present but malformed (a string where an object belongs, a bad date or amount,
an unknown status character) is a `BureauReportError`: a report we cannot read
is never taken for a clean one. Amounts are decimal strings of yuan, read into
integer fen exactly (half-up past the fen); floats are refused.

Status history characters, oldest month first, the last one is `end_month`:

    N normal   * nothing due   C settled   G ended   / not opened   # unknown
    1..7 overdue that many months (7: 180 days or more)
    D repaid by the guarantor   Z settled with assets   B bad debt   (counted as 7)
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from decimal import Decimal
from typing import Annotated, Any, Final, Protocol

import aiohttp
import msgspec

from ledger.money import round_fen

PURPOSE_LOAN_APPROVAL: Final = "loan_approval"
REPORT_BYTES_MAX: Final = 1024 * 1024
_READ_CHUNK_BYTES: Final = 64 * 1024
ACCOUNTS_MAX: Final = 2000
INQUIRIES_MAX: Final = 5000
HISTORY_MONTHS_WINDOW: Final = 24
LENDERS_MONTHS_WINDOW: Final = 6
QUERIES_MONTHS_WINDOW: Final = 3
OVERDUE_MONTHS_SEVERE: Final = 7

_STATUS_NOT_OVERDUE: Final = frozenset("N*CG/#")
_STATUS_SEVERE: Final = frozenset("DZB")
_MONTH_RE: Final = re.compile(r"^([0-9]{4})-(0[1-9]|1[0-2])$")
_REPORT_TIME_RE: Final = re.compile(r"^([0-9]{4}-[0-9]{2}-[0-9]{2})[T ]")
_AMOUNT_RE: Final = re.compile(r"^(0|[1-9][0-9]{0,12})(\.[0-9]{1,6})?$")
_FEN_PER_YUAN: Final = Decimal(100)


class BureauReportError(ValueError):
    """A report that cannot be read: a required part is missing or a present one is malformed."""


# ---- the raw report, as far as we read it ----------------------------------------------


class _Header(msgspec.Struct, frozen=True):
    report_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    report_time: str  # RFC 3339 with offset; only its date is used


class _Institution(msgspec.Struct, frozen=True):
    code: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    name: str = ""


class _CurrentOverdue(msgspec.Struct, frozen=True):
    amount: str = "0.00"
    months: Annotated[int, msgspec.Meta(ge=0, le=999)] = 0


class _History(msgspec.Struct, frozen=True):
    end_month: str  # YYYY-MM, the month of the last status character
    statuses: Annotated[str, msgspec.Meta(max_length=1200)]


class _Account(msgspec.Struct, frozen=True):
    account_id: str
    opened_on: dt.date
    institution: _Institution | None = None
    current_overdue: _CurrentOverdue | None = None
    repayment_history: _History | None = None


class _Inquiry(msgspec.Struct, frozen=True):
    date: dt.date
    reason: str


class _RawReport(msgspec.Struct, frozen=True):
    header: _Header
    credit_accounts: Annotated[list[_Account], msgspec.Meta(max_length=ACCOUNTS_MAX)] = []
    inquiries: Annotated[list[_Inquiry], msgspec.Meta(max_length=INQUIRIES_MAX)] = []


class BureauIndicators(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What the decision engine reads of a report. Counts and fen, never floats."""

    report_id: str
    report_date: dt.date
    accounts_total: int
    overdue_accounts_24m: int  # accounts with any overdue month in the last 24 months
    max_overdue_months_24m: int  # the worst status in that window (7 = 180+ days)
    current_overdue_fen: int  # overdue now, summed over accounts
    lenders_6m: int  # distinct institutions with an account opened in the last 6 months
    queries_3m: int  # loan-approval inquiries in the last 3 months


def parse_report(raw: dict[str, Any], as_of: dt.date) -> BureauIndicators:
    """The indicators of `raw` counted back from `as_of`; `BureauReportError` if unreadable."""
    try:
        report = msgspec.convert(raw, _RawReport)
    except msgspec.ValidationError as exc:
        raise BureauReportError(f"bureau report: {exc}") from None
    match = _REPORT_TIME_RE.match(report.header.report_time)
    try:
        report_date = dt.date.fromisoformat(match.group(1)) if match else None
    except ValueError:
        report_date = None
    if report_date is None:
        raise BureauReportError("bureau report: header.report_time is not an RFC 3339 time")
    overdue_accounts, worst_months, overdue_fen = 0, 0, 0
    lenders: set[str] = set()
    six_months_ago = months_before(as_of, LENDERS_MONTHS_WINDOW)
    for number, account in enumerate(report.credit_accounts):
        months, fen = _account_overdue(account, as_of, f"$.credit_accounts[{number}]")
        if months > 0 or fen > 0:
            overdue_accounts += 1
        worst_months = max(worst_months, months)
        overdue_fen += fen
        if account.institution is not None and six_months_ago <= account.opened_on <= as_of:
            lenders.add(account.institution.code)
    three_months_ago = months_before(as_of, QUERIES_MONTHS_WINDOW)
    queries = sum(
        1
        for inquiry in report.inquiries
        if inquiry.reason == PURPOSE_LOAN_APPROVAL and three_months_ago <= inquiry.date <= as_of
    )
    indicators = BureauIndicators(
        report_id=report.header.report_id,
        report_date=report_date,
        accounts_total=len(report.credit_accounts),
        overdue_accounts_24m=overdue_accounts,
        max_overdue_months_24m=worst_months,
        current_overdue_fen=overdue_fen,
        lenders_6m=len(lenders),
        queries_3m=queries,
    )
    assert indicators.overdue_accounts_24m > 0 or indicators.max_overdue_months_24m == 0
    assert indicators.lenders_6m <= indicators.accounts_total
    return indicators


def _account_overdue(account: _Account, as_of: dt.date, where: str) -> tuple[int, int]:
    """(worst overdue months in the 24-month window, overdue fen now) of one account."""
    worst_months, fen = 0, 0
    if account.current_overdue is not None:
        fen = amount_fen(account.current_overdue.amount, f"{where}.current_overdue.amount")
        worst_months = min(account.current_overdue.months, OVERDUE_MONTHS_SEVERE)
    history = account.repayment_history
    if history is not None:
        worst_months = max(worst_months, _history_worst(history, as_of, where))
    return worst_months, fen


def _history_worst(history: _History, as_of: dt.date, where: str) -> int:
    match = _MONTH_RE.match(history.end_month)
    if match is None:
        raise BureauReportError(
            f"bureau report: {where}.repayment_history.end_month is not YYYY-MM"
        )
    end_index = int(match.group(1)) * 12 + int(match.group(2)) - 1
    as_of_index = as_of.year * 12 + as_of.month - 1
    worst = 0
    last = len(history.statuses) - 1
    for position, status in enumerate(history.statuses):
        month_index = end_index - (last - position)
        in_window = as_of_index - HISTORY_MONTHS_WINDOW < month_index <= as_of_index
        months = _status_months(status, where)
        if in_window:
            worst = max(worst, months)
    return worst


def _status_months(status: str, where: str) -> int:
    if status in _STATUS_NOT_OVERDUE:
        return 0
    if status in _STATUS_SEVERE:
        return OVERDUE_MONTHS_SEVERE
    if "1" <= status <= "7":
        return int(status)
    raise BureauReportError(
        f"bureau report: {where}.repayment_history.statuses has an unknown status {status!r}"
    )


def amount_fen(text: str, where: str = "amount") -> int:
    """A bureau amount in yuan ("8650.37", "12", "0.005") to integer fen, half-up past the fen."""
    if _AMOUNT_RE.match(text) is None:
        raise BureauReportError(f"bureau report: {where} {text[:32]!r} is not an amount in yuan")
    return round_fen(Decimal(text) * _FEN_PER_YUAN)


def months_before(day: dt.date, months: int) -> dt.date:
    """The same day `months` calendar months earlier, clamped: 31 May less 3 is 28 or 29 Feb."""
    assert months >= 0
    index = day.year * 12 + day.month - 1 - months
    year, month = divmod(index, 12)
    month += 1
    next_month = dt.date(year + (month == 12), month % 12 + 1, 1)
    last_day = (next_month - dt.timedelta(days=1)).day
    return dt.date(year, month, min(day.day, last_day))


# ---- the HTTP adapter ------------------------------------------------------------------


class BureauOutcome(enum.Enum):
    OK = "ok"
    UNAVAILABLE = "unavailable"  # time-out, 5xx, no connection, refused or unreadable: ask later


class BureauResult(msgspec.Struct, frozen=True):
    outcome: BureauOutcome
    raw: dict[str, Any] | None = None  # the report as sent, when OK
    reason: str | None = None  # why UNAVAILABLE: TimeoutError, HTTP_503, UNREADABLE_REPORT, ...


class CreditBureau(Protocol):
    async def report(self, query_id: str, name: str, id_number: str) -> BureauResult: ...


class _TooLarge(Exception):
    pass


class BureauClient:
    """The HTTP adapter. `timeout_s` bounds the whole call, connect and body included.

    It never retries and never raises for a network problem: UNAVAILABLE leaves
    the application pending until the caller asks again (with a new query_id; a
    bureau counts every query on the person's report, so ask sparingly).
    """

    def __init__(self, session: aiohttp.ClientSession, base_url: str, timeout_s: float) -> None:
        assert timeout_s > 0
        self._session = session
        self._url = base_url.rstrip("/") + "/bureau/v1/reports"
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def report(self, query_id: str, name: str, id_number: str) -> BureauResult:
        body = {
            "query_id": query_id,
            "name": name,
            "id_number": id_number,
            "purpose": PURPOSE_LOAN_APPROVAL,
        }
        try:
            async with self._session.post(self._url, json=body, timeout=self._timeout) as resp:
                status = resp.status
                data = await _read_bounded(resp)
        except _TooLarge:
            return BureauResult(BureauOutcome.UNAVAILABLE, reason="REPORT_TOO_LARGE")
        except (TimeoutError, aiohttp.ClientError) as exc:
            return BureauResult(BureauOutcome.UNAVAILABLE, reason=type(exc).__name__)
        if status != 200:
            return BureauResult(BureauOutcome.UNAVAILABLE, reason=f"HTTP_{status}")
        try:
            raw = msgspec.json.decode(data)
        except msgspec.DecodeError:
            raw = None
        if not isinstance(raw, dict):
            return BureauResult(BureauOutcome.UNAVAILABLE, reason="UNREADABLE_REPORT")
        return BureauResult(BureauOutcome.OK, raw=raw)


async def _read_bounded(resp: aiohttp.ClientResponse) -> bytes:
    if resp.content_length is not None and resp.content_length > REPORT_BYTES_MAX:
        raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(_READ_CHUNK_BYTES):
        size += len(chunk)
        if size > REPORT_BYTES_MAX:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


class IdentityCheck(msgspec.Struct, frozen=True):
    """Four-factor verification: `verified` None when the verifier could not answer."""

    verified: bool | None
    mismatch: list[str] = []


class IdentityVerifier(Protocol):
    async def verify(
        self, name: str, id_number: str, phone: str, bank_card: str
    ) -> IdentityCheck: ...


class _VerifyAnswer(msgspec.Struct):
    verified: bool
    mismatch: list[str] = []


_verify_decoder = msgspec.json.Decoder(_VerifyAnswer)


class FourFactorClient:
    """`POST /verify/v1/four-factors` of the verification service (the fake bureau's, locally)."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, timeout_s: float) -> None:
        assert timeout_s > 0
        self._session = session
        self._url = base_url.rstrip("/") + "/verify/v1/four-factors"
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def verify(self, name: str, id_number: str, phone: str, bank_card: str) -> IdentityCheck:
        body = {"name": name, "id_number": id_number, "phone": phone, "bank_card": bank_card}
        try:
            async with self._session.post(self._url, json=body, timeout=self._timeout) as resp:
                raw = await resp.read()
                if resp.status != 200:
                    return IdentityCheck(None)
        except (aiohttp.ClientError, TimeoutError):
            return IdentityCheck(None)
        try:
            answer = _verify_decoder.decode(raw)
        except msgspec.DecodeError:
            return IdentityCheck(None)
        return IdentityCheck(answer.verified, list(answer.mismatch))
