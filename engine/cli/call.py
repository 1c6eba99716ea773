"""`python -m engine call METHOD PATH [BODY_FILE]`: one signed request to the channel API.

    python -m engine call GET /v1/loans/123
    python -m engine call POST /v1/drawdowns drawdown.json
    echo '{"reason": "fraud check"}' | python -m engine call POST /v1/credit-lines/7/freeze -

Signs as a channel would (`engine.security.signing`), with the channel and secret from
`--channel`/`--secret`, else ENGINE_CHANNEL_ID / ENGINE_CHANNEL_SECRET, else the
local stack's demo channel. A POST gets a fresh Idempotency-Key unless one is
given; it is printed to stderr, so the same request can be retried safely with
`--idempotency-key`. Prints the status line, then the body (JSON pretty-printed)
on stdout. Exit status: 0 for 2xx, 1 for any other answer or no answer, 2 for
usage errors. Redirects are not followed: the signature covers one path only.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from email.message import Message

TIMEOUT_S: Final = 30.0
BASE_URL_DEFAULT: Final = "http://127.0.0.1:8080"
CHANNEL_DEFAULT: Final = "demo"
# The local stack's demo channel secret, published in API.md: not a secret.
SECRET_DEFAULT: Final = "demo-secret"  # noqa: S105
REQUEST_BODY_BYTES_MAX: Final = 8 * 1024 * 1024
RESPONSE_BODY_BYTES_MAX: Final = 64 * 1024 * 1024
IDEMPOTENCY_KEY_CHARS_MAX: Final = 64
# Response headers worth showing a person (on stderr, so stdout stays the body).
_SHOWN_HEADERS: Final = ("X-Request-Id", "Idempotent-Replayed", "Retry-After", "Location")
# Characters left as they are when the path is percent-encoded: everything a
# request target may hold, including '%' so an already-encoded path is kept.
_PATH_SAFE_CHARS: Final = "/?&=%:@!$'()*+,;~-._"


class UsageError(Exception):
    """The command line cannot make a request; exit status 2."""


@dataclass(frozen=True)
class PreparedCall:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class CallResult:
    status: int
    reason: str
    headers: dict[str, str]
    body: bytes


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "call",
        help="send one signed request to the channel API",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("method", help="GET, POST, ...")
    parser.add_argument("path", help="path and query, e.g. /v1/loans/123")
    parser.add_argument("body_file", nargs="?", help="JSON body file, '-' for stdin")
    parser.add_argument("--base-url", help=f"env ENGINE_BASE_URL, else {BASE_URL_DEFAULT}")
    parser.add_argument("--channel", help=f"env ENGINE_CHANNEL_ID, else {CHANNEL_DEFAULT}")
    parser.add_argument(
        "--secret",
        help="env ENGINE_CHANNEL_SECRET (better: arguments show in ps), else the demo secret",
    )
    parser.add_argument("--idempotency-key", help="default for POST: a fresh random key")
    parser.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="one more header, e.g. 'X-Signer-IP: 203.0.113.7' (repeatable)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import http.client
    import os

    try:
        method = args.method.upper()
        body = read_body(method, args.body_file)
        call = prepare(
            method,
            args.path,
            body,
            base_url=args.base_url or os.environ.get("ENGINE_BASE_URL") or BASE_URL_DEFAULT,
            channel_id=args.channel or os.environ.get("ENGINE_CHANNEL_ID") or CHANNEL_DEFAULT,
            secret=args.secret or os.environ.get("ENGINE_CHANNEL_SECRET") or SECRET_DEFAULT,
            idempotency_key=args.idempotency_key,
        )
        call.headers.update(extra_headers(args.header))
    except UsageError as exc:
        print(f"engine call: {exc}", file=sys.stderr)
        return 2
    if "Idempotency-Key" in call.headers:
        print(f"Idempotency-Key: {call.headers['Idempotency-Key']}", file=sys.stderr)
    # URLError, refused connections and time-outs are OSErrors; a broken
    # answer (bad status line, cut-off body) is an HTTPException.
    try:
        result = send(call, timeout_s=TIMEOUT_S)
    except (OSError, http.client.HTTPException) as exc:
        print(f"engine call: no answer from {call.url}: {exc}", file=sys.stderr)
        return 1
    print_result(result)
    return 0 if 200 <= result.status <= 299 else 1


def extra_headers(lines: list[str]) -> dict[str, str]:
    """`NAME: VALUE` lines as headers; the signature's own cannot be overridden."""
    headers = {}
    for line in lines:
        name, sep, value = line.partition(":")
        name, value = name.strip(), value.strip()
        if not sep or not name.isascii() or not name.replace("-", "").isalnum():
            raise UsageError(f"--header must be 'NAME: VALUE': {line!r}")
        if name.lower() in {"x-channel-id", "x-timestamp", "x-nonce", "x-signature"}:
            raise UsageError(f"--header {name} is made by the signing")
        headers[name] = value
    return headers


