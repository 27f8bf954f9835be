"""CrewAI kickoffs: plain ``kickoff_for_each_async`` against nervenet with 1 and 2 worker processes.

    python benchmarks/bench_crewai.py [--kickoffs 100] [--latency 0.5] [--memory-runs 200]

The crew is three agents in sequence (research -> analyse -> write, each task reading the ones
before) on a fake LLM that sleeps ``--latency`` seconds per call, like a hosted model, and answers
deterministically. ``--kickoffs`` kickoffs start at once; each row reports kickoffs/s over the
whole batch and p50/p99 of the time from the batch start to each kickoff's end. Rows:

* plain, as shipped: ``Crew.kickoff_for_each_async``, whose runs each take a thread of asyncio's
  default executor (``min(32, CPUs + 4)`` threads, so that many kickoffs at a time);
* plain, widened: the same with the default executor widened to one thread per kickoff;
* plain, widened, queued locks: and CrewAI's store locks swapped for the queued ones nervenet
  uses in its own processes (``nervenet_crewai.locks``), to show what that swap alone is worth;
* nervenet, 1 and 2 worker processes: ``DistributedCrew.kickoff_for_each_async`` with every
  kickoff in flight; this process is the coordinator of every run, ``nervenet worker`` children
  run the agents (a private ``redis-server`` on a free port carries the tasks).

Memory per in-flight run in the coordinator is measured in fresh processes, with runs held inside
their first LLM call (a worker whose model sleeps for minutes): Python heap growth (tracemalloc)
and resident-set growth per run, plain beside nervenet's threaded and native kickoffs.

Every kickoff's output is checked against the plain crew's. The machine is shared and noisy:
read the ratios, which compare figures from the same run. Nothing is asserted.

Reading the CPU columns: CrewAI spends tens of milliseconds of CPU per agent task (building its
Flow-based executor, prompts, events), wherever the task runs. On a machine with few cores that
total bounds every row alike; what nervenet changes is *where* it is spent. The coordinator's CPU
per kickoff says how many kickoffs one coordinator process can drive once the workers run on
other machines; the workers' CPU per kickoff says how many worker processes that takes.
"""

from __future__ import annotations

# CrewAI reads its telemetry switches at import: offline before anything imports it.
from nervenet_crewai.offline import go_offline

go_offline()

import argparse  # noqa: E402
import asyncio  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from collections.abc import Awaitable, Callable, Sequence  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from _common import (  # noqa: E402
    Child,
    console,
    cpu_seconds,
    nervenet_worker,
    percentile,
    print_table,
    private_redis,
    registered,
    wait_registered,
)
from crewai import Crew, CrewOutput  # noqa: E402
from nervenet_crewai import distribute_crew, locks  # noqa: E402
from nervenet_crewai.testing import FakeCall, FakeLLM, Observer, research_crew  # noqa: E402

from nervenet import Pool  # noqa: E402
from nervenet.testing import RedisServer  # noqa: E402

HERE = Path(__file__).resolve().parent
LATENCY_ENV = "BENCH_CREW_LATENCY"
#: Model latency of the worker that holds runs for the memory probes.
HOLD = 300.0

# --- the crew (imported by the worker processes as bench_crewai:crew) ------------------------
LLM_CALLS_IN_PROGRESS = 0
FINISHED_AT: list[float] = []


def _calls_in_progress(call: FakeCall) -> None:
    global LLM_CALLS_IN_PROGRESS
    LLM_CALLS_IN_PROGRESS += {"begin": 1, "end": -1}.get(call.phase, 0)


def model(observers: list[Observer] | None = None) -> FakeLLM:
    """The fake model every agent asks: it sleeps ``BENCH_CREW_LATENCY`` seconds (0.5 by
    default) like a hosted model, then answers a hash of the prompt (deterministic)."""
    latency = float(os.environ.get(LATENCY_ENV, "0.5"))
    return FakeLLM(model="sleepy", latency=latency, observers=observers or [])


def finished(output: CrewOutput) -> CrewOutput:
    FINISHED_AT.append(time.perf_counter())
    return output


def bench_crew() -> Crew:
    made = research_crew(model([_calls_in_progress]))
    made.after_kickoff_callbacks = [finished]
    return made


#: Workers run a thread per agent task in flight; every kickoff of a batch can have one.
crew = distribute_crew(bench_crew, name="crewbench", worker_threads=5_000, kickoff_threads=5_000)


def inputs(count: int) -> list[dict[str, Any]]:
    return [{"topic": f"topic {n % 10}"} for n in range(count)]


