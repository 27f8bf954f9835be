"""Which durable flow method is running, so a crew it kicks off gets a run id of its own.

A ``DistributedCrew`` kicked off inside a method of a distributed flow, without a ``run_id``,
takes ``<flow run>/<method>.<call>/<crew>.<n>``: the same ids when the method runs again after a
takeover, so the crew's finished agent tasks are answered from the workers' result cache.
(Importing this module imports no CrewAI.)
"""

from __future__ import annotations

import threading
from contextvars import ContextVar
from dataclasses import dataclass, field


@dataclass
class MethodScope:
    """One execution of one method of one durable flow run."""

    run_id: str
    """The flow run's id."""
    method: str
    """The method's name."""
    call: int
    """How many times this run executed the method before (loops)."""
    _kickoffs: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def crew_run_id(self, crew: str) -> str:
        """The next kickoff of ``crew`` in this method (thread-safe: sync methods run on
        threads, and may kick crews off concurrently)."""
        with self._lock:
            n = self._kickoffs.get(crew, 0)
            self._kickoffs[crew] = n + 1
        return f"{self.run_id}/{self.method}.{self.call}/{crew}.{n}"


current_method: ContextVar[MethodScope | None] = ContextVar(
    "nervenet_crewai_flow_method", default=None
)


def crew_run_id(crew: str) -> str | None:
    """A deterministic run id for a kickoff of ``crew`` inside a durable flow method, else None."""
    scope = current_method.get()
    return None if scope is None else scope.crew_run_id(crew)
