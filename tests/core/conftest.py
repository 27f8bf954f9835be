"""Fixtures of the core tests: pools on each backend, in-process workers, worker processes.

``pool`` (and ``make_pool`` for custom settings) is parametrized over the embedded pool and the
session's private redis-server, so every test that takes it states a behaviour of both.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from core_support import FAST, MakePool, Pools, Serve, WorkerProcesses

from nervenet import Pool, PoolSettings, Worker
from nervenet.transport import EmbeddedTransport


@pytest.fixture
async def pools() -> AsyncIterator[Pools]:
    opened = Pools()
    yield opened
    await opened.aclose()


@pytest.fixture(
    params=[
        "embedded",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("cluster", marks=pytest.mark.cluster),
    ]
)
def make_pool(request: pytest.FixtureRequest, pools: Pools) -> MakePool:
    """``await make_pool(settings=..., signing_secret=...)``: a started pool on this test's
    backend: embedded, the session's private redis-server, or its private 3-primary cluster
    (with 6 task stream partitions, the cluster default). On the embedded backend every call
    makes an independent in-process server."""
    backend = request.param
    url = None
    if backend == "redis":
        url = request.getfixturevalue("redis_url")
    elif backend == "cluster":
        url = request.getfixturevalue("cluster_url")

    async def make(*, settings: PoolSettings = FAST, signing_secret: str | None = None) -> Pool:
        if url is not None:
            pool = Pool.from_url(url, settings=settings, signing_secret=signing_secret)
        elif signing_secret is None:
            pool = Pool.local(settings=settings)
        else:  # Pool.local takes no signing secret
            pool = Pool(EmbeddedTransport(), settings=settings, signing_secret=signing_secret)
        return await pools.open(pool)

    return make


@pytest.fixture
async def pool(make_pool: MakePool) -> Pool:
    """A started pool with :data:`core_support.FAST` settings, embedded or on a real server."""
    return await make_pool()


@pytest.fixture
async def redis_pool(pools: Pools, redis_url: str) -> Pool:
    """A started pool on the session's real redis-server (for tests with worker processes)."""
    return await pools.open(Pool.from_url(redis_url, settings=FAST))


@pytest.fixture
async def serve(pools: Pools) -> AsyncIterator[Serve]:
    """``await serve(pool, handlers, concurrency=...)``: an in-process worker, stopped with a short
    grace period after the test (``pool.serve`` would give hanging handlers five seconds)."""
    workers: list[Worker] = []

    async def start(
        pool: Pool, handlers: Any, *, concurrency: int = 64, queues: Any = None
    ) -> Worker:
        worker = Worker.for_target(pool, handlers, concurrency=concurrency, queues=queues)
        await worker.start()
        workers.append(worker)
        return worker

    yield start
    for worker in reversed(workers):
        await worker.stop(grace=0.2)


@pytest.fixture
def worker_processes(tmp_path: Path) -> Iterator[WorkerProcesses]:
    """Starts worker child processes; every one still running is SIGKILLed (by pid) after the
    test. Their output is printed at teardown (pytest shows it when the test failed)."""
    processes = WorkerProcesses(tmp_path)
    yield processes
    processes.close()
    for process in processes.children:
        print(f"--- worker pid {process.pid} exited {process.returncode}:")
        print(process.output()[-20_000:])
