"""A deterministic fake CrewAI model and the three-agent crew the tests and benchmarks share.

:class:`FakeLLM` plugs into CrewAI's custom-model seam (``BaseLLM``): no key, no network, the
same answer for the same prompt. By default its final answer is the model name and a hash of the
whole prompt, so equal outputs from a plain and a distributed kickoff prove every agent, on
whichever worker, saw the prompt plain CrewAI builds (task context, tool observations included).
Fields script the rest: a fixed ``answer``, a ``latency`` slept per call (a hosted model's),
a ``tool`` to call first, what to answer CrewAI's converter or guardrail judge, a ``fail`` mode;
a subclass overrides :meth:`FakeLLM.final_answer` to play a role (``examples/logistics_crew.py``)
or :meth:`FakeLLM.fails` to fail on a switch. ``observers`` see every call begin, end or fail,
in the calling thread: a test's call log, :class:`RedisCallCounter` counting calls across
worker processes, a benchmark's calls-in-flight gauge.

:func:`research_crew` is the crew they run: three agents and three tasks, the second reading the
first and the third reading both, so each task's prompt carries the answers before it.

Importing this module imports CrewAI (call ``nervenet_crewai.offline.go_offline()`` first, as
with any CrewAI import in a test or benchmark process); the core never imports it.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import redis
from crewai import Agent, Crew, Task
from crewai.llms.base_llm import BaseLLM
from pydantic import Field

from .runner import current_task

Phase = Literal["begin", "end", "failed"]


@dataclass(frozen=True)
class FakeCall:
    """One call of a :class:`FakeLLM`, as its observers see it."""

    model: str
    phase: Phase
    """``begin`` (before the latency), ``end`` (answered) or ``failed`` (raised)."""
    prompt: str
    """Every message's content, joined by newlines."""
    started: float
    """When the call began (``time.time()``), the same at its end."""
    answer: str | None = None
    """The whole reply (ReAct text), at ``end``."""


Observer = Callable[[FakeCall], None]


class FakeLLM(BaseLLM):
    """Answers in CrewAI's ReAct text format, deterministically; see the module's docstring."""

    llm_type: str = "nervenet-fake"
    latency: float = 0.0
    """Seconds each call sleeps, like a hosted model (so calls overlap and runs are in flight
    when a test kills a process)."""
    answer: str | None = None
    """A fixed final answer (JSON for ``output_pydantic``, say) instead of the prompt's hash."""
    tool: str | None = None
    """Sanitized name of a tool to call before answering (the answer then quotes its result)."""
    tool_input: dict[str, Any] | None = None
    """Arguments for that tool."""
    converts_to: str | None = None
    """What it answers CrewAI's converter (``output_pydantic`` from a prose answer)."""
    verdict: str | None = None
    """What it answers as a string guardrail's judge (JSON of ``LLMGuardrailResult``)."""
    fail: bool = False
    """Always raise, like a provider that is down."""
    digest_size: int = 4
    """Bytes of the prompt's hash in the default answer."""
    observers: list[Observer] = Field(default_factory=list)
    """Called with every :class:`FakeCall`, in the calling thread."""

    def call(
        self, messages: Any, *args: Any, from_task: Any = None, from_agent: Any = None, **_: Any
    ) -> str:
        prompt, started = prompt_text(messages), time.time()
        if self.fails(prompt):
            self._tell(FakeCall(self.model, "failed", prompt, started))
            raise RuntimeError(f"fake model {self.model} is down")
        self._tell(FakeCall(self.model, "begin", prompt, started))
        if self.latency:
            time.sleep(self.latency)
        out = self.reply(messages, prompt)
        if self.stream:  # as a provider's streaming API would: the answer in pieces
            for start in range(0, len(out), 16):
                self._emit_stream_chunk_event(
                    out[start : start + 16], from_task=from_task, from_agent=from_agent
                )
        self._tell(FakeCall(self.model, "end", prompt, started, out))
        self._track_token_usage_internal(
            {
                "prompt_tokens": len(prompt) // 4,
                "completion_tokens": len(out) // 4,
                "total_tokens": len(prompt) // 4 + len(out) // 4,
            }
        )
        return out

    def fails(self, prompt: str) -> bool:
        """Whether this call raises instead of answering (``fail``; a subclass adds switches)."""
        return self.fail

    def reply(self, messages: Any, prompt: str) -> str:
        """The whole ReAct reply: a conversion, a verdict, a tool call or a final answer."""
        observed = tool_observation(messages)
        if self.converts_to is not None and is_conversion(messages):
            return self.converts_to
        if self.verdict is not None and "Guardrail Agent" in prompt:
            return f"Thought: I judged it\nFinal Answer: {self.verdict}"
        if self.tool and observed is None:
            return (
                "Thought: I need the tool first\n"
                f"Action: {self.tool}\nAction Input: {json.dumps(self.tool_input or {})}"
            )
        answer = self.final_answer(prompt)
        if observed:
            answer = f"{answer} (tool said {observed})"
        return f"Thought: I now know the final answer\nFinal Answer: {answer}"

    def final_answer(self, prompt: str) -> str:
        """``answer``, or the model's name and a hash of the prompt (override to play a role)."""
        if self.answer is not None:
            return self.answer
        digest = hashlib.blake2b(prompt.encode(), digest_size=self.digest_size).hexdigest()
        return f"{self.model}:{digest}"

    def supports_function_calling(self) -> bool:
        return False  # CrewAI's converter calls it without checking it exists

    def get_input_tokens_count(self, *args: Any, **kwargs: Any) -> int:
        return 0  # the base class estimates and logs a warning per call

    def _tell(self, call: FakeCall) -> None:
        for observer in self.observers:
            observer(call)


