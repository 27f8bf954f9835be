"""Coordinator side: an agent whose task executions run on the pool.

The seam is ``Agent.execute_task`` (and its async twin): it is where CrewAI's process logic —
``Task._execute_core`` for sequential, hierarchical and ``async_execution`` tasks, and the
guardrail retry loop — hands one task to one agent, and it takes only plain values (the task,
a context string, tools) and returns the answer. Everything around it stays CrewAI's own code on
the coordinator: task order, context aggregation, guardrails, callbacks, output conversion,
``TaskOutput`` and ``CrewOutput``. Everything inside it — the agent loop, each LLM and tool call,
the coworkers a manager delegates to — runs on a worker.

The stand-in is installed on the agent *instance* (never on the class), so agents outside a
distributed run, including the worker's own, are untouched.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from crewai import Task
from crewai.agents.agent_builder.base_agent import BaseAgent
from crewai.events.event_bus import crewai_event_bus
from crewai.events.types.llm_events import LLMCallType, LLMStreamChunkEvent, ToolCall
from crewai.tools.tool_failure import ToolFailureRecord, active_tool_failures

from .layout import task_index
from .wire import AgentTaskResult, StreamChunkFrame

if TYPE_CHECKING:
    from .run import CrewRun


def _no_executor(*args: Any, **kwargs: Any) -> None:
    return None


class RemoteExecution:
    """``execute_task``/``aexecute_task`` of one agent of one crew run."""

    def __init__(self, run: CrewRun, agent: BaseAgent, place: str) -> None:
        self.run = run
        self.agent = agent
        self.place = place

    def install(self) -> None:
        # object.__setattr__: pydantic's __setattr__ refuses names that are not fields; an
        # instance attribute shadows the method for this one agent object.
        object.__setattr__(self.agent, "execute_task", self.execute_task)
        object.__setattr__(self.agent, "aexecute_task", self.aexecute_task)
        # The agent loop never runs here, so it needs no executor; kickoff would build one per
        # agent (a Flow whose state class pydantic compiles: ~12 ms of CPU each).
        object.__setattr__(self.agent, "create_agent_executor", _no_executor)

    def execute_task(
        self, task: Task, context: str | None = None, tools: list[Any] | None = None
    ) -> Any:
        call = self.run.agent_task_call(self.place, task, context)
        relay = self._chunk_relay(task)
        result = self.run.pool.call_sync(lambda: self.run.dispatch_agent_task(call, task, relay))
        return self._settle(task, result)

    async def aexecute_task(
        self, task: Task, context: str | None = None, tools: list[Any] | None = None
    ) -> Any:
        call = self.run.agent_task_call(self.place, task, context)
        relay = self._chunk_relay(task)
        result = await self.run.pool.on_home(
            lambda: self.run.dispatch_agent_task(call, task, relay)
        )
        return self._settle(task, result)

    def _chunk_relay(self, task: Task) -> Callable[[bytes], None] | None:
        """For a ``stream=True`` crew: re-emit each chunk the worker streamed as CrewAI's own
        event, in the context of this execution (frames arrive on the pool's loop). CrewAI's
        stream handler keeps only the events of its own kickoff's context, so concurrent
        kickoffs never see each other's chunks."""
        if not self.run.streams:
            return None
        context = contextvars.copy_context()
        llm = getattr(self.agent, "llm", None)

        def relay(frame: bytes) -> None:
            chunk = StreamChunkFrame.model_validate_json(frame)
            event = LLMStreamChunkEvent(
                chunk=chunk.chunk,
                tool_call=ToolCall.model_validate(chunk.tool_call) if chunk.tool_call else None,
                call_type=LLMCallType(chunk.call_type) if chunk.call_type else None,
                response_id=chunk.response_id,
                call_id=chunk.call_id,
                from_task=task,
                from_agent=self.agent,
            )
            context.run(crewai_event_bus.emit, llm, event)

        return relay

    def _settle(self, task: Task, result: AgentTaskResult) -> Any:
        """Leave on the coordinator what the execution would have left here, then answer."""
        self.run.add_usage(result.usage)
        # Task._execute_core reads these right after execute_task returns.
        if "_last_messages" in getattr(self.agent, "__private_attributes__", {}):
            setattr(self.agent, "_last_messages", list(result.messages))  # noqa: B010
        collected = active_tool_failures()
        if collected is not None:
            collected.extend(ToolFailureRecord.model_validate(r) for r in result.tool_failures)
        if result.structured:
            model = task.response_model or task.output_pydantic or task.output_json
            if model is None:
                raise RuntimeError(
                    f"task {task_index(self.run.crew, task)} got a structured answer but "
                    "declares no response model on the coordinator"
                )
            return model.model_validate_json(result.output)
        return result.output
