"""Plans per second of `ledger.schedule.build_plan`, the drawdown path's pure-math step.

    .venv/bin/python -m loadtest.bench_schedule [--seconds 0.5]

For each method and for 12 and 360 installments, builds plans in a loop for a
fixed time and prints a markdown table. Two cases:

- warm: one product rate and one drawdown day, as on a busy day; the cached
  due dates and annuity factor are reused.
- cold: a different rate and start date for every plan, so both caches miss
  every time (the worst case).

A benchmark, not a test: it asserts nothing about speed. It imports no
asyncio engine code.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from datetime import date, timedelta
from decimal import Decimal

from ledger.schedule import RepaymentMethod, build_plan

PRINCIPAL_FEN = 10_000_000  # 100,000.00 yuan
RATE_PCT = Decimal("4.9")
START = date(2026, 1, 31)
TERMS_MONTHS = (12, 360)
ROUNDS = 3  # best of three runs per cell
PLANS_PER_RUN_MAX = 1_000_000  # a bound on every loop, whatever the clock says
COLD_CASES = 20_000  # distinct (rate, start) pairs: far beyond both caches' sizes


def grace_months_for(method: RepaymentMethod, months: int) -> int:
    """A grace of a quarter of the term for the grace method, none otherwise."""
    return months // 4 if method is RepaymentMethod.GRACE_THEN_EQUAL_INSTALLMENT else 0


def plans_per_second(build: Callable[[int], object], seconds: float) -> float:
    """Best of ROUNDS runs of `build(i)` for `seconds` each."""
    best = 0.0
    for _ in range(ROUNDS):
        count = 0
        began = time.perf_counter()
        deadline = began + seconds
        while count < PLANS_PER_RUN_MAX:
            for _ in range(16):  # check the clock every 16 plans, not every plan
                build(count)
                count += 1
            if time.perf_counter() >= deadline:
                break
        best = max(best, count / (time.perf_counter() - began))
    return best


def measure(method: RepaymentMethod, months: int, seconds: float) -> tuple[float, float]:
    """(warm, cold) plans per second for one method and term."""
    grace_months = grace_months_for(method, months)

    def warm(_: int) -> object:
        return build_plan(PRINCIPAL_FEN, RATE_PCT, months, method, START, grace_months=grace_months)

    # Rates 3.00000 %..3.19999 % and starts over 20,000 days: every plan misses the caches.
    cold_rates = [Decimal(300_000 + i).scaleb(-5) for i in range(COLD_CASES)]
    cold_starts = [date(2000, 1, 1) + timedelta(days=i) for i in range(COLD_CASES)]

    def cold(i: int) -> object:
        index = i % COLD_CASES
        return build_plan(
            PRINCIPAL_FEN,
            cold_rates[index],
            months,
            method,
            cold_starts[index],
            grace_months=grace_months,
        )

    return plans_per_second(warm, seconds), plans_per_second(cold, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.5, help="time per run (default 0.5)")
    seconds = parser.parse_args().seconds
    print(
        f"build_plan, {PRINCIPAL_FEN // 100} yuan at {RATE_PCT} %, best of {ROUNDS} runs of "
        f"{seconds} s; Python {platform.python_version()} on {platform.machine()}\n"
    )
    print("| method | installments | warm plans/s | warm µs/plan | cold plans/s | cold µs/plan |")
    print("|---|---:|---:|---:|---:|---:|")
    for method in RepaymentMethod:
        for months in TERMS_MONTHS:
            warm, cold = measure(method, months, seconds)
            installments = 1 if method is RepaymentMethod.BULLET else months
            label = f"{method.value}" + (
                f" (grace {grace_months_for(method, months)})"
                if method is RepaymentMethod.GRACE_THEN_EQUAL_INSTALLMENT
                else ""
            )
            print(
                f"| {label} | {installments} ({months} months) | {warm:,.0f} | "
                f"{1e6 / warm:,.1f} | {cold:,.0f} | {1e6 / cold:,.1f} |"
            )


if __name__ == "__main__":
    main()
