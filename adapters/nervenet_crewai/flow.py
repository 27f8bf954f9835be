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

Human feedback: a ``@human_feedback`` method whose provider raises ``HumanFeedbackPending``
(e.g. :class:`PauseForFeedback`) pauses the run as it pauses a plain flow: ``result()`` returns
the ``HumanFeedbackPending``, the durable run ends ``interrupted`` (no lease: nobody takes it
over while it waits) and its journal keeps the pause. The feedback can then be given from any
process with the flow on the pool::

    output = await flows.resume_async("report-7", "approved, ship it")   # as Flow.resume_async
    # or: await flows.handle("report-7").resume("approved"); await run.result()

and the run goes on, on a coordinator process, exactly as ``Flow.from_pending(...)`` and
``resume_async(feedback)`` go on in plain CrewAI, durable as before (a takeover answers the
settled feedback step from the journal: the outcome LLM is not called again).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, Generic, TypeVar

import orjson
from crewai.flow.async_feedback.types import HumanFeedbackPending, PendingFeedbackContext
from crewai.flow.flow import Flow
from crewai.flow.human_feedback import HumanFeedbackResult
from pydantic import BaseModel, ConfigDict, ValidationError

from nervenet import Pool, RunHandle
from nervenet.errors import ConfigurationError, NervenetError
from nervenet.handlers import Handler, validate_task_type
from nervenet.workflows import RunRecord

from ._compat import _iter_condition_events
from .durable import MAX_OUTAGES, TRANSIENT_REDIS_ERRORS
from .flow_journal import FeedbackEntry, JournalEntry, MethodJournal, PauseEntry, ValueCodec
from .flow_scope import MethodScope, current_method

log = logging.getLogger("nervenet.crewai.flow")

STRANDED_CLAIM = 30.0
"""Seconds after which feedback stored for a run still paused counts as stranded (its giver
died between storing it and starting the run, one round trip apart): the next ``resume``
starts the run with it."""

F = TypeVar("F", bound=Flow[Any])


class FlowRecord(BaseModel):
    """What a durable flow run stores to be run again elsewhere (untrusted JSON on read)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    inputs: dict[str, Any] | None
    """``kickoff`` inputs as given (without ``id``)."""
    state_id: str
    """The state's ``id``, pinned so a takeover (and ``@persist``) keeps it."""
    segment: int = 0
    """0: from the kickoff; n: resumed after the feedback for the run's n-th pause."""


class Paused(BaseModel):
    """Where a run paused for human feedback (untrusted JSON on read)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    segment: int
    """Which pause of the run (1 for the first): the feedback is journaled under it."""
    context: dict[str, Any]
    """CrewAI's ``PendingFeedbackContext.to_dict()``."""
    callback_info: dict[str, Any]
    """``HumanFeedbackPending.callback_info``."""

    def pending(self) -> HumanFeedbackPending:
        """What plain CrewAI's ``kickoff`` returns when a flow pauses."""
        try:
            context = PendingFeedbackContext.from_dict(self.context)
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigurationError(
                f"a stored pending feedback context is malformed: {exc}"
            ) from None
        return HumanFeedbackPending(context=context, callback_info=dict(self.callback_info))


class NotWaitingForFeedback(NervenetError, ValueError):
    """Feedback given to a flow run that does not wait for any (unknown, running, ended). A
    ``ValueError``, as CrewAI's ``from_pending``/``resume`` raise for a flow not paused."""


class FeedbackAlreadyGiven(NotWaitingForFeedback):
    """Feedback given a second time for the same pause (the first goes on, this one is not
    used)."""


class PauseForFeedback:
    """A ``@human_feedback`` provider that pauses the flow until feedback is given, from any
    process: ``@human_feedback(message=..., provider=PauseForFeedback())``. Plain CrewAI pauses
    on it too (``kickoff`` returns ``HumanFeedbackPending``; resume with ``Flow.from_pending``).
    ``callback_info`` is handed to whoever reads the pending run (a ticket id, a channel)."""

    def __init__(self, callback_info: Mapping[str, Any] | None = None) -> None:
        self.callback_info = dict(callback_info or {})

    def request_feedback(self, context: PendingFeedbackContext, flow: Any) -> str:
        raise HumanFeedbackPending(context=context, callback_info=dict(self.callback_info))


