"""What scaling out buys: the document pipeline on one Redis server vs a 3-primary Redis Cluster.

    python benchmarks/bench_cluster.py [--quick] [--seconds N] [--clients 100] [--logs DIR]

The workload is ``nervenet demo``'s LangGraph document pipeline (``nervenet_langgraph.demo``:
classify -> extract -> enrich x3 (Send) -> validate [-> repair -> validate] -> summarize, 7 or 9
node dispatches per workflow, each "LLM" call waits 2 ms). Workers are ``nervenet worker
examples.document_pipeline:graph`` child processes; this process is the one coordinator and keeps
a closed loop of ``--clients`` workflows in flight (each client starts its next document when its
last one returned), checking every final state with the demo's ``check_result``.

Three configurations, one after another in the same run, each with 1, then 2, then 4 workers:

* ``single``: one private ``redis-server`` (task streams unpartitioned, the single-server default);
* ``cluster``: a private 3-primary Redis Cluster, default partitions (a few per primary, as the
  pool decides; the per-server table says how many);
* ``cluster p=1``: the same cluster, flushed, with ``PoolSettings(task_partitions=1)``: every task
  type is one stream on one slot, so the hot ``enrich`` stream sits on one shard. The partition
  count is agreed through ``nn:{config}`` by the first pool to start, which is why the cluster is
  flushed between the two cluster configurations and the coordinator starts before its workers.

Per phase: workflows/min, P50/P99 workflow latency, CPU of every process (``/proc``), and per
Redis primary the commands it served (``INFO commandstats``, less INFO/CLUSTER/PING) and its CPU
(``used_cpu_user + used_cpu_sys``), divided by the node dispatches of the workflows finished in
the phase. The machine is shared and noisy (2 cores here): "others' cores" says how much of it
processes not ours used meanwhile, and the ratios compare phases of this one run. On 2 cores the
CPU of the coordinator, the workers and the Redis processes caps absolute throughput long before
Redis does; the capacity figures computed from Redis CPU per dispatch are labelled "extrapolated,
not measured". Nothing is asserted; the shard-balance target is reported as PASS or MISS.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from _common import (
    Child,
    console,
    cpu_seconds,
    machine_busy_seconds,
    nervenet_worker,
    percentile,
    print_table,
    registered,
)
from nervenet_langgraph import distribute
from nervenet_langgraph.demo import build_pipeline, check_result, doc_id, document_input
from nervenet_langgraph.document_pipeline import steps

from nervenet import Pool, PoolSettings
from nervenet.cluster import slot_of
from nervenet.testing import RedisClusterServers, RedisServer

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

#: What the workers serve: the demo pipeline distributed as ``docs`` (2 ms per "LLM" call).
WORKER_TARGET = "examples.document_pipeline:graph"
GRAPH_NAME = "docs"
#: Well above the node dispatches in flight (3 per workflow at most), and above the
#: partitions a cluster worker reads at once.
WORKER_CONCURRENCY = 1_000
CLIENTS = 100
WORKER_STEPS = (1, 2, 4)
PRIMARIES = 3
TARGET_BUSIEST_SHARE = 0.40
#: Commands that are the benchmark's own metering or the cluster client's topology discovery.
NOT_WORKLOAD = {"info", "cluster", "ping", "command", "readonly", "hello", "client"}


def dispatches_of(index: int) -> int:
    """Node dispatches of document ``index``: classify, extract, enrich x3, validate, summarize,
    plus repair and a second validate when the document lacks an effective date."""
    return len(steps(doc_id(index)))


# --- metering -------------------------------------------------------------------------------
@dataclass(frozen=True)
class ServerSnapshot:
    commands: dict[str, int]
    cpu: float


class Meter:
    """Snapshots of the Redis servers' counters and of our processes' CPU time."""

    def __init__(self, ports: list[int], pids: dict[str, int]) -> None:
        self.ports = ports
        self.pids = pids
        self.clients = {port: redis.Redis(port=port, host="127.0.0.1") for port in ports}

    def server(self, port: int) -> ServerSnapshot:
        client = self.clients[port]
        commands = {
            name.removeprefix("cmdstat_"): int(stat["calls"])
            for name, stat in client.info("commandstats").items()
        }
        cpu = client.info("cpu")
        return ServerSnapshot(commands, float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]))

    def snapshot(self) -> dict[str, Any]:
        return {
            "at": time.perf_counter(),
            "servers": {port: self.server(port) for port in self.ports},
            "cpu": {name: cpu_seconds(pid) for name, pid in self.pids.items()},
            "machine": machine_busy_seconds(),
        }

    def close(self) -> None:
        for client in self.clients.values():
            client.close()


@dataclass
class Phase:
    config: str
    workers: int
    workflows: int
    dispatches: int
    seconds: float
    latencies: list[float]
    cpu: dict[str, float]
    machine: float
    shard_commands: dict[int, int]
    shard_top: dict[int, list[tuple[str, int]]]
    shard_cpu: dict[int, float]
    shard_all: dict[int, dict[str, int]]
    errors: int = 0

    @property
    def per_min(self) -> float:
        return self.workflows / self.seconds * 60

    @property
    def foreign(self) -> float:
        return max(0.0, self.machine - sum(self.cpu.values())) / self.seconds

    def busy(self, prefix: str) -> float:
        return sum(v for k, v in self.cpu.items() if k.startswith(prefix)) / self.seconds

    @property
    def shares(self) -> list[float]:
        total = sum(self.shard_commands.values()) or 1
        return [c / total for c in self.shard_commands.values()]

    def redis_us(self) -> list[float]:
        """Redis CPU microseconds per node dispatch, per server."""
        return [c / self.dispatches * 1e6 for c in self.shard_cpu.values()]

    def p(self, q: float) -> float:
        return percentile(self.latencies, q) if self.latencies else float("nan")


def between(
    start: dict[str, Any], end: dict[str, Any]
) -> tuple[
    dict[int, int], dict[int, list[tuple[str, int]]], dict[int, float], dict[int, dict[str, int]]
]:
    commands, top, cpu, every = {}, {}, {}, {}
    for port, before in start["servers"].items():
        after = end["servers"][port]
        delta = {
            name: calls - before.commands.get(name, 0)
            for name, calls in after.commands.items()
            if name.split("|")[0] not in NOT_WORKLOAD and calls != before.commands.get(name, 0)
        }
        commands[port] = sum(delta.values())
        top[port] = sorted(delta.items(), key=lambda kv: -kv[1])[:4]
        cpu[port] = after.cpu - before.cpu
        every[port] = delta
    return commands, top, cpu, every


# --- the closed loop ------------------------------------------------------------------------
class Loop:
    """``clients`` workflows in flight; records each one's latency and when it finished."""

    def __init__(self, graph: Any, clients: int) -> None:
        self.graph = graph
        self.clients = clients
        self.done: list[tuple[float, float, int]] = []  # (finished at, seconds, dispatches)
        self.errors: list[str] = []
        self.stopping = False
        self.next_index = 0
        self.tasks: list[asyncio.Task[None]] = []

    async def client(self) -> None:
        while not self.stopping:
            index = self.next_index
            self.next_index += 1
            start = time.perf_counter()
            try:
                state = await self.graph.ainvoke(document_input(index % 10_000))
                check_result(index % 10_000, state)
            except Exception as exc:  # a failed workflow is reported, not fatal
                self.errors.append(f"{type(exc).__name__}: {exc}")
                if len(self.errors) > 50:
                    raise
                continue
            end = time.perf_counter()
            self.done.append((end, end - start, dispatches_of(index % 10_000)))

    def start(self) -> None:
        self.tasks = [asyncio.ensure_future(self.client()) for _ in range(self.clients)]

    def check(self) -> None:
        for task in self.tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise RuntimeError(f"workflows failing: {self.errors[-3:]}")

    async def stop(self) -> None:
        self.stopping = True
        try:
            await asyncio.wait_for(asyncio.gather(*self.tasks), timeout=60)
        finally:
            for task in self.tasks:
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)


