"""What a cluster-wide limit costs per task: the same echo handler, unlimited and capped.

    python benchmarks/bench_limits.py [--quick] [--seconds N]

Starts a private ``redis-server`` and one ``nervenet worker limited_handlers:handlers`` (one task
type unlimited, one under ``max_concurrency`` it never reaches), then, alternating the two task
types in the same run: round-trip latency p50/p99 with 1 dispatch in flight, and closed-loop
throughput with 100 in flight. The issue's budget: an uncapped task type pays nothing extra, a
capped one at most one more Redis round trip per start. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

from _common import (
    nervenet_worker,
    percentile,
    print_table,
    private_redis,
    wait_registered,
)

from nervenet import Pool

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from limited_handlers import CAPPED, FREE  # noqa: E402


async def latencies(pool: Pool, task_type: str, count: int) -> list[float]:
    samples = []
    for n in range(count):
        started = time.perf_counter()
        await pool.dispatch(task_type, b"%d" % n, timeout=10)
        samples.append((time.perf_counter() - started) * 1000)
    return samples


async def throughput(pool: Pool, task_type: str, in_flight: int, seconds: float) -> float:
    done = 0
    deadline = time.monotonic() + seconds

    async def client() -> None:
        nonlocal done
        while time.monotonic() < deadline:
            await pool.dispatch(task_type, b"1", timeout=10)
            done += 1

    started = time.monotonic()
    await asyncio.gather(*(client() for _ in range(in_flight)))
    return done / (time.monotonic() - started)


async def measure(url: str, options: argparse.Namespace) -> None:
    rounds = 2 if options.quick else 4
    sequential = 200 if options.quick else 1_000
    seconds = options.seconds or (2.0 if options.quick else 5.0)
    results: dict[str, dict[str, list[float]]] = {
        t: {"lat": [], "tput": []} for t in (FREE, CAPPED)
    }
    async with Pool.from_url(url) as pool:
        for task_type in (FREE, CAPPED):  # warm up both paths
            await latencies(pool, task_type, 50)
        for _ in range(rounds):  # alternate, so drift hits both alike
            for task_type in (FREE, CAPPED):
                results[task_type]["lat"] += await latencies(pool, task_type, sequential)
                results[task_type]["tput"].append(
                    await throughput(pool, task_type, 100, seconds / rounds)
                )
    rows = []
    for task_type, label in ((FREE, "unlimited"), (CAPPED, "capped")):
        lat, tput = results[task_type]["lat"], results[task_type]["tput"]
        rows.append(
            [
                label,
                f"{percentile(lat, 50):.3f}",
                f"{percentile(lat, 99):.3f}",
                f"{sum(tput) / len(tput):,.0f}",
            ]
        )
    print_table(
        "the same echo handler, unlimited vs under a cap it never reaches (same run)",
        ["task type", "p50 ms (1 in flight)", "p99 ms", "dispatches/s (100 in flight)"],
        rows,
    )
    free_p50 = percentile(results[FREE]["lat"], 50)
    capped_p50 = percentile(results[CAPPED]["lat"], 50)
    free_tput = sum(results[FREE]["tput"]) / rounds
    capped_tput = sum(results[CAPPED]["tput"]) / rounds
    print(
        f"capped - unlimited: {capped_p50 - free_p50:+.3f} ms per task at p50 "
        f"({capped_p50 / free_p50:.2f}x); throughput {capped_tput / free_tput:.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run")
    parser.add_argument("--seconds", type=float, help="closed-loop seconds per task type")
    options = parser.parse_args()
    with (
        private_redis() as (url, _server),
        nervenet_worker("limited_handlers:handlers", url, cwd=HERE) as worker,
    ):
        wait_registered(url, [worker])
        asyncio.run(measure(url, options))


if __name__ == "__main__":
    main()
