"""Chaos children write their output to log files, never to a pipe nobody reads.

The 1,000-run soak used to hang: coordinators and workers log a line per takeover and per
reclaim, the test read their stdout pipe only until ``ready``, and once 64 KiB were buffered the
next ``logging`` call blocked in ``write()`` — with it the event loop, heartbeats and leases
(every coordinator was found in ``anon_pipe_write``). Files never fill up, and they are what the
report counts takeovers and reclaims from.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path

from child_processes import ChildProcesses


class LoggedProcesses(ChildProcesses):
    """:class:`ChildProcesses` whose children write to ``<log_dir>/<n>-<role>.log``."""

    def __init__(self, cwd: Path, env: dict[str, str], log_dir: Path) -> None:
        super().__init__(cwd, env)
        # Keep the caller's PYTHONPATH behind the app directory (a checkout under test).
        inherited = os.environ.get("PYTHONPATH")
        if inherited:
            self.env["PYTHONPATH"] = os.pathsep.join((str(cwd), inherited))
        self.log_dir = log_dir
        self.logs: dict[int, Path] = {}

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        role = "worker" if "worker" in args else Path(args[1]).stem
        path = self.log_dir / f"{len(self.children):03d}-{role}.log"
        with path.open("wb") as out:
            child = subprocess.Popen(
                args, cwd=self.cwd, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        self.children.append(child)
        self.logs[child.pid] = path
        return child

    async def wait_for_line(
        self, child: subprocess.Popen[bytes], text: bytes, timeout: float
    ) -> None:
        """Wait until the child's log holds a line containing ``text`` (polling, so the test's
        own event loop, and its monitor, keep running meanwhile)."""
        deadline = time.monotonic() + timeout
        path = self.logs[child.pid]
        while time.monotonic() < deadline:
            if any(text in line for line in path.read_bytes().splitlines()):
                return
            if child.poll() is not None:
                tail = path.read_bytes()[-2000:].decode(errors="replace")
                raise AssertionError(f"{path.name} exited with {child.returncode}:\n{tail}")
            await asyncio.sleep(0.2)
        raise AssertionError(f"no {text!r} in {path.name} within {timeout} s")

    def count(self, text: str) -> int:
        """Lines containing ``text`` in every child's log (takeovers, reclaims...)."""
        needle = text.encode()
        lines = (line for path in self.logs.values() for line in path.read_bytes().splitlines())
        return sum(needle in line for line in lines)
