"""The API's errors: RFC 9457 problem details with a stable `code`.

    ApiError (status, code)
    ├── BadRequest        400  malformed JSON, unknown field, bad amount, missing key ...
    ├── Unauthorized      401  bad signature, stale timestamp, replayed nonce, unknown channel
    ├── Forbidden         403  another tenant's customer (reads answer 404 instead)
    ├── NotFound          404
    ├── Conflict          409  in-flight idempotency key, customer exists
    ├── Unprocessable     422  a business rule refused it (frozen line, limit exceeded ...)
    ├── TooManyRequests   429  the channel's rate limit (with Retry-After); too many wrong
    │                          codes, or a code asked for too soon
    └── ServiceUnavailable 503 a shard or dependency is down: retry later

A handler raises one; the error middleware renders it. Anything else becomes a
500 with code INTERNAL and no stack trace in the body (the log has it).
"""

from __future__ import annotations

import msgspec


class Problem(msgspec.Struct, omit_defaults=True):
    type: str
    title: str
    status: int
    code: str
    detail: str
    request_id: str = ""
    customer_id: str | None = None  # CUSTOMER_EXISTS: the existing customer


class ApiError(Exception):
    status = 500
    title = "Internal error"

    def __init__(
        self,
        code: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra or {}

    def problem(self, request_id: str) -> Problem:
        return Problem(
            type=f"https://errors.lending-engine.example/{self.code.lower().replace('_', '-')}",
            title=self.title,
            status=self.status,
            code=self.code,
            detail=self.detail,
            request_id=request_id,
            customer_id=self.extra.get("customer_id"),
        )


class BadRequest(ApiError):
    status = 400
    title = "Bad request"


class Unauthorized(ApiError):
    status = 401
    title = "Unauthorized"


class Forbidden(ApiError):
    status = 403
    title = "Forbidden"


class NotFound(ApiError):
    status = 404
    title = "Not found"


class Conflict(ApiError):
    status = 409
    title = "Conflict"


class PayloadTooLarge(ApiError):
    status = 413
    title = "Payload too large"


class Unprocessable(ApiError):
    status = 422
    title = "Unprocessable request"


class TooManyRequests(ApiError):
    status = 429
    title = "Too many requests"


class ServiceUnavailable(ApiError):
    status = 503
    title = "Service unavailable"
