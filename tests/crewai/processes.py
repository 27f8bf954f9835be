"""The CrewAI tests' child processes: :class:`nervenet.testing.ChildProcesses` whose children
guard their network.

The children guard their network (``worker_proc.py``) and append each attempt to
``NET_GUARD_LOG`` the moment it happens, so a child that is SIGKILLed still reported it:
:meth:`Processes.close` fails the test if any child tried to leave loopback.
"""

from __future__ import annotations

from pathlib import Path

from nervenet.testing import Child, ChildProcesses

HERE = Path(__file__).parent


class Processes(ChildProcesses):
    def __init__(self, env: dict[str, str], log_dir: Path | None = None) -> None:
        super().__init__(HERE, log_dir=log_dir)
        self.network_log = self.log_dir / "network.log"
        env["NET_GUARD_LOG"] = str(self.network_log)
        env.setdefault("PYTHONUNBUFFERED", "1")
        self.env = env  # the test's own dict: what it sets later reaches the children it starts

    def crew_worker(self, url: str, target: str, concurrency: int = 8) -> Child:
        """A network-guarded worker (``worker_proc.py``), returned once it printed ``ready``."""
        child = self.python(str(HERE / "worker_proc.py"), url, target, str(concurrency))
        child.wait_for_line("ready", timeout=60)
        return child

    def close(self, grace: float = 0.0) -> None:
        for child in self.children:  # first: a child could report until it dies
            if grace > 0:
                child.stop(grace)
            else:
                child.kill()
        attempts = self.network_log.read_text() if self.network_log.exists() else ""
        super().close(grace)  # and the log with the private log directory
        assert not attempts, f"a child process tried to leave loopback: {attempts}"
