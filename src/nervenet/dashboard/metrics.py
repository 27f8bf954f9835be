"""Prometheus metrics of the pool, read from Redis at scrape time (``GET /metrics``).

Gauges, from one status snapshot per scrape: waiting, in flight and oldest in flight per task
type, tasks delivered per type (a counter on Redis 7+), live workers with their load and
concurrency, runs by status among the newest recorded, escalations. Nothing is kept in this
process, so any number of dashboards can be scraped and a restart loses nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..runs import RunStatus
from ..status import PoolStatus, collect_status

if TYPE_CHECKING:
    from ..pool import Pool

COUNTED_RUNS = 1_000


async def metrics_text(pool: Pool) -> tuple[str, str]:
    """The exposition text and its content type (prometheus-client's)."""
    try:
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    except ImportError:
        return "# install prometheus-client: pip install 'nervenet[dashboard]'\n", "text/plain"
    status = await collect_status(pool)
    runs: dict[str, int] = {s.value: 0 for s in RunStatus}
    for run in await pool.runs.list(limit=COUNTED_RUNS):
        runs[run.status.value] += 1
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(status, runs))
    return generate_latest(registry).decode(), CONTENT_TYPE_LATEST


class _Snapshot:
    """A prometheus-client collector over one snapshot."""

    def __init__(self, status: PoolStatus, runs: dict[str, int]) -> None:
        self.status = status
        self.runs = runs

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        s = self.status
        waiting = GaugeMetricFamily(
            "nervenet_queue_waiting", "Tasks no worker has read yet", labels=["task_type"]
        )
        in_flight = GaugeMetricFamily(
            "nervenet_queue_in_flight", "Tasks a worker is running", labels=["task_type"]
        )
        oldest = GaugeMetricFamily(
            "nervenet_queue_oldest_in_flight_seconds",
            "Idle time of the most idle in-flight task",
            labels=["task_type"],
        )
        delivered = CounterMetricFamily(
            "nervenet_tasks_delivered",
            "Tasks delivered to workers since the stream was created (Redis 7+)",
            labels=["task_type"],
        )
        for q in s.queues:
            waiting.add_metric([q.task_type], q.waiting)
            in_flight.add_metric([q.task_type], q.in_flight)
            oldest.add_metric([q.task_type], q.oldest_in_flight_ms / 1000)
            if q.delivered is not None:
                delivered.add_metric([q.task_type], q.delivered)
        yield from (waiting, in_flight, oldest, delivered)
        load = GaugeMetricFamily("nervenet_worker_load", "Tasks in flight", labels=["worker"])
        capacity = GaugeMetricFamily(
            "nervenet_worker_concurrency", "Tasks a worker runs at once at most", labels=["worker"]
        )
        processed = CounterMetricFamily(
            "nervenet_worker_processed", "Tasks finished since start", labels=["worker"]
        )
        for w in s.workers:
            load.add_metric([w.worker_id], w.load)
            capacity.add_metric([w.worker_id], w.concurrency)
            processed.add_metric([w.worker_id], w.processed)
        yield from (load, capacity, processed)
        yield GaugeMetricFamily("nervenet_workers", "Live workers", value=len(s.workers))
        yield GaugeMetricFamily("nervenet_escalations", "Escalated tasks", value=s.escalations)
        yield GaugeMetricFamily(
            "nervenet_coordinators", "Live coordinator processes", value=s.coordinators
        )
        slots = GaugeMetricFamily(
            "nervenet_process_runs",
            "Runs a process runs, or waits to run for a slot (PoolSettings.max_runs)",
            labels=["process_id", "state"],
        )
        for process in s.run_loads:
            slots.add_metric([process.process_id, "running"], process.running)
            slots.add_metric([process.process_id, "waiting"], process.waiting)
        yield slots
        runs = GaugeMetricFamily(
            "nervenet_runs",
            f"Runs by status among the newest {COUNTED_RUNS} recorded",
            labels=["status"],
        )
        for name, count in self.runs.items():
            runs.add_metric([name], count)
        yield runs
