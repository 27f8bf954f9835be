"""Chaos children's logs, read while the test's event loop keeps running, and counted for the
report (takeovers, reclaims)."""

from __future__ import annotations

import asyncio
import subprocess
import time

from child_processes import ChildProcesses


class LoggedProcesses(ChildProcesses):
    """:class:`ChildProcesses` with an async wait and line counts over every child's log."""

    async def wait_for_line_async(
        self, child: subprocess.Popen[bytes], text: bytes, timeout: float
    ) -> None:
        """Wait until the child's log holds a line containing ``text``, polling, so the test's
        own event loop, and its monitor, keep running meanwhile."""
        deadline = time.monotonic() + timeout
        while not self.has_line(child, text):
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"no {text!r} in {self.logs[child.pid].name} within {timeout} s"
                )
            await asyncio.sleep(0.2)

    def count(self, text: str) -> int:
        """Lines containing ``text`` in every child's log."""
        needle = text.encode()
        lines = (line for path in self.logs.values() for line in path.read_bytes().splitlines())
        return sum(needle in line for line in lines)
