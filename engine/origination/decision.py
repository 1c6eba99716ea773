"""The decision engine: rule sets as data, evaluated in process, pure.

    engine/rulesets/<product_code>/v<N>.json --load_rule_sets--> {product: {version: RuleSet}}
                                                  (strict: unknown keys, fields, ops refused)
    application_id --choose_rule_set(current, candidate, percent)--> RuleSet  (gray release)

    decide(rule_set, ApplicantFacts) -> Decision

        hard rules (applicant.age, id.*, blacklist.*, and any rule marked "hard")
            a "refuse" hit ................................. refused, reasons = codes hit
        white-listed
            a hard "review" hit ............................ pending_review, white-list terms
            otherwise .................................... approved, white-list terms
        no bureau report yet ............................... pending_bureau (never approved)
        every rule
            a "refuse" hit ................................. refused, reasons = codes hit
            otherwise .................................... pending_review, policy terms
                                                             (score band), reasons = review hits
        and, unless refused, the "face_to_face" hits of the rules that were evaluated
        (the hard ones for a white-listed applicant): the contract is signed in person
        (面签) before it can be signed online; `face_to_face` lists their codes

A decision with no report that is not `pending_bureau` needs none: the caller asks
the bureau only for `pending_bureau` (a hard refusal never causes a query).

A rule is `{code, field, op, value, action, hard?, description?}` and hits when
`<field> <op> <value>` holds, e.g. `bureau.queries_3m ge 6`. Amount fields end
in `_fen` and their values are integer fen. The loader makes three promises
hold for every rule set, so no file can break them:

    a blacklisted applicant is refused     a hard refuse rule hits blacklist.hit = true
    an invalid ID is refused               a hard refuse rule hits id.valid = false
    an applicant under 18 is refused       hard refuse rules on applicant.age hit 0..17

and rules on `blacklist.*`, `id.*` and `applicant.age` must be hard refusals
(never a review: such applicants are never queued); rules on `bureau.*` are
never hard (a white-listed applicant needs no report).

Terms offered (limit capped to the product and to the requested amount; rates
are Decimal strings):

    white-listed   the entry's limit, rate and term; its methods that the product allows
    others         pre_approval: score = score_base + points of each matching adjustment,
                   the highest band with score_min <= score (the lowest band below that)
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Final, Literal, get_args

import msgspec

from engine.adapters.bureau import BureauIndicators
from ledger.money import MoneyFormatError, format_rate_pct, parse_amount, parse_rate_pct
from ledger.schedule import RepaymentMethod

RULESETS_DIRECTORY: Final = Path(__file__).with_name("rulesets")
GRAY_BUCKETS: Final = 10_000  # percent in hundredths: 12.34 % is 1234 buckets
ADULT_AGE: Final = 18
TERM_MONTHS_MAX: Final = 600
RULES_MAX: Final = 200
RULE_SET_BYTES_MAX: Final = 256 * 1024

CODE_PATTERN: Final = r"^[A-Z][A-Z0-9_]{1,63}$"
VERSION_PATTERN: Final = r"^v[1-9][0-9]{0,5}$"
PRODUCT_PATTERN: Final = r"^[a-z0-9][a-z0-9-]{0,63}$"

Op = Literal["lt", "le", "gt", "ge", "eq", "ne", "in", "not_in"]
Action = Literal["refuse", "review", "face_to_face"]
Outcome = Literal["approved", "refused", "pending_review", "pending_bureau"]
RuleValue = int | bool | list[int | bool]
FieldValue = int | bool

_ORDER_OPS: Final = frozenset({"lt", "le", "gt", "ge"})
_LIST_OPS: Final = frozenset({"in", "not_in"})


class RuleSetError(ValueError):
    """A rule set refused at load: `source` names the file, `problems` every fault found."""

    def __init__(self, source: str, problems: list[str]) -> None:
        super().__init__(f"{source}: " + "; ".join(problems))
        self.source = source
        self.problems = problems


# ---- the rule-set file -----------------------------------------------------------------


class Rule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    code: Annotated[str, msgspec.Meta(pattern=CODE_PATTERN)]
    field: str
    op: Op
    value: RuleValue
    action: Action
    hard: bool = False  # applies to white-listed applicants too
    description: str = ""


class ScoreAdjustment(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    field: str
    op: Op
    value: RuleValue
    points: Annotated[int, msgspec.Meta(ge=-1000, le=1000)]


class Band(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    score_min: int
    limit: str  # yuan, "50000.00"
    annual_rate_pct: str  # "6.60"


class PreApproval(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    score_base: int
    bands: list[Band]
    repayment_methods: list[str]
    max_term_months: int
    adjustments: list[ScoreAdjustment] = []


class ProductEnvelope(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The most any decision under this rule set may offer (white-listed included)."""

    limit_max: str
    max_term_months: int
    repayment_methods: list[str]


