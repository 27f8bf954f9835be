"""CrewAI Flows on a nervenet pool: every flow run durable, its crews' agent work on workers.

::

    from nervenet_crewai import distribute_crew, distribute_flow

    research = distribute_crew(make_research_crew, pool=pool, name="research")

    class ReportFlow(Flow[Report]):
        @start()
        def gather(self):
            return research.kickoff(inputs={"topic": self.state.topic}).raw   # on the pool
        @router(gather)
        def check(self): ...

    flows = distribute_flow(ReportFlow, pool=pool, name="report")
    output = await flows.kickoff_async(inputs={"topic": "tides"})      # as Flow.kickoff_async
    run = await flows.asubmit(inputs=..., run_id="report-7")            # or: start, await later
    output, state = await run.result(), await run.state()               # from any process

Each run builds a fresh instance of the flow class and runs **CrewAI's own** engine on it —
``@start``, ``@listen``, ``@router``, ``or_``/``and_``, loops, typed or dict state, ``@persist``
— in a coordinator process of the pool, as a durable run (:mod:`nervenet.workflows`): leased,
taken over by another process with the flow on the pool when its process dies. The method
journal (:mod:`nervenet_crewai.flow_journal`) answers the methods that had finished, so the run
goes on from the method that was in flight. A ``DistributedCrew`` kicked off inside a method
gets a run id derived from the method (:mod:`nervenet_crewai.flow_scope`): its finished agent
tasks are answered from the workers' result cache too.

What runs where: flow methods run on the coordinator (CrewAI runs sync ones on a thread); the
agent work of the distributed crews they kick off runs on workers. A method that does heavy
work itself should hand it to a crew or to a nervenet task type of its own.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

import orjson
from crewai.flow.flow import Flow
from pydantic import BaseModel, ConfigDict, ValidationError

from nervenet import Pool, RunHandle
from nervenet.errors import ConfigurationError
from nervenet.handlers import Handler, validate_task_type

from ._compat import _iter_condition_events
from .durable import MAX_OUTAGES, TRANSIENT_REDIS_ERRORS
from .flow_journal import JournalEntry, MethodJournal, ValueCodec
from .flow_scope import MethodScope, current_method

log = logging.getLogger("nervenet.crewai.flow")

F = TypeVar("F", bound=Flow[Any])


class FlowRecord(BaseModel):
    """What a durable flow run stores to be run again elsewhere (untrusted JSON on read)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    inputs: dict[str, Any] | None
    """``kickoff`` inputs as given (without ``id``)."""
    state_id: str
    """The state's ``id``, pinned so a takeover (and ``@persist``) keeps it."""


