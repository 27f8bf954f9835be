"""Chaos with real processes: kills, a stopped "zombie" coordinator, a Redis restart; nothing lost.

A seeded schedule hits 3 coordinator processes and 4 worker processes while durable runs of
``chaos_app`` are in flight: SIGKILL (then restart) of workers and coordinators, SIGSTOP of one
coordinator for longer than its lease (its runs are taken over; when it wakes it must not corrupt
them), and one restart of an appendonly redis-server. At the end every run has exactly the output
of a clean run, no entry is left pending, nothing was escalated, and no process is left behind.

CI runs the bounded version (200 runs); ``pytest -m slow`` adds the 1,000-run soak.
"""

from __future__ import annotations

import asyncio
import random
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

pytest.importorskip("langgraph")

from child_processes import ChildProcesses, wait_for_line
from redis_server import RedisServer

from nervenet import Pool
from nervenet.keys import WORKER_GROUP, Keys

pytestmark = [pytest.mark.langgraph, pytest.mark.redis]

APP = Path(__file__).parent
sys.path.insert(0, str(APP))
FAST_WORKER = ("--heartbeat", "0.2", "--visibility-timeout", "1.0")


@pytest.fixture
def cluster(own_redis: RedisServer) -> Iterator[ChildProcesses]:
    procs = ChildProcesses(APP, {"NERVENET_REDIS_URL": own_redis.url, "CHAOS_NODE_SECONDS": "0.8"})
    try:
        yield procs
    finally:
        procs.close()
    assert not procs.alive(), "stray processes"


async def run_chaos(server: RedisServer, procs: ChildProcesses, runs: int, seed: int) -> str:
    rng = random.Random(seed)
    url = server.url
    workers = [procs.worker("chaos_app:graph", url, *FAST_WORKER) for _ in range(4)]
    shares = [runs // 3, runs // 3, runs - 2 * (runs // 3)]
    coordinators, first = [], 0
    for share in shares:
        coordinators.append(procs.python("chaos_app.py", str(first), str(share)))
        first += share
    for coordinator in coordinators:
        wait_for_line(coordinator, b"ready", timeout=120)

    log: list[str] = []
    events = [
        "kill-worker",
        "kill-coordinator",
        "zombie",
        "restart-redis",
        "kill-worker",
        "kill-coordinator",
    ]
    rng.shuffle(events)
    started = time.monotonic()
    for event in events:
        await asyncio.sleep(rng.uniform(0.6, 1.2))
        if event == "kill-worker":
            i = rng.randrange(len(workers))
            workers[i].send_signal(signal.SIGKILL)
            workers[i] = procs.worker("chaos_app:graph", url, *FAST_WORKER)
        elif event == "kill-coordinator":
            i = rng.randrange(len(coordinators))
            coordinators[i].send_signal(signal.SIGKILL)
            coordinators[i] = procs.python("chaos_app.py", "0", "0")  # serves takeovers only
        elif event == "zombie":
            zombie = coordinators[rng.randrange(len(coordinators))]
            zombie.send_signal(signal.SIGSTOP)
            await asyncio.sleep(2.5)  # > lease_ttl (1 s): its runs are taken over meanwhile
            zombie.send_signal(signal.SIGCONT)
        else:
            server.restart(downtime=0.3)
        log.append(f"{time.monotonic() - started:5.1f}s {event}")
    return "; ".join(log)


async def check_outcome(url: str, runs: int) -> dict[str, Any]:
    from chaos_app import NODE_COUNT, expected_output, graph, normalized
    from nervenet_langgraph.wire import unpack

    async with Pool.from_url(url) as pool:
        raw = await asyncio.wait_for(
            asyncio.gather(*(pool.workflows.wait(f"doc-{n}") for n in range(runs))),
            timeout=180 + runs * 0.5,
        )
        outputs = [normalized(unpack(graph.nervenet.serde, r)) for r in raw]
        escalations = await pool.escalations.count()
    assert outputs == [expected_output(n) for n in range(runs)]

    client = redis.Redis.from_url(url)
    keys = Keys()
    pending = 0
    for stream in client.scan_iter(match=f"{keys.task_stream_prefix}*"):
        pending += int(client.xpending(stream, WORKER_GROUP)["pending"])
    executions = sum(int(client.get(k) or 0) for k in client.scan_iter(match="chaos:executions:*"))
    client.close()
    return {
        "pending": pending,
        "escalations": escalations,
        "re-executions": executions - runs * NODE_COUNT,
    }


async def test_nothing_is_lost_under_kills_a_zombie_and_a_redis_restart(
    own_redis: RedisServer, cluster: ChildProcesses
) -> None:
    await _chaos(own_redis, cluster, runs=200)


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_soak_of_1000_runs_under_chaos(
    own_redis: RedisServer, cluster: ChildProcesses
) -> None:
    await _chaos(own_redis, cluster, runs=1000)


async def _chaos(server: RedisServer, procs: ChildProcesses, runs: int) -> None:
    started = time.monotonic()
    schedule = await run_chaos(server, procs, runs, seed=runs)
    outcome = await check_outcome(server.url, runs)
    print(
        f"\nchaos: {runs} runs, {time.monotonic() - started:.1f} s; schedule: {schedule}; "
        f"outcome: {outcome}, lost: 0"
    )
    assert outcome["pending"] == 0
    assert outcome["escalations"] == 0
    assert 0 <= outcome["re-executions"] <= runs * 2
