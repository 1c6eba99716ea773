"""A minimal HTTP/1.1 keep-alive client for the benchmark's load generator.

The benchmark shares two cores with everything it measures, so its client must
cost little: aiohttp's client spent about 0.2 ms of CPU per request here. This
one writes a request head it formats itself and reads the answer with a
Content-Length body (the engine's JSON answers always have one) — nothing else:
no redirects, no chunked bodies, no cookies, no TLS. Anything it does not
understand counts as an error of that request and closes its connection.

One `LeanHttp` keeps a free list of connections to one host; a request takes
one, or opens a new one, and gives it back when its answer has been read.
"""

from __future__ import annotations

import asyncio
from typing import Final

HEAD_MAX: Final = 16 * 1024
BODY_MAX: Final = 1024 * 1024


class HttpError(Exception):
    """The answer could not be read: the connection is dropped."""


class _Conn(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not registered

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(HttpError(f"connection lost: {exc or 'closed'}"))

    @property
    def usable(self) -> bool:
        return not self.closed and self.transport is not None and not self.transport.is_closing()

    def request(self, data: bytes) -> asyncio.Future[tuple[int, bytes]]:
        assert self.transport is not None and self._waiter is None
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            self.transport.write(data)
        except RuntimeError as exc:  # uvloop: the server closed it since it was last used
            raise HttpError(f"connection closed: {exc}") from exc
        return self._waiter

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > HEAD_MAX:
                waiter.set_exception(HttpError("answer head too long"))
            return
        try:
            status, length = _parse_head(bytes(self._buffer[:end]))
        except (ValueError, IndexError) as exc:
            waiter.set_exception(HttpError(f"unreadable answer head: {exc}"))
            return
        body_start = end + 4
        if len(self._buffer) < body_start + length:
            return
        body = bytes(self._buffer[body_start : body_start + length])
        del self._buffer[: body_start + length]
        self._waiter = None
        waiter.set_result((status, body))


def _parse_head(head: bytes) -> tuple[int, int]:
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
            if not 0 <= length <= BODY_MAX:
                raise ValueError(f"content-length {length}")
            return status, length
    raise ValueError("no content-length")


class LeanHttp:
    def __init__(self, host: str, port: int, timeout_s: float) -> None:
        self._host = host
        self._port = port
        self._timeout_s = timeout_s
        self._free: list[_Conn] = []
        self._host_header = f"Host: {host}:{port}\r\n".encode()

    async def post(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        """(status, body) of one POST; raises HttpError, OSError or TimeoutError."""
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        data = (
            f"POST {path} HTTP/1.1\r\n".encode()
            + self._host_header
            + f"Content-Length: {len(body)}\r\n{head}\r\n".encode()
            + body
        )
        conn = self._reusable() or await self._connect()
        try:
            async with asyncio.timeout(self._timeout_s):
                answer = await conn.request(data)
        except BaseException:
            if conn.transport is not None:
                conn.transport.abort()
            raise
        if conn.usable:
            self._free.append(conn)
        return answer

    def _reusable(self) -> _Conn | None:
        """A kept-alive connection the server has not closed since, if any."""
        while self._free:
            conn = self._free.pop()
            if conn.usable:
                return conn
        return None

    async def _connect(self) -> _Conn:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self._timeout_s):
            _, conn = await loop.create_connection(_Conn, self._host, self._port)
        return conn

    def close(self) -> None:
        for conn in self._free:
            if conn.transport is not None:
                conn.transport.close()
        self._free.clear()
