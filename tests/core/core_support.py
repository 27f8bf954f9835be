"""Helpers shared by the core tests: fast pool settings, waiting for conditions, child processes.

Fixtures built on these live in ``conftest.py`` beside this file; tests import the helpers directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from redis.exceptions import ResponseError

from nervenet import EnvelopeError, Pool, PoolSettings
from nervenet.envelope import Reply
from nervenet.registry import WorkerInfo

HERE = Path(__file__).resolve().parent
RUN_WORKER = HERE / "core_worker.py"
#: The installed ``nervenet`` console script (``python -m nervenet`` runs it too).
NERVENET = str(Path(sys.executable).with_name("nervenet"))

#: Short heartbeats and visibility timeout so that reclaiming and registry expiry take about a
#: second instead of the production defaults' five.
FAST = PoolSettings(heartbeat_interval=0.2, visibility_timeout=1.0, lease_ttl=1.0, block_ms=200)


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
    condition: Callable[[], Awaitable[T]], *, timeout: float = 10.0, what: str = "condition"
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
    env = dict(os.environ)
    env.pop("NERVENET_REDIS_URL", None)
    env.update(PYTHONUNBUFFERED="1", COLUMNS="250", NO_COLOR="1", TERM="dumb")
    env.update(extra)
    return env


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


@dataclass
class WorkerProcess:
    """One ``nervenet worker`` (or ``core_worker.py``) child process."""

    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def send(self, sig: signal.Signals) -> None:
        self.popen.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to clean anything up."""
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=10)

    async def exit_code(self, timeout: float = 20.0) -> int:
        return await asyncio.to_thread(self.popen.wait, timeout)

    async def registered(self, pool: Pool, timeout: float = 15.0) -> str:
        """Wait until this process's worker is in the registry; return its worker id."""

        async def find() -> str | None:
            if self.popen.poll() is not None:
                raise AssertionError(
                    f"worker exited with {self.popen.returncode}:\n{self.output()}"
                )
            for info in await pool.workers():
                if info.host.endswith(f":{self.pid}"):
                    return info.worker_id
            return None

        return await wait_until(find, timeout=timeout, what=f"worker pid {self.pid} to register")


@dataclass
class WorkerProcesses:
    """Starts worker child processes for one test and kills every one of them afterwards."""

    log_dir: Path
    started: list[WorkerProcess] = field(default_factory=list)

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
    ) -> WorkerProcess:
        """``nervenet worker TARGET --redis URL [OPTIONS]`` as an operator runs it, from this
        folder so ``core_apps`` is importable; with :data:`FAST` heartbeats unless
        ``fast=False``, and ``env`` added to its environment."""
        args = [
            NERVENET, "worker", target, "--redis", url,
            "--grace", str(grace), "--concurrency", str(concurrency),
        ]  # fmt: skip
        if fast:
            args += [
                "--heartbeat", str(FAST.heartbeat_interval),
                "--visibility-timeout", str(FAST.visibility_timeout),
            ]  # fmt: skip
        return self._spawn([*args, *options], env)

    def runner(self, url: str, *, max_deliveries: int, concurrency: int = 8) -> WorkerProcess:
        """A worker process with :data:`FAST` settings and a ``max_deliveries`` the CLI does not
        expose (``core_worker.py``)."""
        return self._spawn(
            [
                sys.executable, str(RUN_WORKER), url, "core_apps:handlers",
                "--concurrency", str(concurrency),
                "--heartbeat-interval", str(FAST.heartbeat_interval),
                "--visibility-timeout", str(FAST.visibility_timeout),
                "--max-deliveries", str(max_deliveries),
            ]
        )  # fmt: skip

    def _spawn(self, args: list[str], env: Mapping[str, str] | None = None) -> WorkerProcess:
        log_path = self.log_dir / f"worker-{len(self.started)}.log"
        with log_path.open("wb") as log:
            popen = subprocess.Popen(
                args, cwd=HERE, env=child_env(**(env or {})), stdout=log, stderr=subprocess.STDOUT
            )
        process = WorkerProcess(popen, log_path)
        self.started.append(process)
        return process

    def kill_all(self) -> None:
        for process in self.started:
            process.kill()
