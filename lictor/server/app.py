"""The HTTP application: error mapping, body limits, health, metrics, routes.

Every error leaves as ``{"error": {"code", "message"}}`` with a stable code
(`lictor.wire`); unexpected exceptions become a 500 ``internal`` without
taking the server down. Request bodies over ``max_body`` bytes are refused
with 413 before any handler runs, so nothing is written; so are JSON bodies
that are not strict JSON (`lictor.server.json_bodies`: UTF-8, no key twice in
an object), with 400 ``invalid_request``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lictor import __version__
from lictor.core.grant import GrantSigner, jwk_thumbprint
from lictor.errors import InvalidRequestError, LictorError, PayloadTooLargeError
from lictor.server import (
    console,
    credentials_api,
    demo_api,
    events,
    executions_api,
    health_api,
    log_api,
    openapi,
    policies_api,
    runtimes_api,
    tools_api,
)
from lictor.server.events import CommitSignal, EntryTail
from lictor.server.hot import HotRoutes, first_header
from lictor.server.json_bodies import is_json, parse_json_body
from lictor.service.arguments import ArgumentSeal
from lictor.service.credentials import CredentialCheck
from lictor.service.executions import Executions
from lictor.service.health import CommitProbe
from lictor.service.log import AuditLog
from lictor.service.policies import Policies
from lictor.service.replay import Replay
from lictor.service.runtimes import Runtimes
from lictor.service.sweeps import Sweeps
from lictor.store.sqlite import SQLiteStore
from lictor.wire import error_body, status_for

DEFAULT_MAX_BODY = 1024 * 1024
REAP_SECONDS = 1.0
HTTP_CODES = {400: "invalid_request", 404: "not_found", 405: "method_not_allowed"}
logger = logging.getLogger("lictor.server")


class BodyLimit:
    """ASGI middleware: buffer at most ``limit`` body bytes, else answer 413; answer 400
    to a JSON body (by its Content-Type) that `parse_json_body` refuses."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                await _too_large(self.limit)(scope, receive, send)
                return
        if body and is_json(_content_type(scope)):
            try:
                parse_json_body(bytes(body))
            except InvalidRequestError as e:
                refused = JSONResponse(error_body(e.code, e.message), status_code=status_for(e))
                await refused(scope, receive, send)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)


