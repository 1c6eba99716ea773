"""Valid customer data for load runs, random or derived from an index, and the
seeded-customers file the load runs read.

    seeded_id_number(i)  "1101dd" region | birth YYYYMMDD | seq | GB 11643 check char
                         region 110150 + (i // 1000) % 50 (in the demo bank's region 1101,
                         never a test's 110105), seq i % 1000, birth from i // 50,000:
                         distinct for every i below 10^8
    seeded_bank_card(i)  "623" + 15 digits from i + Luhn check digit (19 digits)
    seeded_phone(i)      "13" + 9 digits from i

Standard library only, no asyncio: the gevent Locust users import this module.

The seeded file (`python -m loadtest seed` writes it; `seeded_file_path` says where)
has one line per customer:

    customer_id,credit_line_id,bank_card,loan_ids,due_today

loan_ids separated by spaces; due_today: those of them with an installment due on the
seeding's business date (a prepayment of one is refused ARREARS_FIRST until it is
paid). Files written before that column are read too, with no loan due.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

SEEDED_FILE_ENV: Final = "LOADTEST_SEEDED"
SEEDED_FILE_DEFAULT: Final = Path(".run/loadtest/seeded.csv")
SEEDED_HEADER: Final = ("customer_id", "credit_line_id", "bank_card", "loan_ids", "due_today")
_SEEDED_HEADER_BEFORE: Final = SEEDED_HEADER[:4]  # files seeded before the due_today column
# Load runs keep at most this many seeded customers in memory (a bound, per STYLE.md).
SEEDED_ROWS_MAX: Final = 2_000_000
SEEDED_INDEX_MAX: Final = 100_000_000  # seeded_id_number is distinct below this

# GB 11643-1999: weights of the first 17 digits, check character by (sum mod 11).
_ID_WEIGHTS: Final = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK_CHARS: Final = "10X98765432"
_SEEDED_REGION_FIRST: Final = 110_150  # seeded area codes 110150-110199
_SEEDED_REGIONS: Final = 50
_BIRTH_FIRST: Final = dt.date(1960, 1, 1)
# 1960 .. 1999: adults, and never 1950 (the fake bureau's refused year).
_BIRTH_SPAN_DAYS: Final = 14_600
_SURNAMES: Final = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
_GIVEN: Final = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰"


def id_number_check_char(first17: str) -> str:
    """The check character ('0'-'9' or 'X') completing 17 leading digits."""
    assert len(first17) == 17 and first17.isascii() and first17.isdigit(), "17 ASCII digits"
    total = sum(int(digit) * weight for digit, weight in zip(first17, _ID_WEIGHTS, strict=True))
    return _ID_CHECK_CHARS[total % 11]


def make_id_number(region6: str, birth: dt.date, seq3: str) -> str:
    """An 18-character resident ID number with its check character."""
    assert len(region6) == 6 and region6.isdigit() and region6[0] != "0", region6
    assert len(seq3) == 3 and seq3.isdigit(), seq3
    first17 = f"{region6}{birth:%Y%m%d}{seq3}"
    return first17 + id_number_check_char(first17)


def luhn_check_digit(payload: str) -> str:
    """The digit that makes `payload` + digit pass the Luhn check."""
    total = 0
    for position, char in enumerate(reversed(payload)):
        digit = int(char)
        if position % 2 == 0:  # doubled: these sit at odd positions once the check digit is added
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return str((10 - total % 10) % 10)


def scramble(index: int, salt: int) -> int:
    """A cheap, fixed scramble of `index` (splitmix64 finaliser): spread, not secret."""
    value = (index * 0x9E3779B97F4A7C15 + salt) & 0xFFFFFFFFFFFFFFFF
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return value ^ (value >> 31)


def seeded_id_number(index: int) -> str:
    """The ID number of seeded customer `index` (distinct for 0 <= index < 10^8)."""
    assert 0 <= index < SEEDED_INDEX_MAX, index
    region6 = str(_SEEDED_REGION_FIRST + (index // 1000) % _SEEDED_REGIONS)
    # A step through every day of the span (7919 is prime to 14,600): distinct birth
    # dates for the 2,000 blocks of 50,000 indexes below 10^8, spread over the span.
    days = (index // (1000 * _SEEDED_REGIONS)) * 7919 % _BIRTH_SPAN_DAYS
    birth = _BIRTH_FIRST + dt.timedelta(days=days)
    return make_id_number(region6, birth, f"{index % 1000:03d}")


def seeded_bank_card(index: int) -> str:
    """A 19-digit Luhn-valid card number of seeded customer `index`."""
    payload = f"623{scramble(index, 2) % 10**15:015d}"
    return payload + luhn_check_digit(payload)


def seeded_phone(index: int) -> str:
    """A mobile number 13x xxxx xxxx of seeded customer `index`."""
    return f"13{scramble(index, 3) % 10**9:09d}"


def seeded_name(index: int) -> str:
    """A two- or three-character Chinese name of seeded customer `index`."""
    mixed = scramble(index, 4)
    name = _SURNAMES[mixed % len(_SURNAMES)] + _GIVEN[(mixed >> 8) % len(_GIVEN)]
    if mixed >> 16 & 1:
        name += _GIVEN[(mixed >> 24) % len(_GIVEN)]
    return name


def random_id_number() -> str:
    """A valid ID number with a random birth date (1960-1999) and sequence."""
    birth = _BIRTH_FIRST + dt.timedelta(days=secrets.randbelow(_BIRTH_SPAN_DAYS))
    return make_id_number("110105", birth, f"{secrets.randbelow(1000):03d}")


def random_bank_card() -> str:
    """A random Luhn-valid 19-digit card number."""
    payload = "622202" + "".join(str(secrets.randbelow(10)) for _ in range(12))
    return payload + luhn_check_digit(payload)


def random_phone() -> str:
    return f"139{secrets.randbelow(10**8):08d}"


@dataclass(frozen=True, slots=True)
class SeededCustomer:
    """One seeded customer: its line, the card it pays from, and its loans."""

    customer_id: str
    credit_line_id: str
    bank_card: str
    loan_ids: tuple[str, ...]
    due_today: tuple[str, ...] = ()  # loans with an installment due on the seeding's date

    def not_due_today(self) -> tuple[str, ...]:
        """The loans a prepayment is accepted on (all of them if none is left)."""
        return tuple(n for n in self.loan_ids if n not in self.due_today) or self.loan_ids


def seeded_file_path() -> Path:
    """Where the seeded-customers file is: $LOADTEST_SEEDED, else beside the stack's data
    ($STACK_RUN_DIR/loadtest/seeded.csv, the run directory of `ops/stack.sh`), else
    .run/loadtest/seeded.csv."""
    if os.environ.get(SEEDED_FILE_ENV):
        return Path(os.environ[SEEDED_FILE_ENV])
    if os.environ.get("STACK_RUN_DIR"):
        return Path(os.environ["STACK_RUN_DIR"]) / "loadtest" / "seeded.csv"
    return SEEDED_FILE_DEFAULT


def append_seeded(path: Path, customers: Iterable[SeededCustomer]) -> int:
    """Appends customers to the seeded file (the header first if it is new); returns the count."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new_file = not path.exists() or path.stat().st_size == 0
    columns = len(SEEDED_HEADER)
    if not new_file:  # rows as long as the file's header (an older file has 4 columns)
        with path.open(newline="", encoding="ascii") as handle:
            columns = len(next(csv.reader(handle), SEEDED_HEADER))
    count = 0
    with path.open("a", newline="", encoding="ascii") as handle:
        writer = csv.writer(handle)
        if new_file:
            writer.writerow(SEEDED_HEADER)
        for customer in customers:
            row = (
                customer.customer_id,
                customer.credit_line_id,
                customer.bank_card,
                " ".join(customer.loan_ids),
                " ".join(customer.due_today),
            )
            writer.writerow(row[:columns])
            count += 1
    return count


def read_seeded(path: Path, limit: int = SEEDED_ROWS_MAX) -> list[SeededCustomer]:
    """The first `limit` customers of the seeded file (duplicate lines read once)."""
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: no seeded customers; run `python -m loadtest seed --customers N` first"
        )
    seen: set[str] = set()
    customers: list[SeededCustomer] = []
    with path.open(newline="", encoding="ascii") as handle:
        reader = csv.reader(handle)
        header = tuple(next(reader, []))
        if header not in (SEEDED_HEADER, _SEEDED_HEADER_BEFORE):
            raise ValueError(f"{path}: header must be {','.join(SEEDED_HEADER)}")
        for row in reader:
            if len(customers) >= limit:
                break
            if len(row) != len(header) or row[0] in seen:
                continue
            seen.add(row[0])
            due = tuple(row[4].split()) if len(row) > 4 else ()
            customers.append(SeededCustomer(row[0], row[1], row[2], tuple(row[3].split()), due))
    if not customers:
        raise ValueError(f"{path}: holds no seeded customer")
    return customers