async def measure_phase(
    loop: Loop, meter: Meter, config: str, workers: int, warmup: float, seconds: float
) -> Phase:
    """Let the loop settle for ``warmup`` seconds with this many workers, then measure."""
    await asyncio.sleep(warmup)
    loop.check()
    errors_before = len(loop.errors)
    start = meter.snapshot()
    await asyncio.sleep(seconds)
    end = meter.snapshot()
    loop.check()
    window = [d for d in loop.done if start["at"] <= d[0] < end["at"]]
    commands, top, shard_cpu, every = between(start, end)
    phase = Phase(
        config=config,
        workers=workers,
        workflows=len(window),
        dispatches=max(1, sum(d[2] for d in window)),
        seconds=end["at"] - start["at"],
        latencies=[d[1] for d in window],
        cpu={name: end["cpu"][name] - start["cpu"][name] for name in start["cpu"]},
        machine=end["machine"] - start["machine"],
        shard_commands=commands,
        shard_top=top,
        shard_cpu=shard_cpu,
        shard_all=every,
        errors=len(loop.errors) - errors_before,
    )
    console.print(
        f"[dim]{config}, {workers} worker(s): {phase.per_min:,.0f} workflows/min, "
        f"p50 {phase.p(50) * 1e3:.0f} ms, p99 {phase.p(99) * 1e3:.0f} ms, "
        f"others' cores {phase.foreign:.2f}[/]"
    )
    return phase