class FlowResult(BaseModel):
    """A finished flow run (untrusted JSON on read)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    output: dict[str, Any]
    """What ``kickoff`` returned, as :class:`~nervenet_crewai.flow_journal.ValueCodec` stores."""
    state: dict[str, Any]
    """The final state, as JSON values (at the pause, for a paused run)."""
    paused: Paused | None = None
    """Set when the run paused for human feedback (``output`` is then null)."""


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
        (as :class:`nervenet.WorkflowFailed` when it ended in another process). A run paused
        for human feedback returns CrewAI's ``HumanFeedbackPending``, as ``kickoff`` does; after
        :meth:`resume`, this waits for the run's new end."""
        finished = await self._finished(timeout)
        if finished.paused is not None:
            return finished.paused.pending()
        return self._flows.codec.decode(finished.output)

    async def resume(self, feedback: str = "", *, run_here: bool = True) -> None:
        """Give the feedback a paused run waits for, from any process, and let the run go on
        (here, or with ``run_here=False`` on a coordinator process taking queued runs); await
        :meth:`result` for its end. Raises :class:`NotWaitingForFeedback` for a run that is
        unknown or not paused, :class:`FeedbackAlreadyGiven` for a second answer."""
        await self._flows.give_feedback(self.run_id, feedback, run_here=run_here)

    async def pending_feedback(self) -> PendingFeedbackContext | None:
        """The pending feedback context if the run waits for feedback now (as
        ``Flow.pending_feedback``), else None."""
        pool = self._flows.require_pool()
        record = await pool.on_home(self._handle.record)
        paused = _paused_at(record)
        return None if paused is None else paused.pending().context

    async def state(self, timeout: float | None = None) -> Any:
        """The final state, as ``flow.state`` (the flow's state model, or a dict); for a run
        paused for feedback, the state at the pause."""
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

    # --- human feedback ---------------------------------------------------------------------
    async def resume_async(self, run_id: str, feedback: str = "") -> Any:
        """Like ``Flow.from_pending(...).resume_async(feedback)``, from any process: give the
        feedback run ``run_id`` waits for; return what the run then returns (its last method's
        value, or ``HumanFeedbackPending`` if it pauses again)."""
        run = self.handle(run_id)
        await run.resume(feedback)
        return await run.result()

    def resume(self, run_id: str, feedback: str = "") -> Any:
        """Like ``Flow.resume``, from synchronous code."""
        return self.require_pool().call_sync(lambda: self.resume_async(run_id, feedback))

    async def give_feedback(self, run_id: str, feedback: str, *, run_here: bool = True) -> None:
        """Store the feedback paused run ``run_id`` waits for (once) and start it again."""
        if not isinstance(feedback, str):
            raise ConfigurationError(
                f"flow {self.name!r}, run {run_id!r}: feedback is text (a str), as CrewAI's "
                f"resume takes, not a {type(feedback).__name__}"
            )
        pool = self.require_pool()
        where = f"flow {self.name!r}, run {run_id!r}"

        async def give() -> None:
            journal = MethodJournal(pool, run_id)
            record = await pool.workflows.record(run_id)
            if record is None:
                raise NotWaitingForFeedback(
                    f"{where}: no such run waits for feedback (never started, or expired)"
                )
            if record.kind != self.name:
                raise NotWaitingForFeedback(
                    f"{where}: the run is one of {record.kind!r}, not of this flow"
                )
            paused = _paused_at(record)
            if paused is None:
                given = await journal.last_feedback()
                if given is not None and record.status in ("running", "queued", "done"):
                    raise FeedbackAlreadyGiven(
                        f"{where}: feedback was already given ({given!r}); the run went on "
                        f"with it and is {_describe(record.status)}"
                    )
                raise NotWaitingForFeedback(
                    f"{where} is not waiting for feedback: it is {_describe(record.status)}"
                )
            # Its end is written before its lease is released: starting it before that release
            # would have the release drop the new lease. It takes a round trip; if the owner
            # died in between, a coordinator process (this one too) releases it within a lease.
            settings = pool.settings
            patience = time.monotonic() + 3 * settings.lease_ttl + settings.heartbeat_interval
            while await pool.workflows.owner(run_id) is not None:
                if time.monotonic() > patience:
                    raise NotWaitingForFeedback(
                        f"{where} paused, but its coordinator process never released it"
                    )
                await asyncio.sleep(0.05)
            pause = await journal.get_pause(paused.segment)
            if pause is None:
                raise NotWaitingForFeedback(f"{where}: its pause expired from the journal")
            method = pause.context.get("method_name")
            claim = await journal.claim_feedback(paused.segment, feedback, STRANDED_CLAIM)
            if claim == "taken":
                raise FeedbackAlreadyGiven(
                    f"{where}: feedback for {method!r} was already given; the run goes on "
                    "with that one"
                )
            resumed = FlowRecord(
                inputs=pause.inputs, state_id=pause.state_id, segment=paused.segment
            )
            payload = resumed.model_dump_json().encode()
            try:
                if run_here:
                    await pool.workflows.start(
                        self.name, run_id, payload, lambda: self._run(run_id, resumed)
                    )
                else:
                    await pool.workflows.enqueue(self.name, run_id, payload)
            except BaseException:
                if claim == "given":  # not started: nobody could give feedback any more
                    await journal.unclaim_feedback(paused.segment)
                raise
            if claim == "restart":
                first = await journal.get_feedback(paused.segment)
                log.warning("%s: restarted with the feedback a dead process gave", where)
                raise FeedbackAlreadyGiven(
                    f"{where}: feedback for {method!r} was already given ({first!r}) by a "
                    "process that stopped before it started the run; the run was started "
                    "here with that feedback"
                )
            log.info("%s: feedback for %r given; the run goes on", where, method)

        await pool.on_home(give)

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
        journal = MethodJournal(self.require_pool(), run_id)
        output: Any
        if record.segment:
            pause = await journal.get_pause(record.segment)
            feedback = await journal.get_feedback(record.segment)
            if pause is None or feedback is None:
                raise ConfigurationError(
                    f"flow {self.name!r}, run {run_id!r}: resumed after pause {record.segment}, "
                    "but the journal no longer holds that pause and its feedback (expired?)"
                )
            flow = await loop.run_in_executor(
                self.method_threads(), functools.partial(self._paused_flow, pause)
            )
            journaled = _Journaled(self, flow, journal, run_id, replaying=True, calls=pause.calls)
            journaled.install()
            output = await flow.resume_async(feedback)  # CrewAI's own resume
        else:
            flow = await loop.run_in_executor(self.method_threads(), self.flow_class)
            replaying = not await journal.is_empty()
            journaled = _Journaled(self, flow, journal, run_id, replaying=replaying)
            journaled.install()
            inputs = {**(record.inputs or {}), "id": record.state_id}
            output = await flow.kickoff_async(inputs=inputs)
        if isinstance(output, HumanFeedbackPending):
            return await self._pause(run_id, record, flow, journaled, output)
        where = f"flow {self.name!r} (run {run_id!r})"
        result = FlowResult(
            output=self.codec.encode(output, where), state=_state_of(flow, self.name, "the end")
        )
        return result.model_dump_json().encode()

    def _paused_flow(self, pause: PauseEntry) -> Flow[Any]:
        """A fresh instance restored at the pause, as ``Flow.from_pending`` restores one (with
        the persistence the class declares, else CrewAI's default, as ``from_pending`` takes)."""
        flow = self.flow_class()
        persist = flow._definition.persist
        if persist is not None and persist.enabled:
            persistence = flow._persist_backend_for(persist)
        else:
            from crewai.flow.persistence.factory import default_flow_persistence

            persistence = default_flow_persistence()
        flow.persistence = persistence
        flow._instance_persistence = True
        flow._initialize_state(pause.state)
        try:
            flow._pending_feedback_context = PendingFeedbackContext.from_dict(pause.context)
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigurationError(
                f"flow {self.name!r}: a stored pending feedback context is malformed: {exc}"
            ) from None
        flow._is_execution_resuming = True
        flow._flow_match_id = flow.flow_id
        return flow

    async def _pause(
        self,
        run_id: str,
        record: FlowRecord,
        flow: Flow[Any],
        journaled: _Journaled,
        pending: HumanFeedbackPending,
    ) -> bytes:
        """Journal the pause and end the durable run ``interrupted``: unleased, so no process
        takes it over while it waits; :meth:`give_feedback` starts it again."""
        method = pending.context.method_name
        state = _state_of(flow, self.name, f"{method} (paused for feedback)")
        safe = PendingFeedbackContext._make_json_safe
        pause = PauseEntry(
            segment=record.segment + 1,
            inputs=record.inputs,
            state_id=record.state_id,
            context=pending.context.to_dict(),
            callback_info=safe(pending.callback_info),
            state=state,
            calls=dict(journaled.calls),
        )
        await journaled.journal.put_pause(pause)
        self.require_pool().workflows.report_interrupted(run_id)
        log.info("flow %r, run %s paused for feedback on %r", self.name, run_id, method)
        paused = Paused(
            segment=pause.segment, context=pause.context, callback_info=pause.callback_info
        )
        result = FlowResult(output={"json": None}, state=state, paused=paused)
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
        calls: Mapping[str, int] | None = None,
    ) -> None:
        self.flows = flows
        self.flow = flow
        self.journal = journal
        self.run_id = run_id
        self.replaying = replaying
        """Whether the journal holds entries (a run taken over or run again): else no method
        can be answered from it, and asking would cost a round trip per method."""
        self.calls: dict[str, int] = dict(calls or {})
        """Executions so far per method (and ``<method>@feedback`` per feedback step), carried
        over a pause so journal keys and crew run ids of a resumed run stay unique."""
        definition = flow._definition
        # A @human_feedback method with emit= routes on the outcome its feedback collapses to
        # (one of emit, which CrewAI checks), not on what the method returns.
        self.routers = {
            n for n, m in definition.methods.items() if m.router and m.human_feedback is None
        }
        self.labels = set(definition.methods)
        for method in definition.methods.values():
            for condition in (method.listen, method.start):
                if condition is not None and not isinstance(condition, bool):
                    self.labels.update(_iter_condition_events(condition))

    def install(self) -> None:
        methods = self.flow._methods
        for name, method in list(methods.items()):
            methods[name] = self._wrap(str(name), method)
        # Feedback steps too (on the instance; Flow allows plain attributes): what the provider
        # and the outcome LLM settled is journaled, not asked again after a takeover.
        wrappers = {
            "_run_human_feedback_step": self._feedback_step(self.flow),
            "_finalize_human_feedback": self._finalize(self.flow),
        }
        for attribute, wrapper in wrappers.items():
            object.__setattr__(self.flow, attribute, wrapper)

    def _feedback_step(self, flow: Flow[Any]) -> Callable[..., Any]:
        step = flow._run_human_feedback_step

        @functools.wraps(step)
        async def journaled_step(method_name: Any, definition: Any, method_output: Any) -> Any:
            name = str(method_name)
            call = self.calls.get(f"{name}@feedback", 0)
            entry = await self.journal.get_feedback_step(name, call) if self.replaying else None
            if entry is None:  # the provider is asked (it may pause the run)
                return await step(method_name, definition, method_output)
            self.calls[f"{name}@feedback"] = call + 1
            result = self._settled(entry)
            if definition.emit:  # as CrewAI's step: route on the outcome, output stashed
                flow._human_feedback_method_outputs[method_name] = result
                return result.outcome
            return result

        return journaled_step

    def _finalize(self, flow: Flow[Any]) -> Callable[..., Any]:
        finalize = flow._finalize_human_feedback

        @functools.wraps(finalize)
        async def journaled_finalize(*, method_name: str, **kwargs: Any) -> HumanFeedbackResult:
            name = str(method_name)
            call = self.calls.get(f"{name}@feedback", 0)
            self.calls[f"{name}@feedback"] = call + 1
            entry = await self.journal.get_feedback_step(name, call) if self.replaying else None
            if entry is not None:
                return self._settled(entry)
            result = await finalize(method_name=method_name, **kwargs)
            where = f"flow {self.flows.name!r}, feedback on {name!r}"
            safe = PendingFeedbackContext._make_json_safe
            await self.journal.put_feedback_step(
                name,
                call,
                FeedbackEntry(
                    output=self.flows.codec.encode(result.output, where),
                    feedback=result.feedback,
                    outcome=result.outcome,
                    timestamp=result.timestamp.isoformat(),
                    method_name=result.method_name,
                    metadata=safe(result.metadata),
                ),
            )
            return result

        return journaled_finalize

    def _settled(self, entry: FeedbackEntry) -> HumanFeedbackResult:
        """A journaled feedback result, recorded on the flow as CrewAI's finalize records it."""
        try:
            timestamp = datetime.fromisoformat(entry.timestamp)
        except ValueError:
            raise ConfigurationError(f"a journaled feedback time is malformed: {entry}") from None
        result = HumanFeedbackResult(
            output=self.flows.codec.decode(entry.output),
            feedback=entry.feedback,
            outcome=entry.outcome,
            timestamp=timestamp,
            method_name=entry.method_name,
            metadata=dict(entry.metadata),
        )
        self.flow.human_feedback_history.append(result)
        self.flow.last_human_feedback = result
        return result

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


def _paused_at(record: RunRecord | None) -> Paused | None:
    """Where the run waits for feedback, if it does (a run record read from Redis)."""
    if record is None or record.status != "done":
        return None
    try:
        return FlowResult.model_validate_json(record.result).paused
    except ValidationError:
        return None


def _describe(status: str) -> str:
    return {
        "queued": "queued",
        "running": "running",
        "done": "finished",
        "failed": "failed",
        "interrupted": "cancelled",
        "cancelled": "cancelled",
    }.get(status, repr(status))


def _refuse_unsupported(flow: Flow[Any], name: str) -> None:
    from crewai.flow.flow_config import flow_config

    definition = flow._definition
    console = [
        m
        for m, d in definition.methods.items()
        if d.human_feedback is not None
        and d.human_feedback.provider is None
        and flow_config.hitl_provider is None
    ]
    if console:
        raise ConfigurationError(
            f"flow {name!r}: @human_feedback methods ({', '.join(console)}) have no provider, "
            "so CrewAI would read the feedback from the coordinator's terminal (input()), "
            "where nobody types; give them one that pauses the run, e.g. "
            "@human_feedback(..., provider=nervenet_crewai.PauseForFeedback()), and resume "
            "it from any process with flows.resume_async(run_id, feedback)"
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