# --- measuring a batch -------------------------------------------------------------------------
@dataclass(frozen=True)
class Batch:
    kickoffs: int
    seconds: float
    latencies: list[float]
    """Seconds from the batch start to each kickoff's end."""
    cpu: dict[str, float]
    """CPU seconds per process during the batch."""

    @property
    def rate(self) -> float:
        return self.kickoffs / self.seconds

    def p(self, q: float) -> float:
        return percentile(self.latencies, q)


async def batch(
    run: Callable[[list[dict[str, Any]]], Awaitable[Sequence[Any]]],
    count: int,
    expected: dict[str, str],
    processes: dict[str, int],
) -> Batch:
    FINISHED_AT.clear()
    values = inputs(count)
    cpu_before = {name: cpu_seconds(pid) for name, pid in processes.items()}
    started = time.perf_counter()
    outputs = await run(values)
    seconds = time.perf_counter() - started
    cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in processes.items()}
    for value, output in zip(values, outputs, strict=True):
        if not isinstance(output, CrewOutput):
            raise RuntimeError(f"a kickoff failed: {output!r}")
        if output.raw != expected[value["topic"]]:
            raise RuntimeError(f"wrong output for {value}: {output.raw!r}")
    if len(FINISHED_AT) != count:
        raise RuntimeError(f"{len(FINISHED_AT)} of {count} kickoffs reported their end")
    return Batch(count, seconds, [t - started for t in FINISHED_AT], cpu)


async def plain_batch(values: list[dict[str, Any]]) -> Sequence[Any]:
    return await bench_crew().kickoff_for_each_async(values)  # type: ignore[return-value]


async def nervenet_batch(values: list[dict[str, Any]]) -> Sequence[Any]:
    return await crew.kickoff_for_each_async(
        values, max_concurrency=len(values), progress=False, native=True
    )


async def widened(count: int, run: Callable[[], Awaitable[Batch]]) -> Batch:
    loop = asyncio.get_running_loop()
    executor = ThreadPoolExecutor(max_workers=count)
    loop.set_default_executor(executor)
    try:
        return await run()
    finally:
        loop.set_default_executor(ThreadPoolExecutor())
        executor.shutdown(wait=False)


# --- memory per in-flight run --------------------------------------------------------------------
def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def held_growth(start: Callable[[int], Any], runs: int, held: Callable[[], int]) -> float:
    """Bytes per run this process grows by while ``runs`` runs wait in an LLM call."""
    gc.collect()
    before_rss = rss_bytes()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    base = held()
    tasks = [asyncio.ensure_future(start(n)) for n in range(runs)]
    deadline = time.monotonic() + 120
    while held() - base < runs:
        for task in tasks:
            if task.done():
                task.result()
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {held() - base} of {runs} runs got to their LLM call")
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    gc.collect()
    traced = (tracemalloc.get_traced_memory()[0] - before) / runs
    tracemalloc.stop()
    rss = (rss_bytes() - before_rss) / runs
    print(json.dumps({"traced": traced, "rss": rss}), flush=True)
    os._exit(0)  # the held runs' threads would keep the process alive


async def memory_probe(system: str, url: str, runs: int) -> None:
    if system == "plain":
        os.environ[LATENCY_ENV] = str(HOLD)
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(max_workers=runs + 8))
        await held_growth(
            lambda n: bench_crew().kickoff_async(inputs={"topic": f"held {n}"}),
            runs,
            lambda: LLM_CALLS_IN_PROGRESS,
        )
        return
    pool = Pool.from_url(url)
    crew.pool = pool
    async with pool:
        kickoff = crew.akickoff if system == "native" else crew.kickoff_async
        await held_growth(
            lambda n: kickoff(inputs={"topic": f"held {n}"}), runs, lambda: pool.inbox.waiting
        )


def measure_memory(url: str, runs: int) -> dict[str, dict[str, float]]:
    results = {}
    for system in ("plain", "threads", "native"):
        with Child.run(
            f"memory-{system}",
            [sys.executable, __file__, "--memory-probe", system, "--url", url, "--runs", str(runs)],
            cwd=HERE,
        ) as probe:
            probe.wait(300)
            if probe.returncode != 0:
                raise RuntimeError(f"memory probe {system} failed:\n{probe.output()}")
            results[system] = json.loads(probe.output().strip().splitlines()[-1])
    return results


# --- processes -------------------------------------------------------------------------------
def worker(name: str, url: str, latency: float) -> Child:
    """A worker serving the bench crew, whose model waits ``latency`` seconds a call."""
    env = {LATENCY_ENV: str(latency)}
    return nervenet_worker(
        "bench_crewai:crew", url, name=name, concurrency=5000, grace=1, cwd=HERE, env=env
    )


