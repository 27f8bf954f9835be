"""CrewAI Flows on the pool: throughput and memory against plain CrewAI, and recovery from a kill.

    python benchmarks/bench_crewai_flows.py [--flows 1000] [--latency 0.5] [--recovery 200]

The flow is ``research`` (a 3-task crew: research -> analyse -> write, on ``bench_crewai``'s
sleepy fake model) -> a router -> ``publish``. Rows:

* throughput: ``--flows`` runs started at once, plain ``Flow.kickoff_async`` (its crew's
  ``kickoff_async`` on a thread of a default executor widened to one thread per run) against
  ``distribute_flow(...).kickoff_async`` with the crew's agent work on 2 ``nervenet worker``
  processes; flows/s, p50/p99 from the batch start, and this process's memory growth per run in
  flight (RSS, sampled while every run is in flight; the Python heap, tracemalloc, in both);
* recovery: a coordinator child process submits ``--recovery`` durable flow runs and as many
  durable kickoffs, and is SIGKILLed once a third of their agent tasks finished; this process,
  with the same flow and crew on the pool, takes them over (default lease: 1.5 s). Reported:
  seconds from the kill to each takeover and to each run's end (p50, max), and agent-task
  executions beyond what the runs needed (the workers count every model call in Redis).

Every output is checked against a plain run's. The machine is shared and noisy: compare rows of
the same run. Nothing is asserted.
"""

from __future__ import annotations

from nervenet_crewai.offline import go_offline

go_offline()

import argparse  # noqa: E402
import asyncio  # noqa: E402
import gc  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import redis  # noqa: E402
from _common import (  # noqa: E402
    Child,
    console,
    nervenet_worker,
    percentile,
    print_table,
    private_redis,
    registered,
)
from bench_crewai import LATENCY_ENV, model  # noqa: E402
from crewai import Crew, CrewOutput  # noqa: E402
from crewai.flow.flow import Flow, listen, router, start  # noqa: E402
from nervenet_crewai import distribute_crew, distribute_flow  # noqa: E402
from nervenet_crewai.testing import RedisCallCounter, research_crew  # noqa: E402
from pydantic import BaseModel  # noqa: E402

from nervenet import Pool  # noqa: E402

HERE = Path(__file__).resolve().parent
COUNT_URL = "BENCH_FLOW_COUNT_URL"
CALLS_KEY = "bench:flow:model-calls"
CALLS_PER_RUN = 3  # the crew's three agent tasks, one model call each


def counted_crew() -> Crew:
    """The bench crew, counting its model calls in Redis when ``BENCH_FLOW_COUNT_URL`` is set."""
    url = os.environ.get(COUNT_URL)
    return research_crew(model([RedisCallCounter(url, CALLS_KEY)] if url else []))


#: Workers: ``nervenet worker bench_crewai_flows:crew``.
crew = distribute_crew(
    counted_crew,
    name="flowbench",
    worker_threads=5_000,
    kickoff_threads=5_000,
    wait_for_worker=True,
)
PLAIN = True  # this process's flows kick off the plain crew until a distributed row starts


class Brief(BaseModel):
    id: str = ""
    topic: str = ""
    draft: str = ""


class BriefFlow(Flow[Brief]):
    @start()
    async def research(self) -> str:
        inputs = {"topic": self.state.topic}
        if PLAIN:
            output = await counted_crew().kickoff_async(inputs=inputs)
        else:
            output = await crew.kickoff_async(inputs=inputs)
        assert isinstance(output, CrewOutput)  # not streaming
        self.state.draft = output.raw
        return output.raw

    @router(research)
    def check(self) -> str:
        return "approved" if self.state.draft else "retry"

    @listen("approved")
    def publish(self) -> dict[str, str]:
        return {"topic": self.state.topic, "text": self.state.draft}


def topics(count: int) -> list[dict[str, str]]:
    return [{"topic": f"topic {n % 10}"} for n in range(count)]


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def batch(label: str, run: Any, count: int, expected: dict[str, Any]) -> list[str]:
    """Start ``count`` runs at once; flows/s, p50/p99, memory per run in flight."""
    gc.collect()
    rss0 = rss_bytes()
    tracemalloc.start()
    heap0 = tracemalloc.get_traced_memory()[0]
    started = time.perf_counter()
    ends: list[float] = []
    peak_rss = rss0

    async def one(values: dict[str, str]) -> Any:
        output = await run(values)
        ends.append(time.perf_counter() - started)
        return output

    tasks = [asyncio.ensure_future(one(v)) for v in topics(count)]
    await asyncio.sleep(min(1.0, count / 500))  # every run started, none finished yet
    peak_rss = max(peak_rss, rss_bytes())
    heap = tracemalloc.get_traced_memory()[0] - heap0
    outputs = await asyncio.gather(*tasks)
    seconds = time.perf_counter() - started
    tracemalloc.stop()
    for values, output in zip(topics(count), outputs, strict=True):
        if output != expected[values["topic"]]:
            raise RuntimeError(f"{label}: wrong output for {values}: {output!r}")
    return [
        label,
        f"{count / seconds:.1f}",
        f"{percentile(ends, 50):.2f}",
        f"{percentile(ends, 99):.2f}",
        f"{heap / count / 1024:.0f}",
        f"{(peak_rss - rss0) / count / 1024:.0f}",
    ]


def worker(name: str, url: str, latency: float) -> Child:
    """A worker serving the bench crew (model latency ``latency``), counting model calls."""
    env = {LATENCY_ENV: str(latency), COUNT_URL: url}
    return nervenet_worker(
        "bench_crewai_flows:crew", url, name=name, concurrency=5000, grace=1, cwd=HERE, env=env
    )


