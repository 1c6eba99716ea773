"""What every fake is built on: its settings, its state, its app and its `main`.

A fake module describes itself in one `FakeSpec` and gets the rest from here:

    FakeSpec          name, environment prefix, default port, record file and knobs,
                      the knobs it has, its record type and route, its metrics, its
                      state, and its API routes
    FakeConfig        from the environment ({PREFIX} = FAKE_CORE, FAKE_SMS, FAKE_BUREAU):
                      {PREFIX}_HOST (127.0.0.1), {PREFIX}_PORT, {PREFIX}_RECORD_FILE,
                      {PREFIX}_SEED (random draws, for reproducible runs) and one
                      {PREFIX}_<KNOB> per knob the fake has (loadtest.fakes.knobs)
    FakeState         the knobs in force (POST /fake/knobs replaces them), the seeded
                      random source, the journal and every record in it (loaded at
                      start-up)
    OncePerReference  a FakeState that acts at most once per reference (core's
                      transfers, the SMS gateway's sends): the new references of a call
                      decided together, a repeat given the first outcome
    spec.create_app   the aiohttp app: the fake's routes, GET <records route> (every
                      record, in order; ?reference=R: R's alone), GET|POST /fake/knobs,
                      GET /healthz, GET /metrics;
                      the journal is loaded at start-up and closed at shutdown
    spec.main         `python -m loadtest.fakes.X`: a bad environment exits 2, otherwise
                      serve (uvloop) until SIGINT/SIGTERM

Like the fakes, this imports nothing from `engine/`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import msgspec
import uvloop
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from loadtest.fakes import (
    BODY_MAX_BYTES,
    BadRequest,
    Handler,
    Journal,
    error_middleware,
    json_response,
    read_json,
)
from loadtest.fakes.knobs import (
    Knobs,
    KnobsError,
    KnobsUpdate,
    apply_update,
    env_path,
    env_port,
    env_seed,
    env_text,
    knobs_from_env,
)

SHUTDOWN_TIMEOUT_S = 1.0  # hanging "time-outs" are not waited for: their record is written
DUPLICATE_WAIT_S_MAX = 60.0  # a repeat waits at most this long for the first to be decided


class Referenced(Protocol):
    """A request or record about one reference (the fake's idempotency key)."""

    @property
    def reference(self) -> str: ...


R = TypeVar("R")  # one line of the fake's record (a msgspec Struct)
M = TypeVar("M")  # the fake's metrics
S = TypeVar("S", bound="FakeState[Any, Any]")
RR = TypeVar("RR", bound=Referenced)  # a record of one reference
Q = TypeVar("Q", bound=Referenced)  # a request for one reference

_log = logging.getLogger("loadtest.fakes")
_knobs_decoder = msgspec.json.Decoder(KnobsUpdate)


class FakeConfig(msgspec.Struct, frozen=True):
    """A fake's settings, read once from the environment at start-up."""

    host: str
    port: int
    record_path: Path
    knobs: Knobs
    seed: int | None


class FakeState(Generic[R, M]):
    """What every fake keeps; each fake's state adds its own on top."""

    def __init__(self, journal: Journal[R], config: FakeConfig, metrics: M) -> None:
        self.knobs = config.knobs
        self.metrics = metrics
        self.journal = journal
        self.rng = random.Random(config.seed)
        self.records: list[R] = journal.load()


class OncePerReference(FakeState[RR, M], Generic[RR, M, Q]):
    """A fake's state in which each reference is acted on at most once: at most one
    record per reference, so a repeat never acts (sends, moves money) again.

    `decide_once(items)` takes a call's items (references distinct). Its new
    references are decided together, as if each came alone but with one latency wait
    and one journal write: a batch costs the machine the fake shares about what one
    item does. `_decide` (the fake's own rule) gives each, in order, its record, or
    None to record nothing (the reference stays new: it may be sent again). A repeat,
    also after one latency wait, gets the first outcome; one that arrives while the
    first is still being decided waits for it (at most DUPLICATE_WAIT_S_MAX) and
    shares its fate: None if that recorded nothing or ended without an outcome.
    """

    def __init__(self, journal: Journal[RR], config: FakeConfig, metrics: M) -> None:
        super().__init__(journal, config, metrics)
        self.by_reference = {record.reference: record for record in self.records}
        assert len(self.by_reference) == len(self.records), "one record per reference"
        self._in_flight: dict[str, tuple[Q, asyncio.Future[RR | None]]] = {}

    def _decide(self, knobs: Knobs, item: Q) -> RR | None:
        raise NotImplementedError

    def in_flight(self, reference: str) -> Q | None:
        """The item being decided under `reference`, if any."""
        entry = self._in_flight.get(reference)
        return None if entry is None else entry[0]

    async def decide_once(self, items: Sequence[Q]) -> list[tuple[RR | None, bool]]:
        """(the outcome, whether it is a repeat) for each item, in order."""
        loop = asyncio.get_running_loop()
        fresh: dict[str, asyncio.Future[RR | None]] = {}
        for item in items:
            if item.reference not in self.by_reference and item.reference not in self._in_flight:
                fresh[item.reference] = loop.create_future()
                self._in_flight[item.reference] = (item, fresh[item.reference])
        repeats = asyncio.gather(
            *(self._first(i.reference) for i in items if i.reference not in fresh)
        )
        decided: dict[str, RR | None] = {}
        try:
            if fresh:
                knobs = self.knobs
                await asyncio.sleep(knobs.latency_ms / 1000)
                for item in items:
                    if item.reference in fresh:
                        decided[item.reference] = self._decide(knobs, item)
                recorded = [record for record in decided.values() if record is not None]
                if recorded:
                    await self.journal.append_many(recorded)
                for record in recorded:
                    self.records.append(record)
                    self.by_reference[record.reference] = record
                for reference, outcome in decided.items():
                    fresh[reference].set_result(outcome)
        except BaseException:
            repeats.cancel()
            raise
        finally:
            for reference, future in fresh.items():
                del self._in_flight[reference]
                if not future.done():
                    future.cancel()
        repeated = iter(await repeats)
        return [
            (decided[i.reference], False) if i.reference in fresh else (next(repeated), True)
            for i in items
        ]

    async def _first(self, reference: str) -> RR | None:
        """The first outcome of a repeat (see the class)."""
        entry = self._in_flight.get(reference)
        await asyncio.sleep(self.knobs.latency_ms / 1000)
        record = self.by_reference.get(reference)
        if record is not None:
            return record
        assert entry is not None, "a reference is recorded or in flight"
        future = entry[1]
        await asyncio.wait([future], timeout=DUPLICATE_WAIT_S_MAX)
        return future.result() if future.done() and not future.cancelled() else None


@dataclass(frozen=True)
class FakeSpec(Generic[R, M, S]):
    """One fake: what differs from the others. `routes`: its API (web.post, web.get)."""

    name: str  # "fake core banking": in the log and in start-up errors
    env_prefix: str  # "FAKE_CORE"
    default_port: int
    default_record_file: str
    default_knobs: Knobs
    supported_knobs: frozenset[str]
    record_type: type[R]
    records_route: str  # "/fake/records": every record, in order
    state_key: web.AppKey[S]
    new_metrics: Callable[[CollectorRegistry], M]
    new_state: Callable[[Journal[R], FakeConfig, M], S]
    routes: Sequence[web.RouteDef]

    def config_from_env(self, environ: Mapping[str, str]) -> FakeConfig:
        """The settings; raises KnobsError for a bad port, seed or knob."""
        prefix = self.env_prefix
        return FakeConfig(
            host=env_text(environ, f"{prefix}_HOST", "127.0.0.1"),
            port=env_port(environ, f"{prefix}_PORT", self.default_port),
            record_path=env_path(environ, f"{prefix}_RECORD_FILE", self.default_record_file),
            knobs=knobs_from_env(prefix, self.default_knobs, self.supported_knobs, environ),
            seed=env_seed(environ, f"{prefix}_SEED"),
        )

    def create_app(self, config: FakeConfig, registry: CollectorRegistry) -> web.Application:
        app = web.Application(middlewares=[error_middleware], client_max_size=BODY_MAX_BYTES)
        metrics = self.new_metrics(registry)
        state_key = self.state_key

        async def state_ctx(app: web.Application) -> AsyncIterator[None]:
            journal = Journal(config.record_path, self.record_type)
            app[state_key] = self.new_state(journal, config, metrics)
            yield
            await journal.close()

        async def records(request: web.Request) -> web.StreamResponse:
            """Every record, or with `?reference=R` the one decided for R (a test or a load
            run reading the code an SMS carried), found in its index where there is one."""
            state = request.app[state_key]
            reference = request.query.get("reference")
            if reference is None:
                return json_response(state.records)
            index = getattr(state, "by_reference", None)
            if isinstance(index, dict):
                found = index.get(reference)
                return json_response([] if found is None else [found])
            return json_response(
                [r for r in state.records if getattr(r, "reference", None) == reference]
            )

        app.cleanup_ctx.append(state_ctx)
        app.add_routes(self.routes)
        app.router.add_get(self.records_route, records)
        add_common_routes(app, state_key, self.supported_knobs, registry)
        return app

    def main(self) -> None:
        """`python -m loadtest.fakes.X`: settings from the environment (bad: exit 2), then serve."""
        try:
            config = self.config_from_env(os.environ)
        except KnobsError as exc:
            print(f"{self.name}: {exc}", file=sys.stderr)
            raise SystemExit(2) from exc
        run(self.create_app(config, REGISTRY), config.host, config.port, self.name)


def metrics_handler(registry: CollectorRegistry) -> Handler:
    async def metrics(_request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    return metrics


async def healthz(_request: web.Request) -> web.StreamResponse:
    return json_response({"status": "ok"})


def add_common_routes(
    app: web.Application,
    state_key: web.AppKey[S],
    supported: frozenset[str],
    registry: CollectorRegistry,
) -> None:
    """What every fake serves alike: `/fake/knobs` (GET, POST), `/healthz`, `/metrics`.

    `app[state_key]` is the fake's state, whose `knobs` POST replaces.
    """

    async def get_knobs(request: web.Request) -> web.StreamResponse:
        return json_response(request.app[state_key].knobs)

    async def post_knobs(request: web.Request) -> web.StreamResponse:
        state = request.app[state_key]
        update = await read_json(request, _knobs_decoder)
        try:
            state.knobs = apply_update(state.knobs, update, supported)
        except KnobsError as exc:
            raise BadRequest("invalid_knobs", str(exc)) from exc
        return json_response(state.knobs)

    app.router.add_get("/fake/knobs", get_knobs)
    app.router.add_post("/fake/knobs", post_knobs)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_handler(registry))


def run(app: web.Application, host: str, port: int, name: str) -> None:
    """Serve until SIGINT/SIGTERM; no access log (the record and /metrics say enough)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    _log.info("%s listening on http://%s:%d", name, host, port)
    web.run_app(
        app,
        loop=uvloop.new_event_loop(),
        host=host,
        port=port,
        access_log=None,
        print=None,
        shutdown_timeout=SHUTDOWN_TIMEOUT_S,
        handler_cancellation=False,
    )
