"""Chaos on a Redis Cluster: a primary SIGKILLed mid-run, its replica promoted; nothing lost.

A private cluster of 3 primaries with 1 replica each serves 2 worker and 2 coordinator processes
of ``chaos_app``'s graph. While durable runs are in flight the primary that holds the leases
(``nn:{workflows}``: lease sorted set, owners, the done stream) is SIGKILLed; its replica takes
its slots over after the cluster's node timeout, set to 1 s (a failover of about 2-3 s, which
redis-py's cluster client rides out inside its own retries) or 6 s (about 11 s, past them; Redis's
default of 15 s is longer still). Replication is asynchronous, so writes the dead primary
acknowledged just before dying may be gone: checkpoints stay the source of truth, task entries
lost with it are published again on timeouts and retries.

Judged for each failover: every run is ``done`` with exactly a clean run's output, no entry is
left pending, nothing was escalated, no child logged a traceback or repeated a warning heartbeat
after heartbeat; and (expected to fail today, see its reason) every child says once, not
never and not a dozen times, that Redis was unavailable.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import redis.asyncio.cluster
import redis.cluster

pytest.importorskip("langgraph")

from nervenet import Pool
from nervenet.keys import WORKER_GROUP, Keys
from nervenet.testing import ChildProcesses, ClusterNode, RedisClusterServers

pytestmark = [pytest.mark.langgraph, pytest.mark.cluster]

APP = Path(__file__).parent
sys.path.insert(0, str(APP))
TARGET = "chaos_app:handlers"
GO = "chaos:go"  # chaos_app.GO
WORKER_OPTIONS = ("--heartbeat", "0.5", "--visibility-timeout", "3.0")  # chaos_app.SETTINGS
RUNS = 80
COORDINATORS = 2
WORKERS = 2
KILL_AFTER = 0.5
"""Seconds after every run was submitted (nodes take 1 s each: every run is in flight)."""
REPEATS_PER_INCIDENT = 4
"""How often one warning (its text with ids and numbers blanked) may recur in one child: a
primary's death is a handful of incidents, not a warning on every heartbeat until it is over."""
LINES_PER_OUTAGE = 3
"""Warnings one child may log about one primary's death, besides one line per run it moved:
that Redis (which node) is unreachable, that it is back, and one to spare."""


@pytest.fixture(scope="module", params=[1_000, 6_000], ids=["fast-failover", "slow-failover"])
def node_timeout_ms(request: pytest.FixtureRequest) -> int:
    """``cluster-node-timeout`` at the kill: how long the survivors wait before promoting the
    replica. 1 s: the failover (about 2-3 s) ends within redis-py's own retries of a command;
    6 s (about 11 s; Redis's default of 15 s is longer still): commands fail meanwhile."""
    return int(request.param)


@pytest.fixture(scope="module")
def failover_cluster(node_timeout_ms: int, cluster_binaries: None) -> Iterator[RedisClusterServers]:
    """A private cluster of 3 primaries and 1 replica each, for one failover (it kills one)."""
    with RedisClusterServers(primaries=3, replicas=1) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def procs(
    failover_cluster: RedisClusterServers, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ChildProcesses]:
    env = {
        "NERVENET_REDIS_URL": failover_cluster.url,
        "CHAOS_NODE_SECONDS": "1.0",
        "CHAOS_CLUSTER": "1",
        "CHAOS_LOG": "1",
    }
    children = ChildProcesses(APP, env, tmp_path_factory.mktemp("failover"))
    try:
        yield children
    finally:
        children.close()
    assert not children.alive(), "stray processes"


def primary_of(cluster: RedisClusterServers, key: str) -> ClusterNode:
    client = redis.cluster.RedisCluster.from_url(cluster.url)
    try:
        port = client.get_node_from_key(key).port  # type: ignore[no-untyped-call]  # untyped in redis-py
    finally:
        client.close()
    [node] = [n for n in cluster.nodes if n.port == port]
    return node


def note(procs: ChildProcesses, line: str) -> None:
    with (procs.log_dir / "driver.log").open("a") as out:
        out.write(f"{time.strftime('%H:%M:%S')} {line}\n")