class RuleSet(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    product_code: Annotated[str, msgspec.Meta(pattern=PRODUCT_PATTERN)]
    version: Annotated[str, msgspec.Meta(pattern=VERSION_PATTERN)]
    product: ProductEnvelope
    rules: Annotated[list[Rule], msgspec.Meta(max_length=RULES_MAX)]
    pre_approval: PreApproval
    description: str = ""


# ---- what is known of the applicant ----------------------------------------------------


class WhitelistTerms(msgspec.Struct, frozen=True):
    """A white-list entry's pre-approved terms (`engine.origination.lists.WhiteEntry`)."""

    limit_fen: int
    annual_rate_pct: Decimal
    repayment_methods: list[str]
    max_term_months: int


class ApplicantFacts(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    age: int  # completed years on the business date (engine.security.identity.age_on)
    id_valid: bool  # four factors verified
    blacklisted: bool
    internal_overdue_loans: int  # this person's loans with us now overdue
    requested_amount_fen: int
    requested_term_months: int
    repayment_method: str
    whitelist: WhitelistTerms | None = None
    bureau: BureauIndicators | None = None  # None: no report yet
    id_expired: bool = False  # the ID card's validity period has ended


class Decision(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    outcome: Outcome
    reasons: list[str]  # codes of the rules hit that decided it, in rule order
    product_code: str
    rule_set_version: str
    limit_fen: int | None = None
    annual_rate_pct: str | None = None
    repayment_methods: list[str] = []
    max_term_months: int | None = None
    score: int | None = None  # the pre-approval score, when the policy set the terms
    whitelisted: bool = False
    face_to_face: list[str] = []  # codes of the rules asking for 面签; empty: online only


@dataclass(frozen=True)
class _FieldSpec:
    kind: type[int] | type[bool]
    read: Callable[[ApplicantFacts], FieldValue | None]  # None: not known yet (no report)


def _bureau(read: Callable[[BureauIndicators], int]) -> Callable[[ApplicantFacts], int | None]:
    return lambda facts: None if facts.bureau is None else read(facts.bureau)


FIELDS: Final[Mapping[str, _FieldSpec]] = {
    "applicant.age": _FieldSpec(int, lambda f: f.age),
    "applicant.requested_amount_fen": _FieldSpec(int, lambda f: f.requested_amount_fen),
    "applicant.requested_term_months": _FieldSpec(int, lambda f: f.requested_term_months),
    "id.valid": _FieldSpec(bool, lambda f: f.id_valid),
    "id.expired": _FieldSpec(bool, lambda f: f.id_expired),
    "blacklist.hit": _FieldSpec(bool, lambda f: f.blacklisted),
    "whitelist.hit": _FieldSpec(bool, lambda f: f.whitelist is not None),
    "internal.overdue_loans": _FieldSpec(int, lambda f: f.internal_overdue_loans),
    "bureau.accounts_total": _FieldSpec(int, _bureau(lambda b: b.accounts_total)),
    "bureau.overdue_accounts_24m": _FieldSpec(int, _bureau(lambda b: b.overdue_accounts_24m)),
    "bureau.max_overdue_months_24m": _FieldSpec(int, _bureau(lambda b: b.max_overdue_months_24m)),
    "bureau.current_overdue_fen": _FieldSpec(int, _bureau(lambda b: b.current_overdue_fen)),
    "bureau.lenders_6m": _FieldSpec(int, _bureau(lambda b: b.lenders_6m)),
    "bureau.queries_3m": _FieldSpec(int, _bureau(lambda b: b.queries_3m)),
}
_ALWAYS_HARD_REFUSE: Final = ("applicant.age", "id.", "blacklist.")


def matches(op: Op, actual: FieldValue, value: RuleValue) -> bool:
    """`actual <op> value`; the loader has checked that the types fit."""
    if op in _LIST_OPS:
        assert isinstance(value, list)
        found = any(type(item) is type(actual) and item == actual for item in value)
        return found if op == "in" else not found
    assert not isinstance(value, list)
    if op == "eq":
        return actual == value
    if op == "ne":
        return actual != value
    assert not isinstance(actual, bool) and not isinstance(value, bool)
    if op == "lt":
        return actual < value
    if op == "le":
        return actual <= value
    if op == "gt":
        return actual > value
    return actual >= value


# ---- loading and checking --------------------------------------------------------------

_rule_set_decoder = msgspec.json.Decoder(RuleSet)


def rule_set_from_json(data: bytes, source: str) -> RuleSet:
    """Decode and check one rule set; `RuleSetError` naming `source` and every problem."""
    if len(data) > RULE_SET_BYTES_MAX:
        raise RuleSetError(source, [f"larger than {RULE_SET_BYTES_MAX} bytes"])
    try:
        rule_set = _rule_set_decoder.decode(data)
    except msgspec.DecodeError as exc:  # ValidationError included: it names the path
        message = str(exc)
        if message.endswith(".op`"):
            message += f" (ops: {', '.join(get_args(Op))})"
        elif message.endswith(".action`"):
            message += f" (actions: {', '.join(get_args(Action))})"
        raise RuleSetError(source, [message]) from None
    problems = check_rule_set(rule_set)
    if problems:
        raise RuleSetError(source, problems)
    return rule_set


def load_rule_sets(directory: Path = RULESETS_DIRECTORY) -> dict[str, dict[str, RuleSet]]:
    """Every `<product_code>/v<N>.json` under `directory`; any other file there is refused."""
    found: dict[str, dict[str, RuleSet]] = {}
    for product_dir in sorted(directory.iterdir()):
        if not product_dir.is_dir():
            raise RuleSetError(str(product_dir), ["not a product directory"])
        versions: dict[str, RuleSet] = {}
        for path in sorted(product_dir.iterdir()):
            if path.suffix != ".json" or re.fullmatch(VERSION_PATTERN, path.stem) is None:
                raise RuleSetError(str(path), ["a rule set file is named v<N>.json"])
            rule_set = rule_set_from_json(path.read_bytes(), str(path))
            if (rule_set.product_code, rule_set.version) != (product_dir.name, path.stem):
                raise RuleSetError(
                    str(path),
                    [f"says {rule_set.product_code}/{rule_set.version}: it must match its path"],
                )
            versions[rule_set.version] = rule_set
        found[product_dir.name] = versions
    return found


def latest_rule_set(versions: Mapping[str, RuleSet]) -> RuleSet:
    """The highest version (v10 after v9)."""
    assert versions, "no rule set versions"
    return versions[max(versions, key=lambda version: int(version[1:]))]


def check_rule_set(rule_set: RuleSet) -> list[str]:
    """Every problem of a decoded rule set (empty: usable). Paths as msgspec names them."""
    problems: list[str] = []
    for number, rule in enumerate(rule_set.rules):
        where = f"$.rules[{number}]"
        problems += _check_condition(where, rule.field, rule.op, rule.value)
        always_hard = rule.field.startswith(_ALWAYS_HARD_REFUSE)
        if always_hard and not (rule.hard and rule.action == "refuse"):
            problems.append(
                f"{where}: a rule on {rule.field} must be a hard refusal "
                '("hard": true, "action": "refuse"): such applicants are never queued'
            )
        if rule.hard and rule.field.startswith("bureau."):
            problems.append(f"{where}: a bureau rule cannot be hard (white lists need no report)")
    for number, adjustment in enumerate(rule_set.pre_approval.adjustments):
        where = f"$.pre_approval.adjustments[{number}]"
        problems += _check_condition(where, adjustment.field, adjustment.op, adjustment.value)
    if not problems:
        problems += _check_promises(rule_set.rules)
    return problems + _check_terms(rule_set)


def _check_condition(where: str, field: str, op: Op, value: RuleValue) -> list[str]:
    spec = FIELDS.get(field)
    if spec is None:
        return [f"{where}.field: unknown field {field!r} (known: {', '.join(FIELDS)})"]
    if op in _LIST_OPS:
        items = value if isinstance(value, list) else None
        if not items:
            return [f"{where}.value: {op} needs a non-empty list"]
    else:
        if isinstance(value, list):
            return [f"{where}.value: {op} needs a single value, not a list"]
        items = [value]
    if spec.kind is bool and op in _ORDER_OPS:
        return [f"{where}.op: {field} is true/false: use eq, ne, in or not_in"]
    for item in items:
        if (type(item) is bool) != (spec.kind is bool):
            return [f"{where}.value: {field} takes {spec.kind.__name__} values, got {item!r}"]
    return []


def _check_promises(rules: list[Rule]) -> list[str]:
    """Blacklisted, invalid-ID and under-age applicants are refused by every rule set."""
    hard_refusals = [rule for rule in rules if rule.hard and rule.action == "refuse"]

    def refused(field: str, actual: FieldValue) -> bool:
        return any(r.field == field and matches(r.op, actual, r.value) for r in hard_refusals)

    problems = []
    if not refused("blacklist.hit", True) or refused("blacklist.hit", False):
        problems.append('$.rules: needs a hard refusal of "blacklist.hit" eq true (and only that)')
    if not refused("id.valid", False) or refused("id.valid", True):
        problems.append('$.rules: needs a hard refusal of "id.valid" eq false (and only that)')
    if not all(refused("applicant.age", age) for age in range(ADULT_AGE)):
        problems.append(f'$.rules: needs hard refusals of "applicant.age" below {ADULT_AGE}')
    return problems


def _check_methods(where: str, methods: list[str], allowed: list[str]) -> list[str]:
    if not methods or len(set(methods)) != len(methods):
        return [f"{where}: a non-empty list without repeats"]
    unknown = [m for m in methods if m not in set(RepaymentMethod) or m not in allowed]
    if unknown:
        return [f"{where}: {', '.join(unknown)} not a repayment method of the product"]
    return []


def _check_terms(rule_set: RuleSet) -> list[str]:
    product, policy = rule_set.product, rule_set.pre_approval
    problems = _check_methods(
        "$.product.repayment_methods", product.repayment_methods, [*RepaymentMethod]
    )
    problems += _check_methods(
        "$.pre_approval.repayment_methods", policy.repayment_methods, product.repayment_methods
    )
    if not 1 <= product.max_term_months <= TERM_MONTHS_MAX:
        problems.append(f"$.product.max_term_months: between 1 and {TERM_MONTHS_MAX}")
    if not 1 <= policy.max_term_months <= product.max_term_months:
        problems.append("$.pre_approval.max_term_months: between 1 and the product's")
    try:
        limit_max_fen = parse_amount(product.limit_max)
    except MoneyFormatError as exc:
        return [*problems, f"$.product.limit_max: {exc.detail}"]
    if not policy.bands:
        problems.append("$.pre_approval.bands: at least one band")
    for number, band in enumerate(policy.bands):
        where = f"$.pre_approval.bands[{number}]"
        if number and band.score_min <= policy.bands[number - 1].score_min:
            problems.append(f"{where}.score_min: bands go up strictly by score_min")
        try:
            if parse_amount(band.limit) > limit_max_fen:
                problems.append(f"{where}.limit: above the product's limit_max")
            parse_rate_pct(band.annual_rate_pct)
        except MoneyFormatError as exc:
            problems.append(f"{where}: {exc.detail}")
    return problems


# ---- deciding --------------------------------------------------------------------------


def _hits(rules: list[Rule], facts: ApplicantFacts) -> list[Rule]:
    hit = []
    for rule in rules:
        actual = FIELDS[rule.field].read(facts)
        if actual is not None and matches(rule.op, actual, rule.value):
            hit.append(rule)
    return hit


def _codes(rules: list[Rule], action: Action) -> list[str]:
    return list(dict.fromkeys(rule.code for rule in rules if rule.action == action))


def decide(rule_set: RuleSet, facts: ApplicantFacts) -> Decision:
    """The decision for `facts` under `rule_set` (see the module's table). Pure."""
    assert facts.requested_amount_fen > 0 and facts.age >= 0
    product_code, version = rule_set.product_code, rule_set.version
    hard_hits = _hits([rule for rule in rule_set.rules if rule.hard], facts)
    if facts.whitelist is not None and not _codes(hard_hits, "refuse"):
        decision = _whitelisted(rule_set, facts, facts.whitelist, _codes(hard_hits, "review"))
        decision = msgspec.structs.replace(decision, face_to_face=_codes(hard_hits, "face_to_face"))
    elif facts.bureau is None and not _codes(hard_hits, "refuse"):
        decision = Decision("pending_bureau", [], product_code, version)
    else:
        hits = hard_hits if facts.bureau is None else _hits(rule_set.rules, facts)
        refusals = _codes(hits, "refuse")
        if refusals:
            decision = Decision("refused", refusals, product_code, version)
        else:
            decision = _pre_approved(rule_set, facts, _codes(hits, "review"))
            decision = msgspec.structs.replace(decision, face_to_face=_codes(hits, "face_to_face"))
    # The loader's promises, checked once more on the result.
    if facts.blacklisted or not facts.id_valid or facts.age < ADULT_AGE:
        assert decision.outcome == "refused", (decision, "a hard refusal was not applied")
    assert decision.outcome != "approved" or facts.whitelist is not None
    assert decision.outcome in ("approved", "pending_review") or not decision.face_to_face
    return decision


def _whitelisted(
    rule_set: RuleSet, facts: ApplicantFacts, entry: WhitelistTerms, reviews: list[str]
) -> Decision:
    """The entry's terms, capped to the product and the request; approved unless reviewed."""
    product = rule_set.product
    methods = [m for m in entry.repayment_methods if m in product.repayment_methods]
    if not methods:
        reviews = [*reviews, "WHITELIST_METHODS_NOT_IN_PRODUCT"]
        methods = list(rule_set.pre_approval.repayment_methods)
    return Decision(
        "pending_review" if reviews else "approved",
        reviews,
        rule_set.product_code,
        rule_set.version,
        limit_fen=min(entry.limit_fen, parse_amount(product.limit_max), facts.requested_amount_fen),
        annual_rate_pct=format_rate_pct(entry.annual_rate_pct),
        repayment_methods=methods,
        max_term_months=min(entry.max_term_months, product.max_term_months),
        whitelisted=True,
    )


def pre_approval_score(policy: PreApproval, facts: ApplicantFacts) -> int:
    score = policy.score_base
    for adjustment in policy.adjustments:
        actual = FIELDS[adjustment.field].read(facts)
        if actual is not None and matches(adjustment.op, actual, adjustment.value):
            score += adjustment.points
    return score


def _pre_approved(rule_set: RuleSet, facts: ApplicantFacts, reviews: list[str]) -> Decision:
    """Queued for a loan officer with the policy's terms for the applicant's score band."""
    policy = rule_set.pre_approval
    score = pre_approval_score(policy, facts)
    band = policy.bands[0]
    for candidate in policy.bands:
        if candidate.score_min <= score:
            band = candidate
    return Decision(
        "pending_review",
        reviews,
        rule_set.product_code,
        rule_set.version,
        limit_fen=min(parse_amount(band.limit), facts.requested_amount_fen),
        annual_rate_pct=format_rate_pct(parse_rate_pct(band.annual_rate_pct)),
        repayment_methods=list(policy.repayment_methods),
        max_term_months=policy.max_term_months,
        score=score,
    )


def manual_review_terms(rule_set: RuleSet, refused: Decision, requested_fen: int) -> Decision:
    """An automatic refusal the applicant asked an officer to review: queued with the
    policy's lowest band (the officer approves or rejects; never a hard refusal)."""
    policy = rule_set.pre_approval
    band = policy.bands[0]
    return Decision(
        "pending_review",
        [*refused.reasons, "MANUAL_REVIEW_REQUESTED"],
        rule_set.product_code,
        rule_set.version,
        limit_fen=min(parse_amount(band.limit), requested_fen),
        annual_rate_pct=format_rate_pct(parse_rate_pct(band.annual_rate_pct)),
        repayment_methods=list(policy.repayment_methods),
        max_term_months=policy.max_term_months,
    )


def hard_refusal(rule_set: RuleSet, refused: Decision) -> bool:
    """Refused by a rule no officer may override (black list, age, identity, ...)."""
    hard = {rule.code for rule in rule_set.rules if rule.hard and rule.action == "refuse"}
    return bool(hard & set(refused.reasons))


# ---- gray release ----------------------------------------------------------------------


def gray_bucket(application_id: int, salt: str) -> int:
    """A stable bucket in [0, GRAY_BUCKETS) for the application, spread evenly by SHA-256."""
    assert 0 <= application_id < 2**64, application_id
    digest = hashlib.sha256(salt.encode() + b"\x00" + application_id.to_bytes(8, "big")).digest()
    return int.from_bytes(digest[:8], "big") % GRAY_BUCKETS


def choose_rule_set(
    application_id: int, current: RuleSet, candidate: RuleSet | None, percent: float
) -> RuleSet:
    """`candidate` for `percent` % of applications, `current` for the rest; stable per id.

    The candidate's name salts the hash, so each new candidate draws its own
    share of applications rather than always the same ones.
    """
    if not (math.isfinite(percent) and 0 <= percent <= 100):
        raise ValueError(f"gray release percent must be between 0 and 100, got {percent!r}")
    if candidate is None:
        return current
    assert candidate.product_code == current.product_code, (candidate.product_code, current)
    salt = f"{candidate.product_code}/{candidate.version}"
    share = round(percent * GRAY_BUCKETS / 100)
    return candidate if gray_bucket(application_id, salt) < share else current
