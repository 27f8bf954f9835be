"""Child processes of one test (workers, coordinators), always killed by PID at teardown.

Children write their output to log files, never to a pipe: a test reads a pipe only until the
line it waits for, and once ~64 KiB are buffered the child's next ``logging`` call blocks in
``write()``, and with it its event loop, heartbeats and leases (the chaos soak hung that way:
every coordinator was found in ``anon_pipe_write``). Files never fill up and can be searched
afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NERVENET = str(Path(sys.executable).with_name("nervenet"))


class ChildProcesses:
    """Children started in ``cwd`` with ``env``; each logs to ``<log_dir>/<n>-<role>.log``
    (a private temporary directory, removed at ``close()``, unless ``log_dir`` is given)."""

    def __init__(self, cwd: Path, env: dict[str, str], log_dir: Path | None = None) -> None:
        self.cwd = cwd
        # The app directory first, the caller's PYTHONPATH (a checkout under test) behind it.
        path = os.pathsep.join(p for p in (str(cwd), os.environ.get("PYTHONPATH")) if p)
        self.env = {**os.environ, **env, "PYTHONPATH": path}
        self.children: list[subprocess.Popen[bytes]] = []
        self._own_log_dir = log_dir is None
        self.log_dir = log_dir or Path(tempfile.mkdtemp(prefix="nervenet-children-"))
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

    def worker(self, target: str, url: str, *options: str) -> subprocess.Popen[bytes]:
        return self.start(NERVENET, "worker", target, "--redis", url, *options)

    def python(self, script: str, *args: str) -> subprocess.Popen[bytes]:
        return self.start(sys.executable, str(self.cwd / script), *args)

    def alive(self) -> list[subprocess.Popen[bytes]]:
        return [c for c in self.children if c.poll() is None]

    def has_line(self, child: subprocess.Popen[bytes], text: bytes) -> bool:
        """Whether the child's log holds a line containing ``text``; raises if it exited
        without one, with the end of its log."""
        path = self.logs[child.pid]
        if any(text in line for line in path.read_bytes().splitlines()):
            return True
        if child.poll() is not None:
            tail = path.read_bytes()[-2000:].decode(errors="replace")
            raise AssertionError(
                f"{path.name} exited with {child.returncode} before {text!r}:\n{tail}"
            )
        return False

    def wait_for_line(self, child: subprocess.Popen[bytes], text: bytes, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.has_line(child, text):
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"no {text!r} in {self.logs[child.pid].name} within {timeout} s"
                )
            time.sleep(0.05)

    def close(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.kill()
            child.wait(timeout=10)
        if self._own_log_dir:
            shutil.rmtree(self.log_dir, ignore_errors=True)
