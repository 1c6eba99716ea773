"""The log formatter masks every run of 11+ digits, whatever the type of the field:
the reliability battery found an 18-digit ID logged in clear as an int `extra` field
(engine.relay.inline's "inline debit failed"), where a phone number could go too."""

from __future__ import annotations

import json
import logging

from engine.runtime.logs import JsonFormatter


def _line(**extra: object) -> dict[str, object]:
    record = logging.makeLogRecord({"msg": "m", "levelname": "ERROR", **extra})
    parsed: dict[str, object] = json.loads(JsonFormatter().format(record))
    return parsed


def test_long_int_fields_are_masked() -> None:
    line = _line(phone=13812345678, repayment_id=386812249030951936)
    assert line["phone"] == "138****5678"
    assert line["repayment_id"] == "386***********1936"


def test_short_numbers_and_flags_stay_as_they_are() -> None:
    line = _line(attempts=3, amount_fen=1_234_567_890, done=True, ratio=0.5)
    assert (line["attempts"], line["amount_fen"], line["done"], line["ratio"]) == (
        3, 1_234_567_890, True, 0.5,
    )  # fmt: skip
