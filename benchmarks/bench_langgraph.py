"""The same 3-node LangGraph graph run by plain LangGraph and distributed by nervenet, in one run.

    python benchmarks/bench_langgraph.py [--quick] [--seconds N] [--clients 1000]

Starts a private ``redis-server`` on a free port and ``nervenet worker`` processes serving
``apps/lg_bench_app.py``; this process is the coordinator of every distributed run and also runs
the plain graph, so both sides are measured in the same process, on the same machine, minutes
apart. Neither side has a checkpointer: the distributed rows measure dispatching nodes, not
checkpointing (durable runs with ``RedisSaver`` are what ``bench_recovery.py`` exercises).

* sequential runs (1 in flight) of zero-work nodes: runs/s and the latency each node adds;
* closed-loop throughput with 1,000 runs in flight whose nodes ``await asyncio.sleep(0.05)``:
  plain, distributed with 1 worker process, and with 2 (an extra row);
* coordinator memory per in-flight run, distributed and plain.

Every run's output is checked. The machine is shared and noisy: each ratio compares adjacent
stretches (the sequential blocks, the closed-loop rounds, which alternate plain and distributed)
and the median ratio is the verdict; "others' cores" shows how much of the machine processes not
ours used meanwhile. Compare separate runs with care. Nothing is asserted; each target is
reported as PASS or MISS with its margin.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import statistics
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from _common import (
    Child,
    console,
    cpu_seconds,
    machine_busy_seconds,
    nervenet_worker,
    percentile,
    print_table,
    private_redis,
    registered,
)

from nervenet.testing import RedisServer

HERE = Path(__file__).resolve().parent
APPS = HERE / "apps"
sys.path.insert(0, str(APPS))
import lg_bench_app as app  # noqa: E402

#: Above any number of nodes in flight here, so the worker's slots never become the queue.
WORKER_CONCURRENCY = 5_000
CLIENTS = 1_000
SLEEP = 0.05
#: A node delay no phase outlasts: runs held in flight for the memory phase.
HOLD = 60.0

#: Issue 14's targets: added latency per node (sequential, p50), and coordinator memory per
#: in-flight run against plain LangGraph's in the same process.
TARGET_NODE_MS = 0.5
TARGET_MEMORY_RATIO = 1.0

Invoke = Callable[[int, float], Awaitable[None]]


# --- measuring ------------------------------------------------------------------------------
def checked(graph: Any) -> Invoke:
    """One run of ``graph``; raises if its output is not what plain LangGraph returns."""

    async def invoke(n: int, delay: float) -> None:
        output = await graph.ainvoke(app.run_input(n, delay))
        if not app.is_expected(output, n, delay):
            raise AssertionError(f"run {n} returned {output!r}")

    return invoke


async def sequential(
    systems: dict[str, Invoke], runs: int, blocks: int
) -> dict[str, list[list[float]]]:
    """Seconds per run at 1 in flight, by system, then by block: the systems take turns in
    ``blocks`` blocks, so a noisy neighbour slows both alike and blocks can be compared in pairs."""
    latencies: dict[str, list[list[float]]] = {name: [] for name in systems}
    for invoke in systems.values():
        for n in range(50):  # warm-up: lazy imports, connections, the registry cache
            await invoke(n, 0.0)
    n = 0
    for _ in range(blocks):
        for name, invoke in systems.items():
            block = []
            for _ in range(runs // blocks):
                start = time.perf_counter()
                await invoke(n, 0.0)
                block.append(time.perf_counter() - start)
                n += 1
            latencies[name].append(block)
    return latencies


@dataclass(frozen=True)
class Phase:
    """One closed-loop stretch: runs finished, wall seconds, CPU seconds by process."""

    runs: int
    seconds: float
    cpu: dict[str, float]
    machine: float
    """CPU seconds the whole machine spent, this benchmark's processes included."""

    @property
    def rate(self) -> float:
        return self.runs / self.seconds

    @property
    def foreign(self) -> float:
        """Cores kept busy by processes that are not this benchmark's (a shared machine)."""
        return max(0.0, self.machine - sum(self.cpu.values())) / self.seconds

    def cpu_ms(self, process: str) -> float:
        """CPU milliseconds ``process`` spent per run."""
        return self.cpu[process] / self.runs * 1e3

    def busy(self, process: str) -> float:
        """Share of one core ``process`` used."""
        return self.cpu[process] / self.seconds


