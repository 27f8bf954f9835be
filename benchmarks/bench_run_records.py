"""What run records cost per dispatch: the same durable runs with records on and off.

    python benchmarks/bench_run_records.py [--quick] [--rounds N]

Starts a private ``redis-server`` and one ``nervenet worker`` (echo handler), then runs rounds of
``RUNS`` concurrent durable runs (``pool.workflows.start``) of ``STEPS`` sequential dispatches
each, alternating ``record_runs=True`` and ``False`` (the same code path otherwise). Per dispatch
it reports wall time, Redis commands (``INFO commandstats``: what records add, no extra round
trip since they ride pipelines that already go out) and CPU of this process, the worker and
redis-server. The machine is shared and noisy: read the medians and the ratio, not one round.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from functools import partial
from pathlib import Path

import redis
from _common import (
    console,
    cpu_seconds,
    nervenet_worker,
    print_table,
    private_redis,
)
from echo_handlers import TASK_TYPE

from nervenet import Pool, PoolSettings

HERE = Path(__file__).resolve().parent
RUNS = 50
STEPS = 20


def redis_calls(url: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return sum(int(v["calls"]) for k, v in stats.items() if not k.endswith("info"))


async def one_round(pool: Pool) -> float:
    async def body(run_id: str) -> bytes:
        for step in range(STEPS):
            await pool.coordinator(run_id).dispatch(
                TASK_TYPE, b"x" * 100, task_id=f"{run_id}/{step}", first_run=True
            )
        return b"done"

    started = time.perf_counter()
    handles = []
    for _ in range(RUNS):
        run_id = uuid.uuid4().hex
        handles.append(await pool.workflows.start("bench", run_id, b"", partial(body, run_id)))
    await asyncio.gather(*(h.result() for h in handles))
    return time.perf_counter() - started


async def measure(url: str, worker_pid: int, redis_pid: int, rounds: int) -> None:
    pools = {
        recorded: Pool.from_url(url, settings=PoolSettings(record_runs=recorded))
        for recorded in (True, False)
    }
    results: dict[bool, dict[str, list[float]]] = {
        r: {"wall": [], "calls": [], "me": [], "worker": [], "redis": []} for r in pools
    }
    for pool in pools.values():
        await pool.ensure_started()
        await pool.coordinator().dispatch(TASK_TYPE, b"warm", wait_for_worker=True)
        await one_round(pool)  # warm-up
    try:
        for _ in range(rounds):
            for recorded, pool in pools.items():
                calls, me = redis_calls(url), time.process_time()
                worker, server = cpu_seconds(worker_pid), cpu_seconds(redis_pid)
                wall = await one_round(pool)
                n = RUNS * STEPS
                r = results[recorded]
                r["wall"].append(wall / n * 1e6)
                r["calls"].append((redis_calls(url) - calls - 1) / n)
                r["me"].append((time.process_time() - me) / n * 1e6)
                r["worker"].append((cpu_seconds(worker_pid) - worker) / n * 1e6)
                r["redis"].append((cpu_seconds(redis_pid) - server) / n * 1e6)
    finally:
        for pool in pools.values():
            await pool.aclose()
    rows = []
    for name, label in (
        ("wall", "wall µs / dispatch (median round)"),
        ("calls", "Redis commands / dispatch"),
        ("me", "coordinator CPU µs / dispatch"),
        ("worker", "worker CPU µs / dispatch"),
        ("redis", "redis-server CPU µs / dispatch"),
    ):
        # CPU is read in clock ticks (10 ms): averaged over every round, not a median of each.
        pick = statistics.median if name == "wall" else statistics.fmean
        on, off = pick(results[True][name]), pick(results[False][name])
        rows.append([label, f"{off:.1f}", f"{on:.1f}", f"{(on - off):+.1f}", f"{on / off:.2f}"])
    print_table(
        f"run records, {RUNS} runs x {STEPS} dispatches, {rounds} rounds each",
        ["per dispatch", "records off", "records on", "difference", "ratio"],
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds instead of 6")
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args()
    rounds = args.rounds or (3 if args.quick else 6)
    with (
        private_redis() as (url, server),
        nervenet_worker("echo_handlers:handlers", url, concurrency=256, cwd=HERE) as worker,
    ):
        console.print(f"redis {url}, worker pid {worker.pid}")
        asyncio.run(measure(url, worker.pid, server.pid, rounds))


if __name__ == "__main__":
    main()
