"""Kill a coordinator process and a worker process mid-run: every durable run still finishes."""

from __future__ import annotations

import asyncio
import importlib
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langgraph")

from fast_settings import FAST
from nervenet_langgraph.testing import ExecutionCounter

from nervenet import Pool
from nervenet.testing import ChildProcesses

pytestmark = [pytest.mark.langgraph, pytest.mark.redis]

APPS = Path(__file__).parent / "apps"
sys.path.insert(0, str(APPS))
from durable_app import NODES, counter, expected_output, run_input  # noqa: E402


@pytest.fixture(params=["redis", pytest.param("cluster", marks=pytest.mark.cluster)])
def redis_url(request: pytest.FixtureRequest) -> str:
    """The private redis-server's URL, or a node of the private 3-primary cluster's."""
    return str(request.getfixturevalue("redis_url" if request.param == "redis" else "cluster_url"))


async def test_runs_survive_killing_a_coordinator_and_a_worker(
    processes: ChildProcesses, redis_url: str
) -> None:
    await _kill_and_recover(processes, redis_url, "durable_app", runs=200)


async def test_functional_api_runs_survive_killing_a_coordinator_and_a_worker(
    processes: ChildProcesses, redis_url: str
) -> None:
    """The same pipeline as an ``@entrypoint`` whose ``@task`` calls run on the workers: a
    survivor resumes the entrypoint, and tasks that had finished are not run again."""
    await _kill_and_recover(processes, redis_url, "functional_app", runs=40)


async def _kill_and_recover(processes: ChildProcesses, redis_url: str, app: str, runs: int) -> None:
    per_coordinator = runs // 2
    fast = ("--heartbeat", "0.2", "--visibility-timeout", "1.0")
    workers = [processes.worker(f"{app}:graph", redis_url, *fast) for _ in range(2)]
    coordinators = [
        processes.python(f"{app}.py", str(first), str(per_coordinator))
        for first in (0, per_coordinator)
    ]
    for coordinator in coordinators:
        coordinator.wait_for_line("submitted", timeout=60)
    await asyncio.sleep(0.5)  # runs are mid-flight: some nodes done, some running
    coordinators[0].send_signal(signal.SIGKILL)
    workers[0].send_signal(signal.SIGKILL)
    killed_at = time.monotonic()

    async with Pool.from_url(redis_url, settings=FAST) as pool:
        waits = [asyncio.ensure_future(pool.workflows.wait(f"run-{n}")) for n in range(runs)]
        _, pending = await asyncio.wait(waits, timeout=90)
        if pending:
            await _fail_with_what_is_left(pool, processes, waits)
        results = [wait.result() for wait in waits]
    recovered_in = time.monotonic() - killed_at

    graph = importlib.import_module(app).graph
    outputs = [_decode(graph, raw) for raw in results]
    assert outputs == [expected_output(n) for n in range(runs)]
    executions = ExecutionCounter(redis_url, counter.key).total()
    extra = executions - runs * len(NODES)
    print(
        f"\n{runs} runs of {app} finished {recovered_in:.1f} s after the kills; "
        f"{executions} executions, {extra} beyond one per node or task"
    )
    # Only work in flight at the kill can run twice: at most one node (task) per run.
    assert 0 <= extra <= runs


async def _fail_with_what_is_left(
    pool: Pool, processes: ChildProcesses, waits: Sequence[asyncio.Future[bytes]]
) -> None:
    """Fail with the runs that did not finish, their records and owners, and the end of each
    process's log."""
    left = [f"run-{n}" for n, wait in enumerate(waits) if not wait.done()]
    for wait in waits:
        wait.cancel()
    lines = []
    for run_id in left[:10]:
        record = await pool.workflows.record(run_id)
        status = record.status if record is not None else "no record"
        lines.append(f"{run_id}: {status}, owner {await pool.workflows.owner(run_id)}")
    pytest.fail(
        f"{len(left)} runs unfinished 90 s after the kills, among them:\n"
        + "\n".join(lines)
        + "\n"
        + processes.report()
    )


def _decode(graph: object, raw: bytes) -> object:
    from nervenet_langgraph.wire import unpack

    return unpack(graph.nervenet.serde, raw)  # type: ignore[attr-defined]


async def test_queued_runs_are_shared_by_serve_processes_and_survive_one_dying(
    processes: ChildProcesses, redis_url: str
) -> None:
    """``asubmit(..., run_here=False)`` from a client; ``nervenet serve`` processes run them."""
    from durable_app import make_graph

    runs = 60
    fast = ("--heartbeat", "0.2", "--visibility-timeout", "1.0")
    for _ in range(2):
        processes.worker("durable_app:graph", redis_url, *fast)
    shared = processes.nervenet("serve", "durable_app:graph", "--coordinators", "2")
    doomed = processes.nervenet("serve", "durable_app:graph")
    for serving in (shared, doomed):
        serving.wait_for_line("running durable runs", timeout=60)

    client = make_graph(redis_url)
    async with client.nervenet.pool as pool:
        await _queue(client, "q", runs)
        await asyncio.sleep(0.8)  # both coordinators took runs; some nodes done, some running
        status = await pool.status()
        doomed.send_signal(signal.SIGKILL)
        results = await asyncio.wait_for(
            asyncio.gather(*(pool.workflows.wait(f"q-{n}") for n in range(runs))), timeout=90
        )
    shared.send_signal(signal.SIGTERM)  # and its child coordinator with it
    assert shared.wait(timeout=30) == 0

    assert [_decode(client, raw) for raw in results] == [expected_output(n) for n in range(runs)]
    assert status.coordinators >= 3  # the client's own pool can resume runs too
    assert status.queued_workflows < runs  # the coordinators were taking them


async def test_a_serve_process_with_max_runs_runs_that_many_at_once_and_leaves_the_rest_queued(
    processes: ChildProcesses, redis_url: str
) -> None:
    """``nervenet serve --max-runs 3``: three queued runs under way at a time, the others
    queued in Redis until one ends; all of them finish."""
    from durable_app import make_graph

    runs = 8
    processes.worker("durable_app:graph", redis_url, "--heartbeat", "0.2")
    serving = processes.nervenet("serve", "durable_app:graph", "--max-runs", "3")
    serving.wait_for_line("at most 3 at once", timeout=60)

    client = make_graph(redis_url)
    async with client.nervenet.pool as pool:
        await _queue(client, "m", runs)
        waits = asyncio.gather(*(pool.workflows.wait(f"m-{n}") for n in range(runs)))
        running: list[int] = []
        while not waits.done():
            running.append(len(await pool.runs.list(status="running", limit=runs)))
            await asyncio.sleep(0.05)
        results = await waits
    serving.send_signal(signal.SIGTERM)
    assert serving.wait(timeout=30) == 0

    assert [_decode(client, raw) for raw in results] == [expected_output(n) for n in range(runs)]
    assert max(running) == 3


async def _queue(client: Any, prefix: str, runs: int) -> None:
    """Queue runs ``{prefix}-0..`` (run id = thread id) for ``nervenet serve`` processes."""
    for n in range(runs):
        run_id = f"{prefix}-{n}"
        config = {"configurable": {"thread_id": run_id, "__nervenet_run_id": run_id}}
        await client.asubmit(run_input(n), config, run_here=False)
