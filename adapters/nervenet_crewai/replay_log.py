"""A per-run, in-memory stand-in for CrewAI's replay log on the coordinator.

After each task, CrewAI writes the task's output to one sqlite file per machine (what ``crewai
replay`` reads), under a file lock that a waiting thread polls every 0.25 s, and each kickoff
starts by erasing that file. Concurrent kickoffs therefore queue on the lock (measured: it, not
the model, set plain CrewAI's latency with 30 kickoffs in flight) and erase each other's entries.
A distributed run keeps its log here instead, for its own lifetime; resuming a run is done with
its run id (finished tasks come from the workers' result cache), not with ``crewai replay``.
"""

from __future__ import annotations

import threading
from typing import Any


class RunTaskLog:
    """Duck-types ``crewai.utilities.task_output_storage_handler.TaskOutputStorageHandler``."""

    def __init__(self) -> None:
        self._entries: dict[int, dict[str, Any]] = {}
        self._lock = threading.Lock()  # async tasks of a sync kickoff finish on threads

    def update(self, task_index: int, log: dict[str, Any]) -> None:
        task = log["task"]
        entry = {
            "task_id": str(task.id),
            "expected_output": task.expected_output,
            "output": log["output"],
            "task_index": task_index,
            "inputs": log.get("inputs") or {},
            "was_replayed": log.get("was_replayed", False),
        }
        with self._lock:
            self._entries[task_index] = entry

    def add(
        self,
        task: Any,
        output: dict[str, Any],
        task_index: int,
        inputs: dict[str, Any] | None = None,
        was_replayed: bool = False,
    ) -> None:
        log = {"task": task, "output": output, "inputs": inputs, "was_replayed": was_replayed}
        self.update(task_index, log)

    def reset(self) -> None:
        with self._lock:
            self._entries.clear()

    def load(self) -> list[dict[str, Any]]:
        with self._lock:
            return [self._entries[index] for index in sorted(self._entries)]
