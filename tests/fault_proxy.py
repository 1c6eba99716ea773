"""A TCP fault proxy of our own (these machines have no netem): it sits between the
engine and one server (a PostgreSQL server, Redis, the fake core) and misbehaves on
request.

    engine ──► 127.0.0.1:proxy.port ──► FaultProxy ──► 127.0.0.1:target
                                        mode: pass | latency | drop | blackhole

- pass:      bytes forwarded as they come.
- latency:   every chunk, each way, held `latency_s` before it is forwarded (per
             direction in order, so the stream is never reordered).
- drop:      a chunk from the engine is forwarded and then, with `drop_ratio`, the
             connection is cut at once, both ways: the server has the statement or
             request, the engine never hears its outcome ("dropped mid-statement").
- blackhole: nothing is forwarded either way and new connections are accepted and
             left silent, so the engine's time-outs are what end its calls. Leaving
             blackhole cuts every connection that lost bytes (their streams are torn).

The proxy runs its own event loop in a thread of its own: the test's loop may block
(a `wait_ready`, a subprocess) and must not stall the engine's database traffic.
Every connection is bounded by the same limits as its endpoints; `stats` counts what
the proxy did, so a test can show that a fault really hit something.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

Mode = Literal["pass", "latency", "drop", "blackhole"]
CHUNK_BYTES = 65_536
CONNECT_TIMEOUT_S = 5.0


@dataclass
class ProxyStats:
    connections: int = 0
    chunks_forwarded: int = 0
    chunks_swallowed: int = 0  # blackhole: read and thrown away
    cuts: int = 0  # connections cut by `drop` or by `cut_all`


@dataclass(eq=False)  # kept in a set by identity
class _Pipe:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    torn: bool = False  # lost bytes in a blackhole: unusable once the hole closes
    # The last bytes forwarded went to the server: a request (HTTP/1.1: one at a time per
    # connection) that has had no answer yet.
    awaiting: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def abort(self) -> None:
        for writer in (self.client, self.upstream):
            if writer is not None:
                writer.transport.abort()


class FaultProxy:
    def __init__(self, target_port: int, *, target_host: str = "127.0.0.1", seed: int = 0) -> None:
        self.target = (target_host, target_port)
        self.mode: Mode = "pass"
        self.latency_s = 0.0
        self.drop_ratio = 0.0
        self.stats = ProxyStats()
        self._rng = random.Random(seed)
        self._pipes: set[_Pipe] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self.port = 0

    # --- control, from the test's thread ------------------------------------------------

    def start(self) -> FaultProxy:
        self._thread.start()
        self._server = self._call(asyncio.start_server(self._accept, "127.0.0.1", 0))
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def set(self, mode: Mode, *, latency_s: float = 0.0, drop_ratio: float = 0.0) -> None:
        """Switch the fault; leaving a blackhole cuts the connections it tore."""
        assert mode in ("pass", "latency", "drop", "blackhole"), mode
        assert 0.0 <= drop_ratio <= 1.0 and 0.0 <= latency_s <= 30.0

        async def switch() -> None:
            was_blackhole = self.mode == "blackhole"
            self.mode, self.latency_s, self.drop_ratio = mode, latency_s, drop_ratio
            if was_blackhole and mode != "blackhole":
                for pipe in [p for p in self._pipes if p.torn or p.upstream is None]:
                    self._cut(pipe)

        self._call(switch())

    def cut_all(self) -> int:
        """Cut every open connection now (both ways); returns how many were cut."""

        async def cut() -> int:
            pipes = list(self._pipes)
            for pipe in pipes:
                self._cut(pipe)
            return len(pipes)

        return self._call(cut())

    @property
    def open_connections(self) -> int:
        return len(self._pipes)

    @property
    def calls_open(self) -> int:
        """Connections whose last bytes went to the server with no answer since: for an
        HTTP/1.1 client, requests in flight through the proxy."""

        async def count() -> int:
            return sum(pipe.awaiting for pipe in self._pipes)

        return int(self._call(count()))

    @contextlib.contextmanager
    def fault(
        self, mode: Mode, *, latency_s: float = 0.0, drop_ratio: float = 0.0
    ) -> Iterator[FaultProxy]:
        """The fault for the `with` block; back to pass afterwards, whatever happens."""
        self.set(mode, latency_s=latency_s, drop_ratio=drop_ratio)
        try:
            yield self
        finally:
            self.set("pass")

    def _call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    # --- the proxy's own loop -----------------------------------------------------------

    async def _close(self) -> None:
        assert self._server is not None
        self._server.close()
        for pipe in list(self._pipes):
            self._cut(pipe, counted=False)
        await self._server.wait_closed()

    def _cut(self, pipe: _Pipe, *, counted: bool = True) -> None:
        if pipe in self._pipes:
            self._pipes.discard(pipe)
            self.stats.cuts += counted
        pipe.abort()
        for task in pipe.tasks:
            task.cancel()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.connections += 1
        pipe = _Pipe(writer)
        self._pipes.add(pipe)
        try:
            while self.mode == "blackhole":  # accepted, never answered while the hole lasts
                if await self._swallow(reader, pipe):
                    return
            try:
                up_reader, pipe.upstream = await asyncio.wait_for(
                    asyncio.open_connection(*self.target), CONNECT_TIMEOUT_S
                )
            except (OSError, TimeoutError):
                return
            pipe.tasks = [
                asyncio.ensure_future(self._pump(reader, pipe.upstream, pipe, upstream=True)),
                asyncio.ensure_future(self._pump(up_reader, writer, pipe, upstream=False)),
            ]
            await asyncio.wait(pipe.tasks, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            pass
        finally:
            self._pipes.discard(pipe)
            pipe.abort()
            for task in pipe.tasks:
                task.cancel()

    async def _swallow(self, reader: asyncio.StreamReader, pipe: _Pipe) -> bool:
        """Read and discard while in a blackhole; True when the peer has gone."""
        try:
            chunk = await asyncio.wait_for(reader.read(CHUNK_BYTES), 0.05)
        except TimeoutError:
            return False
        if not chunk:
            return True
        pipe.torn = True
        self.stats.chunks_swallowed += 1
        return False

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        pipe: _Pipe,
        *,
        upstream: bool,
    ) -> None:
        try:
            while chunk := await reader.read(CHUNK_BYTES):
                if self.mode == "blackhole":
                    pipe.torn = True
                    self.stats.chunks_swallowed += 1
                    continue
                if self.mode == "latency" and self.latency_s > 0:
                    await asyncio.sleep(self.latency_s)
                writer.write(chunk)
                await writer.drain()
                self.stats.chunks_forwarded += 1
                pipe.awaiting = upstream
                if upstream and self.mode == "drop" and self._rng.random() < self.drop_ratio:
                    self._cut(pipe)
                    return
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                writer.close()


__all__ = ["FaultProxy", "Mode", "ProxyStats"]
