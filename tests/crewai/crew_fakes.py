"""The CrewAI tests' fake model: :class:`nervenet_crewai.testing.FakeLLM` recording where it
was called, with switches that make it fail.

Its final answer is a hash of the whole prompt, so an answer proves which prompt, context and
tool observation the agent saw: equal answers from a plain and a distributed crew mean equal
prompts. Every call is logged with its process and thread, so tests can tell a worker's thread
(``task_id`` set) from the coordinator's; with ``CREW_TEST_LOG`` set, also to that file as
JSON lines (for worker subprocesses).
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

from crewai import CrewOutput
from crewai.types.streaming import CrewStreamingOutput
from nervenet_crewai import current_task
from nervenet_crewai.testing import FakeCall, FakeLLM, Observer
from pydantic import Field

CALLS: list[dict[str, Any]] = []
"""Every call in this process: model, pid, thread, and the answer's hash."""
FAILING: set[str] = set()
"""Models that raise while listed."""
FAILING_WORDS: set[str] = set()
"""Words that make a call raise while listed, when its prompt contains one."""
_lock = threading.Lock()


def where() -> dict[str, Any]:
    """Process, thread and — on a worker — the nervenet task this code runs for."""
    task = current_task()
    return {
        "pid": os.getpid(),
        "thread": threading.current_thread().name,
        "task_id": task.task_id if task else None,
        "workflow_id": task.workflow_id if task else None,
    }


def record(call: FakeCall) -> None:
    """Log a call in :data:`CALLS` and, with ``CREW_TEST_LOG`` set, in that file."""
    entry = where() | {"model": call.model, "started": call.started, "phase": call.phase}
    if call.answer is not None:
        entry["answer"] = call.answer[-40:]
    with _lock:
        CALLS.append(entry)
        path = os.environ.get("CREW_TEST_LOG")
        if path:
            with open(path, "a", encoding="utf-8") as log:
                log.write(json.dumps(entry) + "\n")


def calls(model: str | None = None, phase: str = "end") -> list[dict[str, Any]]:
    """Calls of ``model`` (any) that reached ``phase``: begin, end (answered) or failed."""
    with _lock:
        return [c for c in CALLS if (model is None or c["model"] == model) and c["phase"] == phase]


def read_log(path: str) -> list[dict[str, Any]]:
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as log:
        return [json.loads(line) for line in log if line.strip()]


def _recording() -> list[Observer]:
    return [record]


class ScriptedLLM(FakeLLM):
    """A :class:`FakeLLM` that logs every call (:func:`record`) and fails while its model is in
    :data:`FAILING` or its prompt holds a word of :data:`FAILING_WORDS`."""

    observers: list[Observer] = Field(default_factory=_recording)

    def fails(self, prompt: str) -> bool:
        doomed = any(word in prompt for word in FAILING_WORDS)
        return super().fails(prompt) or self.model in FAILING or doomed

    def final_answer(self, prompt: str) -> str:
        answer = super().final_answer(prompt)
        # A guardrail's feedback asks for a verified answer: a retry then gives one.
        if "verified" in prompt and self.answer is None:
            answer = f"verified {answer}"
        return answer


def finished(output: CrewOutput | CrewStreamingOutput) -> CrewOutput:
    """A kickoff's output, typed as what a crew that does not stream returns."""
    assert isinstance(output, CrewOutput), f"a crew that does not stream returned {output!r}"
    return output


def streamed(output: CrewOutput | CrewStreamingOutput) -> CrewStreamingOutput:
    """A kickoff's output, typed as what a streaming crew returns."""
    assert isinstance(output, CrewStreamingOutput), f"a streaming crew returned {output!r}"
    return output