def read_body(method: str, body_file: str | None) -> bytes:
    """The body bytes exactly as they will be signed and sent."""
    if body_file is None:
        return b""
    if method in ("GET", "HEAD"):
        raise UsageError(f"{method} takes no body")
    try:
        if body_file == "-":
            body = sys.stdin.buffer.read(REQUEST_BODY_BYTES_MAX + 1)
        else:
            with open(body_file, "rb") as file:
                body = file.read(REQUEST_BODY_BYTES_MAX + 1)
    except OSError as exc:
        raise UsageError(f"cannot read {body_file}: {exc}") from None
    if len(body) > REQUEST_BODY_BYTES_MAX:
        raise UsageError(f"body is larger than {REQUEST_BODY_BYTES_MAX} bytes")
    return body


def prepare(
    method: str,
    path: str,
    body: bytes,
    *,
    base_url: str,
    channel_id: str,
    secret: str,
    idempotency_key: str | None,
) -> PreparedCall:
    """The URL and every header, signed; no I/O, so tests can check it directly."""
    import secrets
    from urllib.parse import quote

    from engine.security import signing

    origin = _origin(base_url)
    if not path.startswith("/"):
        raise UsageError(f"path must start with '/': {path!r}")
    # Sign exactly what goes on the wire: spaces and non-ASCII percent-encoded.
    path_and_query = quote(path, safe=_PATH_SAFE_CHARS)
    if method == "POST" and idempotency_key is None:
        idempotency_key = secrets.token_urlsafe(24)
    if idempotency_key is not None:
        # Printable ASCII only: it goes into a header as typed.
        printable = all("\x21" <= char <= "\x7e" for char in idempotency_key)
        if not (printable and 1 <= len(idempotency_key) <= IDEMPOTENCY_KEY_CHARS_MAX):
            raise UsageError(
                f"--idempotency-key must be 1-{IDEMPOTENCY_KEY_CHARS_MAX} printable ASCII chars"
            )
    try:  # signature version 2: the channel and the key are signed too (API.md)
        headers = signing.signed_headers(
            channel_id, secret, method, path_and_query, body, idempotency_key=idempotency_key
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    headers["Accept"] = "application/json, application/problem+json"
    if body:
        headers["Content-Type"] = "application/json"
    return PreparedCall(method=method, url=origin + path_and_query, headers=headers, body=body)


def _origin(base_url: str) -> str:
    """scheme://host[:port]; a path prefix is refused, it would not be signed."""
    from urllib.parse import urlsplit

    parts = urlsplit(base_url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(f"base URL must be http(s)://host[:port]: {base_url!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise UsageError(f"base URL must have no path, query or fragment: {base_url!r}")
    return f"{parts.scheme}://{parts.netloc}"


def send(call: PreparedCall, *, timeout_s: float) -> CallResult:
    """Sends once (no retries, no redirects); any HTTP status is a result."""
    import urllib.error
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None  # the 3xx then surfaces as an HTTPError, i.e. a result

    opener = urllib.request.build_opener(NoRedirect)
    # The scheme was checked in `_origin` (http or https only), so no file:// here.
    request = urllib.request.Request(  # noqa: S310
        call.url, data=call.body or None, headers=call.headers, method=call.method
    )
    try:
        with opener.open(request, timeout=timeout_s) as response:
            body: bytes = response.read(RESPONSE_BODY_BYTES_MAX)
            return _result(response.status, response.reason, response.headers, body)
    except urllib.error.HTTPError as error:
        try:
            body = error.read(RESPONSE_BODY_BYTES_MAX)
        finally:
            error.close()
        return _result(error.code, str(error.reason), error.headers, body)


def _result(status: int, reason: str, headers: Message, body: bytes) -> CallResult:
    shown = {name: value for name in _SHOWN_HEADERS if (value := headers.get(name)) is not None}
    return CallResult(status=status, reason=reason, headers=shown, body=body)


def print_result(result: CallResult) -> None:
    for name, value in result.headers.items():
        print(f"{name}: {value}", file=sys.stderr)
    print(f"HTTP {result.status} {result.reason}".rstrip())
    text = format_body(result.body)
    if text:
        print(text)


def format_body(body: bytes) -> str:
    """JSON pretty-printed with Chinese kept readable; anything else as text."""
    import json

    if not body:
        return ""
    try:
        return json.dumps(json.loads(body), indent=2, ensure_ascii=False)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return body.decode("utf-8", errors="replace")
