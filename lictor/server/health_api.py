"""Health of the control plane for the console's dashboard: ``GET /v1/health``.

`start` (called by the app's lifespan) creates this process's `Health` and a
task that samples this replica's metrics and writes its replica row every
`BEAT_S` seconds; `stop` ends the task and marks the row ``stopped``. The
numbers come from the app's Prometheus metrics (decision latency histogram,
decision, revocation and request counters), the shared log and the records
(see `lictor.service.health` for what each covers). ``/metrics`` gains
``lictor_replicas{state}`` and ``lictor_replica_seen_seconds{replica,state}``:
the replica rows this process saw at its last beat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector
from starlette.concurrency import run_in_threadpool

from lictor import __version__
from lictor.errors import UnavailableError
from lictor.server.auth import require_role
from lictor.service.health import Health, Sample
from lictor.store.base import Credential

if TYPE_CHECKING:
    from lictor.server.app import Metrics

BEAT_S = 5.0
STATES = ("up", "stale", "stopped")
logger = logging.getLogger("lictor.server")
router = APIRouter(tags=["health"])


@router.get("/v1/health")
def health(
    request: Request,
    _: Annotated[Credential, Depends(require_role("admin", "auditor"))],
) -> dict[str, Any]:
    """Replicas, database, log, runtimes, active executions, policy and the last hour."""
    current = _health(request.app)
    sample = _sample(current, request.app.state.metrics)
    return current.report(sample, _counters(request.app.state.metrics))


def start(app: FastAPI, replica_id: str, engine: str) -> asyncio.Task[None]:
    """This process's `Health` on ``app.state.health`` and its beating task."""
    current: Health | None = getattr(app.state, "health", None)
    if current is None:
        metrics: Metrics = app.state.metrics
        current = Health(app.state.log, replica_id, engine, __version__, _bounds_ms(metrics))
        app.state.health = current
        metrics.registry.register(ReplicasSeen(current))
    _beat_once(current, app.state.metrics)  # the row is there before the first request
    return asyncio.create_task(_beat(current, app.state.metrics, BEAT_S))


async def stop(task: asyncio.Task[None], app: FastAPI) -> None:
    """End the beating and write this replica's row once more, marked ``stopped``."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await run_in_threadpool(_beat_once, app.state.health, app.state.metrics, True)


async def _beat(current: Health, metrics: Metrics, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        await run_in_threadpool(_beat_once, current, metrics)


def _beat_once(current: Health, metrics: Metrics, stopped: bool = False) -> None:
    try:
        current.beat(_sample(current, metrics), _counters(metrics), stopped)
    except Exception:  # keep beating; the dashboard shows this replica stale meanwhile
        logger.exception("replica heartbeat failed")


def _health(app: FastAPI) -> Health:
    current: Health | None = getattr(app.state, "health", None)
    if current is None:
        raise UnavailableError("health is sampled only while the server runs")
    return current


def _sample(current: Health, metrics: Metrics) -> Sample:
    """This process now: its cumulative decision latency buckets and active executions."""
    buckets = [
        int(s.value)
        for family in metrics.decision_seconds.collect()
        for s in family.samples
        if s.name.endswith("_bucket")
    ]
    return Sample(current.log.now_ms(), tuple(buckets), current.active_executions())


def _bounds_ms(metrics: Metrics) -> list[float]:
    """The finite upper bounds of the decision latency histogram, in milliseconds."""
    return [
        float(s.labels["le"]) * 1000
        for family in metrics.decision_seconds.collect()
        for s in family.samples
        if s.name.endswith("_bucket") and s.labels["le"] != "+Inf"
    ]


def _counters(metrics: Metrics) -> dict[str, int]:
    return {
        "decisions_allowed": _total(metrics.decisions, result="allow"),
        "decisions_denied": _total(metrics.decisions, result="deny"),
        "revocations": _total(metrics.revocations),
        "http_requests": _total(metrics.requests),
    }


def _total(metric: MetricWrapperBase, **labels: str) -> int:
    """A counter's total over the children whose labels include ``labels``."""
    return sum(
        int(s.value)
        for family in metric.collect()
        for s in family.samples
        if s.name.endswith("_total") and labels.items() <= s.labels.items()
    )


class ReplicasSeen(Collector):
    """``/metrics``: the replica rows this process saw at its last beat (no database
    read per scrape): how many in each state, and when each one last reported."""

    def __init__(self, current: Health) -> None:
        self.current = current

    def collect(self) -> Iterator[Metric]:
        seen = self.current.seen
        counts = GaugeMetricFamily(
            "lictor_replicas", "Control-plane replicas seen, by state.", labels=["state"]
        )
        for state in STATES:
            counts.add_metric([state], sum(1 for _, s in seen if s == state))
        last = GaugeMetricFamily(
            "lictor_replica_seen_seconds",
            "When each control-plane replica last reported (Unix time), with its state.",
            labels=["replica", "state"],
        )
        for replica, state in seen:
            last.add_metric([replica.id, state], replica.seen_at_ms / 1000)
        yield counts
        yield last