async def until(probe: Callable[[], Awaitable[object]], what: str, timeout: float) -> None:
    """Poll ``probe()`` (a coroutine function) until truthy; Redis errors count as not yet."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(redis.RedisError, OSError):
            if await probe():
                return
        assert time.monotonic() < deadline, f"{what} within {timeout} s"
        await asyncio.sleep(0.2)


async def outcomes(url: str, budget: float) -> list[str]:
    """Runs that did not end ``done`` with a clean run's output within ``budget``, and why."""
    from chaos_app import expected_output, graph, normalized
    from nervenet_langgraph.wire import unpack

    async def outcome(pool: Pool, n: int) -> str | None:
        try:
            raw = await pool.workflows.wait(f"doc-{n}")
        except Exception as exc:
            return f"doc-{n}: {type(exc).__name__}: {exc}"
        record = await pool.workflows.record(f"doc-{n}")
        if record is None or record.status != "done":
            return f"doc-{n}: status {record and record.status!r}"
        output = normalized(unpack(graph.nervenet.serde, raw))
        return None if output == expected_output(n) else f"doc-{n}: wrong output {output}"

    async with Pool.from_url(url) as pool:
        waits = [asyncio.ensure_future(outcome(pool, n)) for n in range(RUNS)]
        done, late = await asyncio.wait(waits, timeout=budget)
        for wait in late:
            wait.cancel()
        await asyncio.gather(*late, return_exceptions=True)
    lost = [why for wait in waits if wait in done and (why := wait.result())]
    return lost + [f"{len(late)} runs unfinished after {budget:g} s"] * bool(late)


async def pending_entries(client: redis.asyncio.cluster.RedisCluster) -> int:
    keys = Keys()
    pending = 0
    async for stream in client.scan_iter(match=f"{keys.task_stream_prefix}*", _type="stream"):
        pending += int((await client.xpending(stream, WORKER_GROUP))["pending"])
    return pending


def log_problems(procs: ChildProcesses) -> tuple[list[str], list[str], Counter[str]]:
    """Tracebacks, warnings repeated past :data:`REPEATS_PER_INCIDENT` in one child, and every
    warning or error (its text with ids and numbers blanked) with how many children logged it."""
    tracebacks, repeated = [], []
    kinds: Counter[str] = Counter()
    for path in sorted(c.log for c in procs.children):
        text = path.read_text(errors="replace")
        if "Traceback" in text:
            start = text.index("Traceback")
            tracebacks.append(f"{path.name}:\n{text[max(0, start - 300) : start + 2500]}")
        seen: Counter[str] = Counter()
        for line in text.splitlines():
            if " WARNING " not in line and " ERROR " not in line:
                continue
            message = line.split(" ", 2)[2]  # without the timestamp
            message = re.sub(r"doc-\d+", "doc-N", message)
            message = re.sub(r"[0-9a-f]{8,}|\d+(\.\d+)?", "#", message)
            seen[message] += 1
        for message, count in seen.items():
            kinds[message] += 1
            if count > REPEATS_PER_INCIDENT and "run doc-N" not in message:
                repeated.append(f"{path.name}: {count} x {message}")
    return tracebacks, repeated, kinds


@dataclass
class Failover:
    """What one failover did, for the tests below to judge."""

    report: dict[str, float]
    lost: list[str]
    """Runs that did not end ``done`` with a clean run's output, and why."""
    tracebacks: list[str]
    repeated: list[str]
    warnings: Counter[str]
    """Every warning or error (ids and numbers blanked), with how many children logged it."""
    silent: list[str]
    """Children that logged nothing about Redis while a primary they used was down."""
    chatty: list[str]
    """Children that logged more than :data:`LINES_PER_OUTAGE` warnings about it."""


