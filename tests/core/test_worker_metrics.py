"""A worker's Prometheus metrics: tasks by outcome, handler time, queue wait, retries, in flight;
in-process and from ``nervenet worker --metrics-port``."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from core_support import Serve, WorkerProcesses, registered, wait_until

from nervenet import Handlers, Pool, RemoteTaskError
from nervenet.metrics import WorkerMetrics
from nervenet.testing import free_port


def handlers() -> Handlers:
    h = Handlers()

    @h.task("m/nap")
    async def nap(value: Any) -> Any:
        await asyncio.sleep(0.05)
        return value

    @h.task("m/fail")
    async def fail(value: Any) -> Any:
        raise ValueError("no")

    return h


async def test_tasks_are_counted_by_outcome_with_their_times(pool: Pool, serve: Serve) -> None:
    worker = await serve(pool, handlers())
    worker.metrics = metrics = WorkerMetrics()
    metrics.watch_in_flight(lambda: worker.load)

    await pool.dispatch("m/nap", b"1", timeout=10)
    await pool.dispatch("m/nap", b"1", task_id="same", timeout=10)
    await pool.dispatch("m/nap", b"1", task_id="same", timeout=10)  # from the result cache
    with pytest.raises(RemoteTaskError):
        await pool.dispatch("m/fail", b"1", timeout=10, escalate_errors=False)

    def sample(name: str, **labels: str) -> float | None:
        return metrics.registry.get_sample_value(name, labels)

    assert sample("nervenet_worker_tasks_total", task_type="m/nap", outcome="ok") == 2
    assert sample("nervenet_worker_tasks_total", task_type="m/nap", outcome="cached") == 1
    assert sample("nervenet_worker_tasks_total", task_type="m/fail", outcome="error") == 1
    assert sample("nervenet_worker_task_seconds_count", task_type="m/nap") == 2
    seconds = sample("nervenet_worker_task_seconds_sum", task_type="m/nap")
    assert seconds is not None and seconds >= 0.09
    assert sample("nervenet_worker_queue_wait_seconds_count", task_type="m/nap") == 3

    async def settled() -> bool:  # the worker releases a task right after sending its reply
        return sample("nervenet_worker_in_flight") == 0

    await wait_until(settled, what="the last task to be released")


@pytest.mark.redis
async def test_the_worker_command_serves_metrics(
    redis_pool: Pool, redis_url: str, worker_processes: WorkerProcesses
) -> None:
    port = free_port()
    worker = worker_processes.cli(redis_url, options=["--metrics-port", str(port)])
    await registered(redis_pool, worker)

    await redis_pool.dispatch("core/echo", b'"x"', timeout=10)
    async with httpx.AsyncClient() as client:
        scraped = (await client.get(f"http://127.0.0.1:{port}/metrics")).text

    assert 'nervenet_worker_tasks_total{outcome="ok",task_type="core/echo"} 1.0' in scraped
    assert "nervenet_worker_in_flight 0.0" in scraped
