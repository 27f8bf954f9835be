"""Where a graph node's added latency goes: the steps of its hops, timed in both processes.

    python benchmarks/bench_hops.py [--runs 1000]

Runs ``apps/lg_bench_app.py``'s three zero-work nodes one run at a time, as ``bench_langgraph.py``
does for its per-node latency, with this process as the coordinator and one ``nervenet worker``
process, both marking the steps of every hop (``hop_marks.py``: the coordinator's task write,
the worker's read, its handler, its settlement write, the coordinator's reply read...). Both
processes read the same clock, so the marks make one timeline per node, and the table gives the
median of each step over the nodes, next to:

* the whole node (start to end) and what plain LangGraph spends per node in this process, in
  blocks that alternate with the distributed ones;
* the bare-protocol floor of ``bare_streams.py``: the same four Redis hops with the least
  Python a round trip can run, measured in the same run.

The steps between a node's end and the next node's start are LangGraph's own work between two
nodes (plain LangGraph does it too) plus the re-sent reply read, shown on its own. Medians of
steps do not add up to the median of their sum exactly. The wrappers cost about a microsecond
per mark; nothing is asserted. The machine is shared and noisy: compare runs with care.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import hop_marks
from _common import Child, console, percentile, print_table, private_redis, registered
from bare_streams import BareStreams
from bench_dispatch import round_trips
from bench_langgraph import TARGET_NODE_MS, checked

HERE = Path(__file__).resolve().parent
APPS = HERE / "apps"
sys.path.insert(0, str(APPS))
import lg_bench_app as app  # noqa: E402

BLOCKS = 5
WARMUP_RUNS = 100
FLOOR_ROUND_TRIPS = 1_000

#: A node's hops in order: (name of the step, the mark it starts at, the mark it ends at).
STEPS = (
    ("coordinator: describe, pack, dispatch, batch", "node start", "task write"),
    ("coordinator: write the task (send)", "task write", "task written"),
    ("Redis + wake-up -> worker reads the task", "task written", "task read"),
    ("worker: accept, parse, start the handler", "task read", "handler start"),
    ("worker: handler (LangGraph's node runner)", "handler start", "handler end"),
    ("worker: result, settle pipeline, batch", "handler end", "settle write"),
    ("worker: write the settlement (send)", "settle write", "settle written"),
    ("Redis + wake-up -> coordinator reads the reply", "settle written", "reply read"),
    ("coordinator: deliver, unpack, replay", "reply read", "node end"),
)


def node_timelines(marks: list[tuple[str, int]]) -> list[dict[str, int]]:
    """For each node (from one "node start" to the next), the first time each mark was seen
    after its start; the reply read re-sent is looked for after the node's end."""
    timelines: list[dict[str, int]] = []
    current: dict[str, int] | None = None
    for step, at in sorted(marks, key=lambda m: m[1]):
        if step == "node start":
            if current is not None:
                current["next node start"] = at
            current = {"node start": at}
            timelines.append(current)
        elif current is not None and step not in current:
            current[step] = at
    return [t for t in timelines if "next node start" in t]


def step_table(timelines: list[dict[str, int]], plain_per_node: float, floor: float) -> None:
    rows: list[list[str]] = []
    complete = [t for t in timelines if all(end in t for _, _, end in STEPS)]
    missing = {end for _, _, end in STEPS} - {s for t in timelines for s in t}
    if missing or not complete:
        raise SystemExit(f"marks never seen: {sorted(missing)} (a wrapped method was renamed?)")
    ordered = [t for t in complete if _in_order(t)]

    def median_us(start: str, end: str, timeline: list[dict[str, int]]) -> float:
        return statistics.median(t[end] - t[start] for t in timeline) / 1e3

    node = median_us("node start", "node end", ordered)
    for name, start, end in STEPS:
        spent = median_us(start, end, ordered)
        rows.append([name, f"{spent:.0f}", f"{spent / node:.0%}"])
    rows.append(["[bold]node start -> node end[/]", f"[bold]{node:.0f}[/]", "100%"])
    resent = [t for t in ordered if t.get("reply read sent", 0) > t["node end"]]
    if resent:
        write = median_us("node end", "reply read sent", resent)
        rows.append(["then: the reply read re-sent, after node end", f"{write:.0f}", "-"])
    between = median_us("node end", "next node start", ordered)
    rows.append(["node end -> next node start (LangGraph's step)", f"{between:.0f}", "-"])
    rows.append(["plain LangGraph, per node (same process)", f"{plain_per_node * 1e6:.0f}", "-"])
    rows.append(["bare-protocol round trip, p50 (no nervenet)", f"{floor * 1e6:.0f}", "-"])
    print_table(
        f"A node's hops, median µs over {len(ordered)} nodes ({len(timelines) - len(ordered)} "
        "left out: marks out of order)",
        ["step", "µs", "of the node"],
        rows,
    )
    handler = median_us("handler start", "handler end", ordered)
    own = sum(median_us(start, end, ordered) for name, start, end in STEPS if name in OWN_STEPS)
    floor_table(added=node + between - plain_per_node * 1e6, floor=floor * 1e6 + handler, own=own)


