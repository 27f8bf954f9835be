"""A node capped with max_concurrency holds its cap across coordinator and worker processes."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path
from typing import cast

import pytest

pytest.importorskip("langgraph")

from nervenet.cluster import sync_client
from nervenet.testing import Child, ChildProcesses

pytestmark = [pytest.mark.langgraph, pytest.mark.redis]

APPS = Path(__file__).parent / "apps"
sys.path.insert(0, str(APPS))
from limited_app import CAP, NODE_SECONDS, SPANS, make_graph, overlap, running_in  # noqa: E402

FAST = ("--heartbeat", "0.2", "--visibility-timeout", "1.0")


async def run_all(redis_url: str, runs: int, during: object = None) -> float:
    """Queue ``runs`` runs for the coordinator processes; wait for every output."""
    client = make_graph(redis_url)
    async with client.nervenet.pool as pool:
        started = time.monotonic()
        for n in range(runs):
            config = {"configurable": {"thread_id": f"l-{n}"}}
            config["configurable"]["__nervenet_run_id"] = f"l-{n}"
            await client.asubmit({"n": n, "answer": ""}, config, run_here=False)
        if callable(during):
            await during()
        results = await asyncio.wait_for(
            asyncio.gather(*(pool.workflows.wait(f"l-{n}") for n in range(runs))), timeout=240
        )
        elapsed = time.monotonic() - started
        from nervenet_langgraph.wire import unpack

        outputs = [unpack(client.nervenet.serde, raw)["answer"] for raw in results]
        assert outputs == [f"answer-{n}" for n in range(runs)]
        await asyncio.sleep(1.5)  # past the visibility timeout: a dead worker's permits lapsed
        held = await pool.transport.redis.zcount(
            pool.keys.permits("limited/call_llm"), int(time.time() * 1000), "+inf"
        )
        assert held == 0, "permits still held after every run ended"
    return elapsed


def counters(redis_url: str, killed_at: float | None = None) -> tuple[int, int]:
    """The node's most overlapping executions, and how many there were."""
    client = sync_client(redis_url)
    spans = cast(list[bytes], client.lrange(SPANS, 0, -1))  # as bytes: no decode_responses
    client.close()
    return overlap(spans, killed_at)


def start(processes: ChildProcesses, redis_url: str) -> list[Child]:
    workers = [processes.worker("limited_app:graph", redis_url, *FAST) for _ in range(4)]
    for worker in workers:  # registered: a run claimed before any worker is would fail
        worker.wait_for_line("serving", timeout=60)
    serving = processes.nervenet("serve", "limited_app:graph", "--coordinators", "3")
    serving.wait_for_line("running limited runs", timeout=60)
    return [serving, *workers]


async def test_a_capped_node_never_exceeds_its_cap_across_processes(
    processes: ChildProcesses, redis_url: str
) -> None:
    serving, *_ = start(processes, redis_url)
    runs = 300  # 6 s at the cap's best: enough for 3 coordinators and 4 workers to contend

    elapsed = await run_all(redis_url, runs)

    peak, done = counters(redis_url)
    ideal = runs * NODE_SECONDS / CAP
    print(f"\n{runs} runs in {elapsed:.1f} s (cap {CAP} x {NODE_SECONDS} s: {ideal:.0f} s at best)")
    assert peak <= CAP, f"{peak} runs of the node overlapped"
    assert peak == CAP  # and the cap was used
    assert done >= runs
    assert elapsed < 3 * ideal
    serving.send_signal(signal.SIGTERM)
    serving.wait(timeout=30)


async def test_the_cap_holds_and_no_permit_leaks_when_a_worker_is_killed(
    processes: ChildProcesses, redis_url: str
) -> None:
    serving, victim, *_ = start(processes, redis_url)
    killed_at: list[float] = []

    async def kill_a_worker() -> None:
        client = sync_client(redis_url)
        try:  # kill it while it runs the node, holding permits
            # (bytes, as in counters; read again each time round)
            while not running_in(cast(list[bytes], client.lrange(SPANS, 0, -1)), victim.pid):
                await asyncio.sleep(0.01)
        finally:
            client.close()
        victim.send_signal(signal.SIGKILL)
        killed_at.append(time.time())

    await run_all(redis_url, 300, during=kill_a_worker)

    peak, done = counters(redis_url, killed_at[0])
    print(f"\nworker killed mid-run: peak overlap {peak}, {done} executions for 300 runs")
    assert done > 300  # what the victim was running ran again elsewhere
    assert peak <= CAP, f"{peak} runs of the node overlapped"
    assert done >= 300
    serving.send_signal(signal.SIGTERM)
    serving.wait(timeout=30)
