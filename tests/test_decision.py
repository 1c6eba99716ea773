"""The decision engine: a decision table per rule, white lists, gray release, bad rule sets.

Everything runs on the shipped demo rule sets (engine/rulesets), so the tables
below are also the documentation of what the demo products decide. No database.
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest

from engine.adapters.bureau import BureauIndicators
from engine.origination.decision import (
    RULESETS_DIRECTORY,
    ApplicantFacts,
    Decision,
    RuleSet,
    RuleSetError,
    WhitelistTerms,
    choose_rule_set,
    decide,
    gray_bucket,
    latest_rule_set,
    load_rule_sets,
    rule_set_from_json,
)

RULE_SETS = load_rule_sets(RULESETS_DIRECTORY)
CREDIT_V1 = RULE_SETS["demo-credit"]["v1"]
CREDIT_V2 = RULE_SETS["demo-credit"]["v2"]
CONSUMER_V1 = RULE_SETS["demo-consumer"]["v1"]
CLEAN = BureauIndicators(
    report_id="R1",
    report_date=dt.date(2026, 5, 20),
    accounts_total=3,
    overdue_accounts_24m=0,
    max_overdue_months_24m=0,
    current_overdue_fen=0,
    lenders_6m=0,
    queries_3m=0,
)
WHITE = WhitelistTerms(
    limit_fen=80_000_00,
    annual_rate_pct=Decimal("4.35"),
    repayment_methods=["equal_installment", "bullet"],
    max_term_months=12,
)


def facts(**changes: Any) -> ApplicantFacts:
    """A 35-year-old with a clean report asking 30000.00 over 12 months; `bureau_*` keys
    change one indicator of the report."""
    bureau_changes = {
        k[len("bureau_") :]: changes.pop(k) for k in list(changes) if k.startswith("bureau_")
    }
    base: dict[str, Any] = {
        "age": 35,
        "id_valid": True,
        "blacklisted": False,
        "internal_overdue_loans": 0,
        "requested_amount_fen": 30_000_00,
        "requested_term_months": 12,
        "repayment_method": "equal_installment",
        "bureau": msgspec.structs.replace(CLEAN, **bureau_changes),
    }
    return ApplicantFacts(**(base | changes))


# (what changes, outcome, reasons) under demo-credit v1
CREDIT_TABLE: list[tuple[dict[str, Any], str, list[str]]] = [
    ({}, "pending_review", []),
    ({"age": 17}, "refused", ["AGE_OUT_OF_BAND"]),
    ({"age": 18}, "pending_review", []),
    ({"age": 65}, "pending_review", []),
    ({"age": 66}, "refused", ["AGE_OUT_OF_BAND"]),
    ({"id_valid": False}, "refused", ["ID_INVALID"]),
    ({"id_expired": True}, "refused", ["ID_EXPIRED"]),
    ({"blacklisted": True}, "refused", ["BLACKLISTED"]),
    ({"internal_overdue_loans": 1}, "refused", ["INTERNAL_OVERDUE"]),
    ({"bureau_current_overdue_fen": 1}, "refused", ["BUREAU_CURRENT_OVERDUE"]),
    ({"bureau_overdue_accounts_24m": 1, "bureau_max_overdue_months_24m": 2}, "pending_review", []),
    (
        {"bureau_overdue_accounts_24m": 1, "bureau_max_overdue_months_24m": 3},
        "refused",
        ["BUREAU_SEVERE_OVERDUE_24M"],
    ),
    ({"bureau_overdue_accounts_24m": 2, "bureau_max_overdue_months_24m": 1}, "pending_review", []),
    (
        {"bureau_overdue_accounts_24m": 3, "bureau_max_overdue_months_24m": 1},
        "refused",
        ["BUREAU_FREQUENT_OVERDUE_24M"],
    ),
    ({"bureau_lenders_6m": 3}, "pending_review", []),
    ({"bureau_lenders_6m": 4}, "refused", ["MULTI_LENDING"]),
    ({"bureau_queries_3m": 5}, "pending_review", []),
    ({"bureau_queries_3m": 6}, "refused", ["BUREAU_QUERIES_3M"]),
    ({"bureau_accounts_total": 0}, "pending_review", ["THIN_FILE"]),
    (
        {"age": 16, "blacklisted": True, "bureau_current_overdue_fen": 500, "bureau_lenders_6m": 9},
        "refused",
        ["AGE_OUT_OF_BAND", "BLACKLISTED", "BUREAU_CURRENT_OVERDUE", "MULTI_LENDING"],
    ),
    ({"bureau_accounts_total": 0, "bureau_queries_3m": 7}, "refused", ["BUREAU_QUERIES_3M"]),
]


@pytest.mark.parametrize(("changes", "outcome", "reasons"), CREDIT_TABLE)
def test_demo_credit_decision_table(
    changes: dict[str, Any], outcome: str, reasons: list[str]
) -> None:
    decision = decide(CREDIT_V1, facts(**changes))
    assert (decision.outcome, decision.reasons) == (outcome, reasons)
    assert (decision.product_code, decision.rule_set_version) == ("demo-credit", "v1")
    if outcome == "refused":
        assert decision.limit_fen is None and decision.repayment_methods == []


@pytest.mark.parametrize(
    ("changes", "outcome", "reasons"),
    [
        ({"age": 19}, "refused", ["AGE_OUT_OF_BAND"]),
        ({"age": 20}, "pending_review", []),
        ({"age": 56}, "refused", ["AGE_OUT_OF_BAND"]),
        ({"bureau_lenders_6m": 3}, "refused", ["MULTI_LENDING"]),
        ({"bureau_queries_3m": 5}, "refused", ["BUREAU_QUERIES_3M"]),
        (
            {"bureau_overdue_accounts_24m": 1, "bureau_max_overdue_months_24m": 2},
            "refused",
            ["BUREAU_SEVERE_OVERDUE_24M"],
        ),
        ({"requested_amount_fen": 50_000_01}, "pending_review", ["LARGE_REQUEST"]),
    ],
)
def test_demo_consumer_is_stricter(
    changes: dict[str, Any], outcome: str, reasons: list[str]
) -> None:
    decision = decide(CONSUMER_V1, facts(**changes))
    assert (decision.outcome, decision.reasons) == (outcome, reasons)


def test_the_candidate_refuses_fewer_queries() -> None:
    assert decide(CREDIT_V1, facts(bureau_queries_3m=4)).outcome == "pending_review"
    decision = decide(CREDIT_V2, facts(bureau_queries_3m=4))
    assert (decision.outcome, decision.reasons, decision.rule_set_version) == (
        "refused",
        ["BUREAU_QUERIES_3M"],
        "v2",
    )


def test_pre_approval_terms_follow_the_score_band() -> None:
    # score 600 +40 no overdue +20 two accounts or more +10 aged 30 or more = 670: top band
    big = facts(requested_amount_fen=300_000_00)
    assert decide(CREDIT_V1, big) == Decision(
        "pending_review",
        [],
        "demo-credit",
        "v1",
        limit_fen=100_000_00,
        annual_rate_pct="5.20",
        repayment_methods=["equal_installment", "equal_principal", "interest_only", "bullet"],
        max_term_months=24,
        score=670,
        face_to_face=["FACE_TO_FACE_NOT_WHITELISTED"],
    )
    thin = decide(
        CREDIT_V1, facts(age=25, requested_amount_fen=300_000_00, bureau_accounts_total=0)
    )
    assert (thin.score, thin.limit_fen, thin.annual_rate_pct, thin.reasons) == (
        640,
        50_000_00,
        "6.60",
        ["THIN_FILE"],
    )
    queried = decide(CREDIT_V1, facts(age=25, requested_amount_fen=300_000_00, bureau_queries_3m=3))
    assert (queried.score, queried.limit_fen, queried.annual_rate_pct) == (630, 20_000_00, "8.40")
    # the limit is never above what was asked
    assert decide(CREDIT_V1, facts(requested_amount_fen=5_000_00)).limit_fen == 5_000_00


def test_a_white_listed_applicant_is_approved_with_personal_terms() -> None:
    decision = decide(CREDIT_V1, facts(whitelist=WHITE, requested_amount_fen=100_000_00))
    assert decision == Decision(
        "approved",
        [],
        "demo-credit",
        "v1",
        limit_fen=80_000_00,
        annual_rate_pct="4.35",
        repayment_methods=["equal_installment", "bullet"],
        max_term_months=12,
        whitelisted=True,
    )
    # capped to the request, and needing no bureau report nor passing its rules
    small = decide(CREDIT_V1, facts(whitelist=WHITE, requested_amount_fen=20_000_00, bureau=None))
    assert (small.outcome, small.limit_fen) == ("approved", 20_000_00)
    overdue_elsewhere = decide(CREDIT_V1, facts(whitelist=WHITE, bureau_current_overdue_fen=99))
    assert overdue_elsewhere.outcome == "approved"


def test_white_list_terms_are_capped_to_the_product() -> None:
    generous = WhitelistTerms(
        limit_fen=500_000_00,
        annual_rate_pct=Decimal("3.8"),
        repayment_methods=["interest_only", "bullet", "equal_principal"],
        max_term_months=36,
    )
    decision = decide(CONSUMER_V1, facts(whitelist=generous, requested_amount_fen=400_000_00))
    assert (decision.outcome, decision.limit_fen, decision.max_term_months) == (
        "approved",
        200_000_00,
        24,
    )
    assert decision.repayment_methods == ["bullet", "equal_principal"]
    assert decision.annual_rate_pct == "3.80"
    only_interest = msgspec.structs.replace(generous, repayment_methods=["interest_only"])
    queued = decide(CONSUMER_V1, facts(whitelist=only_interest))
    assert (queued.outcome, queued.reasons) == (
        "pending_review",
        ["WHITELIST_METHODS_NOT_IN_PRODUCT"],
    )


@pytest.mark.parametrize(
    ("changes", "reasons"),
    [
        ({"blacklisted": True}, ["BLACKLISTED"]),
        ({"age": 17}, ["AGE_OUT_OF_BAND"]),
        ({"id_valid": False}, ["ID_INVALID"]),
        ({"id_expired": True}, ["ID_EXPIRED"]),
        ({"internal_overdue_loans": 2}, ["INTERNAL_OVERDUE"]),
    ],
)
@pytest.mark.parametrize("bureau", [True, False])
@pytest.mark.parametrize("whitelist", [WHITE, None])
def test_hard_rules_refuse_everyone_and_never_queue(
    changes: dict[str, Any], reasons: list[str], bureau: bool, whitelist: WhitelistTerms | None
) -> None:
    extra: dict[str, Any] = {} if bureau else {"bureau": None}
    for rule_set in (CREDIT_V1, CREDIT_V2, CONSUMER_V1):
        decision = decide(rule_set, facts(whitelist=whitelist, **changes, **extra))
        assert (decision.outcome, decision.reasons) == ("refused", reasons)


def test_without_a_report_nobody_is_approved_by_the_rules() -> None:
    decision = decide(CREDIT_V1, facts(bureau=None))
    assert (decision.outcome, decision.reasons, decision.limit_fen) == ("pending_bureau", [], None)


def test_decision_encodes_to_json_for_the_record() -> None:
    decision = decide(CREDIT_V1, facts(bureau_accounts_total=0))
    encoded = json.loads(msgspec.json.encode(decision))
    assert encoded["outcome"] == "pending_review" and encoded["reasons"] == ["THIN_FILE"]
    assert msgspec.json.decode(msgspec.json.encode(decision), type=Decision) == decision


# ---- gray release ----------------------------------------------------------------------


def _application_ids(count: int) -> list[int]:
    """Snowflake-like ids: milliseconds, logical shard, worker, sequence (README)."""
    start_ms = 1_780_000_000_000 - 1_700_000_000_000
    return [
        ((start_ms + n * 7) << 22) | ((n * 37 % 4096) << 10) | (n % 128 << 3) for n in range(count)
    ]


@pytest.mark.parametrize("percent", [1, 10, 25, 50])
def test_gray_release_splits_within_tolerance(percent: int) -> None:
    ids = _application_ids(10_000)
    chosen = [choose_rule_set(i, CREDIT_V1, CREDIT_V2, percent) for i in ids]
    on_candidate = sum(rule_set is CREDIT_V2 for rule_set in chosen)
    expected = 10_000 * percent / 100
    tolerance = 5 * (10_000 * percent / 100 * (1 - percent / 100)) ** 0.5  # five sigma
    assert abs(on_candidate - expected) <= tolerance, (percent, on_candidate)


def test_gray_release_is_stable_and_grows_monotonically() -> None:
    ids = _application_ids(2_000)
    at_10 = {i for i in ids if choose_rule_set(i, CREDIT_V1, CREDIT_V2, 10) is CREDIT_V2}
    at_20 = {i for i in ids if choose_rule_set(i, CREDIT_V1, CREDIT_V2, 20) is CREDIT_V2}
    assert at_10 == {i for i in ids if choose_rule_set(i, CREDIT_V1, CREDIT_V2, 10) is CREDIT_V2}
    assert at_10 < at_20
    assert all(choose_rule_set(i, CREDIT_V1, CREDIT_V2, 0) is CREDIT_V1 for i in ids)
    assert all(choose_rule_set(i, CREDIT_V1, CREDIT_V2, 100) is CREDIT_V2 for i in ids)
    assert all(choose_rule_set(i, CREDIT_V1, None, 100) is CREDIT_V1 for i in ids)
    # another candidate draws another share
    assert {gray_bucket(i, "demo-credit/v2") for i in ids[:50]} != {
        gray_bucket(i, "demo-credit/v3") for i in ids[:50]
    }
    for bad in (-1, 100.5, float("nan")):
        with pytest.raises(ValueError, match="percent"):
            choose_rule_set(ids[0], CREDIT_V1, CREDIT_V2, bad)


# ---- loading ---------------------------------------------------------------------------


def test_the_shipped_rule_sets_load() -> None:
    assert {product: sorted(versions) for product, versions in RULE_SETS.items()} == {
        "demo-credit": ["v1", "v2"],
        "demo-consumer": ["v1"],
    }
    assert latest_rule_set(RULE_SETS["demo-credit"]) is CREDIT_V2
    assert isinstance(CREDIT_V1, RuleSet)


def _mutated(change: Any) -> bytes:
    data = json.loads((RULESETS_DIRECTORY / "demo-credit" / "v1.json").read_text())
    change(data)
    return json.dumps(data).encode()


def _rule(data: dict[str, Any], code: str) -> dict[str, Any]:
    return next(rule for rule in data["rules"] if rule["code"] == code)


BAD_RULE_SETS: list[tuple[str, Any, str]] = [
    ("unknown key", lambda d: d.update(owner="risk"), "unknown field `owner`"),
    ("unknown rule key", lambda d: d["rules"][0].update(weight=1), "unknown field `weight`"),
    (
        "unknown field",
        lambda d: _rule(d, "THIN_FILE").update(field="bureau.score"),
        "unknown field 'bureau.score'",
    ),
    (
        "unknown op",
        lambda d: _rule(d, "THIN_FILE").update(op="between"),
        "Invalid enum value 'between'",
    ),
    (
        "unknown action",
        lambda d: _rule(d, "THIN_FILE").update(action="warn"),
        "Invalid enum value 'warn'",
    ),
    ("order on a flag", lambda d: _rule(d, "ID_EXPIRED").update(op="gt"), "is true/false"),
    (
        "flag value on a count",
        lambda d: _rule(d, "THIN_FILE").update(value=True),
        "takes int values",
    ),
    (
        "count value on a flag",
        lambda d: _rule(d, "ID_EXPIRED").update(value=1),
        "takes bool values",
    ),
    (
        "in without a list",
        lambda d: _rule(d, "THIN_FILE").update(op="in"),
        "needs a non-empty list",
    ),
    (
        "in an empty list",
        lambda d: _rule(d, "THIN_FILE").update(op="in", value=[]),
        "needs a non-empty list",
    ),
    ("list for lt", lambda d: _rule(d, "THIN_FILE").update(op="lt", value=[1]), "single value"),
    ("float value", lambda d: _rule(d, "THIN_FILE").update(value=0.5), "got `float`"),
    ("lower-case code", lambda d: _rule(d, "THIN_FILE").update(code="thin"), "$.rules[11].code"),
    ("no blacklist rule", lambda d: d["rules"].remove(_rule(d, "BLACKLISTED")), "blacklist.hit"),
    (
        "blacklist reviewed",
        lambda d: _rule(d, "BLACKLISTED").update(action="review"),
        "must be a hard refusal",
    ),
    (
        "blacklist not hard",
        lambda d: _rule(d, "BLACKLISTED").update(hard=False),
        "must be a hard refusal",
    ),
    ("blacklist inverted", lambda d: _rule(d, "BLACKLISTED").update(value=False), "blacklist.hit"),
    ("no ID rule", lambda d: d["rules"].remove(_rule(d, "ID_INVALID")), "id.valid"),
    ("minors let in", lambda d: d["rules"][0].update(value=16), "applicant.age"),
    ("hard bureau rule", lambda d: _rule(d, "THIN_FILE").update(hard=True), "cannot be hard"),
    (
        "unknown method",
        lambda d: d["pre_approval"]["repayment_methods"].append("balloon"),
        "balloon",
    ),
    (
        "method not in product",
        lambda d: d["product"].update(repayment_methods=["bullet"]),
        "equal_installment",
    ),
    (
        "band over the product",
        lambda d: d["pre_approval"]["bands"][2].update(limit="400000.00"),
        "limit_max",
    ),
    (
        "bands not rising",
        lambda d: d["pre_approval"]["bands"][2].update(score_min=640),
        "go up strictly",
    ),
    ("float amount", lambda d: d["pre_approval"]["bands"][0].update(limit="20000"), "two decimals"),
    (
        "bad rate",
        lambda d: d["pre_approval"]["bands"][0].update(annual_rate_pct="8.4.0"),
        "annual_rate_pct",
    ),
    ("no bands", lambda d: d["pre_approval"].update(bands=[]), "at least one band"),
    (
        "term above product",
        lambda d: d["pre_approval"].update(max_term_months=48),
        "max_term_months",
    ),
    ("bad version", lambda d: d.update(version="1.0"), "$.version"),
    ("missing rules", lambda d: d.pop("rules"), "missing required field `rules`"),
]


@pytest.mark.parametrize(
    ("change", "message"),
    [(c, m) for _, c, m in BAD_RULE_SETS],
    ids=[n for n, _, _ in BAD_RULE_SETS],
)
def test_bad_rule_sets_are_refused_with_a_clear_error(change: Any, message: str) -> None:
    with pytest.raises(RuleSetError) as caught:
        rule_set_from_json(_mutated(change), "demo-credit/v1.json")
    assert message in str(caught.value)
    assert str(caught.value).startswith("demo-credit/v1.json: ")


def test_unreadable_json_is_refused() -> None:
    with pytest.raises(RuleSetError, match="JSON"):
        rule_set_from_json(b"{rules: []}", "x.json")


def test_the_loader_refuses_misplaced_files(tmp_path: Path) -> None:
    good = (RULESETS_DIRECTORY / "demo-credit" / "v1.json").read_bytes()
    (tmp_path / "demo-credit").mkdir()
    (tmp_path / "demo-credit" / "v1.json").write_bytes(good)
    assert list(load_rule_sets(tmp_path)) == ["demo-credit"]
    (tmp_path / "demo-credit" / "v3.json").write_bytes(good)  # says v1 inside
    with pytest.raises(RuleSetError, match="must match its path"):
        load_rule_sets(tmp_path)
    (tmp_path / "demo-credit" / "v3.json").unlink()
    (tmp_path / "demo-credit" / "v2.yaml").write_text("version: v2")
    with pytest.raises(RuleSetError, match=r"v<N>\.json"):
        load_rule_sets(tmp_path)
    (tmp_path / "demo-credit" / "v2.yaml").unlink()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "v1.json").write_bytes(good)  # product demo-credit in other/
    with pytest.raises(RuleSetError, match="must match its path"):
        load_rule_sets(tmp_path)


# ---- 面签: the rule sets say which approvals are signed face to face ---------------------


@pytest.mark.parametrize("rule_set", [CREDIT_V1, CREDIT_V2, CONSUMER_V1])
def test_pre_approved_without_a_white_list_entry_is_signed_face_to_face(
    rule_set: RuleSet,
) -> None:
    queued = decide(rule_set, facts())
    assert (queued.outcome, queued.face_to_face) == (
        "pending_review",
        ["FACE_TO_FACE_NOT_WHITELISTED"],
    )
    assert decide(rule_set, facts(whitelist=WHITE)).face_to_face == []
    refused = decide(rule_set, facts(bureau_current_overdue_fen=1))
    assert (refused.outcome, refused.face_to_face) == ("refused", [])


def test_a_hard_face_to_face_rule_reaches_white_listed_applicants() -> None:
    def large_in_person(data: dict[str, Any]) -> None:
        data["rules"].append(
            {"code": "LARGE_IN_PERSON", "field": "applicant.requested_amount_fen", "op": "gt",
             "value": 50_000_00, "action": "face_to_face", "hard": True}
        )  # fmt: skip

    rule_set = rule_set_from_json(_mutated(large_in_person), "demo-credit/v1.json")
    large = decide(rule_set, facts(whitelist=WHITE, requested_amount_fen=60_000_00))
    assert (large.outcome, large.face_to_face) == ("approved", ["LARGE_IN_PERSON"])
    small = decide(rule_set, facts(whitelist=WHITE, requested_amount_fen=40_000_00))
    assert (small.outcome, small.face_to_face) == ("approved", [])


def test_face_to_face_cannot_stand_in_for_a_hard_refusal() -> None:
    with pytest.raises(RuleSetError, match="must be a hard refusal"):
        rule_set_from_json(
            _mutated(lambda d: _rule(d, "ID_EXPIRED").update(action="face_to_face")),
            "demo-credit/v1.json",
        )