async def throughput(url: str, count: int, latency: float) -> list[list[str]]:
    global PLAIN
    os.environ[LATENCY_ENV] = str(latency)
    expected = {}
    for values in topics(10):
        expected[values["topic"]] = await BriefFlow().kickoff_async(inputs=values)
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(max_workers=count + 16))
    console.print(f"plain, {count} flows ...")
    rows = [
        await batch(
            "plain Flow.kickoff_async",
            lambda v: BriefFlow().kickoff_async(inputs=v),
            count,
            expected,
        )
    ]
    PLAIN = False
    pool = Pool.from_url(url)
    crew.pool = pool
    flows = distribute_flow(BriefFlow, pool=pool, name="briefs")
    workers = [worker(f"worker-{n}", url, latency) for n in (1, 2)]
    try:
        async with pool:
            await registered(pool, workers, timeout=120)
            await flows.kickoff_async(inputs=topics(1)[0])  # warm up the workers
            console.print(f"nervenet, {count} flows on 2 workers ...")
            rows.append(
                await batch(
                    "nervenet, 2 worker processes",
                    lambda v: flows.kickoff_async(inputs=v),
                    count,
                    expected,
                )
            )
    finally:
        for child in workers:
            child.stop()
    return rows


# --- recovery ----------------------------------------------------------------------------------
def run_ids(count: int) -> tuple[list[str], list[str]]:
    return [f"flow-{n}" for n in range(count)], [f"kick-{n}" for n in range(count)]


async def coordinator(url: str, count: int) -> None:
    """The child that is killed: submits durable flow runs and kickoffs, then waits."""
    global PLAIN
    PLAIN = False
    pool = Pool.from_url(url)
    crew.pool = pool
    flows = distribute_flow(BriefFlow, pool=pool, name="briefs")
    async with pool:
        flow_ids, kick_ids = run_ids(count)
        for n, values in enumerate(topics(count)):
            await flows.asubmit(values, run_id=flow_ids[n])
            await crew.asubmit(values, run_id=kick_ids[n])
        print("submitted", flush=True)
        await asyncio.sleep(3600)


async def recovery(url: str, count: int, latency: float) -> list[list[str]]:
    global PLAIN
    PLAIN = False
    client = redis.Redis.from_url(url)
    client.delete(CALLS_KEY)
    workers = [worker(f"worker-{n}", url, latency) for n in (1, 2)]
    os.environ[LATENCY_ENV] = str(latency)
    child = Child.run(
        "coordinator",
        [sys.executable, __file__, "--coordinator", "--url", url, "--recovery", str(count)],
        cwd=HERE,
    )
    pool = Pool.from_url(url)
    crew.pool = pool  # this process can take over both kinds of run
    flows = distribute_flow(BriefFlow, pool=pool, name="briefs")
    try:
        async with pool:
            needed = 2 * count * CALLS_PER_RUN
            deadline = time.monotonic() + 300
            while int(client.get(CALLS_KEY) or 0) < needed // 3:
                child.check_running()
                if time.monotonic() > deadline:
                    raise RuntimeError("the coordinator made no progress")
                await asyncio.sleep(0.05)
            os.kill(child.pid, signal.SIGKILL)
            killed = time.perf_counter()
            claimed: list[float] = []  # seconds from the kill to each takeover

            async def watch_takeovers() -> None:
                while True:
                    while len(claimed) < pool.workflows.takeovers:
                        claimed.append(time.perf_counter() - killed)
                    await asyncio.sleep(0.01)

            watcher = asyncio.ensure_future(watch_takeovers())
            done_at: dict[str, float] = {}
            flow_ids, kick_ids = run_ids(count)

            async def finish(run_id: str, waited: Any) -> None:
                await waited
                done_at[run_id] = time.perf_counter() - killed

            waits = [finish(i, flows.handle(i).result()) for i in flow_ids]
            waits += [finish(i, crew.handle(i).result()) for i in kick_ids]
            await asyncio.gather(*waits)
            watcher.cancel()
            calls = int(client.get(CALLS_KEY) or 0)
            taken = pool.workflows.takeovers
    finally:
        child.stop(grace=0.1)
        for one in workers:
            one.stop()
        client.close()
    flows_s = [done_at[i] for i in flow_ids]
    kicks_s = [done_at[i] for i in kick_ids]
    return [
        [
            f"{count} flows + {count} kickoffs, {taken} taken over",
            f"{percentile(claimed, 50):.2f} / {max(claimed):.2f}",
            f"{percentile(flows_s, 50):.2f} / {max(flows_s):.2f}",
            f"{percentile(kicks_s, 50):.2f} / {max(kicks_s):.2f}",
            f"{calls - needed}",
        ]
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--flows", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--recovery", type=int, default=200)
    parser.add_argument("--coordinator", action="store_true")
    parser.add_argument("--url")
    options = parser.parse_args()
    if options.coordinator:
        asyncio.run(coordinator(options.url, options.recovery))
        return
    with private_redis() as (url, _server):
        rows = asyncio.run(throughput(url, options.flows, options.latency)) if options.flows else []
        recovered = asyncio.run(recovery(url, options.recovery, options.latency))
    print_table(
        f"{options.flows} concurrent flow runs (a 3-task crew each, model latency "
        f"{options.latency:g} s)",
        ["", "flows/s", "p50 s", "p99 s", "heap KiB/run", "RSS KiB/run"],
        rows,
    )
    print_table(
        "a coordinator SIGKILLed with runs in flight; another process takes them over",
        [
            "",
            "kill->taken over p50 / max s",
            "flow runs: kill->end p50 / max s",
            "kickoffs: kill->end p50 / max s",
            "agent tasks re-run",
        ],
        recovered,
    )


if __name__ == "__main__":
    main()
