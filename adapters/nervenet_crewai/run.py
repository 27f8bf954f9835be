"""One kickoff of a distributed crew: its own coordinator, its own crew, deterministic task ids.

The crew is the user's own, built by the factory, and runs CrewAI's own ``kickoff``/``akickoff``.
Before it starts, its agents get a :class:`~nervenet_crewai.remote_agent.RemoteExecution` and
its LLMs a :class:`~nervenet_crewai.remote_llm.RemoteLLM`, so the run's work goes to the pool.

Task ids are ``<name>:<run id>:t<task index>.<n>:<content hash>``: the hash covers the inputs,
the agent, the prompt and the context, and ``n`` counts identical calls before this one (a
guardrail retry with unchanged feedback). A retried or resumed kickoff with the same run id
therefore asks for the same ids, and the worker's result cache answers the tasks that finished
without running them again; only unfinished work runs.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
from crewai import Crew, CrewOutput, Task
from crewai.tasks.llm_guardrail import LLMGuardrail
from crewai.types.streaming import CrewStreamingOutput
from pydantic import BaseModel

from nervenet import Backoff, Pool
from nervenet.errors import ConfigurationError, DispatchError

from .app_errors import raise_as_plain
from .blueprint import Blueprint
from .flow_scope import current_method
from .layout import agents_by_place, is_hierarchical, llm_places, set_llm, task_index
from .remote_agent import RemoteExecution
from .remote_llm import RemoteLLM
from .replay_log import RunTaskLog
from .routes import CrewRoutes
from .runner import model_name
from .wire import AgentTaskCall, AgentTaskResult, CrewRef, LLMCall, LLMResult, Usage, digest

log = logging.getLogger("nervenet.crewai")

R = TypeVar("R", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class DispatchPolicy:
    """How a run dispatches its tasks (see :meth:`nervenet.Coordinator.dispatch`)."""

    retries: int = 2
    """Further attempts after a timeout (or, with ``retry_errors``, an agent's error); then the
    task is escalated and the kickoff raises ``TaskEscalated``. A worker that died mid-task is
    not an attempt: its task is redelivered by the pool."""
    retry_errors: bool = False
    """Also retry a task whose agent raised. Off, as plain CrewAI: it already retried the
    failing LLM call inside the agent (``max_retry_limit``), and the kickoff raises its error."""
    timeout: float | None = None
    """Seconds per attempt, or None: a dead worker's task is redelivered anyway, so a timeout
    is only needed to bound a hung one."""
    backoff: Backoff = field(default_factory=Backoff)
    """Pause between attempts."""
    wait_for_worker: bool = False
    """Wait for a worker to register instead of failing at once with ``NoLiveWorker``."""


class CrewRun:
    """A crew built for one kickoff, wired to dispatch its agents' work to the pool."""

    def __init__(
        self,
        name: str,
        blueprint: Blueprint,
        pool: Pool,
        policy: DispatchPolicy,
        inputs: dict[str, Any] | None,
        run_id: str,
        routes: CrewRoutes | None = None,
    ) -> None:
        self.name = name
        self.routes = routes or CrewRoutes(name)
        self.pool = pool
        self.policy = policy
        self.run_id = run_id
        # The durable run whose lease covers this kickoff: its own, or that of the flow run
        # whose method kicks it off.
        scope = current_method.get()
        self.leased_run = scope.run_id if scope is not None else run_id
        self.inputs = _json_values(inputs, "kickoff inputs")
        self.crew = blueprint.build(inputs)
        _refuse_unsupported(self.crew)
        # Recorded now: CrewAI's streaming kickoff turns crew.stream off while it runs.
        self.streams = bool(self.crew.stream)
        self.crew_key = self.crew.key
        if is_hierarchical(self.crew):
            # CrewAI would build the manager inside kickoff, out of our reach; built now (by
            # CrewAI's own method) it can get its stand-in like every other agent.
            self.crew._create_manager_agent()
        self.crew._task_output_handler = RunTaskLog()  # type: ignore[assignment]
        self.stand_ins = self._stand_in_llms()
        for place, agent in agents_by_place(self.crew).items():
            RemoteExecution(self, agent, place).install()
        self.coordinator = pool.coordinator(run_id)
        self._calls_seen: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stopped = False

    def stop(self) -> None:
        """Dispatch nothing more (the kickoff was cancelled, or its lease lost): the thread
        running CrewAI's kickoff cannot be interrupted, its next dispatch raises instead."""
        self._stopped = True

    # --- kickoff ----------------------------------------------------------------------------
    def kickoff(self) -> CrewOutput | CrewStreamingOutput:
        """CrewAI's synchronous kickoff (async tasks on threads); call from any thread but the
        pool's event loop. A ``stream=True`` crew returns CrewAI's streaming output."""
        return _crew_output(self.crew.kickoff(inputs=self.inputs))

    async def kickoff_streaming_async(self) -> CrewStreamingOutput:
        """CrewAI's ``kickoff_async`` of a ``stream=True`` crew: an async-iterable stream."""
        return _streaming_output(await self.crew.kickoff_async(inputs=self.inputs))

    async def akickoff(self) -> CrewOutput | CrewStreamingOutput:
        """CrewAI's native async kickoff: the whole run is coroutines on the running loop."""
        guardrails = [t for t in self.crew.tasks if _llm_guardrails(t)]
        if guardrails:
            raise ConfigurationError(
                "CrewAI runs string (LLM) guardrails synchronously inside its async kickoff, "
                "blocking the event loop the pool needs; use kickoff_async() for this crew"
            )
        return _crew_output(await self.crew.akickoff(inputs=self.inputs))

    # --- agent tasks ------------------------------------------------------------------------
    def agent_task_call(self, agent: str, task: Task, context: str | None) -> AgentTaskCall:
        call = AgentTaskCall(
            crew=self._crew_ref(),
            task_index=task_index(self.crew, task),
            agent=agent,
            description=task.description,
            expected_output=task.expected_output,
            context=context,
            call=0,
        )
        return call.model_copy(update={"call": self._count(call)})

    async def dispatch_agent_task(
        self,
        call: AgentTaskCall,
        task: Task,
        on_frame: Callable[[bytes], None] | None = None,
    ) -> AgentTaskResult:
        try:
            role = agents_by_place(self.crew)[call.agent].role
            task_type = self.routes.for_agent(role)
            step = f"t{call.task_index}"
            return await self._dispatch(task_type, step, call, AgentTaskResult, on_frame)
        except DispatchError as exc:
            label = task.name or task.description.strip().splitlines()[0][:60]
            raise_as_plain(
                exc,
                f"crew {self.name!r}, run {self.run_id!r}: task {call.task_index} ({label!r}) "
                f"executed by {call.agent}",
            )

    def add_usage(self, usage: dict[str, Usage]) -> None:
        for place, spent in usage.items():
            stand_in = self.stand_ins.get(place)
            if stand_in is None:
                log.warning("run %s: usage reported for unknown LLM %r", self.run_id, place)
                continue
            stand_in.add_usage(spent)

    # --- LLM calls CrewAI makes on the coordinator ------------------------------------------
    def call_llm_sync(
        self, llm: RemoteLLM, messages: Any, response_model: type[BaseModel] | None
    ) -> Any:
        return self.pool.call_sync(lambda: self._call_llm(llm, messages, response_model))

    async def call_llm(
        self, llm: RemoteLLM, messages: Any, response_model: type[BaseModel] | None
    ) -> Any:
        return await self.pool.on_home(lambda: self._call_llm(llm, messages, response_model))

    async def _call_llm(
        self, llm: RemoteLLM, messages: Any, response_model: type[BaseModel] | None
    ) -> Any:
        call = LLMCall(
            crew=self._crew_ref(),
            llm=llm.place,
            messages=_json_values(messages, "LLM messages"),
            response_model=model_name(response_model) if response_model else None,
            call=0,
        )
        call = call.model_copy(update={"call": self._count(call)})
        try:
            result = await self._dispatch(self.routes.for_llm(llm.model), "llm", call, LLMResult)
        except DispatchError as exc:
            raise_as_plain(exc, f"crew {self.name!r}, run {self.run_id!r}: LLM at {llm.place}")
        llm.add_usage(result.usage)
        if result.structured and response_model is not None:
            return response_model.model_validate_json(result.output)
        return result.output

    # --- plumbing ---------------------------------------------------------------------------
    async def _dispatch(
        self,
        task_type: str,
        step: str,
        call: BaseModel,
        answer: type[R],
        on_frame: Callable[[bytes], None] | None = None,
    ) -> R:
        if self._stopped:
            raise asyncio.CancelledError(f"run {self.run_id!r} was stopped")
        # A durable kickoff whose process missed its lease renewals (stopped, cut off) may
        # have been taken over: stop here rather than race the new owner.
        await self.pool.workflows.check_owned(self.leased_run)
        policy = self.policy
        number = getattr(call, "call", 0)
        raw = await self.coordinator.dispatch(
            task_type,
            call.model_dump_json().encode(),
            task_id=f"{self.name}:{_short(self.run_id)}:{step}.{number}:{digest(call)}",
            timeout=policy.timeout,
            retries=policy.retries,
            escalate_errors=policy.retry_errors,
            backoff=policy.backoff,
            wait_for_worker=policy.wait_for_worker,
            on_frame=on_frame,
            queue=self.routes.queue_of(task_type),
        )
        return answer.model_validate_json(raw)

    def _count(self, call: BaseModel) -> int:
        """How many calls equal to ``call`` this run made before (thread-safe: async tasks of a
        sync kickoff run on threads)."""
        key = digest(call)
        with self._lock:
            seen = self._calls_seen.get(key, 0)
            self._calls_seen[key] = seen + 1
        return seen

    def _crew_ref(self) -> CrewRef:
        return CrewRef(
            crew_key=self.crew_key,
            factory_inputs=self.inputs,
            # After before_kickoff callbacks: what CrewAI interpolated on this side.
            inputs=_json_values(self.crew._inputs, "inputs after before_kickoff callbacks"),
        )

    def _stand_in_llms(self) -> dict[str, RemoteLLM]:
        """Replace every LLM object of the crew by one RemoteLLM each (shared stays shared)."""
        by_object: dict[int, RemoteLLM] = {}
        for place, llm in llm_places(self.crew):
            stand_in = by_object.get(id(llm))
            if stand_in is None:
                stand_in = by_object[id(llm)] = RemoteLLM.standing_for(llm, place, self)
            set_llm(self.crew, place, stand_in)
        for task in self.crew.tasks:
            for guardrail in _llm_guardrails(task):
                stand_in = by_object.get(id(guardrail.llm))
                if stand_in is not None:
                    guardrail.llm = stand_in
        return {stand_in.place: stand_in for stand_in in by_object.values()}


def _llm_guardrails(task: Task) -> list[LLMGuardrail]:
    found = [task._guardrail, *(task._guardrails or [])]
    return [g for g in found if isinstance(g, LLMGuardrail)]


def _refuse_unsupported(crew: Crew) -> None:
    if crew.planning:
        raise ConfigurationError(
            "planning=True crews cannot be distributed yet: CrewAI runs its planner agent "
            "inside kickoff, on the coordinator; plan in a first task of the crew instead"
        )
    asking = [task_index(crew, t) for t in crew.tasks if t.human_input]
    if asking:
        raise ConfigurationError(
            f"human_input=True tasks ({', '.join(map(str, asking))}) cannot be distributed: "
            "CrewAI would prompt for the input on a worker's terminal; ask in a Flow method "
            "instead, or kick this crew off plainly"
        )


def _crew_output(output: Any) -> CrewOutput | CrewStreamingOutput:
    if not isinstance(output, CrewOutput | CrewStreamingOutput):
        raise TypeError(f"kickoff returned {type(output).__name__}, expected CrewOutput")
    return output


def _streaming_output(output: Any) -> CrewStreamingOutput:
    if not isinstance(output, CrewStreamingOutput):
        raise TypeError(f"kickoff returned {type(output).__name__}, expected a stream")
    return output


def _json_values(value: Any, what: str) -> Any:
    """``value`` if it is made of JSON values; a clear error otherwise (nothing is pickled)."""
    if value is None:
        return None
    try:
        orjson.dumps(value)
    except TypeError as exc:
        raise ConfigurationError(
            f"{what} must be JSON values (str, numbers, lists, dicts) to reach workers: {exc}"
        ) from None
    return value


def _short(run_id: str) -> str:
    """Keep task ids within the envelope's 256-byte limit whatever the run id."""
    if len(run_id) <= 120:
        return run_id
    return hashlib.blake2b(run_id.encode(), digest_size=16).hexdigest()


__all__ = ["CrewRun", "DispatchPolicy"]
