"""JSON in and out at the edge: decode once into typed Structs, encode once.

Decoders are made once per type and cached. A body that is not JSON, has an
unknown field, or breaks a constraint is a 400 with a precise code; the
detail names the offending path (`$.amount`).
"""

from __future__ import annotations

import functools
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from engine.contract.errors import BadRequest

T = TypeVar("T")

_encoder = msgspec.json.Encoder(decimal_format="string")


@functools.cache
def _decoder(kind: type[Any]) -> msgspec.json.Decoder[Any]:
    return msgspec.json.Decoder(kind)


def decode(body: bytes, kind: type[T]) -> T:
    if not body:
        raise BadRequest("BODY_REQUIRED", "a JSON body is required")
    try:
        result: T = _decoder(kind).decode(body)  # type: ignore[arg-type]
    except msgspec.ValidationError as exc:
        message = str(exc)
        code = (
            "UNKNOWN_FIELD"
            if message.startswith("Object contains unknown field")
            else "VALIDATION_FAILED"
        )
        raise BadRequest(code, message) from exc
    except msgspec.DecodeError as exc:
        raise BadRequest("MALFORMED_JSON", "the body is not valid JSON") from exc
    return result


def encode(value: object) -> bytes:
    return _encoder.encode(value)


def json_response(
    body: bytes, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(body=body, status=status, content_type="application/json", headers=headers)
