"""What the driver watches from outside the systems: CPU and memory of every process, by role, and
the load on the machine that is not ours.

* CPU: ``/proc/PID/stat`` (user + system, all threads) at the edges of each window.
* Memory: ``VmRSS`` of every process sampled every 100 ms; a phase reports each one's peak.
* Foreign load: busy time of all CPUs (``/proc/stat``) minus the CPU of this benchmark's own
  process tree over the same window, in cores. The machine is shared; a phase whose foreign load
  exceeds :data:`FOREIGN_LIMIT` cores is flagged and its figures are not quoted.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import cpu_seconds, machine_busy_seconds

FOREIGN_LIMIT = 0.15
"""Cores of CPU used by processes outside the run above which a phase is flagged."""


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    return children


def our_tree() -> list[int]:
    """This process and every descendant."""
    children, todo, found = _children_map(), [os.getpid()], []
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def tree_cpu() -> dict[int, float]:
    result = {}
    for pid in our_tree():
        with contextlib.suppress(OSError):
            result[pid] = cpu_seconds(pid)
    return result


def rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Sampler:
    """Samples the RSS of every watched process; :meth:`peaks` since the last :meth:`reset`."""

    def __init__(self) -> None:
        self._pids: set[int] = set()
        self._peak: dict[int, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def watch(self, pids: Sequence[int]) -> None:
        with self._lock:
            self._pids.update(pids)

    def reset(self) -> None:
        with self._lock:
            self._peak = {pid: rss_kib(pid) for pid in self._pids}

    def peaks(self) -> dict[int, int]:
        with self._lock:
            return dict(self._peak)

    def _loop(self) -> None:
        while not self._stop.wait(0.1):
            with self._lock:
                for pid in self._pids:
                    self._peak[pid] = max(self._peak.get(pid, 0), rss_kib(pid))

    def close(self) -> None:
        self._stop.set()


@dataclass
class Window:
    """CPU over one measurement window: per watched process, ours in all, the machine's."""

    started: float = field(default_factory=time.monotonic)
    cpu0: dict[int, float] = field(default_factory=tree_cpu)
    busy0: float = field(default_factory=machine_busy_seconds)
    seconds: float = 0.0
    cpu: dict[int, float] = field(default_factory=dict)
    foreign_cores: float = 0.0

    def close(self) -> Window:
        cpu1, busy1 = tree_cpu(), machine_busy_seconds()
        self.seconds = time.monotonic() - self.started
        self.cpu = {pid: cpu1[pid] - self.cpu0.get(pid, 0.0) for pid in cpu1}
        ours = sum(self.cpu.values())
        self.foreign_cores = max(0.0, (busy1 - self.busy0 - ours) / self.seconds)
        return self


class Runner:
    """A runner process (see ``loadgen``): send commands, wait for their answers.

    Unlike the benchmark's other children it talks over pipes, which is its protocol: a thread
    reads its stdout as fast as it writes, and its stderr goes to a log file. It needs no
    signal to die with the driver: it exits at the end of its stdin.
    """

    def __init__(self, name: str, args: Sequence[str], *, cwd: Path, env: dict[str, str]) -> None:
        self.name = name
        fd, log = tempfile.mkstemp(prefix=f"bench-{name}-", suffix=".log")
        self.log = Path(log)
        with os.fdopen(fd, "wb") as err:
            self.process = subprocess.Popen(
                list(args),
                cwd=cwd,
                env={**os.environ, **env},
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                start_new_session=True,  # Ctrl-C reaches the driver, which stops it in order
            )
        self._replies: dict[str, queue.Queue[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._next = 0
        self.last_progress: dict[str, Any] = {}
        threading.Thread(target=self._read, daemon=True).start()
        self.info = self.wait("ready", timeout=120)

    @property
    def pid(self) -> int:
        return self.process.pid

    def _box(self, key: str) -> queue.Queue[dict[str, Any]]:
        with self._lock:
            return self._replies.setdefault(key, queue.Queue())

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            message = json.loads(line)
            if "progress" in message:
                self.last_progress = message["progress"]
                continue
            self._box(str(message["id"])).put(message)
        self._box("__eof__").put({})

    def send(self, op: str, **cmd: Any) -> str:
        with self._lock:
            self._next += 1
            key = f"{op}-{self._next}"
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps({"id": key, "op": op, **cmd}) + "\n").encode())
        self.process.stdin.flush()
        return key

    def wait(self, key: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        box = self._box(key)
        while True:
            try:
                reply = box.get(timeout=0.5)
                break
            except queue.Empty:
                if self.process.poll() is not None:
                    raise RuntimeError(f"{self.name} exited: {self.output()}") from None
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{self.name}: no answer to {key} in {timeout:g} s"
                    ) from None
        if "error" in reply:
            raise RuntimeError(f"{self.name}: {key} failed:\n{reply['error']}")
        return reply

    def call(self, op: str, timeout: float = 300, **cmd: Any) -> dict[str, Any]:
        return self.wait(self.send(op, **cmd), timeout)

    def output(self, last: int = 3_000) -> str:
        return self.log.read_text(errors="replace")[-last:]

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        """Ask it to quit; SIGKILL it if it has not within 10 s."""
        if self.process.poll() is None:
            try:
                self.send("quit")
                self.process.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        self.log.unlink(missing_ok=True)
