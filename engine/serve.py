"""`python -m engine serve`: a master process and N prefork workers sharing the port.

    master ──fork──► worker 1 ─┐
           ──fork──► worker 2 ─┼─ each: uvloop, its own app, SO_REUSEPORT on host:port
           ──fork──► worker N ─┘  (TLS if a certificate is configured), and the
                                  operations app on ops_host:ops_port (SO_REUSEPORT too)

The master only supervises: it restarts a worker that died (at most
`RESTARTS_MAX` within `RESTART_WINDOW_S`, then it gives up and exits 1), and on
SIGINT or SIGTERM it asks every worker to stop. A worker stops gracefully: it
closes its listening socket, lets in-flight requests finish (within
`http.shutdown_timeout_s`), then closes its pools.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import ssl
import sys
import time

from aiohttp import web

from engine.http.app import create_app, create_ops_app
from engine.runtime import gc_tuning
from engine.runtime.logs import setup_logging
from engine.settings import HttpSettings, Settings

log = logging.getLogger("engine.serve")

RESTARTS_MAX = 10
RESTART_WINDOW_S = 60.0
STOP_GRACE_EXTRA_S = 5.0


def tls_context(http: HttpSettings) -> ssl.SSLContext | None:
    """The public port's TLS, when a certificate is configured (TLS 1.2 at least)."""
    if not http.tls_cert_file:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(http.tls_cert_file, http.tls_key_file)
    return context


async def _worker_main(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    http = settings.http
    api = create_app(settings)
    runner = web.AppRunner(
        api, handle_signals=False, access_log=None, shutdown_timeout=http.shutdown_timeout_s
    )
    await runner.setup()
    site = web.TCPSite(
        runner,
        http.host,
        http.port,
        reuse_port=True,
        backlog=http.backlog,
        ssl_context=tls_context(http),
    )
    await site.start()
    # After the API: when the ops listener answers /readyz, the API port is open too.
    ops_runner = web.AppRunner(create_ops_app(api), handle_signals=False, access_log=None)
    if http.ops_port:
        await ops_runner.setup()
        await web.TCPSite(ops_runner, http.ops_host, http.ops_port, reuse_port=True).start()
    gc_tuning.settle_after_startup()
    log.info(
        "worker serving",
        extra={"host": http.host, "port": http.port, "tls": bool(http.tls_cert_file),
               "ops_port": http.ops_port},
    )  # fmt: skip
    await stop.wait()
    log.info("worker stopping")
    if http.ops_port:
        await ops_runner.cleanup()
    await runner.cleanup()


def _run_worker(settings: Settings) -> None:
    import uvloop

    # The child must not run the master's handlers.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    code = 0
    try:
        uvloop.run(_worker_main(settings))
    except Exception:
        log.exception("worker failed")
        code = 1
    finally:
        logging.shutdown()
    os._exit(code)


def _spawn(settings: Settings) -> int:
    pid = os.fork()
    if pid == 0:
        _run_worker(settings)
    return pid


class _Master:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.workers: set[int] = set()
        self.stopping = False
        self.restarts: list[float] = []

    def on_signal(self, signum: int, _frame: object) -> None:
        self.stopping = True
        for pid in self.workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def supervise(self) -> int:
        for _ in range(self.settings.http.workers):
            self.workers.add(_spawn(self.settings))
        deadline: float | None = None
        while self.workers:
            if self.stopping and deadline is None:
                deadline = (
                    time.monotonic() + self.settings.http.shutdown_timeout_s + STOP_GRACE_EXTRA_S
                )
            if deadline is not None and time.monotonic() > deadline:
                for pid in self.workers:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                time.sleep(0.1)
                continue
            self.workers.discard(pid)
            if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
                from prometheus_client import multiprocess

                multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
            if not self.stopping and not self._restart(pid, status):
                return 1
        return 0

    def _restart(self, pid: int, status: int) -> bool:
        now = time.monotonic()
        self.restarts = [t for t in self.restarts if now - t < RESTART_WINDOW_S]
        log.error("worker exited; restarting", extra={"pid": pid, "status": status})
        if len(self.restarts) >= RESTARTS_MAX:
            log.error("workers keep dying; giving up")
            self.on_signal(signal.SIGTERM, None)
            return False
        self.restarts.append(now)
        self.workers.add(_spawn(self.settings))
        return True


def serve(settings: Settings) -> int:
    setup_logging(settings.log_level)
    tls_context(settings.http)  # a bad certificate stops the master, not each worker
    master = _Master(settings)
    signal.signal(signal.SIGTERM, master.on_signal)
    signal.signal(signal.SIGINT, master.on_signal)
    log.info(
        "engine starting", extra={"workers": settings.http.workers, "port": settings.http.port}
    )
    code = master.supervise()
    log.info("engine stopped", extra={"code": code})
    sys.stderr.flush()
    return code