class FlowResult(BaseModel):
    """A finished flow run (untrusted JSON on read)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    output: dict[str, Any]
    """What ``kickoff`` returned, as :class:`~nervenet_crewai.flow_journal.ValueCodec` stores."""
    state: dict[str, Any]
    """The final state, as JSON values."""


class FlowRun(Generic[F]):
    """A durable flow run; await its output and final state from any process with the flow."""

    def __init__(self, flows: DistributedFlow[F], handle: RunHandle) -> None:
        self._flows = flows
        self._handle = handle

    @property
    def run_id(self) -> str:
        return self._handle.run_id

    async def result(self, timeout: float | None = None) -> Any:
        """What ``Flow.kickoff_async`` returned (the last method's value), or the run's error
        (as :class:`nervenet.WorkflowFailed` when it ended in another process)."""
        return self._flows.codec.decode((await self._finished(timeout)).output)

    async def state(self, timeout: float | None = None) -> Any:
        """The final state, as ``flow.state`` (the flow's state model, or a dict)."""
        stored = (await self._finished(timeout)).state
        flow = self._flows.flow_class()
        flow._restore_state(stored)  # CrewAI's own restore: validates a typed state
        return flow.state

    async def _finished(self, timeout: float | None) -> FlowResult:
        pool = self._flows.require_pool()
        raw = await pool.on_home(lambda: self._handle.result(timeout))
        return FlowResult.model_validate_json(raw)


class DistributedFlow(Generic[F]):
    """A flow class registered under a name; its runs are durable runs of the pool."""

    def __init__(
        self,
        flow_class: type[F],
        *,
        name: str,
        pool: Pool | None = None,
        models: Iterable[type[BaseModel]] = (),
        strict_routes: bool = True,
        threads: int = 256,
    ) -> None:
        if not (isinstance(flow_class, type) and issubclass(flow_class, Flow)):
            raise ConfigurationError(
                f"distribute_flow() takes a crewai Flow subclass, not {flow_class!r}"
            )
        validate_task_type(f"{name}/flow")  # the same naming rules as task types
        self.flow_class = flow_class
        self.name = name
        self.strict_routes = strict_routes
        self.threads = threads
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        sample = flow_class()  # fails here, not in a coordinator, if the class cannot be built
        _refuse_unsupported(sample, name)
        # The declared model, and the subclass CrewAI derives from it when it lacks an id.
        declared_state = getattr(flow_class, "_initial_state_t", None)
        state_models = [declared_state, type(sample.state)]
        self.codec = ValueCodec.declared(sample._methods.values(), [*models, *state_models])
        self._pool: Pool | None = None
        self.pool = pool

    @property
    def pool(self) -> Pool | None:
        """The pool runs are leased on; a process with one resumes runs a dead one left."""
        return self._pool

    @pool.setter
    def pool(self, pool: Pool | None) -> None:
        self._pool = pool
        if pool is not None:
            pool.workflows.register(self.name, self._resume)

    def require_pool(self) -> Pool:
        if self._pool is None:
            raise ConfigurationError(
                f"flow {self.name!r} has no pool to run on; pass "
                "distribute_flow(..., pool=Pool.from_url(...))"
            )
        return self._pool

    def method_threads(self) -> ThreadPoolExecutor:
        """Threads for sync methods. Not asyncio's default executor, as plain CrewAI uses: its
        few threads (``min(32, CPUs + 4)``) would let only that many runs of a process be in a
        sync method at once, e.g. waiting for a crew."""
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=self.threads, thread_name_prefix=f"nervenet-flow-{self.name}"
                )
            return self._executor

    def close(self) -> None:
        """Let the method threads go."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False)

    def nervenet_pool(self) -> Pool:
        """The pool whose flow runs ``nervenet serve app:flows`` coordinates."""
        return self.require_pool()

    def nervenet_handlers(self) -> Mapping[str, Handler]:
        """Flows serve no task type themselves (their crews do: serve those)."""
        return {}

    # --- runs -------------------------------------------------------------------------------
    async def asubmit(
        self,
        inputs: dict[str, Any] | None = None,
        *,
        run_id: str | None = None,
        run_here: bool = True,
    ) -> FlowRun[F]:
        """Start a durable run leased to this process (``run_here=False``: queue it for the
        flow's coordinator processes, ``nervenet serve app:flows``)."""
        pool = self.require_pool()
        given = dict(inputs or {})
        state_id = str(given.pop("id", None) or uuid.uuid4())
        record = FlowRecord(inputs=given or None, state_id=state_id)
        run_id = run_id or uuid.uuid4().hex
        payload = record.model_dump_json().encode()

        async def start() -> RunHandle:
            if run_here:
                return await pool.workflows.start(
                    self.name, run_id, payload, lambda: self._run(run_id, record)
                )
            return await pool.workflows.enqueue(self.name, run_id, payload)

        return FlowRun(self, await pool.on_home(start))

    async def kickoff_async(
        self, inputs: dict[str, Any] | None = None, *, run_id: str | None = None
    ) -> Any:
        """Like ``Flow.kickoff_async``: the last method's return value. The run is durable:
        if this process dies, another finishes it (await it with ``handle(run_id)``)."""
        run = await self.asubmit(inputs, run_id=run_id)
        return await run.result()

    def kickoff(self, inputs: dict[str, Any] | None = None, *, run_id: str | None = None) -> Any:
        """Like ``Flow.kickoff``, from synchronous code."""
        return self.require_pool().call_sync(lambda: self.kickoff_async(inputs, run_id=run_id))

    def handle(self, run_id: str) -> FlowRun[F]:
        """The run ``run_id``, submitted from any process, to await here."""
        return FlowRun(self, RunHandle(self.require_pool().workflows, run_id))

    # --- the run itself ---------------------------------------------------------------------
    async def _resume(self, run_id: str, payload: bytes) -> bytes:
        try:
            record = FlowRecord.model_validate_json(payload)
        except ValidationError as exc:
            message = f"flow {self.name!r}, run {run_id!r}: bad record: {exc}"
            raise ConfigurationError(message) from None
        return await self._run(run_id, record)

    async def _run(self, run_id: str, record: FlowRecord) -> bytes:
        """The run to its end. A Redis outage fails whatever method was in flight; the flow is
        then run again on a fresh instance, its finished methods answered from the journal."""
        outages = 0
        while True:
            try:
                return await self._run_once(run_id, record)
            except TRANSIENT_REDIS_ERRORS as exc:
                outages += 1
                if outages > MAX_OUTAGES:
                    raise
                log.warning("flow run %s paused by a Redis outage (%s); going on", run_id, exc)
                await asyncio.sleep(min(0.1 * 2**outages, 5.0))

    async def _run_once(self, run_id: str, record: FlowRecord) -> bytes:
        # Built on a thread: a Flow instance costs milliseconds of CPU (pydantic, its memory,
        # events), and a process taking over hundreds of runs must keep its loop renewing.
        loop = asyncio.get_running_loop()
        flow = await loop.run_in_executor(self.method_threads(), self.flow_class)
        journal = MethodJournal(self.require_pool(), run_id)
        replaying = not await journal.is_empty()
        _Journaled(self, flow, journal, run_id, replaying=replaying).install()
        output = await flow.kickoff_async(inputs={**(record.inputs or {}), "id": record.state_id})
        where = f"flow {self.name!r} (run {run_id!r})"
        result = FlowResult(
            output=self.codec.encode(output, where), state=_state_of(flow, self.name, "the end")
        )
        return result.model_dump_json().encode()


class _Journaled:
    """Every method of one flow instance, answered from the journal when it had finished."""

    def __init__(
        self,
        flows: DistributedFlow[Any],
        flow: Flow[Any],
        journal: MethodJournal,
        run_id: str,
        *,
        replaying: bool,
    ) -> None:
        self.flows = flows
        self.flow = flow
        self.journal = journal
        self.run_id = run_id
        self.replaying = replaying
        """Whether the journal holds entries (a run taken over or run again): else no method
        can be answered from it, and asking would cost a round trip per method."""
        self.calls: dict[str, int] = {}
        definition = flow._definition
        self.routers = {n for n, m in definition.methods.items() if m.router}
        self.labels = set(definition.methods)
        for method in definition.methods.values():
            for condition in (method.listen, method.start):
                if condition is not None and not isinstance(condition, bool):
                    self.labels.update(_iter_condition_events(condition))

    def install(self) -> None:
        methods = self.flow._methods
        for name, method in list(methods.items()):
            methods[name] = self._wrap(str(name), method)

    def _wrap(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        # functools.wraps keeps the signature CrewAI inspects (does the listener take the
        # trigger's output? does the start method take a trigger payload?).
        @functools.wraps(method)
        async def journaled(*args: Any, **kwargs: Any) -> Any:
            call = self.calls.get(name, 0)
            self.calls[name] = call + 1
            entry = await self.journal.get(name, call) if self.replaying else None
            if entry is not None:
                self._apply(entry)
                return self.flows.codec.decode(entry.result)
            before = _state_of(self.flow, self.flows.name, name)
            token = current_method.set(MethodScope(self.run_id, name, call))
            try:
                if asyncio.iscoroutinefunction(method):
                    result = await method(*args, **kwargs)
                else:  # as CrewAI runs a sync method: on a thread, in a copy of the context
                    context = contextvars.copy_context()
                    call_method = functools.partial(context.run, method, *args, **kwargs)
                    loop = asyncio.get_running_loop()
                    result = await loop.run_in_executor(self.flows.method_threads(), call_method)
                if asyncio.iscoroutine(result):
                    result = await result
            finally:
                current_method.reset(token)
            where = f"flow {self.flows.name!r}, method {name!r}"
            after = _state_of(self.flow, self.flows.name, name)
            await self.journal.put(
                name,
                call,
                JournalEntry(
                    result=self.flows.codec.encode(result, where),
                    changed={k: v for k, v in after.items() if before.get(k, _MISSING) != v},
                    removed=[k for k in before if k not in after],
                ),
            )
            if name in self.routers and self.flows.strict_routes:
                self._check_route(name, result)
            return result

        return journaled

    def _apply(self, entry: JournalEntry) -> None:
        state = _state_of(self.flow, self.flows.name, "a journal replay")
        for key in entry.removed:
            state.pop(key, None)
        state.update(entry.changed)
        self.flow._restore_state(state)  # CrewAI's own: validates a typed state

    def _check_route(self, router: str, label: Any) -> None:
        route = getattr(label, "value", label)  # CrewAI routes an Enum by its value
        if route is None or str(route) in self.labels:
            return
        raise ConfigurationError(
            f"flow {self.flows.name!r}: router {router!r} returned {route!r}, which no method "
            f"listens to (plain CrewAI would end the flow silently); labels listened to: "
            f"{sorted(self.labels)}. Pass distribute_flow(..., strict_routes=False) to end "
            "the flow there on purpose"
        )


_MISSING = object()


def _state_of(flow: Flow[Any], name: str, method: str) -> dict[str, Any]:
    """The flow's state as JSON values (CrewAI's own dump), or an error naming the method."""
    state = flow._copy_and_serialize_state()
    try:
        loaded = orjson.loads(orjson.dumps(state))
    except TypeError as exc:
        raise ConfigurationError(
            f"flow {name!r}: the state after {method} is not JSON values, so it cannot be "
            f"journaled or persisted in Redis: {exc}"
        ) from None
    if not isinstance(loaded, dict):
        raise ConfigurationError(f"flow {name!r}: the state is not a dict or a model")
    return loaded


def _refuse_unsupported(flow: Flow[Any], name: str) -> None:
    definition = flow._definition
    feedback = [m for m, d in definition.methods.items() if d.human_feedback is not None]
    if feedback:
        raise ConfigurationError(
            f"flow {name!r}: @human_feedback methods ({', '.join(feedback)}) cannot run in a "
            "distributed flow yet; run the flow plainly with "
            "@persist(RedisFlowPersistence(url=...)) and resume it from any process with "
            "Flow.from_pending(flow_id, persistence)"
        )
    if getattr(flow, "stream", False):
        raise ConfigurationError(
            f"flow {name!r}: stream=True flows cannot be distributed yet; set stream=False"
        )


def distribute_flow(
    flow_class: type[F],
    *,
    name: str,
    pool: Pool | None = None,
    models: Iterable[type[BaseModel]] = (),
    strict_routes: bool = True,
    threads: int = 256,
) -> DistributedFlow[F]:
    """Register ``flow_class`` (a ``crewai.flow.Flow`` subclass) under ``name``.

    ``models``: pydantic classes the flow's methods return (or hold in a returned
    ``CrewOutput``) that are not their return annotations or the state model, so another
    process can revive them. ``strict_routes``: a router returning a label no method listens
    to raises (plain CrewAI ends the flow silently, which hides a typo). ``threads`` bounds the
    sync methods running at once in a coordinator process (each holds a thread while it runs,
    e.g. while its crew works).
    """
    return DistributedFlow(
        flow_class,
        name=name,
        pool=pool,
        models=models,
        strict_routes=strict_routes,
        threads=threads,
    )
