"""Child processes of one test (workers, coordinators), always killed by PID at teardown."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

NERVENET = str(Path(sys.executable).with_name("nervenet"))


class ChildProcesses:
    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.cwd = cwd
        self.env = {**os.environ, **env, "PYTHONPATH": str(cwd)}
        self.children: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        child = subprocess.Popen(
            args, cwd=self.cwd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        self.children.append(child)
        return child

    def worker(self, target: str, url: str, *options: str) -> subprocess.Popen[bytes]:
        return self.start(NERVENET, "worker", target, "--redis", url, *options)

    def python(self, script: str, *args: str) -> subprocess.Popen[bytes]:
        return self.start(sys.executable, str(self.cwd / script), *args)

    def alive(self) -> list[subprocess.Popen[bytes]]:
        return [c for c in self.children if c.poll() is None]

    def close(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.kill()
            child.wait(timeout=10)
            if child.stdout is not None:
                child.stdout.close()


def wait_for_line(child: subprocess.Popen[bytes], text: bytes, timeout: float) -> None:
    """Read the child's output until a line contains ``text``."""
    deadline = time.monotonic() + timeout
    assert child.stdout is not None
    while time.monotonic() < deadline:
        line = child.stdout.readline()
        if text in line:
            return
        if not line and child.poll() is not None:
            raise AssertionError(f"process exited with {child.returncode} before {text!r}")
    raise AssertionError(f"no {text!r} within {timeout} s")