class CountRequests:
    """ASGI middleware counting responses by status class (cheaper than BaseHTTPMiddleware)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.metrics.count_request(message["status"])
            await send(message)

        await self.app(scope, receive, counted)


def _content_type(scope: Scope) -> str:
    return first_header(scope, b"content-type")[0] or ""


def _too_large(limit: int) -> JSONResponse:
    error = PayloadTooLargeError(f"request body exceeds {limit} bytes")
    return JSONResponse(error_body(error.code, error.message), status_code=status_for(error))


class LictorApp(FastAPI):
    """FastAPI with the hot routes (`HotRoutes`) in front of all of it (its request
    telemetry, routing and middleware stack), so the calls on every execution's path
    skip every layer of it."""

    lane: HotRoutes | None = None  # None: every request goes through FastAPI

    def serve_hot_routes(self, limit: int) -> None:
        """Serve the hot routes in front of FastAPI, with ``limit`` as their body limit."""
        self.lane = HotRoutes(super().__call__, self.state, limit)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.lane is None:
            await super().__call__(scope, receive, send)
        else:
            await self.lane(scope, receive, send)


REPLICA = f"{socket.gethostname()}/{os.getpid()}"


def _engine(log: AuditLog) -> str:
    return "sqlite" if isinstance(log.store, SQLiteStore) else "postgresql"


class Metrics:
    """Prometheus metrics of one app, in a registry of its own."""

    def __init__(self, log: AuditLog) -> None:
        self.registry = CollectorRegistry()
        info = Gauge(
            "lictor_replica",
            "This control-plane process (1), by replica id and storage engine.",
            ["replica", "engine"],
            registry=self.registry,
        )
        info.labels(REPLICA, _engine(log)).set(1)
        size = Gauge("lictor_log_tree_size", "Entries in the log.", registry=self.registry)
        size.set_function(lambda: log.head().size)
        self.appended = Counter(
            "lictor_log_entries_appended", "Entries appended.", registry=self.registry
        )
        self.append_seconds = Histogram(
            "lictor_log_append_seconds", "Time to a durable append.", registry=self.registry
        )
        self.requests = Counter(
            "lictor_http_requests",
            "HTTP requests by status class.",
            ["status"],
            registry=self.registry,
        )
        self.decisions = Counter(
            "lictor_decisions",
            "Execution decisions by result and reason code.",
            ["result", "reason"],
            registry=self.registry,
        )
        self.decision_seconds = Histogram(
            "lictor_decision_seconds",
            "Time from request to a durable decision with its receipt.",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=self.registry,
        )
        self.revocations = Counter(
            "lictor_revocations", "Executions revoked, by cause.", ["cause"], registry=self.registry
        )
        active = Gauge(
            "lictor_active_executions", "Executions in state active.", registry=self.registry
        )
        active.set_function(lambda: log.store.count_records("execution", {"state": "active"}))
        # every request counts itself: labelled children found once, not per request
        self._by_status: dict[int, Counter] = {}
        self._by_result: dict[tuple[bool, str], Counter] = {}

    def count_request(self, status: int) -> None:
        """One more response of ``status``'s class in ``lictor_http_requests``."""
        counter = self._by_status.get(status)
        if counter is None:
            counter = self._by_status[status] = self.requests.labels(f"{status // 100}xx")
        counter.inc()

    def count_decision(self, allowed: bool, reason: str, seconds: float) -> None:
        """One more decision in ``lictor_decisions``, taking ``seconds`` to be durable."""
        counter = self._by_result.get((allowed, reason))
        if counter is None:
            result = "allow" if allowed else "deny"
            counter = self._by_result[allowed, reason] = self.decisions.labels(result, reason)
        counter.inc()
        self.decision_seconds.observe(seconds)


ROUTERS = (
    executions_api.router,
    runtimes_api.router,
    events.router,
    log_api.router,
    log_api.tiles,
    policies_api.router,
    executions_api.principals,
    credentials_api.router,
    tools_api.router,
    console.session,
    health_api.router,
    console.router,
    demo_api.router,
)


def create_app(
    log: AuditLog,
    grant_seed: bytes | None = None,
    max_body: int = DEFAULT_MAX_BODY,
    reap_every: float = REAP_SECONDS,
    hot_routes: bool = True,
) -> FastAPI:
    """The Lictor HTTP app over an opened `AuditLog`.

    ``grant_seed`` signs execution grants (a fresh one when None, for tests);
    expired leases are written as ``expired`` every ``reap_every`` seconds.
    ``hot_routes``: serve the calls on every execution's path as raw ASGI
    (`lictor.server.hot`); without it FastAPI serves them (tests compare the two).
    """
    tail = EntryTail(log)
    signal = CommitSignal(log.head().size, tail)
    # hands the tail our new entries, once their callers have their answers
    log.sequencer.add_commit_listener(signal.committed, after_results=True)
    runtimes, policies = Runtimes(log), Policies(log)
    seed = grant_seed or os.urandom(32)
    public = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
    grants = GrantSigner(seed, jwk_thumbprint(public), log.origin)
    executions = Executions(log, runtimes, policies, grants, seal=ArgumentSeal.derived(seed))
    sweeps = Sweeps(executions)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        signal.attach(asyncio.get_running_loop())
        stop_watching = log.store.watch(lambda: signal.notify(log.head()))  # other replicas
        reaper = asyncio.create_task(_reap(sweeps, reap_every))
        beating = health_api.start(app, REPLICA, _engine(log))  # this replica's row and samples
        yield
        reaper.cancel()
        if app.state.demo is not None:  # its scenario needs this server: stop it first
            await run_in_threadpool(app.state.demo.stop)
        await health_api.stop(beating, app)
        stop_watching()

    app = LictorApp(
        title="Lictor", version=__version__, docs_url=None, redoc_url=None, lifespan=lifespan
    )
    app.state.log = log
    app.state.credential_check = CredentialCheck.of(log)
    app.state.commit_probe = CommitProbe(log)  # sees every commit from now on
    app.state.commits = signal
    app.state.tail = tail
    app.state.runtimes = runtimes
    app.state.policies = policies
    app.state.executions = executions
    app.state.replay = Replay(log.store, policies, executions)
    app.state.sweeps = sweeps
    app.state.metrics = Metrics(log)
    app.state.demo = None  # a DemoRunner when `lictor serve --demo`
    _install_error_handlers(app)
    _install_health(app)
    for router in ROUTERS:  # the decision path first: routes are matched in order
        app.include_router(router)
    openapi.install(app)
    app.add_middleware(BodyLimit, limit=max_body)
    app.add_middleware(CountRequests, metrics=app.state.metrics)
    if hot_routes:
        app.serve_hot_routes(max_body)
    return app