# --- processes ------------------------------------------------------------------------------
@dataclass
class Workers:
    url: str
    log_dir: Path
    config: str
    children: list[Child] = field(default_factory=list)

    def add(self, count: int) -> None:
        for _ in range(count):
            self.children.append(
                nervenet_worker(
                    WORKER_TARGET,
                    self.url,
                    name=f"worker-{len(self.children) + 1}",
                    concurrency=WORKER_CONCURRENCY,
                    grace=1,
                    cwd=ROOT,
                    env={"NERVENET_REDIS_URL": self.url},  # the example module's pool reads it
                )
            )

    def check_running(self) -> None:
        for child in self.children:
            child.check_running()

    def stop(self) -> None:
        """Stop every worker by its PID; keep its log in ``log_dir``."""
        for child in self.children:  # all at once: each has a grace second to finish
            child.send_signal(signal.SIGTERM)
        slug = self.config.replace(" ", "-").replace("=", "")
        for child in self.children:
            child.stop()
            (self.log_dir / f"{slug}-{child.name}.log").write_text(child.output())
        self.children.clear()


def log_findings(log_dir: Path) -> list[tuple[str, int, str]]:
    """Per worker log: how many lines say WARNING/ERROR/Traceback, and the first of them."""
    findings = []
    for log in sorted(log_dir.glob("*.log")):
        bad = [
            line
            for line in log.read_text(errors="replace").splitlines()
            if any(word in line for word in ("WARNING", "ERROR", "Traceback", "Error"))
        ]
        if bad:
            findings.append((log.name, len(bad), bad[0][:160]))
    return findings


@dataclass
class Placement:
    """Which primary holds which of the pool's keys (found with SCAN on each node), and what
    each one costs when no workflow runs (the last step's workers still up)."""

    streams: dict[int, list[str]]
    partitions: int = 1
    reply: list[str] = field(default_factory=list)
    idle_cpu: dict[int, float] = field(default_factory=dict)
    """Redis CPU seconds per second, by server, with no workflow running."""
    idle_commands: dict[int, float] = field(default_factory=dict)
    """Commands per second, by server, with no workflow running."""


def placement(ports: list[int]) -> Placement:
    streams = {}
    for port in ports:
        client = redis.Redis(port=port, host="127.0.0.1")
        try:
            keys = sorted(
                k.decode()
                for k in client.scan_iter(match="nn:*", count=1_000)
                if b"result" not in k
            )
        finally:
            client.close()
        streams[port] = keys
    return Placement(streams)


async def run_config(
    config: str,
    url: str,
    ports: list[int],
    settings: PoolSettings | None,
    pids: dict[str, int],
    options: argparse.Namespace,
) -> tuple[list[Phase], Placement]:
    """One configuration: coordinator pool first (it writes ``nn:{config}``), then 1, 2, 4
    workers, a phase with each."""
    pool = Pool.from_url(url, settings=settings) if settings else Pool.from_url(url)
    graph = distribute(build_pipeline(), pool=pool, name=GRAPH_NAME)
    workers = Workers(url, options.logs, config)
    meter: Meter | None = None
    phases: list[Phase] = []
    loop: Loop | None = None
    try:
        async with pool:
            partitions = pool.keys.partitions
            reply = list(pool.inbox.addresses)
            workers.add(1)
            await registered(pool, workers.children)
            meter = Meter(ports, {})
            loop = Loop(graph, options.clients)
            loop.start()
            for step in options.steps:
                if step > len(workers.children):
                    workers.add(step - len(workers.children))
                    await registered(pool, workers.children)
                meter.pids = {
                    **pids,
                    "coordinator": os.getpid(),
                    **{c.name: c.pid for c in workers.children},
                }
                phase = await measure_phase(
                    loop, meter, config, step, options.warmup, options.seconds
                )
                phases.append(phase)
                workers.check_running()
            where = placement(ports)
            where.partitions, where.reply = partitions, reply
            await loop.stop()
            # Idle: what heartbeats, reclaims and polling cost with no workflow running.
            await asyncio.sleep(1.0)
            start = meter.snapshot()
            await asyncio.sleep(options.idle)
            end = meter.snapshot()
            commands, _top, cpu, _every = between(start, end)
            idle = end["at"] - start["at"]
            where.idle_cpu = {port: c / idle for port, c in cpu.items()}
            where.idle_commands = {port: c / idle for port, c in commands.items()}
            if loop.errors:
                console.print(f"[red]{config}: {len(loop.errors)} failed workflows[/]")
                for error in loop.errors[:3]:
                    console.print(f"  {error[:300]}")
    finally:
        if loop is not None and not loop.stopping:
            loop.stopping = True
            for task in loop.tasks:
                task.cancel()
        if meter is not None:
            meter.close()
        workers.stop()
    return phases, where


