"""The JSON records a crew run sends to workers and gets back. Nothing here is ever pickled.

A worker never receives an agent, a task, an LLM or a tool: it receives the crew's registered
name, the kickoff inputs and *names* of the parts to use (``agents.1``, ``tasks.0.agent.llm``),
rebuilds the crew from the same factory, and runs the named part. Payloads are parsed with
pydantic, so a malformed one fails validation instead of doing anything.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

#: Field names of CrewAI's ``UsageMetrics`` that are summed, in one fixed order.
USAGE_FIELDS = (
    "total_tokens",
    "prompt_tokens",
    "completion_tokens",
    "successful_requests",
    "cached_prompt_tokens",
    "reasoning_tokens",
    "cache_creation_tokens",
)

Usage = dict[str, int]
"""Token counters of one LLM, keyed by :data:`USAGE_FIELDS` (zero counters may be left out)."""


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CrewRef(_Record):
    """Which crew to rebuild on the worker, and from what."""

    crew_key: str
    """CrewAI's ``Crew.key`` of the coordinator's crew (a hash of agent and task definitions
    before interpolation); the worker refuses to run if its own build differs (version skew)."""
    factory_inputs: dict[str, Any] | None
    """The kickoff's inputs as given, for a factory that takes ``inputs``."""
    inputs: dict[str, Any] | None
    """The inputs CrewAI interpolated (after ``before_kickoff`` callbacks); None if the kickoff
    had none (CrewAI then interpolates nothing)."""


class AgentTaskCall(_Record):
    """Coordinator -> worker: run one agent's execution of one task (``<name>/task``)."""

    crew: CrewRef
    """The crew to rebuild."""
    task_index: int = Field(ge=0)
    """Position of the task in ``crew.tasks``."""
    agent: str
    """Which agent executes it: ``agents.<i>``, ``manager_agent`` or ``tasks.<j>.agent``."""
    description: str
    """The task description as the coordinator will prompt it (after interpolation and any
    planning text CrewAI appended), so the worker's prompt is the coordinator's."""
    expected_output: str
    """The task's expected output, likewise."""
    context: str | None
    """Outputs of context tasks as CrewAI aggregated them, or a guardrail's feedback."""
    call: int = Field(ge=0)
    """How many identical calls this run made before (guardrail retries with equal feedback),
    so each gets its own task id and result."""


class AgentTaskResult(_Record):
    """Worker -> coordinator: what ``Agent.execute_task`` produced on the worker."""

    output: str
    """The agent's final answer, or the JSON of the structured model it returned."""
    structured: bool = False
    """``output`` is the JSON of the task's response model rather than free text."""
    usage: dict[str, Usage] = Field(default_factory=dict)
    """Tokens spent, per LLM (by the name of its first place in the crew); includes the LLM
    calls of coworkers a manager delegated to."""
    messages: list[dict[str, Any]] = Field(default_factory=list)
    """The agent's conversation (``agent.last_messages``), for ``TaskOutput.messages``."""
    tool_failures: list[dict[str, Any]] = Field(default_factory=list)
    """CrewAI ``ToolFailureRecord``\\ s of this execution, for ``TaskOutput.tool_failures``."""


class LLMCall(_Record):
    """Coordinator -> worker: one call of one of the crew's LLMs (``<name>/llm``).

    The coordinator holds no live LLM; what CrewAI itself asks an LLM there (converting a
    non-JSON answer for ``output_pydantic``, string guardrails) comes through here.
    """

    crew: CrewRef
    """The crew to rebuild."""
    llm: str
    """Which LLM: its place in the crew, e.g. ``agents.0.llm`` or ``manager_llm``."""
    messages: str | list[dict[str, Any]]
    """The messages, as CrewAI passed them."""
    response_model: str | None = None
    """``module:qualname`` of the requested response model; the worker only accepts models the
    crew itself declares (task outputs, CrewAI's guardrail result)."""
    call: int = Field(ge=0)
    """How many identical calls this run made before."""


class LLMResult(_Record):
    """Worker -> coordinator: the LLM's answer."""

    output: Any
    """Text, or the JSON of a structured response (``structured``)."""
    structured: bool = False
    """``output`` is the JSON of the requested response model."""
    usage: Usage = Field(default_factory=dict)
    """Tokens this call spent."""


class StreamChunkFrame(_Record):
    """Worker -> coordinator, while an agent task of a ``stream=True`` crew runs: one chunk an
    LLM streamed (a nervenet frame), re-emitted on the coordinator as CrewAI's own event."""

    chunk: str
    """The text of the chunk."""
    tool_call: dict[str, Any] | None = None
    """A streamed tool call (CrewAI's ``ToolCall`` as JSON), if the chunk is one."""
    call_type: str | None = None
    """``llm_call`` or ``tool_call`` (CrewAI's ``LLMCallType``)."""
    response_id: str | None = None
    """The provider's response id: chunks of one answer share it."""
    call_id: str
    """CrewAI's id of the LLM call the chunk belongs to."""


def digest(record: BaseModel) -> str:
    """Stable content hash of a record, for deterministic task ids (key order does not count:
    a resumed kickoff may build its inputs dict in another order)."""
    canonical = orjson.dumps(record.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(canonical, digest_size=8).hexdigest()
