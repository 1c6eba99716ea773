"""The benchmark's HTTP client against a real aiohttp server: answers read whole,
connections kept alive and reused, and every answer it cannot read is an error of
that request, never a wrong answer handed to the next one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from loadtest.lean_http import HttpError, LeanHttp
from tests.conftest import free_port
from tests.waiting import eventually


class Server:
    def __init__(self, port: int) -> None:
        self.port = port
        self.peers: set[object] = set()


SERVER = web.AppKey("server", Server)


async def _echo(request: web.Request) -> web.Response:
    server: Server = request.app[SERVER]
    server.peers.add(request.transport.get_extra_info("peername") if request.transport else None)
    body = await request.read()
    status = int(request.headers.get("X-Answer-Status", "200"))
    return web.Response(body=b"echo:" + body, status=status, content_type="application/json")


async def _hang(request: web.Request) -> web.Response:
    await asyncio.sleep(30)
    return web.Response(text="late")


async def _chunked(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    response.enable_chunked_encoding()
    await response.prepare(request)
    await response.write(b"part")
    await response.write_eof()
    return response


async def _drop(request: web.Request) -> web.Response:
    assert request.transport is not None
    request.transport.close()
    await asyncio.sleep(1)
    return web.Response(text="never sent")


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    app = web.Application()
    state = Server(free_port())
    app[SERVER] = state
    app.router.add_post("/echo", _echo)
    app.router.add_post("/hang", _hang)
    app.router.add_post("/chunked", _chunked)
    app.router.add_post("/drop", _drop)
    app.router.add_post("/close", _close_after)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", state.port)
    await site.start()
    yield state
    await runner.cleanup()


async def test_answers_and_keep_alive(server: Server) -> None:
    http = LeanHttp("127.0.0.1", server.port, timeout_s=5)
    for n in range(5):
        assert await http.post("/echo", {"X-N": str(n)}, b'{"n":%d}' % n) == (
            200,
            b'echo:{"n":%d}' % n,
        )
    assert len(server.peers) == 1  # one connection for all five
    status, body = await http.post("/echo", {"X-Answer-Status": "422"}, b"{}")
    assert (status, body) == (422, b"echo:{}")
    http.close()


async def test_concurrent_requests_each_get_their_own_answer(server: Server) -> None:
    http = LeanHttp("127.0.0.1", server.port, timeout_s=5)
    answers = await asyncio.gather(*(http.post("/echo", {}, b"%d" % n) for n in range(40)))
    assert answers == [(200, b"echo:%d" % n) for n in range(40)]
    opened = set(server.peers)
    assert len(opened) == 40  # all at once: none was free, each opened its own
    # Another 40 at once, then 10 in a row: every one on a connection kept from the first.
    again = await asyncio.gather(*(http.post("/echo", {}, b"b%d" % n) for n in range(40)))
    assert again == [(200, b"echo:b%d" % n) for n in range(40)]
    for n in range(10):
        assert await http.post("/echo", {}, b"c%d" % n) == (200, b"echo:c%d" % n)
    assert server.peers == opened  # 90 requests, 40 connections: each reused, none opened
    http.close()


async def test_a_hung_server_times_out_and_its_connection_is_dropped(server: Server) -> None:
    http = LeanHttp("127.0.0.1", server.port, timeout_s=0.2)
    with pytest.raises(TimeoutError):
        await http.post("/hang", {}, b"")
    assert await http.post("/echo", {}, b"after") == (200, b"echo:after")
    http.close()


@pytest.mark.parametrize("path", ["/chunked", "/drop"])
async def test_unreadable_answers_are_errors(server: Server, path: str) -> None:
    http = LeanHttp("127.0.0.1", server.port, timeout_s=2)
    with pytest.raises(HttpError):
        await http.post(path, {}, b"")
    assert await http.post("/echo", {}, b"next") == (200, b"echo:next")
    http.close()


async def _close_after(request: web.Request) -> web.Response:
    server: Server = request.app[SERVER]
    server.peers.add(request.transport.get_extra_info("peername") if request.transport else None)
    response = web.Response(body=b"bye")
    response.force_close()  # "Connection: close", and the server closes it after the answer
    return response


async def test_a_connection_the_server_closed_is_not_reused(server: Server) -> None:
    http = LeanHttp("127.0.0.1", server.port, timeout_s=2)
    assert await http.post("/close", {}, b"") == (200, b"bye")
    # Until the server's FIN has arrived: the kept connection is then seen closed.
    kept = await eventually(lambda: asyncio.sleep(0, list(http._free)),
                            lambda free: not any(c.usable for c in free), timeout_s=10)  # fmt: skip
    assert not any(c.usable for c in kept)
    assert await http.post("/echo", {}, b"again") == (200, b"echo:again")
    assert len(server.peers) == 2  # the answer after the close came on a new connection
    http.close()