def flush(ports: list[int]) -> None:
    for port in ports:
        client = redis.Redis(port=port, host="127.0.0.1")
        try:
            client.flushall()
        finally:
            client.close()


# --- the report -----------------------------------------------------------------------------
def pct(values: list[float]) -> str:
    return " / ".join(f"{v:.0%}" for v in values)


def marginal_us(phase: Phase, where: Placement) -> dict[int, float]:
    """Redis CPU microseconds per node dispatch by server, less what the server spends with
    no workflow running (heartbeats, reclaims, blocked reads timing out, cluster gossip)."""
    return {
        port: max(0.0, cpu - where.idle_cpu.get(port, 0.0) * phase.seconds) / phase.dispatches * 1e6
        for port, cpu in phase.shard_cpu.items()
    }


def report(
    phases: list[Phase],
    placements: dict[str, Placement],
    port_names: dict[int, str],
    options: argparse.Namespace,
) -> None:
    single = {p.workers: p for p in phases if p.config == "single"}
    rows = []
    for p in phases:
        base = single.get(p.workers)
        us = p.redis_us()
        per_wf = p.seconds / p.workflows * 1e3 if p.workflows else float("nan")
        redis_cpu = sum(p.shard_cpu.values())
        ours = sum(p.cpu.values()) / p.seconds
        rows.append(
            [
                p.config,
                str(p.workers),
                f"{p.per_min:,.0f}",
                f"x{p.per_min / base.per_min:.2f}" if base else "-",
                f"{p.p(50) * 1e3:.0f} / {p.p(99) * 1e3:.0f}",
                f"{p.busy('coordinator') * per_wf:.1f} / {p.busy('worker') * per_wf:.1f} / "
                f"{redis_cpu / p.seconds * per_wf:.2f}",
                f"{sum(us):.0f}"
                + (f" ({' / '.join(f'{u:.0f}' for u in us)})" if len(us) > 1 else ""),
                f"{sum(p.shard_commands.values()) / p.dispatches:.1f}",
                pct(p.shares) if len(p.shares) > 1 else "-",
                f"{ours:.2f} + {p.foreign:.2f}",
            ]
        )
    print_table(
        f"Document pipeline, closed loop of {options.clients} workflows, {options.seconds:g} s "
        f"measured per phase (after {options.warmup:g} s settling); one run, phases in order",
        [
            "",
            "workers",
            "workflows/min",
            "vs single",
            "p50 / p99 ms",
            "CPU ms/workflow coord / workers / redis",
            "redis µs/dispatch (per shard)",
            "cmds/dispatch",
            "cmd share per shard",
            "cores: ours + others'",
        ],
        rows,
    )

    # Every command per node dispatch, summed over the servers, at the last worker step.
    top = options.steps[-1]
    names: dict[str, dict[str, float]] = {}
    for p in phases:
        if p.workers != top:
            continue
        for port in p.shard_commands:
            for name, calls in p.shard_all[port].items():
                names.setdefault(name, {})[p.config] = (
                    names.get(name, {}).get(p.config, 0) + calls / p.dispatches
                )
    configs = [p.config for p in phases if p.workers == top]
    ordered = sorted(names, key=lambda n: -max(names[n].values()))
    print_table(
        f"Redis commands per node dispatch at {top} workers (all servers)",
        ["command", *configs],
        [
            [n, *(f"{names[n].get(c, 0):.2f}" for c in configs)]
            for n in ordered
            if max(names[n].values()) >= 0.01
        ],
    )

    # Where things sit, what each server costs idle, and per dispatch beyond that.
    rows = []
    for config, where in placements.items():
        last = [p for p in phases if p.config == config][-1]
        marginal = marginal_us(last, where)
        for port, keys in where.streams.items():
            tasks = [k for k in keys if k.startswith("nn:task:")]
            enrich = [k for k in tasks if k.endswith("/enrich") or k.endswith("/enrich}")]
            rows.append(
                [
                    f"{config} ({where.partitions} partition{'s' if where.partitions > 1 else ''})",
                    port_names[port],
                    f"{len(tasks)} ({len(enrich)})",
                    "yes" if any(r in keys for r in where.reply) else "",
                    f"{last.shard_commands[port] / last.seconds:,.0f}",
                    f"{where.idle_commands.get(port, 0):,.0f} · {where.idle_cpu.get(port, 0):.1%}",
                    f"{marginal[port]:.0f}",
                    ", ".join(
                        f"{n} {c / last.dispatches:.2f}" for n, c in last.shard_top[port][:3]
                    ),
                ]
            )
    print_table(
        f"Per server at {top} workers: task streams (of them enrich), a coordinator's reply "
        "stream, load, idle cost (no workflow running, workers up), Redis CPU per dispatch "
        "beyond idle, top commands per dispatch",
        [
            "",
            "server",
            "task streams",
            "reply",
            "cmds/s",
            "idle cmds/s · CPU",
            "µs/dispatch over idle",
            "top",
        ],
        rows,
    )

    console.print(
        "[bold]Verdict[/] (one run on a shared 2-core machine; phases ran one after another)"
    )
    cores = os.cpu_count() or 1
    for config in ("single", "cluster", "cluster p=1"):
        mine = [p for p in phases if p.config == config]
        if len(mine) > 1:
            console.print(
                f"  {config}: workers {mine[0].workers} -> {mine[-1].workers}: "
                f"x{mine[-1].per_min / mine[0].per_min:.2f} workflows/min "
                f"({' -> '.join(f'{p.per_min:,.0f}' for p in mine)})"
            )
    by = {(p.config, p.workers): p for p in phases}
    cluster, p1, one = (
        by.get(("cluster", top)),
        by.get(("cluster p=1", top)),
        by.get(("single", top)),
    )
    if cluster:
        where = placements["cluster"]
        busiest = max(cluster.shares)
        verdict = "PASS" if busiest <= TARGET_BUSIEST_SHARE else "MISS"
        console.print(
            f"  busiest shard, cluster (default partitions), {top} workers: {busiest:.0%} of "
            f"commands (target ≤ {TARGET_BUSIEST_SHARE:.0%}): [bold]{verdict}[/]; shares "
            f"{pct(cluster.shares)} (task streams on evenly spaced partitions, and the "
            "coordinator's replies on one stream per primary)."
        )
    if p1 and cluster:
        console.print(
            f"  partitions: with p=1 the busiest shard serves {max(p1.shares):.0%} of commands "
            f"(the enrich stream on it), the idlest "
            f"{min(p1.shares):.0%}; with {placements['cluster'].partitions} partitions "
            f"{pct(cluster.shares)}."
        )
    if cluster and one:
        busy = sum(cluster.cpu.values()) / cluster.seconds + cluster.foreign
        wf = cluster.seconds / cluster.workflows * 1e3
        wf1 = one.seconds / one.workflows * 1e3
        console.print(
            f"  cluster vs single at {top} workers: x{cluster.per_min / one.per_min:.2f} "
            f"workflows/min, p50 {cluster.p(50) * 1e3:.0f} vs {one.p(50) * 1e3:.0f} ms. "
            f"[bold]On this {cores}-core machine CPU caps absolute throughput[/]: our processes "
            f"plus others' kept {busy:.2f} cores busy, Redis used only "
            f"{sum(cluster.shard_cpu.values()) / cluster.seconds:.0%} of one core in all; "
            f"coordinator + workers spent "
            f"{(cluster.busy('coordinator') + cluster.busy('worker')) * wf:.1f} ms CPU per "
            f"workflow on the cluster vs "
            f"{(one.busy('coordinator') + one.busy('worker')) * wf1:.1f} ms on one server, "
            "so more worker processes cannot raise throughput here."
        )
        m_one = marginal_us(one, placements["single"])
        m_cluster = marginal_us(cluster, placements["cluster"])
        per_wf = cluster.dispatches / cluster.workflows
        single_cap = 60e6 / max(m_one.values()) / (one.dispatches / one.workflows)
        shard_cap = 60e6 / max(m_cluster.values()) / per_wf
        client_cpu = (cluster.busy("coordinator") + cluster.busy("worker")) / cluster.per_min
        console.print(
            f"  [italic]extrapolated, not measured[/]: from Redis CPU per dispatch beyond idle, "
            f"one server saturates its core near {single_cap:,.0f} workflows/min and the "
            f"3-shard cluster, bound by its busiest shard, near {shard_cap:,.0f} "
            f"(x{shard_cap / single_cap:.1f}); feeding the cluster that fast would take about "
            f"{client_cpu * shard_cap:.0f} cores of coordinators and workers at this run's CPU "
            "per workflow."
        )
        if p1:
            m_p1 = marginal_us(p1, placements["cluster p=1"])
            p1_cap = 60e6 / max(m_p1.values()) / (p1.dispatches / p1.workflows)
            console.print(
                f"  [italic]extrapolated, not measured[/]: the cluster with one partition, "
                f"bound by its busiest shard, near {p1_cap:,.0f} workflows/min "
                f"(x{p1_cap / single_cap:.1f} of one server)."
            )
    failed = sum(p.errors for p in phases)
    if failed:
        console.print(f"  [red]{failed} workflows failed during measured phases[/]")
    findings = log_findings(options.logs)
    if findings:
        print_table(
            f"Worker log lines with WARNING/ERROR/Traceback (logs in {options.logs})",
            ["log", "lines", "first"],
            [[name, str(n), first] for name, n, first in findings],
        )
    else:
        console.print(f"  worker logs ({options.logs}): no warnings or errors")