# --- the run ---------------------------------------------------------------------------------
async def measure(url: str, server: RedisServer, options: argparse.Namespace) -> dict[str, Batch]:
    os.environ[LATENCY_ENV] = str(options.latency)
    count = options.kickoffs
    me = os.getpid()
    expected = {}
    for value in inputs(10):
        output = await asyncio.to_thread(bench_crew().kickoff, inputs=value)
        assert isinstance(output, CrewOutput)  # not streaming
        expected[value["topic"]] = output.raw
    rows: dict[str, Batch] = {}
    console.print(f"plain, as shipped ({count} kickoffs) ...")
    rows["plain, as shipped"] = await batch(plain_batch, count, expected, {"this process": me})
    console.print("plain, widened ...")
    rows["plain, widened"] = await widened(
        count, lambda: batch(plain_batch, count, expected, {"this process": me})
    )
    # nervenet swaps CrewAI's polled store locks for queued ones in its processes; the same
    # swap in a plain process shows how much of the difference that alone makes.
    locks.install()
    console.print("plain, widened, queued locks ...")
    rows["plain, widened, queued locks"] = await widened(
        count, lambda: batch(plain_batch, count, expected, {"this process": me})
    )
    pool = Pool.from_url(url)
    crew.pool = pool
    first = worker("worker-1", url, options.latency)
    children = [first]
    try:
        async with pool:
            await registered(pool, children)
            for value in inputs(3):  # warm the workers' imports and caches
                await crew.akickoff(inputs=value)
            processes = {"this process": me, "worker-1": first.pid, "redis": server.pid}
            console.print("nervenet, 1 worker ...")
            rows["nervenet, 1 worker"] = await batch(nervenet_batch, count, expected, processes)
            second = worker("worker-2", url, options.latency)
            children.append(second)
            await registered(pool, children)
            for value in inputs(3):
                await crew.akickoff(inputs=value)
            processes["worker-2"] = second.pid
            console.print("nervenet, 2 workers ...")
            rows["nervenet, 2 workers"] = await batch(nervenet_batch, count, expected, processes)
    finally:
        for child in children:
            child.stop()
        os.environ.pop(LATENCY_ENV, None)
    return rows


def report(rows: dict[str, Batch], memory: dict[str, dict[str, float]], latency: float) -> None:
    plain = rows["plain, as shipped"]
    widened_plain = rows["plain, widened"]
    table_rows = []
    for name, row in rows.items():
        coordinator_cpu = row.cpu.get("this process", 0.0) / row.kickoffs * 1000
        worker_cpu = sum(v for k, v in row.cpu.items() if k.startswith("worker")) / row.kickoffs
        table_rows.append(
            [
                name,
                f"{row.rate:.1f}",
                f"{row.p(50):.2f}",
                f"{row.p(99):.2f}",
                f"{row.rate / plain.rate:.2f}x",
                f"{row.rate / widened_plain.rate:.2f}x",
                f"{coordinator_cpu:.0f}",
                f"{worker_cpu * 1000:.0f}" if worker_cpu else "-",
            ]
        )
    print_table(
        f"{plain.kickoffs} concurrent kickoffs of a 3-task crew, model latency {latency:g} s "
        f"(floor: {3 * latency:g} s per kickoff)",
        [
            "",
            "kickoffs/s",
            "p50 s",
            "p99 s",
            "vs plain",
            "vs widened",
            "coord CPU ms/kickoff",
            "worker CPU ms/kickoff",
        ],
        table_rows,
    )
    print_table(
        "coordinator memory per in-flight crew run (held inside its first LLM call)",
        ["", "Python heap (tracemalloc)", "RSS growth"],
        [
            [name, f"{m['traced'] / 1024:.0f} KiB", f"{m['rss'] / 1024:.0f} KiB"]
            for name, m in (
                ("plain kickoff_async (a thread each)", memory["plain"]),
                ("nervenet kickoff_async (a thread each)", memory["threads"]),
                ("nervenet akickoff (native, no thread)", memory["native"]),
            )
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--kickoffs", type=int, default=100)
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--memory-runs", type=int, default=200)
    parser.add_argument("--memory-probe", choices=["plain", "threads", "native"])
    parser.add_argument("--url")
    parser.add_argument("--runs", type=int, default=200)
    options = parser.parse_args()
    if options.memory_probe:
        asyncio.run(memory_probe(options.memory_probe, options.url, options.runs))
        return
    with private_redis() as (url, server):
        rows = asyncio.run(measure(url, server, options))
        with worker("hold-worker", url, HOLD) as holder:
            wait_registered(url, [holder])
            memory = measure_memory(url, options.memory_runs)
    report(rows, memory, options.latency)


if __name__ == "__main__":
    main()
