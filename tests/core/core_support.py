"""Helpers shared by the core tests: fast pool settings, waiting for conditions, child processes.

Fixtures built on these live in ``conftest.py`` beside this file; tests import the helpers directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from redis.exceptions import ResponseError

from nervenet import EnvelopeError, Pool, PoolSettings, Worker
from nervenet.envelope import Reply
from nervenet.registry import WorkerInfo
from nervenet.testing import Child, ChildProcesses, child_environment, nervenet_script

HERE = Path(__file__).resolve().parent
RUN_WORKER = HERE / "core_worker.py"
NERVENET = nervenet_script()

#: Short heartbeats and visibility timeout so that reclaiming and registry expiry take about a
#: second instead of the production defaults' five.
FAST = PoolSettings(heartbeat_interval=0.2, visibility_timeout=1.0, lease_ttl=1.0, block_ms=200)


#: The types of ``conftest.py``'s fixtures ``make_pool`` and ``serve``, for tests to annotate with.
MakePool = Callable[..., Awaitable[Pool]]
Serve = Callable[..., Awaitable[Worker]]


class Pools:
    """Every pool a test opened, closed after the test (after its workers stopped); the type of
    ``conftest.py``'s ``pools`` fixture."""

    def __init__(self) -> None:
        self.opened: list[Pool] = []

    async def open(self, pool: Pool) -> Pool:
        self.opened.append(pool)
        await pool.ensure_started()
        return pool

    async def aclose(self) -> None:
        for pool in reversed(self.opened):
            await pool.aclose()


async def register_silent_worker(pool: Pool, task_type: str) -> None:
    """Register a worker for ``task_type`` that never reads: its dispatches stay unread."""
    info = WorkerInfo("silent", (task_type,), 1, 0, time.time(), "test:0", 0)
    await pool.registry.register(info, ttl=600)


T = TypeVar("T")


async def stream_totals(pool: Pool, task_type: str) -> tuple[int, int]:
    """Entries and pending (delivered, unacknowledged) entries of a task type, over all the
    partitions of its stream."""
    redis, entries, pending = pool.transport.redis, 0, 0
    for stream in pool.keys.task_streams(task_type):
        entries += int(await redis.xlen(stream))
        try:
            summary: Any = await redis.xpending(stream, "workers")
        except ResponseError:  # no group: never served
            continue
        pending += int(summary["pending"])
    return entries, pending


async def wait_until(
    condition: Callable[[], Awaitable[T | None]],
    *,
    timeout: float = 10.0,
    what: str = "condition",
) -> T:
    """Poll ``condition`` until it returns something truthy (and return it), or fail."""
    deadline = time.monotonic() + timeout
    while True:
        value = await condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.05)


class ReplyTap:
    """Records every reply a pool's inbox receives, in arrival order.

    The reply stream cannot be inspected afterwards (the inbox trims what it read), so this wraps
    ``Inbox._deliver``, the one place every reply read from the stream passes through.
    """

    def __init__(self, pool: Pool) -> None:
        self.replies: list[Reply] = []
        deliver = pool.inbox._deliver

        def tap(fields: dict[bytes, bytes]) -> None:
            with contextlib.suppress(EnvelopeError):
                self.replies.append(Reply.from_fields(fields))
            deliver(fields)

        pool.inbox._deliver = tap  # type: ignore[method-assign]

    def of(self, task_id: str) -> list[Reply]:
        return [r for r in self.replies if r.task_id == task_id]


def child_env(**extra: str) -> dict[str, str]:
    """Environment of a child process: unbuffered, wide rich tables, no inherited Redis URL."""
    return child_environment(COLUMNS="250", NO_COLOR="1", TERM="dumb", **extra)


@dataclass
class CliResult:
    returncode: int
    output: str
    """stdout and stderr, interleaved."""


async def run_cli(*args: str, timeout: float = 60.0, cwd: Path = HERE) -> CliResult:
    """Run ``nervenet ARGS...`` as a child process without blocking the test's event loop
    (in-process workers of the test keep serving while the command runs)."""
    process = await asyncio.create_subprocess_exec(
        NERVENET,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=cwd,
        env=child_env(),
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), timeout)
    except BaseException:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return CliResult(process.returncode, out.decode(errors="replace"))


async def registered(pool: Pool, worker: Child, timeout: float = 15.0) -> str:
    """Wait until the worker child process is in the registry; return its worker id."""

    async def find() -> str | None:
        if not worker.running:
            raise AssertionError(f"worker exited with {worker.returncode}:\n{worker.output()}")
        for info in await pool.workers():
            if info.host.endswith(f":{worker.pid}"):
                return info.worker_id
        return None

    return await wait_until(find, timeout=timeout, what=f"worker pid {worker.pid} to register")


class WorkerProcesses(ChildProcesses):
    """Worker child processes of one test, started from this folder (so ``core_apps`` is
    importable) with wide, uncoloured output, and killed by PID afterwards."""

    def __init__(self, log_dir: Path) -> None:
        super().__init__(HERE, {"COLUMNS": "250", "NO_COLOR": "1", "TERM": "dumb"}, log_dir)

    def cli(
        self,
        url: str,
        target: str = "core_apps:handlers",
        *,
        grace: float = 30.0,
        concurrency: int = 8,
        fast: bool = True,
        options: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> Child:
        """``nervenet worker TARGET --redis URL [OPTIONS]`` as an operator runs it, with
        :data:`FAST` heartbeats unless ``fast=False``, and ``env`` added to its environment."""
        args = ["--grace", str(grace), "--concurrency", str(concurrency)]
        if fast:
            args += [
                "--heartbeat", str(FAST.heartbeat_interval),
                "--visibility-timeout", str(FAST.visibility_timeout),
            ]  # fmt: skip
        return self.worker(target, url, *args, *options, env=env)

    def runner(self, url: str, *, max_deliveries: int, concurrency: int = 8) -> Child:
        """A worker process with :data:`FAST` settings and a ``max_deliveries`` the CLI does not
        expose (``core_worker.py``)."""
        return self.python(
            str(RUN_WORKER), url, "core_apps:handlers",
            "--concurrency", str(concurrency),
            "--heartbeat-interval", str(FAST.heartbeat_interval),
            "--visibility-timeout", str(FAST.visibility_timeout),
            "--max-deliveries", str(max_deliveries),
        )  # fmt: skip