async def closed_loop(
    invoke: Invoke, clients: int, delay: float, warmup: float, seconds: float, pids: dict[str, int]
) -> Phase:
    """``clients`` runs in flight: each client starts its next run when its last one returns."""
    finished = 0
    stopping = False

    async def client(first: int) -> None:
        nonlocal finished
        n = first
        while not stopping:
            await invoke(n, delay)
            finished += 1
            n += clients

    async def until(least: float, runs: int) -> None:
        """Wait ``least`` seconds and until ``runs`` more runs finished (at most a minute)."""
        begun, target = time.perf_counter(), finished + runs
        await asyncio.sleep(least)
        while finished < target and time.perf_counter() - begun < 60:
            await asyncio.sleep(0.05)

    tasks = [asyncio.ensure_future(client(i)) for i in range(clients)]
    try:
        # All runs start together and move in step at first: measure only after a whole
        # generation finished, over at least one more (a slow, shared machine stretches both).
        await until(warmup, clients)
        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        machine_before = machine_busy_seconds()
        start, finished_before = time.perf_counter(), finished
        await until(seconds, clients)
        end, finished_after = time.perf_counter(), finished
        cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
        machine = machine_busy_seconds() - machine_before
        stopping = True
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=120)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return Phase(finished_after - finished_before, end - start, cpu, machine)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Memory:
    traced: float
    """Bytes per in-flight run that Python allocated and still holds (tracemalloc)."""
    rss: float
    """Growth of the resident set per in-flight run."""
    sites: list[tuple[str, float]]
    """The biggest allocation sites (file:line) and their bytes per in-flight run."""


async def in_flight_memory(invoke: Invoke, runs: int, held: Callable[[], int]) -> Memory:
    """Memory this process holds per run while ``runs`` runs wait inside a node.

    Method: start ``runs`` runs whose nodes wait ``HOLD`` seconds, wait until ``held()`` (runs
    blocked in a node) reaches ``runs``, collect garbage, and divide the growth since before
    the runs started by ``runs``. Python's own allocations are counted with tracemalloc in one
    pass; the resident set, which tracemalloc's bookkeeping would inflate, in an earlier pass
    without it. Either way what is counted is everything a blocked run keeps alive here: its
    asyncio task, LangGraph's loop, channels and task objects, and for distributed runs the
    dispatch's envelope, payload and reply waiter. Runs in a fresh process (``--memory-probe``)
    so that the resident set does not grow into memory an earlier phase freed.
    """

    async def one_pass(trace: bool, first: int) -> tuple[float, list[tuple[str, float]]]:
        gc.collect()
        if trace:
            tracemalloc.start()
            snapshot = tracemalloc.take_snapshot()
        before = tracemalloc.get_traced_memory()[0] if trace else rss_bytes()
        tasks = [asyncio.ensure_future(invoke(first + i, HOLD)) for i in range(runs)]
        sites: list[tuple[str, float]] = []
        try:
            deadline = time.monotonic() + 120
            while held() < runs:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {held()} of {runs} runs reached their node")
                for task in tasks:
                    if task.done():
                        task.result()  # a run failed: say why
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.2)
            gc.collect()
            after = tracemalloc.get_traced_memory()[0] if trace else rss_bytes()
            if trace:
                growth = tracemalloc.take_snapshot().compare_to(snapshot, "lineno")
                sites = [
                    (
                        f"{'/'.join(Path(s.traceback[0].filename).parts[-2:])}:"
                        f"{s.traceback[0].lineno}",
                        s.size_diff / runs,
                    )
                    for s in growth[:8]
                ]
        finally:
            if trace:
                tracemalloc.stop()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return (after - before) / runs, sites

    rss, _ = await one_pass(False, 0)
    traced, sites = await one_pass(True, runs)
    return Memory(traced, rss, sites)


