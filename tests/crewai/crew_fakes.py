"""A deterministic fake LLM (CrewAI's custom ``BaseLLM`` seam) that records where it was called.

Its final answer is a hash of the whole prompt, so an answer proves which prompt, context and
tool observation the agent saw: equal answers from a plain and a distributed crew mean equal
prompts. Every call is logged with its process and thread, so tests can tell a worker's thread
(``task_id`` set) from the coordinator's; with ``CREW_TEST_LOG`` set, also to that file as
JSON lines (for worker subprocesses).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from typing import Any

from crewai.llms.base_llm import BaseLLM
from nervenet_crewai import current_task

CALLS: list[dict[str, Any]] = []
"""Every call in this process: model, pid, thread, and the answer's hash."""
FAILING: set[str] = set()
"""Models that raise while listed."""
FAILING_WORDS: set[str] = set()
"""Words that make a call raise while listed, when its prompt contains one."""
_lock = threading.Lock()


def _text(messages: Any) -> str:
    if isinstance(messages, str):
        return messages
    return "\n".join(str(m.get("content", "")) for m in messages)


def where() -> dict[str, Any]:
    """Process, thread and — on a worker — the nervenet task this code runs for."""
    task = current_task()
    return {
        "pid": os.getpid(),
        "thread": threading.current_thread().name,
        "task_id": task.task_id if task else None,
        "workflow_id": task.workflow_id if task else None,
    }


def _record(entry: dict[str, Any]) -> None:
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


class ScriptedLLM(BaseLLM):
    """Answers in CrewAI's ReAct text format; optionally uses one tool first."""

    latency: float = 0.0
    """Seconds each call sleeps (a realistic model latency in benchmarks)."""
    tool: str | None = None
    """Sanitized name of a tool to call before answering."""
    tool_input: dict[str, Any] | None = None
    """Arguments for that tool."""
    answer: str | None = None
    """A fixed final answer (e.g. JSON for ``output_pydantic``) instead of the prompt hash."""
    fail: bool = False
    """Always raise, like a provider that is down."""
    converts_to: str | None = None
    """What it answers when CrewAI asks it to convert a text to JSON (``output_pydantic``)."""
    verdict: str | None = None
    """What it answers as a string guardrail's judge (JSON of ``LLMGuardrailResult``)."""

    def call(
        self,
        messages: Any,
        tools: Any = None,
        callbacks: Any = None,
        available_functions: Any = None,
        from_task: Any = None,
        from_agent: Any = None,
        response_model: Any = None,
    ) -> str:
        text = _text(messages)
        entry = where() | {"model": self.model, "started": time.time()}
        doomed = any(word in text for word in FAILING_WORDS)
        if self.fail or self.model in FAILING or doomed:
            _record({**entry, "phase": "failed"})
            raise RuntimeError(f"fake model {self.model} is down")
        _record({**entry, "phase": "begin"})
        if self.latency:
            time.sleep(self.latency)
        observed = _observation(messages)
        if self.converts_to is not None and _is_conversion(messages):
            out = self.converts_to
        elif self.verdict is not None and "Guardrail Agent" in text:
            out = f"Thought: I judged it\nFinal Answer: {self.verdict}"
        elif self.tool and observed is None:
            out = (
                "Thought: I need the tool first\n"
                f"Action: {self.tool}\nAction Input: {json.dumps(self.tool_input or {})}"
            )
        else:
            digest = hashlib.blake2b(text.encode(), digest_size=4).hexdigest()
            answer = self.answer or f"{self.model}:{digest}"
            if "verified" in text and self.answer is None:
                answer = f"verified {answer}"
            if observed:
                answer = f"{answer} (tool said {observed})"
            out = f"Thought: I now know the final answer\nFinal Answer: {answer}"
        if self.stream:  # as a provider's streaming API would: the answer in pieces
            for start in range(0, len(out), 16):
                self._emit_stream_chunk_event(
                    out[start : start + 16], from_task=from_task, from_agent=from_agent
                )
        _record({**entry, "phase": "end", "answer": out[-40:]})
        self._track_token_usage_internal(
            {
                "prompt_tokens": len(text) // 4,
                "completion_tokens": len(out) // 4,
                "total_tokens": len(text) // 4 + len(out) // 4,
            }
        )
        return out

    def supports_function_calling(self) -> bool:
        return False  # CrewAI's converter calls it without checking it exists

    def get_input_tokens_count(self, *args: Any, **kwargs: Any) -> int:
        return 0  # the base class estimates and logs a warning per call


def _is_conversion(messages: Any) -> bool:
    """CrewAI's converter sends the schema as system message, not an agent persona."""
    if isinstance(messages, str) or not messages:
        return False
    first = messages[0]
    return first.get("role") == "system" and "personal goal" not in str(first.get("content"))


def _observation(messages: Any) -> str | None:
    """The tool result CrewAI appended after our action, if any."""
    if isinstance(messages, str):
        return None
    for message in reversed(messages):
        content = str(message.get("content", ""))
        if message.get("role") == "assistant" and "\nObservation:" in content:
            return content.rsplit("\nObservation:", 1)[1].strip()[:80]
    return None