async def fail_over(
    cluster: RedisClusterServers, procs: ChildProcesses, node_timeout_ms: int
) -> Failover:
    """Start the children, submit the runs, kill the leases' primary mid-run, wait for all."""
    from chaos_app import NODE_COUNT

    url, keys = cluster.url, Keys()
    started = time.monotonic()
    victim = primary_of(cluster, keys.workflows)  # leases, owners, done stream: the worst shard
    survivor = next(n for n in cluster.primary_nodes() if n is not victim)
    client = redis.asyncio.cluster.RedisCluster.from_url(survivor.url)
    try:
        workers = [procs.worker(TARGET, url, *WORKER_OPTIONS) for _ in range(WORKERS)]
        share = RUNS // COORDINATORS
        coordinators = [
            procs.python("chaos_app.py", "--runs", f"{i * share}:{share}")
            for i in range(COORDINATORS)
        ]
        for child in coordinators:
            await child.line("ready", timeout=120)
        for child in workers:
            await child.line("serving", timeout=120)

        async def workers_registered() -> bool:
            now_ms = int(time.time() * 1000)
            return await client.zcount(keys.workers, now_ms, "+inf") >= WORKERS

        await until(workers_registered, f"{WORKERS} registered workers", 120)
        up = time.monotonic() - started
        note(procs, f"up after {up:.1f} s; the victim is primary {victim.address}")
        await client.set(GO, 1)
        for child in coordinators:
            await child.line("submitted", timeout=60)
        await asyncio.sleep(KILL_AFTER)

        for node in cluster.nodes:  # how long the survivors wait before promoting the replica
            cluster.info(node, "config", "set", "cluster-node-timeout", str(node_timeout_ms))
        done_before = await client.xlen(keys.workflows_done)
        killed = time.monotonic()
        cluster.kill(victim)
        note(procs, f"killed primary {victim.address} with {done_before}/{RUNS} runs done")
        await asyncio.to_thread(cluster.wait_failover, 30.0)
        failover = time.monotonic() - killed
        note(procs, f"failover done after {failover:.1f} s")

        lost = await outcomes(survivor.url, budget=90)
        all_done = time.monotonic() - killed
        note(procs, f"every run ended {all_done:.1f} s after the kill")

        async def nothing_pending() -> bool:
            # An XACK the dead primary took but never replicated leaves its entry pending on
            # the promoted replica until a worker reclaims it (visibility timeout) and acks it.
            return await pending_entries(client) == 0

        with contextlib.suppress(AssertionError):
            await until(nothing_pending, "no pending entries", 15)
        pending = await pending_entries(client)
        escalations = int(await client.xlen(keys.escalations))
        executions = 0
        async for key in client.scan_iter(match="chaos:executions:*"):
            executions += int(await client.get(key) or 0)
    finally:
        await client.aclose()
    tracebacks, repeated, warnings = log_problems(procs)
    silent, chatty = [], []
    for path in sorted(c.log for c in procs.children):
        lines = [
            line
            for line in path.read_text(errors="replace").splitlines()
            if re.search(r" (WARNING|ERROR) ", line) and not re.search(r"run doc-\d+", line)
        ]
        if not any(re.search(r"(?i)redis|cluster|connect", line) for line in lines):
            silent.append(path.name)
        if len(lines) > LINES_PER_OUTAGE:
            chatty.append(f"{path.name}: {len(lines)} lines, from {lines[0]} to {lines[-1]}")
    report = {
        "runs": RUNS,
        "coordinators": COORDINATORS,
        "workers": WORKERS,
        "runs done at the kill": done_before,
        "seconds to start": round(up, 1),
        "seconds to fail over": round(failover, 1),
        "seconds from the kill until every run ended": round(all_done, 1),
        "seconds in all": round(time.monotonic() - started, 1),
        "lost": len(lost),
        "pending": pending,
        "escalations": escalations,
        "runs taken over": procs.count("taking over run"),
        "leases lost by a live process": procs.count("lost the lease"),
        "worker reclaims": procs.count("abandoned task(s)"),
        "node re-executions": executions - RUNS * NODE_COUNT,
        "tracebacks": len(tracebacks),
        "children silent about the outage": len(silent),
        "most warnings about the outage in one child": max(
            (int(c.split(": ")[1].split()[0]) for c in chatty), default=0
        ),
    }
    print(f"\ncluster failover report: {json.dumps(report)}")
    print("warnings and errors (children logging each):")
    for message, children in warnings.most_common():
        print(f"  {children} x {message}")
    return Failover(report, lost, tracebacks, repeated, warnings, silent, chatty)


@pytest.fixture(scope="module")
def failover(
    node_timeout_ms: int, failover_cluster: RedisClusterServers, procs: ChildProcesses
) -> Failover:
    """One failover under load, judged by the tests below."""
    return asyncio.run(fail_over(failover_cluster, procs, node_timeout_ms))


@pytest.mark.timeout(240)
def test_every_run_finishes_with_the_right_output_across_a_failover(failover: Failover) -> None:
    assert failover.report["runs done at the kill"] < RUNS, "the primary died after every run"
    assert failover.lost == [], "lost runs"
    assert failover.tracebacks == [], "raw tracebacks in the children's logs"
    assert failover.repeated == [], "warnings repeated heartbeat after heartbeat"
    assert failover.report["pending"] == 0
    assert failover.report["escalations"] == 0
    assert failover.report["node re-executions"] <= RUNS * 2


@pytest.mark.timeout(240)
def test_each_process_tells_the_failover_once(failover: Failover) -> None:
    assert failover.silent == [], "processes that never said Redis was unavailable"
    assert failover.chatty == [], "processes that said it too often"