#: The steps that are nervenet's own Python on either side (the rest: socket writes, Redis and
#: wake-ups, LangGraph's node runner).
OWN_STEPS = {
    "coordinator: describe, pack, dispatch, batch",
    "worker: accept, parse, start the handler",
    "worker: result, settle pipeline, batch",
    "coordinator: deliver, unpack, replay",
}


def floor_table(*, added: float, floor: float, own: float) -> None:
    """Issue 14's per-node target against what no version of nervenet's code can avoid here: the
    four hops through Redis (the bare protocol's round trip, almost no Python) and LangGraph's
    node runner on the worker (the node's context, its input and output (de)serialized)."""
    target = TARGET_NODE_MS * 1e3
    rows = [
        ["added latency per node, this run (node + step - plain)", f"{added:.0f}"],
        ["floor: bare round trip + LangGraph's node runner", f"{floor:.0f}"],
        [f"issue 14's target ({TARGET_NODE_MS:g} ms)", f"{target:.0f}"],
        ["left under the target for nervenet's own steps", f"{target - floor:.0f}"],
        ["nervenet's own steps now (both sides, medians summed)", f"{own:.0f}"],
    ]
    print_table("The per-node target against this machine's floor, µs", ["", "µs"], rows)


def _in_order(timeline: dict[str, int]) -> bool:
    points = ["node start", *(end for _, _, end in STEPS)]
    return all(timeline[a] <= timeline[b] for a, b in itertools.pairwise(points))


async def measure(url: str, worker: Child, runs: int) -> tuple[float, float]:
    """Seconds per plain node, and the bare floor's p50; the distributed runs leave marks."""
    graph = app.distributed(url)
    plain, distributed = checked(app.plain()), checked(graph)
    plain_seconds: list[float] = []
    async with graph.nervenet.pool as pool:
        await registered(pool, [worker])
        for n in range(WARMUP_RUNS):
            await distributed(n, 0.0)
            await plain(n, 0.0)
        hop_marks.marks.clear()
        for block in range(BLOCKS):
            started = time.perf_counter()
            for n in range(runs // BLOCKS):
                await plain(n, 0.0)
            plain_seconds.append((time.perf_counter() - started) / (runs // BLOCKS))
            for n in range(runs // BLOCKS):
                await distributed(n, 0.0)
            worker.check_running()
            console.print(f"[dim]block {block + 1} of {BLOCKS} done[/]")
    async with BareStreams(url, "protocol", b"x" * 100) as bare:
        await asyncio.wait_for(bare.dispatch(), timeout=30)
        samples = await round_trips(bare.dispatch, FLOOR_ROUND_TRIPS)
    return statistics.median(plain_seconds) / len(app.NODES), percentile(samples, 50)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1_000, help="distributed runs (3 nodes each)")
    args = parser.parse_args(argv)
    hop_marks.install()
    with (
        private_redis() as (url, _server),
        tempfile.TemporaryDirectory() as scratch,
    ):
        worker_marks = Path(scratch) / "worker-marks.json"
        command = [sys.executable, str(HERE / "hop_marks.py"), "worker", "lg_bench_app:graph"]
        worker = Child.run(
            "worker",
            [*command, "--redis", url, "--concurrency", "100"],
            cwd=APPS,
            env={hop_marks.MARKS_FILE_VARIABLE: str(worker_marks), "NERVENET_REDIS_URL": url},
        )
        bare_worker = [sys.executable, str(HERE / "bare_streams.py"), url, "protocol"]
        with worker, Child.run("bare-protocol", bare_worker, cwd=HERE):
            plain_per_node, floor = asyncio.run(measure(url, worker, args.runs))
        marks = [*hop_marks.marks, *hop_marks.read(worker_marks)]
    step_table(node_timelines(marks), plain_per_node, floor)
    console.print(
        f"[dim]load average {os.getloadavg()[0]:.1f} at the end on {os.cpu_count()} cores[/]"
    )


if __name__ == "__main__":
    main()
