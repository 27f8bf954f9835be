"""Prometheus metrics of a worker process (``nervenet worker --metrics-port P``).

What only the worker sees, per task type: tasks settled by outcome, time in the handler, time
waiting in the stream before a worker read it, attempts past the first (retries), entries
escalated; and its tasks in flight. Queue depth, in flight per type, runs and escalations of the
whole pool are served by the dashboard's ``/metrics`` (read from Redis). Needs
``prometheus-client`` (the ``dashboard`` extra); imported only when asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .errors import ConfigurationError

#: Histogram buckets (seconds): LLM calls take seconds, queue waits milliseconds.
BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class WorkerMetrics:
    """A worker's counters and histograms in one prometheus-client registry."""

    def __init__(self, registry: Any | None = None) -> None:
        try:
            import prometheus_client as prom
        except ImportError:
            raise ConfigurationError(
                "worker metrics need prometheus-client: pip install 'nervenet[dashboard]'"
            ) from None
        self.registry = registry if registry is not None else prom.CollectorRegistry()
        r = self.registry
        self.tasks = prom.Counter(
            "nervenet_worker_tasks", "Tasks settled", ["task_type", "outcome"], registry=r
        )
        self.run_seconds = prom.Histogram(
            "nervenet_worker_task_seconds",
            "Time in the handler",
            ["task_type"],
            buckets=BUCKETS,
            registry=r,
        )
        self.wait_seconds = prom.Histogram(
            "nervenet_worker_queue_wait_seconds",
            "From the dispatch's XADD to a worker reading it",
            ["task_type"],
            buckets=BUCKETS,
            registry=r,
        )
        self.retries = prom.Counter(
            "nervenet_worker_retried_tasks", "Attempts past the first", ["task_type"], registry=r
        )
        self.escalated = prom.Counter(
            "nervenet_worker_escalated", "Entries this worker escalated", registry=r
        )
        self.in_flight = prom.Gauge("nervenet_worker_in_flight", "Tasks in flight", registry=r)

    def watch_in_flight(self, count: Callable[[], int]) -> None:
        self.in_flight.set_function(count)

    def settled(
        self, task_type: str, outcome: str, attempt: int, wait_s: float, run_s: float
    ) -> None:
        self.tasks.labels(task_type, outcome).inc()
        if outcome in ("ok", "error"):
            self.run_seconds.labels(task_type).observe(run_s)
        if wait_s >= 0:
            self.wait_seconds.labels(task_type).observe(wait_s)
        if attempt > 1:
            self.retries.labels(task_type).inc()

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        """Serve ``/metrics`` over HTTP from a background thread (prometheus-client's)."""
        from prometheus_client import start_http_server

        start_http_server(port, addr=host, registry=self.registry)
