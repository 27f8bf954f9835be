"""The durable graph ``bench_recovery.py`` kills coordinators under, and the coordinator process.

Four nodes in a row (``nervenet_langgraph.testing.counted_chain``, as the crash-recovery tests
run it); each waits ``delay`` seconds (the state says how long), counts its execution in Redis
(hash ``bench:executions``, field ``<thread id>:<node>``) and appends its name to ``trail``.
Default :class:`~nervenet.PoolSettings` everywhere, a :class:`RedisSaver` checkpointer, so runs
submitted with ``asubmit`` are durable.

Workers (from this folder, ``NERVENET_REDIS_URL`` set, as the benchmark does it):

    nervenet worker lg_recovery_app:graph --redis redis://127.0.0.1:PORT/0

Coordinators: ``python lg_recovery_app.py NAME batch RUNS DELAY`` submits runs ``NAME-0..`` and
then only serves (renews its leases, takes over abandoned runs); ``python lg_recovery_app.py NAME
load CLIENTS SECONDS`` keeps ``CLIENTS`` runs in flight for ``SECONDS``, waiting for each result
before submitting the next, then only serves. On SIGTERM a coordinator writes what it saw to Redis
and exits: the first time it dispatched a node of each run (``bench:first-dispatch:NAME``, run id
-> epoch seconds), the runs it took over with the time it logged each takeover
(``bench:takeover-log:NAME``), and a summary (``bench:summary``, field NAME, JSON).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
from collections import Counter
from typing import Any

from langchain_core.runnables import RunnableConfig
from nervenet_langgraph import DistributedGraph, RedisSaver, distribute, testing
from nervenet_langgraph.runs import RUN_ID_KEY
from nervenet_langgraph.testing import ExecutionCounter, Job, counted_chain, job

from nervenet import Pool

NAME = "recovery"
NODES = ("fetch", "analyze", "draft", "report")
EXECUTIONS = "bench:executions"


def make_graph(url: str) -> DistributedGraph:
    """Default pool settings (heartbeat 0.5 s, lease 1.5 s): what the recovery target is for."""
    chain = counted_chain(NODES, ExecutionCounter(url, EXECUTIONS))
    return distribute(
        chain, pool=Pool.from_url(url), name=NAME, checkpointer=RedisSaver.from_url(url)
    )


def expected_output(n: int, delay: float) -> Job:
    return testing.expected_output(n, delay, NODES)


def config_of(run_id: str) -> RunnableConfig:
    """The run id doubles as the thread id, so the benchmark knows both from the name."""
    return {"configurable": {"thread_id": run_id, RUN_ID_KEY: run_id}}


graph = make_graph(os.environ.get("NERVENET_REDIS_URL", "redis://127.0.0.1:6379/0"))


# --- the coordinator process ----------------------------------------------------------------
class Observer:
    """What one coordinator process saw, written to Redis when it is told to stop."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.first_dispatch: dict[str, float] = {}
        self.takeover_log: dict[str, float] = {}
        self.lease_losses = 0
        self.outcomes: Counter[str] = Counter()
        self.max_lag = 0.0
        self.lags_over_half_second = 0
        self._watch_dispatches()
        self._watch_log()

    def _watch_dispatches(self) -> None:
        # Every node dispatch of this process goes through Pool.publish_soon (Pool.publish is
        # built on it): the time of the first one per run is when this process (re)started
        # driving that run.
        if not callable(getattr(self.pool, "publish_soon", None)):
            raise RuntimeError("nervenet's Pool has no publish_soon(); update this bench's hook")
        publish_soon = self.pool.publish_soon

        def recorded(envelope: Any) -> Any:
            self.first_dispatch.setdefault(envelope.workflow_id, time.time())
            return publish_soon(envelope)

        self.pool.publish_soon = recorded  # type: ignore[method-assign]

    def _watch_log(self) -> None:
        observer = self

        class Handler(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                message = str(record.msg)
                if message.startswith("taking over run") and record.args:
                    observer.takeover_log[str(record.args[0])] = record.created  # type: ignore[index]
                elif "lost the lease" in message:
                    observer.lease_losses += 1

        logger = logging.getLogger("nervenet.workflows")
        logger.addHandler(Handler())
        logger.setLevel(logging.INFO)

    async def watch_loop_lag(self) -> None:
        """How late the event loop wakes a 50 ms sleep: what a lease renewal also waits for."""
        while True:
            start = time.monotonic()
            await asyncio.sleep(0.05)
            lag = time.monotonic() - start - 0.05
            self.max_lag = max(self.max_lag, lag)
            if lag > 0.5:
                self.lags_over_half_second += 1

    async def save(self, name: str) -> None:
        client = self.pool.transport.redis
        for key, mapping in (
            (f"bench:first-dispatch:{name}", self.first_dispatch),
            (f"bench:takeover-log:{name}", self.takeover_log),
        ):
            if mapping:
                await client.hset(key, mapping=dict[Any, Any](mapping))
        summary = {
            "takeovers": self.pool.workflows.takeovers,
            "lease_losses": self.lease_losses,
            "outcomes": dict(self.outcomes),
            "max_lag": self.max_lag,
            "lags_over_half_second": self.lags_over_half_second,
        }
        await client.hset("bench:summary", name, json.dumps(summary))


async def submit_batch(name: str, runs: int, delay: float) -> None:
    for n in range(runs):
        await graph.asubmit(job(n, delay), config_of(f"{name}-{n}"))
    print("submitted", flush=True)


async def keep_busy(name: str, observer: Observer, clients: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds

    async def client(c: int) -> None:
        k = 0
        while time.monotonic() < deadline:
            n = c * 1_000_000 + k
            k += 1
            try:
                run = await graph.asubmit(job(n, 0.0), config_of(f"{name}-{n}"))
                output = await run.result()
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise
                observer.outcomes["CancelledError"] += 1  # the run's task, not this client
                continue
            except Exception as exc:
                observer.outcomes[type(exc).__name__] += 1
                continue
            observer.outcomes["ok" if output == expected_output(n, 0.0) else "wrong output"] += 1

    await asyncio.gather(*(client(c) for c in range(clients)))
    print("finished", flush=True)


async def coordinate(name: str, mode: str, count: int, value: float) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    pool = graph.nervenet.pool
    observer = Observer(pool)
    async with pool:
        lag = asyncio.ensure_future(observer.watch_loop_lag())
        print("started", flush=True)
        if mode == "batch":
            await submit_batch(name, count, value)
        else:
            await keep_busy(name, observer, count, value)
        await stop.wait()  # keep heartbeating: renew our leases, take over abandoned runs
        lag.cancel()
        await observer.save(name)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(created).3f %(name)s %(message)s")
    name, mode, count, value = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    asyncio.run(coordinate(name, mode, count, value))