async def _reap(sweeps: Sweeps, every: float) -> None:
    """The background reaper: write ``expired`` for leases that passed unrenewed.

    Among replicas, only the one leading the ``reaper`` role reaps; when it dies,
    another takes the role at its next tick.
    """
    store = sweeps.log.store
    while True:
        await asyncio.sleep(every)
        try:
            if await run_in_threadpool(store.try_lead, "reaper"):
                await run_in_threadpool(sweeps.expire_due)
        except Exception:  # keep reaping; reads treat expired leases as expired anyway
            logger.exception("lease reaper failed")


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(LictorError)
    async def lictor_error(request: Request, exc: LictorError) -> JSONResponse:
        return JSONResponse(error_body(exc.code, exc.message), status_code=status_for(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        message = f"{where}: {first.get('msg', 'invalid request')}"
        return JSONResponse(error_body("invalid_request", message), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = HTTP_CODES.get(exc.status_code, "http_error")
        body = error_body(code, str(exc.detail))
        headers = exc.headers
        if exc.status_code == 405:  # every method of the path, not the first route's
            headers = {"Allow": ", ".join(openapi.allowed_methods(app.routes, request.scope))}
        return JSONResponse(body, status_code=exc.status_code, headers=headers)

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s", request.url.path)
        return JSONResponse(error_body("internal", "internal error"), status_code=500)


def _install_health(app: FastAPI) -> None:
    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    def readyz(request: Request) -> JSONResponse:
        log: AuditLog = request.app.state.log
        started = time.monotonic()
        try:
            head = log.store.head()
        except Exception as e:  # any database failure means not ready
            body = {"status": "unavailable", "database": "error", "message": str(e)}
            return JSONResponse(body, status_code=503)
        elapsed = round((time.monotonic() - started) * 1000, 3)
        probe: CommitProbe = request.app.state.commit_probe  # may wait: off the event loop
        problem = probe.problem()
        if problem is not None:  # it answers but cannot write (a full disk): not ready
            body = {"status": "unavailable", "database": "cannot_commit", "message": problem}
            return JSONResponse(body, status_code=503)
        size = head.size if head else 0
        ready = {
            "status": "ok",
            "replica": REPLICA,
            "database": "ok",
            "engine": _engine(log),
            "database_ms": elapsed,
            "log_size": size,
        }
        return JSONResponse(ready)

    @app.get("/metrics", include_in_schema=False)
    def metrics(request: Request) -> PlainTextResponse:
        data = generate_latest(request.app.state.metrics.registry)
        return PlainTextResponse(data, media_type=CONTENT_TYPE_LATEST)
