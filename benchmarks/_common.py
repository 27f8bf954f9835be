"""What the benchmarks share: private servers and child processes, CPU accounting, tables.

Every child is started in its own session (Ctrl-C in the terminal reaches only the benchmark, which
then stops its children in order) and asks Linux to kill it if the benchmark itself dies, so an
interrupted or crashed run leaves no ``redis-server`` or worker behind. Children are stopped by
their PID, never by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from nervenet import Pool

#: Piped output would otherwise wrap at 80 columns, too narrow for the wider tables.
console = Console() if sys.stdout.isatty() else Console(width=120)

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class Child:
    """A process this benchmark started; its output goes to a log file shown if it fails.

    ``talk=True`` gives it a pipe on stdin and stdout (a protocol, as the production benchmark's
    runners speak), and only its stderr goes to the log.
    """

    def __init__(
        self,
        name: str,
        args: Sequence[str],
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        talk: bool = False,
    ) -> None:
        self.name = name
        fd, log = tempfile.mkstemp(prefix=f"bench-{name}-", suffix=".log")
        self.log = Path(log)
        with os.fdopen(fd, "wb") as out:
            self.process = subprocess.Popen(
                list(args),
                cwd=cwd,
                env={**os.environ, **env} if env else None,
                stdin=subprocess.PIPE if talk else subprocess.DEVNULL,
                stdout=subprocess.PIPE if talk else out,
                stderr=out if talk else subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(
                f"{self.name} (pid {self.pid}) exited with {self.process.returncode}:\n"
                + self.output()
            )

    def output(self, last: int = 4_000) -> str:
        return self.log.read_text(errors="replace")[-last:]

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; reap it and remove its log."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.unlink(missing_ok=True)


def wait_for_port(port: int, child: Child, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        child.check_alive()
        time.sleep(0.02)
    raise RuntimeError(f"{child.name} did not listen on port {port} within {timeout:g} s")


@contextlib.contextmanager
def private_redis() -> Iterator[tuple[str, Child]]:
    """A throwaway ``redis-server`` on a free port, no persistence: yields (URL, child)."""
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not on PATH (apt-get install redis-server)")
    port = free_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    with Child("redis-server", args) as child:
        wait_for_port(port, child)
        yield f"redis://127.0.0.1:{port}/0", child


def nervenet_command() -> list[str]:
    """The ``nervenet`` console script of the running interpreter's environment."""
    script = Path(sys.executable).with_name("nervenet")
    if script.exists():
        return [str(script)]
    found = shutil.which("nervenet")
    if found is None:
        sys.exit("the nervenet command is not installed (pip install -e .)")
    return [found]


def nervenet_worker(
    target: str,
    url: str,
    *,
    name: str = "worker",
    concurrency: int | None = None,
    grace: float | None = None,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Child:
    """``nervenet worker TARGET --redis URL`` in a child process (``cwd`` is where ``TARGET``'s
    module is imported from); a context manager that stops it, as every :class:`Child`."""
    args = [*nervenet_command(), "worker", target, "--redis", url]
    if concurrency is not None:
        args += ["--concurrency", str(concurrency)]
    if grace is not None:
        args += ["--grace", f"{grace:g}"]
    return Child(name, args, cwd=cwd, env=env)


async def registered(pool: Pool, workers: Sequence[Child], timeout: float = 60.0) -> None:
    """Wait until ``pool`` sees as many live workers as ``workers``; fail with the output of one
    that died, or after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while len(await pool.workers()) < len(workers):
        for worker in workers:
            worker.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(workers)} workers did not register within {timeout:g} s")
        await asyncio.sleep(0.05)


def wait_registered(url: str, workers: Sequence[Child], timeout: float = 60.0) -> None:
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