class RedisCallCounter:
    """An observer counting answered calls in Redis, so a test or benchmark can count the calls
    its worker processes made (repeated agent work after a crash, say).

    ``key`` is the counter's key, or a function of the call returning it (``None``: do not
    count). ``on_workers_only`` skips calls outside a nervenet task (a clean run in the test's
    own process). A short-lived client per call: a fake LLM runs in CrewAI's threads, which a
    shared connection would have to be safe across.
    """

    def __init__(
        self,
        url: str,
        key: str | Callable[[FakeCall], str | None],
        *,
        on_workers_only: bool = False,
    ) -> None:
        self.url = url
        self.key = key
        self.on_workers_only = on_workers_only

    def __call__(self, call: FakeCall) -> None:
        if call.phase != "end" or (self.on_workers_only and current_task() is None):
            return
        key = self.key(call) if callable(self.key) else self.key
        if key is None:
            return
        client = redis.Redis.from_url(self.url)
        try:
            client.incr(key)
        finally:
            client.close()


def research_crew(llm: BaseLLM | Sequence[BaseLLM]) -> Crew:
    """Three agents, three tasks on ``{topic}``: research, analyse (reads the research), write a
    note (reads both). ``llm`` serves every agent, or one LLM per agent in that order."""
    llms = [llm] * 3 if isinstance(llm, BaseLLM) else list(llm)
    if len(llms) != 3:
        raise ValueError(f"research_crew takes one LLM or three, not {len(llms)}")
    researcher = Agent(role="Researcher", goal="Find facts on {topic}", backstory="b", llm=llms[0])
    analyst = Agent(role="Analyst", goal="Weigh the facts", backstory="b", llm=llms[1])
    writer = Agent(role="Writer", goal="Write about {topic}", backstory="b", llm=llms[2])
    research = Task(description="Research {topic}", expected_output="facts", agent=researcher)
    analyse = Task(
        description="Analyse the facts",
        expected_output="an analysis",
        agent=analyst,
        context=[research],
    )
    write = Task(
        description="Write a note on {topic}",
        expected_output="a note",
        agent=writer,
        context=[research, analyse],
    )
    return Crew(agents=[researcher, analyst, writer], tasks=[research, analyse, write])


def prompt_text(messages: Any) -> str:
    """The prompt as one text: a string as is, messages' contents joined by newlines."""
    if isinstance(messages, str):
        return messages
    return "\n".join(str(m.get("content", "")) for m in messages)


def is_conversion(messages: Any) -> bool:
    """Whether CrewAI's converter sent this: the schema as system message, no agent persona."""
    if isinstance(messages, str) or not messages:
        return False
    first = messages[0]
    return first.get("role") == "system" and "personal goal" not in str(first.get("content"))


def tool_observation(messages: Any) -> str | None:
    """The tool result CrewAI appended after the model's action, if any (80 characters)."""
    if isinstance(messages, str):
        return None
    for message in reversed(messages):
        content = str(message.get("content", ""))
        if message.get("role") == "assistant" and "\nObservation:" in content:
            return content.rsplit("\nObservation:", 1)[1].strip()[:80]
    return None
