"""Post-loan rules as data, like origination's rule sets: what the day-end does to a
loan that is late, or about to fall due.

    {"version": "v1", "rules": [
      {"name": "...", "when": {"dpd_above": 0},       "action": "freeze_lines"},
      {"name": "...", "when": {"dpd_above": 30},      "action": "collection_queue"},
      {"name": "...", "when": {"days_before_due": 3}, "action": "remind_sms"}]}

freeze_lines      the customer's active lines refuse drawdowns (`CREDIT_LINE_FROZEN`);
                  only an operator lifts it
collection_queue  the loan goes to an officer of the customer's branch, in turn
remind_sms        one SMS per customer of what falls due that many days later

The file is checked strictly at start-up: a bad rule stops the process, not a loan.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import msgspec

RULES_FILE_DEFAULT = Path(__file__).parent / "rules" / "default.json"
RULES_MAX = 32
DAYS_MAX = 3650


class Condition(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    dpd_above: Annotated[int, msgspec.Meta(ge=0, le=DAYS_MAX)] | None = None
    days_before_due: Annotated[int, msgspec.Meta(ge=1, le=60)] | None = None


Action = Literal["freeze_lines", "collection_queue", "remind_sms"]


class Rule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9-]{1,64}$")]
    when: Condition
    action: Action


class RuleSet(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    version: Annotated[str, msgspec.Meta(pattern=r"^v[0-9]{1,4}$")]
    rules: Annotated[list[Rule], msgspec.Meta(max_length=RULES_MAX)]

    def dpd_rules(self, action: Action) -> list[Rule]:
        return [r for r in self.rules if r.action == action]

    def fires(self, action: Action, days_past_due: int) -> bool:
        """Whether any `action` rule fires at this DPD."""
        return any(
            r.when.dpd_above is not None and days_past_due > r.when.dpd_above
            for r in self.dpd_rules(action)
        )

    @property
    def reminder_days(self) -> list[int]:
        return sorted({r.when.days_before_due for r in self.rules if r.when.days_before_due})


class RulesError(ValueError):
    """The rules file cannot be used; the message says which rule and why."""


def check_rules(rules: RuleSet) -> list[str]:
    problems = []
    names = [rule.name for rule in rules.rules]
    if len(set(names)) != len(names):
        problems.append("rule names must be unique")
    for rule in rules.rules:
        given = [v for v in (rule.when.dpd_above, rule.when.days_before_due) if v is not None]
        if len(given) != 1:
            problems.append(f"{rule.name}: `when` needs exactly one condition")
        elif rule.action == "remind_sms" and rule.when.days_before_due is None:
            problems.append(f"{rule.name}: remind_sms goes with days_before_due")
        elif rule.action != "remind_sms" and rule.when.dpd_above is None:
            problems.append(f"{rule.name}: {rule.action} goes with dpd_above")
    return problems


def load_rules(path: Path = RULES_FILE_DEFAULT) -> RuleSet:
    try:
        rules = msgspec.json.decode(path.read_bytes(), type=RuleSet)
    except (OSError, msgspec.DecodeError) as exc:  # ValidationError is a DecodeError
        raise RulesError(f"post-loan rules {path}: {exc}") from exc
    problems = check_rules(rules)
    if problems:
        raise RulesError(f"post-loan rules {path}: " + "; ".join(problems))
    return rules
