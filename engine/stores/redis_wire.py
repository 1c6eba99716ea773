"""The request path's Redis client: one pipelined connection per process, on hiredis.

Every channel request makes two or three Redis calls (the nonce, the idempotency
claim, the cached answer). Through redis-py's asyncio client each cost 80-100 µs
of this process's CPU here (connection pool, lock, a timer per read, event
dispatch); through this client about 22 µs (BENCHMARKS.md, third round). It speaks
just what the request path needs — a command in, its reply out — with hiredis
packing the commands and parsing the replies, and raises redis-py's exception
types, so callers handle one family of errors either way.

One connection carries every caller's commands in order (Redis answers in order),
so concurrent requests share its writes and reads. Bounded everywhere:

- a call waits at most `timeout_s` (plus one watchdog tick) for its reply. A
  connection whose oldest reply is late is dead for everyone behind it: it is
  aborted and every waiting call fails with `TimeoutError` — one timer per
  connection, not one per call;
- at most `pending_max` calls wait at once; more fail at once;
- after a failed connect, calls fail at once for `RECONNECT_PAUSE_S` instead of
  piling up connect attempts against a Redis that is down.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import time
from typing import Final, cast

import hiredis
from redis.asyncio.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

RECONNECT_PAUSE_S: Final = 0.25
PENDING_MAX: Final = 10_000
WATCHDOG_TICKS_PER_TIMEOUT: Final = 4

Arg = str | bytes | int
Reply = bytes | int | list["Reply"] | None


class Script:
    """A Lua script, run atomically by Redis (`RedisWire.run_script`): made once at import."""

    __slots__ = ("sha1", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha1 = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()


class _Waiting:
    __slots__ = ("deadline", "future")

    def __init__(self, future: asyncio.Future[Reply], deadline: float) -> None:
        self.future = future
        self.deadline = deadline


class _Wire(asyncio.Protocol):
    """One connection: commands written in order, replies handed out in that order."""

    def __init__(self, timeout_s: float) -> None:
        self._timeout_s = timeout_s
        self._tick_s = timeout_s / WATCHDOG_TICKS_PER_TIMEOUT
        self._loop = asyncio.get_running_loop()  # once: each lookup is a getpid() on 3.11
        self._reader = hiredis.Reader()
        self._waiting: collections.deque[_Waiting] = collections.deque()
        self._transport: asyncio.Transport | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._corked: list[bytes] = []
        self.lost: BaseException | None = None

    @property
    def pending(self) -> int:
        return len(self._waiting)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not registered as asyncio.Transport; they behave as one.
        self._transport = cast(asyncio.Transport, transport)

    def send(self, args: tuple[Arg, ...]) -> asyncio.Future[Reply]:
        if self.lost is not None or self._transport is None:
            raise RedisConnectionError("redis connection lost")
        loop = self._loop
        future: asyncio.Future[Reply] = loop.create_future()
        # Commands sent in one turn of the event loop leave in one write: fewer system
        # calls, fewer wake-ups of Redis. hiredis's stub declares a one-element tuple.
        if not self._corked:
            loop.call_soon(self._uncork)
        self._corked.append(hiredis.pack_command(args))  # type: ignore[arg-type]
        self._waiting.append(_Waiting(future, loop.time() + self._timeout_s))
        if self._watchdog is None:
            self._watchdog = loop.call_later(self._tick_s, self._check_deadline)
        return future

    def _uncork(self) -> None:
        corked, self._corked = self._corked, []
        if self.lost is None and self._transport is not None:
            self._transport.write(b"".join(corked))

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while True:
            try:
                reply = self._reader.gets()
            except hiredis.ProtocolError as exc:
                self._fail(RedisConnectionError(f"redis protocol error: {exc}"))
                return
            if reply is False:
                return
            if not self._waiting:  # a reply nobody asked for: the stream is out of step
                self._fail(RedisConnectionError("redis sent a reply nobody asked for"))
                return
            future = self._waiting.popleft().future
            if future.done():  # its caller gave up (cancelled); the order still holds
                continue
            if isinstance(reply, hiredis.ReplyError):
                future.set_exception(ResponseError(str(reply)))
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(RedisConnectionError(f"redis connection lost: {exc or 'closed'}"))

    def _check_deadline(self) -> None:
        self._watchdog = None
        if not self._waiting:
            return
        loop = self._loop
        if self._waiting[0].deadline <= loop.time():
            self._fail(RedisTimeoutError(f"no reply from redis within {self._timeout_s} s"))
            return
        self._watchdog = loop.call_later(self._tick_s, self._check_deadline)

    def _fail(self, exc: RedisError) -> None:
        if self.lost is None:
            self.lost = exc
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self._transport is not None:
            self._transport.abort()
        while self._waiting:
            future = self._waiting.popleft().future
            if not future.done():
                future.set_exception(exc)

    def close(self) -> None:
        self._fail(RedisConnectionError("redis client closed"))


class RedisWire:
    """`await client.execute("SET", key, value, "NX", "EX", 60)` and a few helpers."""

    def __init__(self, url: str, *, timeout_s: float, pending_max: int = PENDING_MAX) -> None:
        if not url.startswith("redis://"):
            raise ValueError("only redis:// URLs are supported (no TLS, no unix socket)")
        if timeout_s <= 0 or pending_max < 1:
            raise ValueError("timeout_s must be > 0 and pending_max >= 1")
        options = parse_url(url)
        self._host = str(options.get("host", "127.0.0.1"))
        self._port = int(options.get("port", 6379))
        self._hello: list[tuple[Arg, ...]] = []
        if options.get("password"):
            user = options.get("username")
            auth = ("AUTH", user, options["password"]) if user else ("AUTH", options["password"])
            self._hello.append(auth)
        if int(options.get("db", 0)):
            self._hello.append(("SELECT", int(options["db"])))
        self._timeout_s = timeout_s
        self._pending_max = pending_max
        self._wire: _Wire | None = None
        self._connecting: asyncio.Future[_Wire] | None = None
        self._connect_task: asyncio.Task[None] | None = None  # kept: the loop holds tasks weakly
        self._paused_until = 0.0
        self._closed = False

    async def execute(self, *args: Arg) -> Reply:
        wire = self._wire
        if wire is None or wire.lost is not None:
            wire = await self._connected()
        if wire.pending >= self._pending_max:
            raise RedisConnectionError(f"more than {self._pending_max} redis calls waiting")
        return await wire.send(args)

    async def set(self, key: str, value: bytes, *, ex: int, nx: bool = False) -> bool:
        """SET with a TTL; with `nx`, False when the key was already there."""
        if nx:
            return await self.execute("SET", key, value, "NX", "EX", ex) is not None
        return await self.execute("SET", key, value, "EX", ex) is not None

    async def get(self, key: str) -> bytes | None:
        reply = await self.execute("GET", key)
        assert reply is None or isinstance(reply, bytes), type(reply)
        return reply

    async def delete(self, key: str) -> int:
        reply = await self.execute("DEL", key)
        assert isinstance(reply, int), type(reply)
        return reply

    async def run_script(
        self, script: Script, keys: tuple[str, ...], args: tuple[Arg, ...]
    ) -> Reply:
        """EVALSHA, or EVAL once when this Redis has not seen the script (a restart)."""
        try:
            return await self.execute("EVALSHA", script.sha1, len(keys), *keys, *args)
        except ResponseError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        return await self.execute("EVAL", script.source, len(keys), *keys, *args)

    async def ping(self) -> None:
        """Raises unless Redis answers PONG."""
        reply = await self.execute("PING")
        if reply != b"PONG":
            raise ResponseError(f"PING answered {reply!r}")

    async def aclose(self) -> None:
        self._closed = True
        if self._wire is not None:
            self._wire.close()
            self._wire = None

    async def _connected(self) -> _Wire:
        if self._closed:
            raise RedisConnectionError("redis client closed")
        if self._connecting is None:
            if time.monotonic() < self._paused_until:
                raise RedisConnectionError("redis unreachable; next connect attempt shortly")
            loop = asyncio.get_running_loop()
            self._connecting = loop.create_future()
            self._connect_task = loop.create_task(self._connect(self._connecting))
        # Several callers wait for one attempt; none of them cancels it for the rest.
        return await asyncio.shield(self._connecting)

    async def _connect(self, done: asyncio.Future[_Wire]) -> None:
        loop = asyncio.get_running_loop()
        wire: _Wire | None = None
        try:
            async with asyncio.timeout(self._timeout_s):
                _, wire = await loop.create_connection(
                    lambda: _Wire(self._timeout_s), self._host, self._port
                )
                for command in self._hello:
                    await wire.send(command)
            if self._closed:
                raise RedisConnectionError("redis client closed")
        except BaseException as exc:  # whatever ends the attempt, its waiters hear of it
            if wire is not None:
                wire.close()
            self._paused_until = time.monotonic() + RECONNECT_PAUSE_S
            error = (
                exc
                if isinstance(exc, RedisConnectionError)
                else RedisConnectionError(f"cannot connect to redis: {exc!r}")
            )
            done.set_exception(error)
            done.exception()  # retrieved: a failed attempt nobody awaited is not an error
            if not isinstance(exc, Exception):
                raise  # a cancellation goes on
        else:
            assert wire is not None
            self._wire = wire
            done.set_result(wire)
        finally:
            self._connecting = None
