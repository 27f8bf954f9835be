"""Child processes of a test or benchmark, each logging to its own file, stopped by PID.

Children write their output to log files, never to a pipe: a test reads a pipe only until the
line it waits for, and once ~64 KiB are buffered the child's next ``logging`` call blocks in
``write()``, and with it its event loop, heartbeats and leases (the chaos soak hung that way:
every coordinator was found in ``anon_pipe_write``). Files never fill up and can be searched
afterwards, and a SIGKILLed child has still written everything it printed (children run with
``PYTHONUNBUFFERED=1``).
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def nervenet_script() -> str:
    """The ``nervenet`` console script of the running interpreter's environment (not whichever
    one is first on PATH: a test must run the checkout it imports)."""
    beside = Path(sys.executable).with_name("nervenet")
    if beside.exists():
        return str(beside)
    found = shutil.which("nervenet")
    if found is None:
        raise RuntimeError("the nervenet command is not installed (pip install -e .)")
    return found


def child_environment(**extra: str) -> dict[str, str]:
    """The environment of a child process: the caller's without ``NERVENET_REDIS_URL`` (a child
    must reach the test's private server, never the developer's), with ``PYTHONUNBUFFERED=1``
    (lines reach the log as printed), and ``extra`` over it."""
    env = {k: v for k, v in os.environ.items() if k != "NERVENET_REDIS_URL"}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this child when its parent dies, so a benchmark killed mid-run
    leaves no ``redis-server`` or worker behind (runs in the child, between fork and exec)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class Child:
    """One child process and the file its stdout and stderr go to."""

    def __init__(self, name: str, popen: subprocess.Popen[bytes], log: Path) -> None:
        self.name = name
        self.popen = popen
        self.log = log

    @classmethod
    def start(
        cls,
        args: Sequence[str],
        *,
        log: Path,
        name: str | None = None,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        own_session: bool = False,
        die_with_parent: bool = False,
    ) -> Child:
        """Start ``args`` with output to ``log``. ``own_session`` keeps a Ctrl-C in the terminal
        from reaching the child (the caller then stops it in order); ``die_with_parent`` (Linux)
        kills it if the caller dies. Both are for benchmarks: pytest's children need neither,
        and ``die_with_parent`` forks through Python code, which threads make unsafe."""
        preexec = _die_with_parent if die_with_parent and sys.platform == "linux" else None
        with log.open("wb") as out:  # the child keeps its own handle
            popen = subprocess.Popen(
                list(args),
                cwd=cwd,
                env=None if env is None else dict(env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=own_session,
                preexec_fn=preexec,
            )
        return cls(name or Path(args[0]).name, popen, log)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        """The exit code once it exited (negative: killed by that signal), else ``None``."""
        return self.popen.poll()

    @property
    def running(self) -> bool:
        return self.popen.poll() is None

    def output(self, last: int | None = None) -> str:
        """What it printed so far (only the ``last`` characters if given)."""
        try:
            text = self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return text if last is None else text[-last:]

    def lines(self) -> list[str]:
        return self.output().splitlines()

    def count(self, text: str) -> int:
        """Lines of its output that contain ``text``."""
        return sum(text in line for line in self.lines())

    def has_line(self, text: str) -> bool:
        """Whether a line of its output contains ``text``; raises if it exited without one,
        with the end of its output, so a crashed child fails the wait at once."""
        if any(text in line for line in self.lines()):
            return True
        if not self.running:
            raise AssertionError(
                f"{self.name} (pid {self.pid}) exited with {self.returncode} before printing "
                f"{text!r}:\n{self.output(last=3_000)}"
            )
        return False

    def wait_for_line(self, text: str, timeout: float = 60.0) -> None:
        """Until a line of its output contains ``text`` (blocking; see :meth:`line`)."""
        deadline = time.monotonic() + timeout
        while not self.has_line(text):
            if time.monotonic() >= deadline:
                raise AssertionError(self._no_line(text, timeout))
            time.sleep(0.05)

    async def line(self, text: str, timeout: float = 60.0) -> None:
        """:meth:`wait_for_line` that lets the caller's event loop run meanwhile (its own
        workers, a monitor)."""
        deadline = time.monotonic() + timeout
        while not self.has_line(text):
            if time.monotonic() >= deadline:
                raise AssertionError(self._no_line(text, timeout))
            await asyncio.sleep(0.05)

    def _no_line(self, text: str, timeout: float) -> str:
        return (
            f"no {text!r} from {self.name} (pid {self.pid}) within {timeout:g} s:\n"
            f"{self.output(last=3_000)}"
        )

    def check_running(self) -> None:
        """Raise, with its output, if it exited (for callers polling something else)."""
        if not self.running:
            raise RuntimeError(
                f"{self.name} (pid {self.pid}) exited with {self.returncode}:\n"
                f"{self.output(last=3_000)}"
            )

    def send_signal(self, sig: signal.Signals) -> None:
        """Signal it if it still runs (by PID, like every stop here)."""
        if self.running:
            self.popen.send_signal(sig)

    def wait(self, timeout: float | None = None) -> int:
        """Its exit code; raises ``subprocess.TimeoutExpired`` if still running after
        ``timeout``."""
        return self.popen.wait(timeout)

    async def exit_code(self, timeout: float = 20.0) -> int:
        """:meth:`wait` without blocking the caller's event loop."""
        return await asyncio.to_thread(self.popen.wait, timeout)

    def kill(self) -> None:
        """SIGKILL and reap: the process gets no chance to clean anything up."""
        if self.running:
            self.popen.kill()
        self.popen.wait(timeout=10)

    def stop(self, grace: float = 5.0) -> int:
        """SIGTERM, then SIGKILL if it is still running after ``grace`` seconds; returns its
        exit code. A worker finishes its in-flight tasks on SIGTERM, so ``grace`` should
        outlast the worker's own ``--grace`` when the test needs a clean exit."""
        if self.running:
            self.popen.send_signal(signal.SIGTERM)
            try:
                return self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        self.kill()
        return self.popen.wait()