async def memory_probe(system: str, url: str, runs: int) -> None:
    """The body of a ``--memory-probe`` process: print its :class:`Memory` as JSON."""
    if system == "plain":
        result = await in_flight_memory(checked(app.plain()), runs, lambda: app.holding)
    else:
        graph = app.distributed(url)
        pool = graph.nervenet.pool
        async with pool:
            invoke = checked(graph)
            for n in range(20):
                await invoke(n, 0.0)
            result = await in_flight_memory(invoke, runs, lambda: pool.inbox.waiting)
    print(json.dumps(asdict(result)), flush=True)


def measure_memory(url: str, runs: int) -> dict[str, Memory]:
    """Both probes at once, each in its own fresh process."""
    probes = {
        system: Child.run(
            f"memory-{system}",
            [sys.executable, __file__, "--memory-probe", system, "--url", url, "--runs", str(runs)],
            cwd=HERE,
        )
        for system in ("plain", "distributed")
    }
    results = {}
    try:
        for system, probe in probes.items():
            probe.wait(300)
            if probe.returncode != 0:
                raise RuntimeError(f"memory probe failed:\n{probe.output()}")
            lines = [line for line in probe.output().splitlines() if line.startswith("{")]
            if not lines:
                raise RuntimeError(f"memory probe printed no result:\n{probe.output()}")
            data = json.loads(lines[-1])
            if len(probe.output().splitlines()) > 1:  # anything it logged: show it
                print(f"memory probe ({system}) also printed:\n{probe.output(1_000)}")
            data["sites"] = [tuple(site) for site in data["sites"]]
            results[system] = Memory(**data)
    finally:
        for probe in probes.values():
            probe.stop()
    return results


# --- processes ------------------------------------------------------------------------------
def start_worker(url: str, name: str = "worker") -> Child:
    target = "lg_bench_app:graph"
    return nervenet_worker(
        target, url, name=name, concurrency=WORKER_CONCURRENCY, grace=1, cwd=APPS
    )


@contextlib.contextmanager
def extra_worker(url: str) -> Iterator[Child]:
    with start_worker(url, "worker-2") as child:
        yield child


# --- the run --------------------------------------------------------------------------------
@dataclass
class Results:
    latency: dict[str, list[list[float]]]
    """Seconds per sequential run, by system, then by block."""
    throughput: dict[str, list[Phase]]
    """Closed-loop phases (one per round), by row."""
    memory: dict[str, Memory]
    """Memory per in-flight run, by system."""
    clients: int
    seconds: float


async def measure(
    url: str, server: RedisServer, worker: Child, options: argparse.Namespace
) -> Results:
    plain = checked(app.plain())
    graph = app.distributed(url)
    distributed = checked(graph)
    pool = graph.nervenet.pool
    async with pool:
        await registered(pool, [worker])
        results = Results({}, {}, {}, options.clients, options.seconds)

        results.latency = await sequential(
            {"plain": plain, "distributed": distributed}, options.sequential, blocks=5
        )
        worker.check_running()
        console.print(f"[dim]sequential runs done ({options.sequential} each)[/]")

        base = {"coordinator": os.getpid()}
        with_worker = {**base, "worker": worker.pid, "redis": server.pid}
        rows = {
            "plain": (plain, base),
            "nervenet, 1 worker": (distributed, with_worker),
        }
        for row in rows:
            results.throughput[row] = []
        for round_ in range(options.rounds):
            for row, (invoke, pids) in rows.items():
                phase = await closed_loop(
                    invoke, options.clients, SLEEP, options.warmup, options.seconds, pids
                )
                results.throughput[row].append(phase)
                worker.check_running()
                console.print(f"[dim]round {round_ + 1}: {row}: {phase.rate:,.0f} runs/s[/]")

        with extra_worker(url) as second:
            await registered(pool, [worker, second])
            pids = {**with_worker, "worker": worker.pid, "worker 2": second.pid}
            phase = await closed_loop(
                distributed, options.clients, SLEEP, options.warmup, options.seconds, pids
            )
            results.throughput["nervenet, 2 workers"] = [phase]
            console.print(f"[dim]distributed, 2 workers: {phase.rate:,.0f} runs/s[/]")

    return results


