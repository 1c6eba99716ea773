"""Building origination's context from settings: rule sets loaded and checked at
start-up (a bad rule set stops the process, not an applicant), versions chosen."""

from __future__ import annotations

from pathlib import Path

from engine.origination import decision
from engine.origination.otp import OtpPolicy
from engine.origination.service import Origination
from engine.settings import OriginationSettings


def rulesets_directory(settings: OriginationSettings) -> Path:
    return Path(settings.rulesets_dir) if settings.rulesets_dir else decision.RULESETS_DIRECTORY


class RuleSetExists(ValueError):
    """This product's version is stored with other content: versions are never rewritten."""


def save_rule_set(directory: Path, data: bytes) -> tuple[decision.RuleSet, bool]:
    """Check `data` as the loader does and store it as `<product>/<version>.json` (the
    engine loads it at its next start). Returns the rule set and whether it was new;
    the same bytes again change nothing; other bytes under a stored version are refused."""
    rule_set = decision.rule_set_from_json(data, "the body")
    path = directory / rule_set.product_code / f"{rule_set.version}.json"
    if path.exists():
        if path.read_bytes() != data:
            raise RuleSetExists(f"{rule_set.product_code}/{rule_set.version} is stored already")
        return rule_set, False
    path.parent.mkdir(exist_ok=True)
    partial = path.with_suffix(".json.partial")
    partial.write_bytes(data)
    partial.rename(path)  # whole or absent: the loader refuses any other file
    return rule_set, True


def build_origination(settings: OriginationSettings) -> Origination:
    directory = rulesets_directory(settings)
    rule_sets = decision.load_rule_sets(directory)
    current = {}
    for product, versions in rule_sets.items():
        # Unless configured: the newest version that is not the product's candidate.
        settled = {
            v: r for v, r in versions.items() if v != settings.candidate_versions.get(product)
        }
        current[product] = (
            settings.current_versions.get(product) or decision.latest_rule_set(settled).version
        )
    for product, version in (settings.current_versions | settings.candidate_versions).items():
        if version not in rule_sets.get(product, {}):
            raise ValueError(
                f"rule set {product}/{version} is configured but not found in {directory}"
            )
    return Origination(
        rule_sets=rule_sets,
        current_versions=current,
        candidate_versions=dict(settings.candidate_versions),
        candidate_percent=settings.candidate_percent,
        report_valid_days=settings.bureau_report_valid_days,
        otp=OtpPolicy(
            ttl_s=settings.otp_ttl_s,
            attempts_max=settings.otp_attempts_max,
            lock_s=settings.otp_lock_s,
            resend_s=settings.otp_resend_s,
        ),
    )
