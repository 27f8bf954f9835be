"""Raw dispatch round trip through a real Redis: this process coordinates, one worker serves.

    python benchmarks/bench_dispatch.py [--quick] [--seconds N] [--levels 1,10,100,1000]
                                        [--payload-bytes 100]

Starts a private ``redis-server`` on a free port and one ``nervenet worker`` serving an echo
handler (``echo_handlers.py``), then measures in this process:

* round-trip latency p50/p90/p99 of sequential dispatches (1 in flight);
* closed-loop throughput at 1, 10, 100 and 1000 dispatches in flight, a fixed time each;
* CPU time per dispatch of this process, the worker and redis-server (``/proc/PID/stat``), which
  shows where the time goes.

Next to each figure, measured in the same run right after it:

* two **floors**: the same Redis hops and nothing else (``bare_streams.py``: XADD, XREADGROUP
  BLOCK, a SET+XADD+XACK+XDEL settle pipeline, XREAD BLOCK; each with its own worker process on
  the event loop ``nervenet worker`` runs), once through redis-py's asyncio client as nervenet
  uses it and once through a bare ``asyncio.Protocol`` with hiredis, so a round trip splits into
  nervenet's code, redis-py's, and the hops themselves;
* the **baseline**: an in-process asyncio pool of the same shape (a queue as the task stream, a
  consumer task running the same handler, a reply queue and a future per dispatch).

The machine is shared and noisy: read the ratios and compare runs with care. Nothing is asserted;
the targets are reported as PASS or MISS, the latency one next to the floors' own p50.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import redis
from _common import (
    Child,
    console,
    cpu_seconds,
    nervenet_worker,
    percentile,
    print_table,
    private_redis,
    registered,
)
from bare_streams import CLIENTS, BareStreams
from echo_handlers import TASK_TYPE, echo

from nervenet import Pool, PoolSettings

HERE = Path(__file__).resolve().parent

PAYLOAD = b"x" * 100
LEVELS = (1, 10, 100, 1000)
#: The worker may run this many tasks at once, so that "in flight" holds end to end at every level.
WORKER_CONCURRENCY = 1000
WARMUP_DISPATCHES = 300
WARMUP_SECONDS = 0.5

TARGET_P50_MS = 0.4  # issue 14's round trip at 1 in flight
TARGET_LEVEL, TARGET_RATE = 100, 5_000

Dispatch = Callable[[], Awaitable[bytes]]


# --- measuring ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Snapshot:
    at: float
    cpu: dict[str, float]
    """CPU seconds so far, by process."""
    commands: dict[str, int]
    """Redis commands served so far, by name."""
    reads: int
    """Socket reads Redis has served so far: one per round trip of a client."""


class Meter:
    """Takes snapshots of the processes' CPU time and of the Redis server's counters."""

    def __init__(self, url: str, pids: dict[str, int]) -> None:
        self.pids = pids
        self.redis = redis.Redis.from_url(url)

    def snapshot(self) -> Snapshot:
        # Synchronous on purpose: a snapshot blocks the loop for one INFO, not for a whole phase.
        commands = {
            name.removeprefix("cmdstat_"): int(stat["calls"])
            for name, stat in self.redis.info("commandstats").items()
        }
        reads = int(self.redis.info("stats")["total_reads_processed"])
        cpu = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        return Snapshot(time.perf_counter(), cpu, commands, reads)


@dataclass(frozen=True)
class Phase:
    """One measured stretch: dispatches finished, wall seconds, CPU time, Redis traffic."""

    dispatches: int
    seconds: float
    cpu: dict[str, float]
    commands: dict[str, int]
    reads: int

    @classmethod
    def between(cls, start: Snapshot, end: Snapshot, dispatches: int) -> Phase:
        cpu = {name: end.cpu[name] - start.cpu[name] for name in start.cpu}
        commands = {
            name: calls - start.commands.get(name, 0)
            for name, calls in end.commands.items()
            if calls != start.commands.get(name, 0) and name != "info"
        }
        reads = end.reads - start.reads - 2  # less the two INFO of the closing snapshot
        return cls(dispatches, end.at - start.at, cpu, commands, reads)

    @property
    def rate(self) -> float:
        return self.dispatches / self.seconds

    def cpu_us(self, process: str) -> float:
        """CPU microseconds ``process`` spent per dispatch."""
        return self.cpu[process] / self.dispatches * 1e6

    def busy(self, process: str) -> float:
        """Share of one core ``process`` used during the phase."""
        return self.cpu[process] / self.seconds

    def per_dispatch(self, count: int) -> float:
        return count / self.dispatches


async def round_trips(dispatch: Dispatch, count: int) -> list[float]:
    """Seconds per dispatch, ``count`` dispatches one after another after a warm-up."""
    for _ in range(WARMUP_DISPATCHES):
        await dispatch()
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        await dispatch()
        samples.append(time.perf_counter() - start)
    return samples


async def closed_loop(dispatch: Dispatch, in_flight: int, seconds: float, meter: Meter) -> Phase:
    """``in_flight`` clients each dispatch again as soon as their last dispatch returns."""
    finished = 0
    stopping = False

    async def client() -> None:
        nonlocal finished
        while not stopping:
            await dispatch()
            finished += 1

    clients = [asyncio.ensure_future(client()) for _ in range(in_flight)]
    await asyncio.sleep(WARMUP_SECONDS)
    start, finished_before = meter.snapshot(), finished
    await asyncio.sleep(seconds)
    end, finished_after = meter.snapshot(), finished
    stopping = True
    try:
        await asyncio.wait_for(asyncio.gather(*clients), timeout=30)
    except TimeoutError:
        raise RuntimeError(f"dispatches at {in_flight} in flight did not finish") from None
    return Phase.between(start, end, finished_after - finished_before)


# --- the baseline ---------------------------------------------------------------------------
class InProcessPool:
    """nervenet's dispatch path with Redis replaced by asyncio queues, all in this process.

    Same shape: a dispatch registers a future under a fresh task id and appends to the task
    "stream"; a reader takes up to ``concurrency`` entries at a time and starts a task per entry
    that runs the handler and appends to the reply "stream"; an inbox resolves the futures.
    """

    def __init__(self, concurrency: int) -> None:
        self._tasks: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self._replies: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self._waiting: dict[str, asyncio.Future[bytes]] = {}
        self._slots = asyncio.Semaphore(concurrency)
        self._running: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> InProcessPool:
        self._loops = [asyncio.ensure_future(self._read()), asyncio.ensure_future(self._inbox())]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for loop in self._loops:
            loop.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)

    async def dispatch(self) -> bytes:
        task_id = uuid.uuid4().hex
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting[task_id] = future
        try:
            self._tasks.put_nowait((task_id, PAYLOAD))
            return await future
        finally:
            del self._waiting[task_id]

    async def _read(self) -> None:
        while True:
            await self._slots.acquire()
            entry = await self._tasks.get()
            task = asyncio.ensure_future(self._run(*entry))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, task_id: str, payload: bytes) -> None:
        try:
            self._replies.put_nowait((task_id, await echo(payload, None)))
        finally:
            self._slots.release()

    async def _inbox(self) -> None:
        while True:
            task_id, body = await self._replies.get()
            future = self._waiting.get(task_id)
            if future is not None and not future.done():
                future.set_result(body)


# --- the run --------------------------------------------------------------------------------
NERVENET, ON_REDIS_PY = "nervenet", "nervenet, redis-py"
REDIS_PY_NAMESPACE = "bench-redis-py"


def floor(kind: str) -> str:
    """The system name of a floor (see bare_streams.py)."""
    return f"{kind} floor"


#: Each system's processes, as Meter names them: the caller, the worker, Redis (None: in-process).
PROCESSES: dict[str, tuple[str, str | None, str | None]] = {
    NERVENET: ("coordinator", "worker", "redis"),
    ON_REDIS_PY: ("coordinator", "worker on redis-py", "redis"),
    **{floor(kind): ("coordinator", kind, "redis") for kind in CLIENTS},
    "baseline": ("coordinator", None, None),
}


@dataclass
class Results:
    latency: dict[str, list[float]]
    """Round-trip seconds at 1 in flight, by system (see :data:`PROCESSES`)."""
    throughput: dict[int, dict[str, Phase]]
    """Closed-loop phases by in-flight level, then by system."""


async def nervenet_dispatch(pool: Pool, worker: Child) -> Dispatch:
    coordinator = pool.coordinator("bench-dispatch")

    async def dispatch() -> bytes:
        return await coordinator.dispatch(TASK_TYPE, PAYLOAD)

    await registered(pool, [worker])
    assert await dispatch() == PAYLOAD, "the echo worker answered something else"
    return dispatch


async def measure(
    url: str,
    workers: dict[str, Child],
    meter: Meter,
    samples: int,
    seconds: float,
    levels: list[int],
) -> Results:
    redis_py = PoolSettings(lean_connections=False)
    async with (
        Pool.from_url(url) as pool,
        Pool.from_url(url, namespace=REDIS_PY_NAMESPACE, settings=redis_py) as pool_on_redis_py,
        contextlib.AsyncExitStack() as floors,
        InProcessPool(WORKER_CONCURRENCY) as baseline,
    ):
        systems = {
            NERVENET: await nervenet_dispatch(pool, workers[NERVENET]),
            ON_REDIS_PY: await nervenet_dispatch(pool_on_redis_py, workers[ON_REDIS_PY]),
        }
        for kind in CLIENTS:
            bare = await floors.enter_async_context(BareStreams(url, kind, PAYLOAD))
            answer = await asyncio.wait_for(bare.dispatch(), timeout=30)
            assert answer == PAYLOAD, f"the {kind} bare worker answered something else"
            systems[floor(kind)] = bare.dispatch
        systems["baseline"] = baseline.dispatch

        def check_alive() -> None:
            for worker in workers.values():
                worker.check_running()

        results = Results({}, {})
        for name, dispatch in systems.items():
            results.latency[name] = await round_trips(dispatch, samples)
            check_alive()
        console.print(f"[dim]round trips done ({samples} sequential dispatches each)[/]")
        for level in levels:
            results.throughput[level] = {}
            for name, dispatch in systems.items():
                results.throughput[level][name] = await closed_loop(dispatch, level, seconds, meter)
                check_alive()
            console.print(f"[dim]{level} in flight done[/]")
        return results


# --- the report -----------------------------------------------------------------------------
def report(results: Results, seconds: float) -> None:
    latency_table(results.latency)
    throughput_table(results.throughput, seconds)
    cpu_table(results.throughput)
    traffic_table(results.throughput)
    verdicts(results)


def latency_table(latency: dict[str, list[float]]) -> None:
    systems = list(latency)
    rows = [
        [f"p{q}", *(f"{percentile(latency[s], q) * 1e3:.3f} ms" for s in systems)]
        for q in (50, 90, 99)
    ]
    print_table(
        f"Round trip at 1 in flight ({len(latency[NERVENET])} sequential dispatches)",
        ["", *systems],
        rows,
    )


def throughput_table(throughput: dict[int, dict[str, Phase]], seconds: float) -> None:
    systems = list(next(iter(throughput.values())))
    rows = [
        [str(level), *(f"{phases[s].rate:,.0f}" for s in systems)]
        for level, phases in throughput.items()
    ]
    print_table(
        f"Closed-loop dispatches/s ({seconds:g} s per level)", ["in flight", *systems], rows
    )


def cpu_table(throughput: dict[int, dict[str, Phase]]) -> None:
    systems = [s for s in next(iter(throughput.values())) if PROCESSES[s][1] is not None]

    def cell(phase: Phase, system: str) -> str:
        parts = [phase.cpu_us(p) for p in PROCESSES[system] if p is not None]
        return "/".join(f"{us:,.0f}" for us in parts) + f" = {sum(parts):,.0f}"

    rows = [
        [str(level), *(cell(phases[s], s) for s in systems)] for level, phases in throughput.items()
    ]
    print_table("CPU µs per dispatch: caller/worker/redis = all", ["in flight", *systems], rows)


def traffic_table(throughput: dict[int, dict[str, Phase]]) -> None:
    rows = []
    for level, phases in throughput.items():
        phase = phases[NERVENET]
        by_name = sorted(phase.commands.items(), key=lambda item: -item[1])
        rows.append(
            [
                str(level),
                f"{phase.per_dispatch(sum(phase.commands.values())):.2f}",
                f"{phase.per_dispatch(phase.reads):.2f}",
                ", ".join(
                    f"{name} {phase.per_dispatch(n):.2g}"
                    for name, n in by_name
                    if phase.per_dispatch(n) >= 0.005  # leaves out heartbeats
                ),
            ]
        )
    print_table(
        "Redis traffic per nervenet dispatch (round trips = socket reads the server served)",
        ["in flight", "commands", "round trips", "commands by name"],
        rows,
    )


def verdicts(results: Results) -> None:
    p50 = {system: percentile(samples, 50) * 1e3 for system, samples in results.latency.items()}
    p50_ms, hops = p50[NERVENET], p50[floor("protocol")]
    verdict = "PASS" if p50_ms <= TARGET_P50_MS else "MISS"
    console.print(
        f"target p50 ≤ {TARGET_P50_MS} ms at 1 in flight: {p50_ms:.3f} ms, "
        f"[bold]{verdict}[/] ({p50_ms / TARGET_P50_MS:.0%} of the target); on redis-py "
        f"connections {p50[ON_REDIS_PY]:.3f} ms. The same hops took {hops:.3f} ms over a bare "
        f"protocol ({hops / TARGET_P50_MS:.0%} of the target) and {p50[floor('redis-py')]:.3f} ms "
        f"in bare redis-py; nervenet adds {p50_ms - hops:.3f} ms to the hops"
    )
    phase = results.throughput.get(TARGET_LEVEL, {}).get(NERVENET)
    if phase is None:
        return
    verdict = "PASS" if phase.rate >= TARGET_RATE else "MISS"
    console.print(
        f"target ≥ {TARGET_RATE:,} dispatches/s at {TARGET_LEVEL} in flight: "
        f"{phase.rate:,.0f}/s, [bold]{verdict}[/] ({phase.rate / TARGET_RATE:.0%} of the target)"
    )
    per_process = {p: phase.cpu_us(p) for p in ("coordinator", "worker", "redis")}
    busiest = max(per_process, key=per_process.__getitem__)
    total, cores = sum(per_process.values()), os.cpu_count() or 1
    console.print(
        f"CPU per dispatch at {TARGET_LEVEL} in flight: {total:,.0f} µs in all, so {cores} cores "
        f"cap it near {cores * 1e6 / total:,.0f}/s; the {busiest} alone "
        f"({per_process[busiest]:,.0f} µs on one core) caps it near "
        f"{1e6 / per_process[busiest]:,.0f}/s"
    )


def main() -> None:
    global PAYLOAD  # read by both systems' dispatch functions
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples, 2 s per level")
    parser.add_argument("--seconds", type=float, help="measured seconds per level (default 5)")
    parser.add_argument(
        "--payload-bytes",
        type=int,
        default=len(PAYLOAD),
        help="size of each dispatch's payload, echoed back (default %(default)s)",
    )
    parser.add_argument(
        "--levels",
        default=",".join(map(str, LEVELS)),
        help="comma-separated dispatches in flight (default %(default)s)",
    )
    args = parser.parse_args()
    PAYLOAD = b"x" * args.payload_bytes
    seconds = args.seconds or (2.0 if args.quick else 5.0)
    samples = 1_000 if args.quick else 5_000
    levels = [int(level) for level in args.levels.split(",")]

    with private_redis() as (url, server), contextlib.ExitStack() as children:
        workers = {
            NERVENET: children.enter_context(
                nervenet_worker(
                    "echo_handlers:handlers", url, concurrency=WORKER_CONCURRENCY, cwd=HERE
                )
            ),
            ON_REDIS_PY: children.enter_context(
                nervenet_worker(
                    "echo_handlers:handlers",
                    url,
                    name="worker-redis-py",
                    concurrency=WORKER_CONCURRENCY,
                    cwd=HERE,
                    options=["--namespace", REDIS_PY_NAMESPACE, "--redis-py-connections"],
                )
            ),
        }
        pids = {"coordinator": os.getpid(), "redis": server.pid}
        pids["worker"], pids["worker on redis-py"] = (w.pid for w in workers.values())
        for kind in CLIENTS:
            bare_args = [sys.executable, str(HERE / "bare_streams.py"), url, kind]
            bare = children.enter_context(Child.run(f"bare-{kind}", bare_args, cwd=HERE))
            pids[kind] = bare.pid
        console.print(
            f"redis-server pid {server.pid}, worker pids {pids['worker']} and "
            f"{pids['worker on redis-py']} (redis-py connections), on {url}; "
            f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
        )
        meter = Meter(url, pids)
        results = asyncio.run(measure(url, workers, meter, samples, seconds, levels))
    report(results, seconds)
    console.print(
        f"load average {os.getloadavg()[0]:.1f} at the end: when it is above the core count, "
        "other processes took CPU and the dispatches/s are low; CPU per dispatch holds better"
    )


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # the children are already stopped
        sys.exit(130)