# --- the report -----------------------------------------------------------------------------
def margin(value: float, target: float, higher_is_better: bool = True) -> tuple[str, str]:
    ok = value >= target if higher_is_better else value <= target
    share = value / target - 1 if higher_is_better else target / value - 1
    return ("PASS" if ok else "MISS"), f"{share:+.0%}"


def median(values: list[float]) -> float:
    return statistics.median(values)


def ratios(values: list[float]) -> str:
    return ", ".join(f"x{v:.2f}" for v in values)


def report(results: Results) -> None:
    lat = results.latency
    flat = {name: [x for block in blocks for x in block] for name, blocks in lat.items()}
    rows = []
    for name in ("plain", "distributed"):
        samples = flat[name]
        rows.append(
            [
                name,
                f"{len(samples) / sum(samples):,.0f}",
                *(f"{percentile(samples, q) * 1e3:.2f} ms" for q in (50, 90, 99)),
            ]
        )
    # Runs/s ratio of each pair of adjacent blocks, from each block's median latency: a shared
    # machine's stalls land on one run or another and would decide a ratio of means.
    pairs = list(zip(lat["plain"], lat["distributed"], strict=True))
    block_ratios = [median(plain) / median(dist) for plain, dist in pairs]
    mean_ratios = [statistics.fmean(plain) / statistics.fmean(dist) for plain, dist in pairs]
    sequential_ratio = median(block_ratios)
    added_ms = (percentile(flat["distributed"], 50) - percentile(flat["plain"], 50)) * 1e3
    per_node_ms = added_ms / len(app.NODES)
    print_table(
        f"Sequential runs, zero-work nodes, 1 in flight ({len(flat['plain'])} runs each, "
        f"taking turns in {len(block_ratios)} blocks)",
        ["", "runs/s", "p50", "p90", "p99"],
        rows,
    )
    console.print(
        f"distributed / plain runs/s by block (from median latencies): {ratios(block_ratios)}; "
        f"median [bold]x{sequential_ratio:.3g}[/] (from mean latencies: median "
        f"x{median(mean_ratios):.3g}). Added latency {added_ms:.2f} ms per run at p50, "
        f"[bold]{per_node_ms:.2f} ms per node[/]"
    )

    plain_rates = [p.rate for p in results.throughput["plain"]]
    rows = []
    for row, phases in results.throughput.items():
        phase = sorted(phases, key=lambda p: p.rate)[len(phases) // 2]  # the median round
        workers = [p for p in phase.cpu if p.startswith("worker")]
        rows.append(
            [
                row,
                f"{phase.rate:,.0f}",
                " / ".join(f"{p.rate:,.0f}" for p in phases),
                f"x{phase.rate / median(plain_rates):.3g}",
                f"{phase.cpu_ms('coordinator'):.2f} ms · {phase.busy('coordinator'):.0%}",
                " + ".join(f"{phase.cpu_ms(w):.2f}" for w in workers) + " ms" if workers else "-",
                f"{phase.cpu_ms('redis'):.2f} ms" if "redis" in phase.cpu else "-",
                f"{phase.foreign:.2f}",
            ]
        )
    print_table(
        f"Closed loop, {results.clients:,} runs in flight, nodes await asyncio.sleep({SLEEP}), "
        f"no checkpointer on either side ({results.seconds:g} s measured per phase; median round)",
        [
            "",
            "runs/s",
            "each round",
            "vs plain",
            "coordinator CPU/run · core",
            "worker CPU/run",
            "redis CPU/run",
            "others' cores",
        ],
        rows,
    )
    round_ratios = [
        dist.rate / plain.rate
        for plain, dist in zip(
            results.throughput["plain"], results.throughput["nervenet, 1 worker"], strict=True
        )
    ]
    concurrent = median(round_ratios)
    console.print(
        f"distributed (1 worker) / plain runs/s by round: {ratios(round_ratios)}; median "
        f"[bold]x{concurrent:.3g}[/]"
    )

    rows = [
        [name, f"{m.traced / 1024:.1f} KiB", f"{m.rss / 1024:.1f} KiB"]
        for name, m in results.memory.items()
    ]
    print_table(
        "Coordinator memory per in-flight run (runs blocked in a node; growth / runs, "
        "each system in a fresh process)",
        ["", "Python heap (tracemalloc)", "RSS growth"],
        rows,
    )
    sites = results.memory["distributed"].sites
    print_table(
        "Where a blocked distributed run's memory is (biggest allocation sites, per run)",
        ["file:line", "bytes per run"],
        [[site, f"{size:,.0f}"] for site, size in sites],
    )

    memory_ratio = results.memory["distributed"].traced / results.memory["plain"].traced
    targets = [
        (
            f"added latency per node, sequential, p50 ≤ {TARGET_NODE_MS} ms",
            f"{per_node_ms:.2f} ms",
            *margin(per_node_ms, TARGET_NODE_MS, higher_is_better=False),
        ),
        (
            f"coordinator memory per in-flight run ≤ {TARGET_MEMORY_RATIO}x plain",
            f"x{memory_ratio:.3g}",
            *margin(memory_ratio, TARGET_MEMORY_RATIO, higher_is_better=False),
        ),
        (
            f"{results.clients:,} in flight, sleep {SLEEP}: distributed (1 worker) / plain "
            "(no target)",
            f"x{concurrent:.3g}",
            "-",
            "-",
        ),
        (
            "sequential runs/s, distributed / plain (no target)",
            f"x{sequential_ratio:.3g}",
            "-",
            "-",
        ),
    ]
    print_table(
        "Targets (margin: how far above (+) or below (-) the target)",
        ["target", "measured", "verdict", "margin"],
        [list(t) for t in targets],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs, shorter phases (< 60 s)")
    parser.add_argument("--seconds", type=float, help="measured seconds per closed-loop phase")
    parser.add_argument("--clients", type=int, default=CLIENTS, help="runs in flight (closed loop)")
    parser.add_argument("--memory-probe", choices=("plain", "distributed"), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--runs", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_probe:
        asyncio.run(memory_probe(args.memory_probe, args.url, args.runs))
        return
    args.seconds = args.seconds or (3.0 if args.quick else 10.0)
    args.warmup = 1.5 if args.quick else 3.0
    args.rounds = 1 if args.quick else 3
    args.sequential = 300 if args.quick else 3_000
    memory_runs = 1_000 if args.quick else 2_000

    with private_redis() as (url, server):
        os.environ["NERVENET_REDIS_URL"] = url  # the workers' module-level graph reads it
        with start_worker(url) as worker:
            console.print(f"redis-server pid {server.pid}, worker pid {worker.pid}, on {url}")
            results = asyncio.run(measure(url, server, worker, args))
            results.memory = measure_memory(url, memory_runs)
            worker.check_running()
            console.print(f"[dim]memory with {memory_runs:,} runs in flight done[/]")
    report(results)


if __name__ == "__main__":
    main()
