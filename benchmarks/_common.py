"""What the benchmarks share: private servers and child processes, CPU accounting, tables.

Servers and children are :mod:`nervenet.testing`'s, as the tests use them, started the
benchmark's way: every child in its own session (Ctrl-C in the terminal reaches only the
benchmark, which then stops its children in order) and killed by Linux if the benchmark itself
dies, so an interrupted or crashed run leaves no ``redis-server`` or worker behind. Children are
stopped by their PID, never by name.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import itertools
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from nervenet import testing
from nervenet.testing import RedisServer, nervenet_script

if TYPE_CHECKING:
    from nervenet import Pool

#: Piped output would otherwise wrap at 80 columns, too narrow for the wider tables.
console = Console() if sys.stdout.isatty() else Console(width=120)

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_numbers = itertools.count()


@functools.cache
def _logs() -> Path:
    """The children's log files, removed when the benchmark ends (a child that fails shows its
    log's end in the error); made on the first child, not in every process importing this."""
    logs = Path(tempfile.mkdtemp(prefix="nervenet-bench-"))
    atexit.register(shutil.rmtree, logs, ignore_errors=True)
    return logs


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, all its threads (``/proc/PID/stat``)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        # The command name (field 2) may hold spaces; the numeric fields follow its ')'.
        fields = f.read().rsplit(b")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / _CLOCK_TICKS


def machine_busy_seconds() -> float:
    """CPU seconds all processes of the machine spent so far (``/proc/stat``, every core)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / _CLOCK_TICKS


class Child(testing.Child):
    """A child process of the benchmark (see the module's docstring), logging to a file; a
    context manager that stops it."""

    @classmethod
    def run(
        cls,
        name: str,
        args: Sequence[str],
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Child:
        """Start ``args`` in ``cwd`` with this process's environment and ``env`` over it."""
        started = testing.Child.start(
            args,
            log=_logs() / f"{next(_numbers):03d}-{name}.log",
            name=name,
            cwd=cwd,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            own_session=True,
            die_with_parent=True,
        )
        return cls(started.name, started.popen, started.log)

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def private_redis() -> Iterator[tuple[str, RedisServer]]:
    """A throwaway ``redis-server`` on a free port, no persistence: yields (URL, server)."""
    with RedisServer(own_session=True, die_with_parent=True) as server:
        yield server.url, server


def nervenet_worker(
    target: str,
    url: str,
    *,
    name: str = "worker",
    concurrency: int | None = None,
    grace: float | None = None,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    options: Sequence[str] = (),
) -> Child:
    """``nervenet worker TARGET --redis URL [OPTIONS]`` in a child process (``cwd`` is where
    ``TARGET``'s module is imported from); a context manager that stops it, as every
    :class:`Child`."""
    args = [nervenet_script(), "worker", target, "--redis", url, *options]
    if concurrency is not None:
        args += ["--concurrency", str(concurrency)]
    if grace is not None:
        args += ["--grace", f"{grace:g}"]
    return Child.run(name, args, cwd=cwd, env=env)


async def registered(pool: Pool, workers: Sequence[testing.Child], timeout: float = 60.0) -> None:
    """Wait until ``pool`` sees as many live workers as ``workers``; fail with the output of one
    that died, or after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while len(await pool.workers()) < len(workers):
        for worker in workers:
            worker.check_running()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(workers)} workers did not register within {timeout:g} s")
        await asyncio.sleep(0.05)


def wait_registered(url: str, workers: Sequence[testing.Child], timeout: float = 60.0) -> None:
    """:func:`registered`, for a caller that runs no event loop."""
    from nervenet import Pool

    async def wait() -> None:
        async with Pool.from_url(url) as pool:
            await registered(pool, workers, timeout)

    asyncio.run(wait())


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile, ``q`` in 0..100."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A table with the first column left-aligned and the figures right-aligned."""
    table = Table(title=title, title_justify="left")
    for i, header in enumerate(headers):
        table.add_column(header, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)