# --- main -----------------------------------------------------------------------------------
async def run_all(options: argparse.Namespace) -> None:
    phases: list[Phase] = []
    placements: dict[str, Placement] = {}
    port_names: dict[int, str] = {}
    server = RedisServer(own_session=True, die_with_parent=True)
    cluster = RedisClusterServers(primaries=PRIMARIES, die_with_parent=True)
    try:
        server.start()
        port_names[server.port] = "redis-server"
        console.print(f"redis-server pid {server.pid} on {server.url}")
        found, where = await run_config(
            "single", server.url, [server.port], None, {"redis": server.pid}, options
        )
        phases += found
        placements["single"] = where
        server.close()

        cluster.start()
        ports = [n.port for n in cluster.nodes]
        pids = {f"redis-{n.port}": n.child.pid for n in cluster.nodes if n.child}
        for i, node in enumerate(cluster.nodes):
            port_names[node.port] = f"shard {i + 1} (:{node.port})"
        console.print(f"cluster pids {', '.join(map(str, pids.values()))} on {cluster.url}")
        for config, settings in (
            ("cluster", None),
            ("cluster p=1", PoolSettings(task_partitions=1)),
        ):
            flush(ports)  # nn:{config} keeps the first pool's partition count: start afresh
            found, where = await run_config(config, cluster.url, ports, settings, pids, options)
            phases += found
            placements[config] = where
            if config == "cluster p=1":
                console.print(f"[dim]p=1 enrich stream slot {slot_of('nn:task:{docs/enrich}')}[/]")
    finally:
        server.close()
        cluster.close()
    report(phases, placements, port_names, options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (under 60 s)")
    parser.add_argument("--seconds", type=float, help="measured seconds per phase")
    parser.add_argument("--clients", type=int, default=CLIENTS, help="workflows in flight")
    parser.add_argument("--logs", type=Path, help="where worker logs are kept (default: a tmp dir)")
    options = parser.parse_args()
    options.seconds = options.seconds or (3.0 if options.quick else 12.0)
    options.warmup = 1.5 if options.quick else 4.0
    options.steps = (1, 2) if options.quick else WORKER_STEPS
    options.idle = 1.5 if options.quick else 4.0
    options.logs = options.logs or Path(tempfile.mkdtemp(prefix="bench-cluster-logs-"))
    options.logs.mkdir(parents=True, exist_ok=True)
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        sys.exit("redis-server and redis-cli must be on PATH (apt-get install redis-server)")
    started = time.monotonic()
    asyncio.run(run_all(options))
    console.print(f"[dim]total {time.monotonic() - started:.0f} s[/]")


if __name__ == "__main__":
    main()
