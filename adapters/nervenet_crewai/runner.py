"""Worker side: run one agent's execution of one task, or one LLM call, of a distributed crew.

Each dispatched task rebuilds the crew from the factory (agents never travel), runs CrewAI's own
``Agent.execute_task`` — the agent loop with every LLM and tool call, and the coworkers a manager
delegates to — and reports back text, token usage, the conversation and tool failures as JSON.

``execute_task`` is synchronous and starts event loops of its own (``asyncio.run``), so it runs
in a thread pool next to the worker's loop, never on it.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from typing import Any, TypeVar

import orjson
from crewai import Crew
from crewai.crews.utils import enable_agent_streaming
from crewai.events.base_events import BaseEvent
from crewai.events.event_bus import crewai_event_bus
from crewai.events.types.llm_events import LLMStreamChunkEvent
from crewai.tasks.llm_guardrail import LLMGuardrailResult
from crewai.tools.tool_failure import tool_failure_collector
from pydantic import BaseModel

from nervenet import TaskContext
from nervenet.errors import ConfigurationError
from nervenet.handlers import Handler

from .blueprint import Blueprint
from .layout import distinct_llms, resolve_agent, snapshot, spent_since
from .wire import AgentTaskCall, AgentTaskResult, LLMCall, LLMResult, StreamChunkFrame

T = TypeVar("T")

_current: ContextVar[TaskContext | None] = ContextVar("nervenet_crewai_task", default=None)
_streaming: ContextVar[bool] = ContextVar("nervenet_crewai_streaming", default=False)
_relay_lock = threading.Lock()
_relaying = False


def current_task() -> TaskContext | None:
    """The nervenet task being run, when called from a worker's agent, tool or LLM (CrewAI
    copies context variables into the threads it starts); None on a coordinator."""
    return _current.get()


class CrewRunner:
    """Serves ``<name>/task`` and ``<name>/llm`` for one registered crew."""

    def __init__(self, name: str, blueprint: Blueprint, *, threads: int | None) -> None:
        self.name = name
        self.blueprint = blueprint
        self.threads = threads
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def handlers(self) -> Mapping[str, Handler]:
        return {f"{self.name}/task": self.run_task, f"{self.name}/llm": self.run_llm}

    async def run_task(self, payload: bytes, ctx: TaskContext) -> bytes:
        call = AgentTaskCall.model_validate_json(payload)
        result = await self._in_thread(ctx, execute_agent_task, self.blueprint, call)
        return result.model_dump_json().encode()

    async def run_llm(self, payload: bytes, ctx: TaskContext) -> bytes:
        call = LLMCall.model_validate_json(payload)
        result = await self._in_thread(ctx, call_llm, self.blueprint, call)
        return result.model_dump_json().encode()

    async def _in_thread(
        self, ctx: TaskContext, fn: Callable[[Blueprint, Any], T], *args: Any
    ) -> T:
        context = contextvars.copy_context()  # each run gets CrewAI's context vars fresh
        context.run(_current.set, ctx)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool(), context.run, fn, *args)

    def _pool(self) -> ThreadPoolExecutor | None:
        if self.threads is None:
            return None  # the loop's default executor, sized by the worker to its concurrency
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=self.threads, thread_name_prefix=f"nervenet-crew-{self.name}"
                )
            return self._executor


def execute_agent_task(blueprint: Blueprint, call: AgentTaskCall) -> AgentTaskResult:
    crew = blueprint.build_for_worker(call.crew)
    task = crew.tasks[call.task_index]
    agent = resolve_agent(crew, call.agent)
    # What Task._execute_core sets up on the coordinator before it calls the agent.
    task.description = call.description
    task.expected_output = call.expected_output
    task.agent = agent
    task.prompt_context = call.context
    tools = crew._prepare_tools(agent, task, task.tools or agent.tools or [])
    if crew.stream:
        # What CrewAI's streaming kickoff does to the agents; the chunks go back as frames.
        enable_agent_streaming([agent])
        _relay_stream_chunks()
        _streaming.set(True)  # this thread's context only: concurrent tasks stay apart
    llms = distinct_llms(crew)
    before = snapshot(llms)
    with tool_failure_collector() as failures:
        result: Any = agent.execute_task(task=task, context=call.context, tools=tools)
    structured = isinstance(result, BaseModel)
    return AgentTaskResult(
        output=result.model_dump_json() if structured else str(result),
        structured=structured,
        usage=spent_since(before, llms),
        messages=_plain(getattr(agent, "last_messages", [])),
        tool_failures=[record.model_dump(mode="json") for record in failures],
    )


def _relay_stream_chunks() -> None:
    """Register (once per process) the handler sending streamed chunks to the coordinator.

    CrewAI emits stream chunk events synchronously in the thread of the LLM call, so the
    handler sees that task's context variables: each chunk goes to its own task's coordinator,
    never to another kickoff's.
    """
    global _relaying
    with _relay_lock:
        if _relaying:
            return
        crewai_event_bus.register_handler(LLMStreamChunkEvent, _send_chunk)
        _relaying = True


def _send_chunk(source: Any, event: BaseEvent) -> None:
    task = _current.get()
    if task is None or not _streaming.get() or not isinstance(event, LLMStreamChunkEvent):
        return
    frame = StreamChunkFrame(
        chunk=event.chunk,
        tool_call=event.tool_call.model_dump(mode="json") if event.tool_call else None,
        call_type=event.call_type.value if event.call_type else None,
        response_id=event.response_id,
        call_id=event.call_id,
    )
    task.emit(frame.model_dump_json().encode())


def call_llm(blueprint: Blueprint, call: LLMCall) -> LLMResult:
    crew = blueprint.build_for_worker(call.crew)
    llms = distinct_llms(crew)
    llm = llms.get(call.llm)
    if llm is None:
        raise ConfigurationError(f"the crew built on this worker has no LLM at {call.llm!r}")
    response_model = _declared_model(crew, call.response_model)
    before = snapshot({call.llm: llm})
    answer: Any = llm.call(call.messages, response_model=response_model)  # type: ignore[arg-type]
    structured = isinstance(answer, BaseModel)
    return LLMResult(
        output=answer.model_dump_json() if structured else answer,
        structured=structured,
        usage=spent_since(before, {call.llm: llm}).get(call.llm, {}),
    )


def model_name(model: type[BaseModel]) -> str:
    return f"{model.__module__}:{model.__qualname__}"


def declared_models(crew: Crew) -> dict[str, type[BaseModel]]:
    """Response models a coordinator may ask a worker's LLM for: never a name from a payload
    alone, only classes the crew itself (or CrewAI's guardrail) already uses."""
    models: list[Any] = [LLMGuardrailResult]
    for task in crew.tasks:
        models += [task.output_pydantic, task.output_json, task.response_model]
    return {model_name(m): m for m in models if isinstance(m, type) and issubclass(m, BaseModel)}


def _declared_model(crew: Crew, name: str | None) -> type[BaseModel] | None:
    if name is None:
        return None
    model = declared_models(crew).get(name)
    if model is None:
        raise ConfigurationError(f"response model {name!r} is not declared by the crew")
    return model


def _plain(messages: Any) -> list[dict[str, Any]]:
    """The conversation as JSON values (tool-call entries may hold SDK objects)."""
    return list(orjson.loads(orjson.dumps(list(messages or []), default=str)))
