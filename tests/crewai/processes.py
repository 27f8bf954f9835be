"""Start and always stop the subprocesses a test needs.

Each child's output goes to a log file, never to a pipe nobody reads (a chatty child would block
on a full pipe). The children guard their network (``worker_proc.py``) and append each attempt
to ``NET_GUARD_LOG`` the moment it happens, so a child that is SIGKILLed still reported it:
:meth:`Processes.close` fails the test if any child tried to leave loopback.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent


class Processes:
    def __init__(self, env: dict[str, str]) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="crew-procs-"))
        self.network_log = self.dir / "network.log"
        self.env = env  # the test's own dict: what it sets later reaches the children it starts
        env["NET_GUARD_LOG"] = str(self.network_log)
        self.started: list[subprocess.Popen[str]] = []
        self.logs: dict[int, Path] = {}

    def worker(self, url: str, target: str, concurrency: int = 8) -> subprocess.Popen[str]:
        """A worker subprocess, returned once it printed ``ready``."""
        proc = self.python(str(HERE / "worker_proc.py"), url, target, str(concurrency))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if "ready" in self.output(proc).splitlines():
                return proc
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited with {proc.returncode}: {self.output(proc)}")
            time.sleep(0.05)
        raise RuntimeError("worker did not get ready within 60 s")

    def python(self, *args: str) -> subprocess.Popen[str]:
        log = self.dir / f"proc-{len(self.started)}.log"
        with log.open("w") as out:  # the child keeps its own handle
            proc = subprocess.Popen(
                [sys.executable, *args],
                env=self.env,
                cwd=HERE,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
            )
        self.started.append(proc)
        self.logs[proc.pid] = log
        return proc

    def output(self, proc: subprocess.Popen[str]) -> str:
        return self.logs[proc.pid].read_text(errors="replace")

    def close(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
        attempts = self.network_log.read_text() if self.network_log.exists() else ""
        assert not attempts, f"a child process tried to leave loopback: {attempts}"
