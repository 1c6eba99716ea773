"""Fakes of the systems we do not own, each its own aiohttp process on its own port.

    engine relay ------HTTP--> fake core bank     :18601  python -m loadtest.fakes.core_bank
                 ------HTTP--> fake SMS gateway   :18602  python -m loadtest.fakes.sms_gateway
    engine origination -HTTP--> fake credit bureau :18603  python -m loadtest.fakes.credit_bureau
    tests -------------HTTP--> GET /fake/records|messages|queries, POST /fake/knobs, GET /metrics

They talk HTTP only and import nothing from `engine/`. Each keeps a durable
record of what it did (JSON lines, fsync'd before each answer, reloaded at start-up),
so that a test can hold it against our ledger.

This module holds the pieces the fakes' handlers and records share:

    Journal[T]        append-only JSON-lines file of msgspec Structs
    BadRequest        a request refused with 400, nothing recorded
    error_middleware  BadRequest / msgspec errors -> 400 {"error", "detail"}
    read_json         request body -> Struct, bounded in size and time
    json_response     Struct -> application/json
    SHANGHAI          the time zone of every recorded time (+08:00)

How a fake is configured, started and served (its settings from the
environment, its state, its app with the routes every fake has, its `main`) is
in `loadtest.fakes.service`; its knobs are in `loadtest.fakes.knobs`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

import msgspec
from aiohttp import web

BODY_MAX_BYTES = 64 * 1024
BODY_READ_TIMEOUT_S = 5.0
SHANGHAI = dt.timezone(dt.timedelta(hours=8), "Asia/Shanghai")  # no DST since 1991

T = TypeVar("T")  # a msgspec Struct
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_log = logging.getLogger("loadtest.fakes")
_encoder = msgspec.json.Encoder()


class BadRequest(Exception):
    """A request the fake refuses with 400; nothing was recorded."""

    def __init__(self, error: str, detail: str) -> None:
        super().__init__(detail)
        self.error = error
        self.detail = detail


class Journal(Generic[T]):
    """An append-only JSON-lines file: one Struct per line, fsync'd before `append` returns.

    `load` runs once at start-up; a torn last line (a crash mid-write, so never
    acknowledged) is cut off, any other unreadable line stops the fake.
    """

    def __init__(self, path: Path, record_type: type[T]) -> None:
        self.path = path
        self._decoder = msgspec.json.Decoder(record_type)
        self._queued: list[tuple[bytes, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._fd: int | None = None

    def load(self) -> list[T]:
        assert self._fd is None, "load once, before the first append"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        if created:
            _fsync_directory(self.path.parent)
        data = self.path.read_bytes()
        complete_bytes = data.rfind(b"\n") + 1
        if complete_bytes < len(data):
            _log.warning(
                "%s: cutting a torn last line of %d bytes", self.path, len(data) - complete_bytes
            )
            os.ftruncate(self._fd, complete_bytes)
            os.fsync(self._fd)
        lines = data[:complete_bytes].splitlines()
        return [self._decoder.decode(line) for line in lines if line.strip()]

    async def append(self, record: T) -> None:
        """Returns once the record is on disk. Records that arrive while a write is
        under way go out together in the next one, with one fsync (group commit):
        under load a fake must not take the CPU of the system it stands beside."""
        await self.append_many((record,))

    async def append_many(self, records: Sequence[T]) -> None:
        """`append` for several records at once (a batch's), in one write."""
        done = asyncio.get_running_loop().create_future()
        self._queued.append((b"".join(_encoder.encode(r) + b"\n" for r in records), done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain())
        await done

    async def _drain(self) -> None:
        while self._queued:
            batch, self._queued = self._queued, []
            try:
                await asyncio.to_thread(self._write, b"".join(line for line, _ in batch))
            except Exception as exc:  # nothing in this batch is acknowledged
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                continue
            for _, done in batch:
                if not done.done():
                    done.set_result(None)

    def _write(self, line: bytes) -> None:
        assert self._fd is not None, "load() opens the journal"
        view = memoryview(line)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        os.fsync(self._fd)

    async def close(self) -> None:
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


async def read_json(request: web.Request, decoder: msgspec.json.Decoder[T]) -> T:
    """Decode the body into a Struct (unknown fields and bad types are a BadRequest)."""
    async with asyncio.timeout(BODY_READ_TIMEOUT_S):
        body = await request.read()
    return decoder.decode(body)


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=_encoder.encode(body), status=status, content_type="application/json")


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The one place where a refused request becomes a 400 with a JSON body."""
    try:
        return await handler(request)
    except BadRequest as exc:
        return json_response({"error": exc.error, "detail": exc.detail}, status=400)
    except msgspec.ValidationError as exc:
        return json_response({"error": "invalid_field", "detail": str(exc)}, status=400)
    except msgspec.DecodeError as exc:
        return json_response({"error": "invalid_json", "detail": str(exc)}, status=400)
