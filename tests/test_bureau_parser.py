"""The bureau report parser: each profile of the fake read into the expected indicators.

Sample reports are written out here (as of 2026-05-20) and the fake's own
builder is held against the same expectations on awkward dates (month ends, a
leap day, New Year). Hypothesis then drops optional parts of generated reports
(the parser must read them) and required ones (it must refuse with
`BureauReportError`, never crash), and throws arbitrary JSON at it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.adapters.bureau import (
    BureauIndicators,
    BureauReportError,
    amount_fen,
    months_before,
    parse_report,
)
from loadtest.fakes.credit_bureau import ReportRequest, build_report

AS_OF = dt.date(2026, 5, 20)
HEADER = {
    "report_id": "R2026052000000001",
    "report_time": "2026-05-20T09:30:00+08:00",
    "query_reason": "loan_approval",
}


def account(
    account_id: str,
    code: str,
    opened_on: str,
    end_month: str,
    statuses: str,
    overdue: tuple[str, int] = ("0.00", 0),
) -> dict[str, Any]:
    return {
        "account_id": account_id,
        "institution": {"code": code, "name": f"银行{code}"},
        "type": "consumer_loan",
        "currency": "CNY",
        "opened_on": opened_on,
        "closed_on": None,
        "loan_amount": "10000.00",
        "balance": "5000.00",
        "status": "overdue" if overdue[1] else "normal",
        "current_overdue": {"amount": overdue[0], "months": overdue[1]},
        "repayment_history": {"end_month": end_month, "statuses": statuses},
    }


def inquiry(day: str, code: str, reason: str = "loan_approval") -> dict[str, Any]:
    return {"date": day, "institution": {"code": code, "name": f"机构{code}"}, "reason": reason}


CLEAN = {
    "header": HEADER,
    "subject": {"name_masked": "张*", "id_type": "resident_id"},
    "credit_accounts": [
        account("A001", "B101", "2021-05-20", "2026-04", "NNNNN1" + "N" * 30),  # 1 in 2023-10
        account("A002", "B102", "2025-03-20", "2026-04", "N" * 13),
        account("A003", "B103", "2023-01-20", "2025-01", "N" * 23 + "C"),
    ],
    "inquiries": [
        inquiry("2026-04-17", "B104", "credit_card_approval"),
        inquiry("2026-04-30", "B101", "post_loan_management"),
        inquiry("2025-12-21", "B102"),
    ],
    "public_records": [],
}
CURRENT_OVERDUE = {
    "header": HEADER,
    "credit_accounts": [
        account("A001", "B101", "2022-05-20", "2026-04", "N" * 14 + "1" + "N" * 9),
        account("A002", "C201", "2024-09-20", "2026-04", "N" * 16 + "123", ("8650.37", 3)),
        account("A003", "B102", "2020-07-20", "2026-04", "N" * 24),
    ],
    "inquiries": [
        inquiry("2026-04-19", "C202"),
        inquiry("2026-05-08", "C201", "post_loan_management"),
    ],
}
MULTI_LENDING = {
    "header": HEADER,
    "credit_accounts": [
        account("A001", "B101", "2023-05-20", "2026-04", "N" * 24),
        account("A002", "C201", "2026-04-20", "2026-04", "N"),
        account("A003", "C201", "2026-03-20", "2026-04", "NN"),
        account("A004", "C202", "2026-02-20", "2026-04", "NNN"),
        account("A005", "C203", "2026-01-20", "2026-04", "NNNN"),
        account("A006", "T301", "2025-12-20", "2026-04", "NNNNN"),
    ],
    "inquiries": [
        inquiry("2026-05-05", "B102"),
        inquiry("2026-03-31", "B103"),
        inquiry("2026-01-15", "C201"),
        inquiry("2025-12-11", "C202"),
    ],
}
MANY_QUERIES = {
    "header": HEADER,
    "credit_accounts": [
        account("A001", "B101", "2023-11-20", "2026-04", "N" * 24),
        account("A002", "B102", "2025-07-20", "2026-04", "N" * 9),
    ],
    "inquiries": [
        *(
            inquiry(day, code)
            for day, code in [
                ("2026-05-17", "B103"),
                ("2026-05-11", "B104"),
                ("2026-05-05", "C201"),
                ("2026-04-28", "C202"),
                ("2026-04-20", "C203"),
                ("2026-04-09", "T301"),
                ("2026-03-26", "B103"),
                ("2026-03-11", "B104"),
            ]
        ),
        inquiry("2026-05-08", "B103", "credit_card_approval"),
        inquiry("2026-04-06", "B104", "credit_card_approval"),
        inquiry("2026-01-10", "C201"),
    ],
}
THIN_FILE = {"header": HEADER}  # a bureau omits empty sections


def indicators(**counts: int) -> BureauIndicators:
    base = {
        "accounts_total": 0,
        "overdue_accounts_24m": 0,
        "max_overdue_months_24m": 0,
        "current_overdue_fen": 0,
        "lenders_6m": 0,
        "queries_3m": 0,
    }
    return BureauIndicators(report_id=HEADER["report_id"], report_date=AS_OF, **(base | counts))


EXPECTED: dict[str, tuple[dict[str, Any], BureauIndicators]] = {
    "clean": (CLEAN, indicators(accounts_total=3)),
    "current_overdue": (
        CURRENT_OVERDUE,
        indicators(
            accounts_total=3,
            overdue_accounts_24m=2,
            max_overdue_months_24m=3,
            current_overdue_fen=865037,
            queries_3m=1,
        ),
    ),
    "multi_lending": (MULTI_LENDING, indicators(accounts_total=6, lenders_6m=4, queries_3m=2)),
    "many_queries": (MANY_QUERIES, indicators(accounts_total=2, queries_3m=8)),
    "thin_file": (THIN_FILE, indicators()),
}
BIRTH_YEAR = {
    "clean": 1988,
    "current_overdue": 1950,
    "multi_lending": 1951,
    "many_queries": 1952,
    "thin_file": 1953,
}


def id_number_born(year: int) -> str:
    first17 = f"110105{year:04d}0612123"
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    total = sum(int(d) * w for d, w in zip(first17, weights, strict=True))
    return first17 + "10X98765432"[total % 11]


@pytest.mark.parametrize("profile", list(EXPECTED))
def test_sample_report_of_each_profile(profile: str) -> None:
    raw, expected = EXPECTED[profile]
    assert parse_report(raw, AS_OF) == expected


@pytest.mark.parametrize("profile", list(EXPECTED))
@pytest.mark.parametrize(
    "as_of",
    [AS_OF, dt.date(2026, 3, 31), dt.date(2024, 2, 29), dt.date(2027, 1, 1), dt.date(2026, 12, 31)],
)
def test_the_fakes_report_reads_as_its_profile(profile: str, as_of: dt.date) -> None:
    request = ReportRequest("q-1", "张三", id_number_born(BIRTH_YEAR[profile]), "loan_approval")
    raw = build_report(request, as_of, "R1", f"{as_of.isoformat()}T10:00:00+08:00")
    expected = EXPECTED[profile][1]
    got = parse_report(raw, as_of)
    assert got == BureauIndicators(
        report_id="R1",
        report_date=as_of,
        **{name: getattr(expected, name) for name in COUNTS},
    )
    assert "110105" not in str(raw["subject"])  # the ID number is masked in the report


COUNTS = (
    "accounts_total",
    "overdue_accounts_24m",
    "max_overdue_months_24m",
    "current_overdue_fen",
    "lenders_6m",
    "queries_3m",
)


def test_windows_count_back_from_as_of_inclusive() -> None:
    raw = {
        "header": HEADER,
        "credit_accounts": [
            # 2024-06 is the 24th month back (counted); 2024-05 the 25th (not).
            account("A1", "B1", "2020-01-01", "2024-06", "4"),
            account("A2", "B2", "2020-01-01", "2024-05", "7"),
            account("A3", "B3", "2025-11-20", "2026-04", "N"),  # opened exactly 6 months back
            account("A4", "B4", "2025-11-19", "2026-04", "N"),  # a day earlier
            account("A5", "B5", "2026-05-21", "2026-05", "N"),  # after as_of
        ],
        "inquiries": [
            inquiry("2026-02-20", "B1"),  # exactly 3 months back: counted
            inquiry("2026-02-19", "B1"),
            inquiry("2026-05-21", "B1"),  # after as_of
            inquiry("2026-05-20", "B1"),
        ],
    }
    got = parse_report(raw, AS_OF)
    assert (got.overdue_accounts_24m, got.max_overdue_months_24m) == (1, 4)
    assert (got.lenders_6m, got.queries_3m, got.accounts_total) == (1, 2, 5)


def test_severe_statuses_and_current_overdue_without_history() -> None:
    no_history = account("A2", "B2", "2024-01-01", "2026-04", "N", ("120.5", 1))
    del no_history["repayment_history"]
    raw = {
        "header": HEADER,
        "credit_accounts": [account("A1", "B1", "2020-01-01", "2026-04", "NNDN"), no_history],
    }
    got = parse_report(raw, AS_OF)
    assert (got.overdue_accounts_24m, got.max_overdue_months_24m) == (2, 7)
    assert got.current_overdue_fen == 12050


@pytest.mark.parametrize(
    ("text", "fen"),
    [("0", 0), ("12", 1200), ("8650.37", 865037), ("0.005", 1), ("0.004", 0), ("10.1", 1010)],
)
def test_amounts_are_read_into_fen_exactly(text: str, fen: int) -> None:
    assert amount_fen(text) == fen


@pytest.mark.parametrize("text", ["", "-1.00", "1,000.00", "1e3", "01.00", " 1.00", "1.0000000"])
def test_bad_amounts_are_refused(text: str) -> None:
    with pytest.raises(BureauReportError):
        amount_fen(text)


@pytest.mark.parametrize(
    "change",
    [
        lambda r: r.pop("header"),
        lambda r: r["header"].pop("report_time"),
        lambda r: r["header"].update(report_time="yesterday"),
        lambda r: r["header"].update(report_time="2026-02-30T10:00:00+08:00"),
        lambda r: r["credit_accounts"][0].pop("opened_on"),
        lambda r: r["credit_accounts"][0].update(opened_on="2026/01/01"),
        lambda r: r["credit_accounts"][0]["current_overdue"].update(amount=86.5),
        lambda r: r["credit_accounts"][0]["repayment_history"].update(statuses="NNX"),
        lambda r: r["credit_accounts"][0]["repayment_history"].update(end_month="2026-13"),
        lambda r: r["credit_accounts"][0].update(institution="B101"),
        lambda r: r["inquiries"].append({"date": "2026-05-01"}),
        lambda r: r.update(credit_accounts={"A001": {}}),
    ],
)
def test_malformed_reports_are_refused(change: Any) -> None:
    raw = _copy(CURRENT_OVERDUE)
    change(raw)
    with pytest.raises(BureauReportError):
        parse_report(raw, AS_OF)


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy(item) for item in value]
    return value


def test_months_before_clamps_to_the_month_end() -> None:
    assert months_before(dt.date(2026, 5, 31), 3) == dt.date(2026, 2, 28)
    assert months_before(dt.date(2024, 5, 31), 3) == dt.date(2024, 2, 29)
    assert months_before(dt.date(2026, 1, 15), 1) == dt.date(2025, 12, 15)
    assert months_before(dt.date(2026, 1, 15), 24) == dt.date(2024, 1, 15)


# ---- hypothesis ------------------------------------------------------------------------

_dates = st.dates(min_value=dt.date(2010, 1, 1), max_value=dt.date(2030, 12, 31))
_months = st.builds(lambda y, m: f"{y:04d}-{m:02d}", st.integers(2010, 2030), st.integers(1, 12))
_amounts = st.decimals(min_value=0, max_value=10**7, places=2).map(lambda d: f"{d:.2f}")
_institution = st.fixed_dictionaries(
    {"code": st.sampled_from(["B101", "B102", "C201", "C202", "T301"])},
    optional={"name": st.text(max_size=8)},
)
_account = st.fixed_dictionaries(
    {"account_id": st.text(min_size=1, max_size=6), "opened_on": _dates.map(str)},
    optional={
        "institution": _institution,
        "current_overdue": st.fixed_dictionaries(
            {}, optional={"amount": _amounts, "months": st.integers(0, 12)}
        ),
        "repayment_history": st.fixed_dictionaries(
            {"end_month": _months, "statuses": st.text(alphabet="N*CG/#1234567DZB", max_size=60)},
            optional={"start_month": _months},
        ),
        "closed_on": st.one_of(st.none(), _dates.map(str)),
        "balance": _amounts,
        "type": st.sampled_from(["credit_card", "consumer_loan", "mortgage"]),
        "status": st.sampled_from(["normal", "overdue", "settled"]),
        "vendor_extension": st.integers(),
    },
)
_inquiry = st.fixed_dictionaries(
    {
        "date": _dates.map(str),
        "reason": st.sampled_from(["loan_approval", "credit_card_approval", "self_query"]),
    },
    optional={"institution": _institution},
)
_report = st.fixed_dictionaries(
    {
        "header": st.fixed_dictionaries(
            {
                "report_id": st.text(min_size=1, max_size=20),
                "report_time": _dates.map(lambda d: f"{d}T10:00:00+08:00"),
            },
            optional={"query_id": st.text(max_size=10), "query_reason": st.just("loan_approval")},
        )
    },
    optional={
        "credit_accounts": st.lists(_account, max_size=8),
        "inquiries": st.lists(_inquiry, max_size=12),
        "subject": st.fixed_dictionaries({}, optional={"name_masked": st.text(max_size=4)}),
        "summary": st.dictionaries(st.text(max_size=8), st.integers(), max_size=3),
        "public_records": st.just([]),
    },
)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
_REQUIRED = [
    ("header",),
    ("header", "report_id"),
    ("header", "report_time"),
    ("credit_accounts", 0, "account_id"),
    ("credit_accounts", 0, "opened_on"),
    ("inquiries", 0, "date"),
    ("inquiries", 0, "reason"),
]
_settings = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_settings
@given(raw=_report, as_of=_dates)
def test_parser_reads_any_report_missing_optional_parts(
    raw: dict[str, Any], as_of: dt.date
) -> None:
    got = parse_report(raw, as_of)
    accounts = raw.get("credit_accounts", [])
    assert got.accounts_total == len(accounts)
    assert got.report_date.isoformat() == raw["header"]["report_time"][:10]
    assert 0 <= got.overdue_accounts_24m <= got.accounts_total
    assert 0 <= got.max_overdue_months_24m <= 7
    assert (got.overdue_accounts_24m == 0) == (
        got.max_overdue_months_24m == 0 and got.current_overdue_fen == 0
    )
    assert 0 <= got.lenders_6m <= got.accounts_total
    assert 0 <= got.queries_3m <= len(raw.get("inquiries", []))
    owed_yuan = sum(
        (Decimal(a.get("current_overdue", {}).get("amount", "0")) for a in accounts), Decimal(0)
    )
    assert got.current_overdue_fen == int(owed_yuan * 100)  # two decimals: exact


@_settings
@given(raw=_report, path=st.sampled_from(_REQUIRED))
def test_parser_refuses_a_report_missing_a_required_part(
    raw: dict[str, Any], path: tuple[str | int, ...]
) -> None:
    parent: Any = raw
    for step in path[:-1]:
        try:
            parent = parent[step]
        except (KeyError, IndexError):
            return  # the optional part holding it is absent: nothing to remove
    parent.pop(path[-1])
    with pytest.raises(BureauReportError):
        parse_report(raw, AS_OF)


@_settings
@given(raw=_json)
def test_parser_never_crashes_on_arbitrary_json(raw: Any) -> None:
    with contextlib.suppress(BureauReportError):
        parse_report(raw, AS_OF)