class ChildProcesses:
    """The children one test (or benchmark) starts, in ``cwd`` with ``env``, each logging to
    ``<log_dir>/<n>-<name>.log``, and every one of them stopped at :meth:`close`.

    The environment is :func:`child_environment` with ``env`` over it, and ``cwd`` first on
    ``PYTHONPATH`` (so ``nervenet worker app:graph`` imports the app beside the test).
    :attr:`env` stays a plain dict: what a test sets in it later reaches the children it starts
    after.

    ``log_dir`` defaults to a private temporary directory, removed at :meth:`close`; one the
    caller gives is kept (pytest's ``tmp_path``, to read the logs after a failure).
    """

    def __init__(
        self,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        log_dir: Path | None = None,
        *,
        own_session: bool = False,
        die_with_parent: bool = False,
    ) -> None:
        self.cwd = cwd
        self.env = child_environment(**(env or {}))
        if cwd is not None:
            path = os.pathsep.join(p for p in (str(cwd), self.env.get("PYTHONPATH")) if p)
            self.env["PYTHONPATH"] = path
        self._own_log_dir = log_dir is None
        self.log_dir = log_dir or Path(tempfile.mkdtemp(prefix="nervenet-children-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.own_session = own_session
        self.die_with_parent = die_with_parent
        self.children: list[Child] = []

    def start(
        self, *args: str, name: str | None = None, env: Mapping[str, str] | None = None
    ) -> Child:
        """Start ``args`` (the program first); ``env`` is added to :attr:`env` for this child."""
        name = name or _name_of(args)
        log = self.log_dir / f"{len(self.children):03d}-{name}.log"
        child = Child.start(
            args,
            log=log,
            name=name,
            cwd=self.cwd,
            env={**self.env, **(env or {})},
            own_session=self.own_session,
            die_with_parent=self.die_with_parent,
        )
        self.children.append(child)
        return child

    def nervenet(self, *args: str, env: Mapping[str, str] | None = None) -> Child:
        """``nervenet ARGS...`` as an operator runs it."""
        return self.start(nervenet_script(), *args, env=env)

    def worker(
        self, target: str, url: str, *options: str, env: Mapping[str, str] | None = None
    ) -> Child:
        """``nervenet worker TARGET --redis URL [OPTIONS...]``."""
        return self.nervenet("worker", target, "--redis", url, *options, env=env)

    def python(self, *args: str, env: Mapping[str, str] | None = None) -> Child:
        """This interpreter with ``args`` (a script relative to ``cwd``, or ``-c CODE``)."""
        return self.start(sys.executable, *args, env=env)

    def by_pid(self, pid: int) -> Child:
        return next(c for c in self.children if c.pid == pid)

    def alive(self) -> list[Child]:
        return [c for c in self.children if c.running]

    def count(self, text: str) -> int:
        """Lines containing ``text`` over every child's log (takeovers, reclaims...)."""
        return sum(child.count(text) for child in self.children)

    def report(self, last: int = 1_500) -> str:
        """Every child's state and the end of its log, for a failure's message: a timeout in
        CI says nothing else about what the processes were doing."""
        parts = []
        for child in self.children:
            state = "running" if child.running else f"exited with {child.returncode}"
            parts.append(f"--- {child.name} (pid {child.pid}, {state}):\n{child.output(last)}")
        return "\n".join(parts)

    def close(self, grace: float = 0.0) -> None:
        """Stop every child still running, newest first: SIGKILL at once, or SIGTERM and
        ``grace`` seconds before it. Removes the log directory if it is the private one."""
        for child in reversed(self.children):
            if grace > 0:
                child.stop(grace)
            else:
                child.kill()
        if self._own_log_dir:
            shutil.rmtree(self.log_dir, ignore_errors=True)

    def __enter__(self) -> ChildProcesses:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _name_of(args: Sequence[str]) -> str:
    """A log file's name for a command: ``worker``, ``serve``, a script's stem, ``python``."""
    program = Path(args[0]).name
    if program == "nervenet" and len(args) > 1:
        return args[1]
    if program.startswith("python") and len(args) > 1:
        return "python-c" if args[1] == "-c" else Path(args[1]).stem
    return program
