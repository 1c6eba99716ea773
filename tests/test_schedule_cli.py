"""`python -m engine schedule` as people and other systems run it: a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.cli import schedule as schedule_cli
from ledger.schedule import RepaymentMethod

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = [
    "--principal",
    "100000.00",
    "--annual-rate-pct",
    "4.9",
    "--months",
    "12",
    "--method",
    "equal_installment",
    "--start",
    "2026-01-31",
]


def run_schedule(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the command with the virtualenv's interpreter, from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", "engine", "schedule", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def with_option(name: str, value: str) -> list[str]:
    """The example's arguments with one option replaced."""
    args = list(EXAMPLE)
    if name in args:
        args[args.index(name) + 1] = value
    else:
        args += [name, value]
    return args


def test_json_output_is_exactly_the_documented_shape() -> None:
    result = run_schedule(*EXAMPLE, "--json")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(
        '{"installments": [{"seq": 1, "due_date": "2026-02-28", "principal": "8147.84", '
        '"interest": "408.33", "total": "8556.17", "balance_after": "91852.16"}, '
    )
    assert result.stdout.endswith('], "total_interest": "2673.99"}\n')
    document = json.loads(result.stdout)
    assert list(document) == ["installments", "total_interest"]
    installments = document["installments"]
    assert len(installments) == 12
    for row in installments:
        assert list(row) == ["seq", "due_date", "principal", "interest", "total", "balance_after"]
        assert all(isinstance(row[key], str) for key in list(row)[1:])
    assert installments[-1]["balance_after"] == "0.00"
    assert installments[-1]["total"] == "8556.12"


def test_table_output_is_readable() -> None:
    result = run_schedule(*EXAMPLE)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "seq",
        "due_date",
        "principal",
        "interest",
        "total",
        "balance_after",
    ]
    assert lines[1].split() == ["1", "2026-02-28", "8147.84", "408.33", "8556.17", "91852.16"]
    assert len(lines) == 1 + 12 + 1
    assert "total interest 2673.99" in lines[-1]


def test_grace_months_option() -> None:
    args = [*with_option("--method", "grace_then_equal_installment"), "--grace-months", "3"]
    result = run_schedule(*args, "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)["installments"]
    assert [row["principal"] for row in rows[:3]] == ["0.00"] * 3
    assert rows[3]["total"] == "11339.20"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("--principal", "-5.00"),
        ("--principal", "0.00"),
        ("--principal", "100.001"),
        ("--principal", "abc"),
        ("--annual-rate-pct", "-1"),
        ("--annual-rate-pct", "40"),
        ("--months", "0"),
        ("--months", "601"),
        ("--months", "1.5"),
        ("--method", "balloon"),
        ("--start", "2026-02-30"),
        ("--grace-months", "12"),
    ],
)
def test_bad_input_exits_2_with_one_line(name: str, value: str) -> None:
    args = with_option(name, value)
    if name == "--grace-months":
        args = [*with_option("--method", "grace_then_equal_installment"), name, value]
    result = run_schedule(*args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("python -m engine schedule: error: ")


def test_missing_option_is_argparse_usage_error() -> None:
    result = run_schedule("--principal", "100.00")
    assert result.returncode == 2
    assert "required" in result.stderr


def test_method_names_in_help_match_the_enum() -> None:
    # The CLI lists the names without importing ledger at start-up; keep the two in step.
    assert tuple(method.value for method in RepaymentMethod) == schedule_cli.METHOD_NAMES
