"""Identity data: ID numbers (GB 11643-1999), mobile numbers, bank cards, masks."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.runtime.logs import mask_digits
from engine.security.identity import (
    IdentityError,
    IdNumber,
    age_on,
    id_number_check_char,
    luhn_valid,
    make_id_number,
    mask_bank_card,
    mask_id_number,
    mask_phone,
    parse_bank_card,
    parse_id_number,
    parse_phone,
)

TODAY = dt.date(2024, 6, 15)

regions = st.from_regex(r"[1-9][0-9]{5}", fullmatch=True)
sequences = st.from_regex(r"[0-9]{3}", fullmatch=True)
birth_dates = st.dates(min_value=dt.date(1900, 1, 1), max_value=TODAY)


def with_check(first17: str) -> str:
    return first17 + id_number_check_char(first17)


def error_code(call: object) -> str:
    assert callable(call)
    with pytest.raises(IdentityError) as info:
        call()
    return info.value.code


# --- ID numbers -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value", "birth_date", "male"),
    [
        # The example printed in GB 11643-1999 itself.
        ("11010519491231002X", "11010519491231002X", dt.date(1949, 12, 31), False),
        ("11010519491231002x", "11010519491231002X", dt.date(1949, 12, 31), False),
        ("  11010519491231002X\n", "11010519491231002X", dt.date(1949, 12, 31), False),
        ("110105199003078318", "110105199003078318", dt.date(1990, 3, 7), True),
    ],
)
def test_valid_numbers(text: str, value: str, birth_date: dt.date, male: bool) -> None:
    assert parse_id_number(text, today=TODAY) == IdNumber(value, birth_date, male)


@pytest.mark.parametrize(
    ("first17", "check"),
    [
        # Worked by hand: weights 7 9 10 5 8 4 2 1 6 3 7 9 10 5 8 4 2, sum mod 11 -> "10X98765432".
        # One row per remainder 0..10; the comment is the weighted sum.
        ("00000000000000000", "1"),  # 0
        ("00000000000000006", "0"),  # 12 = 1 mod 11
        ("00000000000000001", "X"),  # 2
        ("00000000000000007", "9"),  # 14 = 3 mod 11
        ("00000000000000010", "8"),  # 4
        ("00000000000001000", "7"),  # 5
        ("00000000000000003", "6"),  # 6
        ("10000000000000000", "5"),  # 7
        ("00000000000000100", "4"),  # 8
        ("01000000000000000", "3"),  # 9
        ("00100000000000000", "2"),  # 10
        ("11010519491231002", "X"),
    ],
)
def test_check_char_table(first17: str, check: str) -> None:
    assert id_number_check_char(first17) == check


@given(st.from_regex(r"[0-9]{17}", fullmatch=True))
def test_check_char_satisfies_iso_7064_mod_11_2(first17: str) -> None:
    # An independent statement of the same rule: with the check character
    # worth 10 for X and weight 1, sum(a_i * 2^(17-i)) over all 18 is 1 mod 11.
    full = with_check(first17)
    values = [10 if c == "X" else int(c) for c in full]
    assert sum(v * 2 ** (17 - i) for i, v in enumerate(values)) % 11 == 1


@pytest.mark.parametrize(
    "text",
    [
        "",
        "11010519491231002",  # 17
        "11010519491231002X1",  # 19
        "110105194912310",  # old 15-digit format
        "01010519491231002X",  # first digit 0
        "1101051949123100X2",  # X not last
        "11010519491231002Y",
        "110105 19491231002X",
        "１１０１０５１９４９１２３１００２Ｘ",  # full-width digits
        "١١٠١٠٥١٩٤٩١٢٣١٠٠٢X",  # Arabic-Indic digits
        "1" * 1000,
    ],
)
def test_format_is_refused(text: str) -> None:
    assert error_code(lambda: parse_id_number(text, today=TODAY)) == "ID_NUMBER_INVALID"


def test_wrong_check_char_is_refused_without_echoing_the_number() -> None:
    with pytest.raises(IdentityError) as info:
        parse_id_number("110105194912310021", today=TODAY)
    assert info.value.code == "ID_NUMBER_CHECKSUM"
    assert "1949" not in str(info.value) and "110105" not in info.value.detail


@given(regions, birth_dates, sequences, st.integers(0, 16), st.integers(1, 9))
def test_any_single_digit_change_is_caught(
    region: str, birth: dt.date, seq: str, position: int, shift: int
) -> None:
    number = make_id_number(region, birth, seq)
    digit = (int(number[position]) + shift) % 10
    changed = number[:position] + str(digit) + number[position + 1 :]
    code = error_code(lambda: parse_id_number(changed, today=TODAY))
    assert code in ("ID_NUMBER_CHECKSUM", "ID_NUMBER_INVALID")  # INVALID: first digit 0


@pytest.mark.parametrize(
    "yyyymmdd",
    [
        "19990230",  # no 30 February
        "19990229",  # 1999 is not a leap year
        "19000229",  # nor is 1900
        "19991301",  # month 13
        "19990001",  # month 0
        "19990100",  # day 0
        "19990431",  # no 31 April
        "18991231",  # before 1900
        "00000101",
        "20240616",  # the day after TODAY
        "29991231",
    ],
)
def test_bad_birth_dates(yyyymmdd: str) -> None:
    number = with_check("110105" + yyyymmdd + "001")
    assert error_code(lambda: parse_id_number(number, today=TODAY)) == "ID_NUMBER_BIRTH_DATE"


@pytest.mark.parametrize("yyyymmdd", ["19000101", "20000229", "20240615"])
def test_edge_birth_dates_are_accepted(yyyymmdd: str) -> None:
    parsed = parse_id_number(with_check("110105" + yyyymmdd + "001"), today=TODAY)
    assert parsed.birth_date.strftime("%Y%m%d") == yyyymmdd


def test_published_1880_example_has_a_valid_checksum_but_is_too_old() -> None:
    # 440524188001010014 is the older standard's example; born 1880, so refused here.
    assert id_number_check_char("44052418800101001") == "4"
    code = error_code(lambda: parse_id_number("440524188001010014", today=TODAY))
    assert code == "ID_NUMBER_BIRTH_DATE"


@given(regions, birth_dates, sequences)
def test_make_id_number_parses_back(region: str, birth: dt.date, seq: str) -> None:
    number = make_id_number(region, birth, seq)
    parsed = parse_id_number(number, today=TODAY)
    assert parsed.value == number
    assert parsed.birth_date == birth
    assert parsed.male is (int(seq[2]) % 2 == 1)


@pytest.mark.parametrize(
    ("region", "seq"), [("010105", "001"), ("11010", "001"), ("110105", "01"), ("11010a", "001")]
)
def test_make_id_number_refuses_bad_parts(region: str, seq: str) -> None:
    with pytest.raises(ValueError):
        make_id_number(region, dt.date(1990, 1, 1), seq)


def test_repr_masks_the_number() -> None:
    parsed = parse_id_number("11010519491231002X", today=TODAY)
    assert "11010519491231002X" not in repr(parsed)
    assert "110***********002X" in repr(parsed)


# --- age ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("birth", "on", "age"),
    [
        (dt.date(2000, 6, 15), dt.date(2000, 6, 15), 0),
        (dt.date(2000, 6, 15), dt.date(2018, 6, 14), 17),
        (dt.date(2000, 6, 15), dt.date(2018, 6, 15), 18),
        (dt.date(2000, 2, 29), dt.date(2018, 2, 28), 17),
        (dt.date(2000, 2, 29), dt.date(2018, 3, 1), 18),
        (dt.date(2000, 2, 29), dt.date(2020, 2, 29), 20),
        (dt.date(1949, 12, 31), dt.date(2024, 1, 1), 74),
    ],
)
def test_age_on(birth: dt.date, on: dt.date, age: int) -> None:
    assert age_on(birth, on) == age


def test_age_on_refuses_a_date_before_birth() -> None:
    with pytest.raises(ValueError):
        age_on(dt.date(2000, 1, 2), dt.date(2000, 1, 1))


# --- phones -------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "13812345678",
        " 138 1234 5678 ",
        "138\t1234\u30005678",
        "+8613812345678",
        "+86 138 1234 5678",
        "8613812345678",
        "86 13812345678",
    ],
)
def test_phone_forms(text: str) -> None:
    assert parse_phone(text) == "13812345678"


@pytest.mark.parametrize("second", "3456789")
def test_every_mobile_prefix(second: str) -> None:
    assert parse_phone(f"1{second}012345678") == f"1{second}012345678"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "12812345678",  # second digit 2
        "10812345678",
        "1381234567",  # 10 digits
        "138123456789",  # 12 digits
        "23812345678",
        "+8513812345678",
        "0086 13812345678",
        "+86+8613812345678",
        "138-1234-5678",
        "１３８１２３４５６７８",  # full-width
        "1" * 200,
    ],
)
def test_phone_refused(text: str) -> None:
    assert error_code(lambda: parse_phone(text)) == "PHONE_INVALID"


# --- bank cards ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("4111111111111111", "4111111111111111"),
        ("5555 5555 5555 4444", "5555555555554444"),
        ("6222021234567890128", "6222021234567890128"),  # 19 digits
        ("62220212345678903", "62220212345678903"),  # 17 digits
    ],
)
def test_valid_cards(text: str, value: str) -> None:
    assert parse_bank_card(text) == value


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("4111111111111112", "BANK_CARD_CHECKSUM"),
        ("6222021234567890127", "BANK_CARD_CHECKSUM"),
        ("378282246310005", "BANK_CARD_INVALID"),  # Luhn-valid, but 15 digits
        ("62220212345678901280", "BANK_CARD_INVALID"),  # 20 digits
        ("4111-1111-1111-1111", "BANK_CARD_INVALID"),
        ("", "BANK_CARD_INVALID"),
        ("４１１１１１１１１１１１１１１１", "BANK_CARD_INVALID"),
    ],
)
def test_cards_refused(text: str, code: str) -> None:
    assert error_code(lambda: parse_bank_card(text)) == code


@given(st.from_regex(r"[0-9]{15,18}", fullmatch=True))
def test_exactly_one_check_digit_completes_a_card(body: str) -> None:
    completions = [d for d in "0123456789" if luhn_valid(body + d)]
    assert len(completions) == 1


@given(st.from_regex(r"[0-9]{15,18}", fullmatch=True), st.integers(0, 14), st.integers(1, 9))
def test_luhn_catches_any_single_digit_change(body: str, position: int, shift: int) -> None:
    card = next(body + d for d in "0123456789" if luhn_valid(body + d))
    changed = card[:position] + str((int(card[position]) + shift) % 10) + card[position + 1 :]
    assert not luhn_valid(changed)


# --- masks --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mask", "value", "masked"),
    [
        (mask_phone, "13812345678", "138****5678"),
        (mask_id_number, "11010519491231002X", "110***********002X"),
        (mask_bank_card, "6222021234567890128", "622************0128"),
        (mask_bank_card, "4111111111111111", "411*********1111"),
    ],
)
def test_masks(mask: object, value: str, masked: str) -> None:
    assert callable(mask)
    assert mask(value) == masked
    # One rule everywhere: the log scrubber masks the same way.
    assert mask_digits(value) == masked


@given(st.text(min_size=8, max_size=40))
def test_masks_keep_first_3_last_4_and_length(value: str) -> None:
    for mask in (mask_phone, mask_id_number, mask_bank_card):
        masked = mask(value)
        assert len(masked) == len(value)
        assert masked[:3] == value[:3]
        assert masked[-4:] == value[-4:]
        assert set(masked[3:-4]) == {"*"}


@pytest.mark.parametrize("value", ["", "1", "1381234"])
def test_too_short_to_mask_hides_everything(value: str) -> None:
    assert mask_phone(value) == "*" * len(value)


def test_log_lines_mask_long_numbers_given_as_integers() -> None:
    """A customer id passed to a log call as an int is masked as a string would be."""
    import json
    import logging

    from engine.runtime.logs import JsonFormatter

    record = logging.makeLogRecord(
        {"msg": "card bound", "customer_id": 386823525473755200, "attempts": 3}
    )
    entry = json.loads(JsonFormatter().format(record))
    assert entry["customer_id"] == "386***********5200"
    assert entry["attempts"] == 3
