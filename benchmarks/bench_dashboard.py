"""How fast the dashboard's pages load with many runs recorded.

    python benchmarks/bench_dashboard.py [--runs 10000] [--loads 5]

Starts a private ``redis-server``, records ``--runs`` finished runs (every 50th failed, three
node attempts each) as coordinator processes would, starts ``nervenet dashboard`` and times each
page, server-side work included (median of ``--loads`` loads, over HTTP from this process).
``/runs?status=failed`` is the worst case of a filter: it scans the list until it has a page.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time

import httpx
from _common import Child, console, print_table, private_redis

from nervenet import Pool, RunStatus
from nervenet.runs import node_fields
from nervenet.testing import free_port, nervenet_script

PAGES = ("/", "/runs", "/runs?status=failed", "/runs/run-00000", "/escalations", "/metrics")


async def record_runs(url: str, count: int) -> None:
    async with Pool.from_url(url) as pool:
        keys = pool.keys
        for start in range(0, count, 500):
            async with pool.transport.redis.pipeline(transaction=False) as pipe:
                for i in range(start, min(count, start + 500)):
                    run_id = f"run-{i:05d}"
                    pool.runs.add_begin(pipe, run_id, "support", status=RunStatus.RUNNING)
                    for step in range(3):
                        fields = node_fields(
                            task_type=f"support/step{step}",
                            task_id=f"{run_id}/{step}",
                            attempt=1,
                            worker="w-1",
                            outcome="ok",
                            queue_wait_ms=2.0,
                            run_ms=120.0,
                        )
                        pipe.xadd(keys.run_nodes(run_id), fields)  # type: ignore[arg-type]
                    failed = i % 50 == 0
                    status = RunStatus.FAILED if failed else RunStatus.SUCCEEDED
                    pool.runs.add_end(pipe, run_id, status, "boom" if failed else "")
                await pipe.execute()


async def time_pages(base: str, loads: int) -> list[list[str]]:
    rows = []
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        for page in PAGES:
            times, size = [], 0
            for _ in range(loads):
                started = time.perf_counter()
                response = await client.get(page)
                times.append(time.perf_counter() - started)
                response.raise_for_status()
                size = len(response.content)
            rows.append(
                [
                    page,
                    f"{statistics.median(times) * 1000:.0f}",
                    f"{max(times) * 1000:.0f}",
                    f"{size / 1024:.0f}",
                ]
            )
    return rows


async def wait_up(base: str) -> None:
    async with httpx.AsyncClient(base_url=base) as client:
        for _ in range(300):
            try:
                if (await client.get("/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    sys.exit("the dashboard did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--loads", type=int, default=5)
    args = parser.parse_args()
    with private_redis() as (url, _):
        started = time.perf_counter()
        asyncio.run(record_runs(url, args.runs))
        console.print(f"recorded {args.runs} runs in {time.perf_counter() - started:.1f} s")
        port = free_port()
        command = [nervenet_script(), "dashboard", "--redis", url, "--port", str(port)]
        with Child.run("dashboard", command):
            base = f"http://127.0.0.1:{port}"
            asyncio.run(wait_up(base))
            rows = asyncio.run(time_pages(base, args.loads))
    print_table(
        f"dashboard pages with {args.runs} runs recorded ({args.loads} loads each)",
        ["page", "median ms", "max ms", "KiB"],
        rows,
    )


if __name__ == "__main__":
    main()
