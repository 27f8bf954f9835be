"""Start and always stop the subprocesses a test needs."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent


class Processes:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.started: list[subprocess.Popen[str]] = []

    def worker(self, url: str, target: str, concurrency: int = 8) -> subprocess.Popen[str]:
        """A worker subprocess, returned once it printed ``ready``."""
        proc = self.python(str(HERE / "worker_proc.py"), url, target, str(concurrency))
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if line.strip() == "ready":
                return proc
            if not line and proc.poll() is not None:
                raise RuntimeError(f"worker exited with {proc.returncode}")
        raise RuntimeError("worker did not get ready within 60 s")

    def python(self, *args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, *args],
            env=self.env,
            cwd=HERE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.started.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
            if proc.stdout is not None:
                proc.stdout.close()
