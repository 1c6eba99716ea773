"""Structured logs: one JSON object per line, with the request id, never a full
ID number, card number or phone number.

Fields come from `extra=` and from the request context (`REQUEST_CONTEXT`,
set by the request middleware). As a last line of defence every string value
is scrubbed: any run of 11 or more digits (phones, ID numbers, cards) is masked
to its first 3 and last 4 characters.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import logging
import re
import sys
from typing import Any

import msgspec

REQUEST_CONTEXT: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "request_context", default=None
)

_LONG_DIGITS = re.compile(r"\d{10,}[\dXx]")
_RESERVED = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}
_encoder = msgspec.json.Encoder()


def mask_digits(text: str) -> str:
    return _LONG_DIGITS.sub(
        lambda m: m.group()[:3] + "*" * (len(m.group()) - 7) + m.group()[-4:], text
    )


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return mask_digits(value)
    # An int of 11+ digits is masked like a string: `extra={"phone": 13812345678}` must not
    # reach the log in clear (nor, for the same rule, an 18-digit ID passed as an int).
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**10:
        return mask_digits(str(value))
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    return mask_digits(str(value))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, tz=dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": mask_digits(record.getMessage()),
        }
        context = REQUEST_CONTEXT.get()
        if context:
            entry.update({key: _scrub(value) for key, value in context.items()})
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = _scrub(value)
        if record.exc_info:
            entry["exc"] = mask_digits(self.formatException(record.exc_info))
        return _encoder.encode(entry).decode()


def setup_logging(level: str) -> None:
    # Fields no line of ours carries, skipped as the logging HOWTO's "Optimization"
    # section describes: the caller's file and line (a stack walk per record), the
    # thread, and the process id (a system call per record on Python 3.11).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log duplicates our own request line.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
