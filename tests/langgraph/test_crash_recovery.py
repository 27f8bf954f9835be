"""Kill a coordinator process and a worker process mid-run: every durable run still finishes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

pytest.importorskip("langgraph")

from fast_settings import FAST  # noqa: E402
from nervenet import Pool  # noqa: E402

pytestmark = [pytest.mark.langgraph, pytest.mark.redis]

APPS = Path(__file__).parent / "apps"
sys.path.insert(0, str(APPS))
from durable_app import NODES, expected_output  # noqa: E402


class Processes:
    """Child processes of one test, killed by PID at teardown whatever happens."""

    def __init__(self, url: str) -> None:
        self.env = {**os.environ, "NERVENET_REDIS_URL": url, "PYTHONPATH": str(APPS)}
        self.children: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        child = subprocess.Popen(
            args, cwd=APPS, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        self.children.append(child)
        return child

    def worker(self) -> subprocess.Popen[bytes]:
        nervenet = str(Path(sys.executable).with_name("nervenet"))
        return self.start(
            nervenet,
            "worker",
            "durable_app:graph",
            "--redis",
            self.env["NERVENET_REDIS_URL"],
            "--heartbeat",
            "0.2",
            "--visibility-timeout",
            "1.0",
        )

    def coordinator(self, first: int, count: int) -> subprocess.Popen[bytes]:
        return self.start(sys.executable, str(APPS / "durable_app.py"), str(first), str(count))

    def close(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.kill()
            child.wait(timeout=10)
            if child.stdout is not None:
                child.stdout.close()


@pytest.fixture
def processes(redis_url: str) -> Iterator[Processes]:
    procs = Processes(redis_url)
    try:
        yield procs
    finally:
        procs.close()


def _wait_for_line(child: subprocess.Popen[bytes], text: bytes, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    assert child.stdout is not None
    while time.monotonic() < deadline:
        line = child.stdout.readline()
        if text in line:
            return
        if not line and child.poll() is not None:
            raise AssertionError(f"process exited with {child.returncode} before {text!r}")
    raise AssertionError(f"no {text!r} within {timeout} s")


async def test_runs_survive_killing_a_coordinator_and_a_worker(
    processes: Processes, redis_url: str
) -> None:
    runs, per_coordinator = 200, 100
    workers = [processes.worker(), processes.worker()]
    coordinators = [
        processes.coordinator(0, per_coordinator),
        processes.coordinator(per_coordinator, per_coordinator),
    ]
    for coordinator in coordinators:
        _wait_for_line(coordinator, b"submitted", timeout=60)
    await asyncio.sleep(0.5)  # runs are mid-flight: some nodes done, some running
    coordinators[0].send_signal(signal.SIGKILL)
    workers[0].send_signal(signal.SIGKILL)
    killed_at = time.monotonic()

    async with Pool.from_url(redis_url, settings=FAST) as pool:
        results = await asyncio.wait_for(
            asyncio.gather(*(pool.workflows.wait(f"run-{n}") for n in range(runs))), timeout=90
        )
    recovered_in = time.monotonic() - killed_at

    from durable_app import graph

    outputs = [graph.nervenet.serde and _decode(graph, raw) for raw in results]
    assert outputs == [expected_output(n) for n in range(runs)]
    counts = redis.Redis.from_url(redis_url)
    executions = sum(
        int(counts.get(f"test:executions:{node}:{n}") or 0) for node in NODES for n in range(runs)
    )
    counts.close()
    extra = executions - runs * len(NODES)
    print(
        f"\n{runs} runs finished {recovered_in:.1f} s after the kills; "
        f"{executions} node executions, {extra} beyond one per node"
    )
    # Only work in flight at the kill can run twice: at most one node per run.
    assert 0 <= extra <= runs


def _decode(graph: object, raw: bytes) -> object:
    from nervenet_langgraph.wire import unpack

    return unpack(graph.nervenet.serde, raw)  # type: ignore[attr-defined]
