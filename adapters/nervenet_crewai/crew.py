"""A crew factory registered under a name: kick it off from anywhere, serve its work from workers.

::

    from nervenet import Pool
    from nervenet_crewai import distribute_crew

    pool = Pool.from_url("redis://localhost:6379/0")
    crew = distribute_crew(make_crew, pool=pool, name="research")

    output = crew.kickoff(inputs={"topic": "tides"})          # a CrewOutput, as CrewAI's
    outputs = await crew.kickoff_for_each_async([{...}, ...])  # one run per input

    # and on any number of machines:   nervenet worker app:crew
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from crewai import CrewOutput
from crewai.types.streaming import CrewStreamingOutput

from nervenet import Backoff, Pool, RunHandle
from nervenet.errors import ConfigurationError
from nervenet.handlers import Handler, validate_task_type
from nervenet.routing import TaskOptions
from nervenet.run_slots import RunSlots, in_a_run, iterated_in_a_slot, iterated_in_a_slot_sync

from . import (
    _compat,  # noqa: F401  (first: checks the CrewAI names the modules below use)
    durable,
    locks,
)
from .blueprint import Blueprint, CrewFactory
from .durable import KickoffHandle
from .flow_scope import crew_run_id, current_method
from .for_each import kickoff_each
from .routes import CrewRoutes
from .run import CrewRun, DispatchPolicy
from .runner import CrewRunner

DEFAULT_BACKOFF = Backoff()


class DistributedCrew:
    """A named crew factory whose kickoffs run their agents' work on a nervenet pool.

    Serve it with ``nervenet worker module:attr`` (it is a ``HandlerSource``): workers serve
    ``<name>/task`` (one agent's execution of one task) and ``<name>/llm`` (an LLM call CrewAI
    makes outside any agent, e.g. converting an answer for ``output_pydantic``).
    """

    def __init__(
        self,
        factory: CrewFactory,
        *,
        name: str,
        pool: Pool | None = None,
        policy: DispatchPolicy | None = None,
        worker_threads: int | None = None,
        kickoff_threads: int = 256,
        fast_locks: bool = True,
        routes: CrewRoutes | None = None,
    ) -> None:
        for kind in ("task", "llm"):
            validate_task_type(f"{name}/{kind}")
        self.name = name
        self.routes = routes or CrewRoutes(name)
        self._pool: Pool | None = None
        self.pool = pool
        self.policy = policy or DispatchPolicy()
        self.blueprint = Blueprint(factory)
        self.runner = CrewRunner(name, self.blueprint, threads=worker_threads)
        self.kickoff_threads = kickoff_threads
        self.fast_locks = fast_locks
        self._kickoff_executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    @property
    def pool(self) -> Pool | None:
        """The pool kickoffs run on; a process with one resumes the crew's durable kickoffs
        (:meth:`asubmit`) that a dead coordinator process left behind."""
        return self._pool

    @pool.setter
    def pool(self, pool: Pool | None) -> None:
        self._pool = pool
        if pool is not None:
            pool.workflows.register(
                self.name, lambda run_id, payload: durable.resume(self, run_id, payload)
            )

    def nervenet_pool(self) -> Pool:
        """The pool whose durable kickoffs ``nervenet serve app:crew`` coordinates."""
        return self.require_pool()

    @property
    def task_types(self) -> tuple[str, ...]:
        return tuple(self.runner.handlers())

    def nervenet_handlers(self) -> Mapping[str, Handler]:
        self._use_fast_locks()
        handlers = dict(self.runner.handlers())
        for task_type, kind in self.routes.extra_task_types().items():
            handlers[task_type] = handlers[f"{self.name}/{kind}"]
        return handlers

    def nervenet_task_options(self) -> Mapping[str, TaskOptions]:
        """Queues and limits of the agents and models given options (``agents=``, ``llms=``)."""
        return dict(self.routes.options)

    # --- kickoffs ---------------------------------------------------------------------------
    def run(self, inputs: dict[str, Any] | None = None, *, run_id: str | None = None) -> CrewRun:
        """A run ready to kick off (its crew is built and wired, nothing is dispatched yet)."""
        pool = self.require_pool()
        self._use_fast_locks()
        return CrewRun(
            self.name,
            self.blueprint,
            pool,
            self.policy,
            inputs,
            run_id or crew_run_id(self.name) or uuid.uuid4().hex,
            routes=self.routes,
        )

    def kickoff(
        self, inputs: dict[str, Any] | None = None, *, run_id: str | None = None
    ) -> CrewOutput | CrewStreamingOutput:
        """Like ``Crew.kickoff``. A ``run_id`` makes the kickoff resumable: kicked off again
        with the same id and inputs, tasks that finished before are not run again. A process
        at its ``PoolSettings.max_runs`` blocks this thread until a run slot is free."""
        slots = self._own_slots()
        if slots is None:
            return self.run(inputs, run_id=run_id).kickoff()
        with slots.held_blocking():
            output = self.run(inputs, run_id=run_id).kickoff()
            if isinstance(output, CrewOutput):
                return output
        return _read_in_a_slot(slots, output)

    async def kickoff_async(
        self, inputs: dict[str, Any] | None = None, *, run_id: str | None = None
    ) -> CrewOutput | CrewStreamingOutput:
        """Like ``Crew.kickoff_async``: CrewAI's kickoff on a thread, awaited here. Cancelling
        the call stops the run at its next dispatch (a thread cannot be interrupted). A process
        at its ``PoolSettings.max_runs`` waits here for a run slot, holding no crew meanwhile."""
        return await self._in_own_slot(lambda: self._kickoff_on_a_thread(inputs, run_id))

    async def _kickoff_on_a_thread(
        self, inputs: dict[str, Any] | None, run_id: str | None
    ) -> CrewOutput | CrewStreamingOutput:
        started: list[CrewRun] = []

        def build() -> CrewRun:
            # On a thread: building a crew takes CrewAI's store lock, which must not hold up
            # the event loop the pool runs on.
            run = self.run(inputs, run_id=run_id)
            started.append(run)
            return run

        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()
        try:
            run = await loop.run_in_executor(self._executor(), context.run, build)
            if run.streams:
                # As plain kickoff_async: CrewAI's async-iterable stream.
                return await run.kickoff_streaming_async()
            return await loop.run_in_executor(self._executor(), context.run, run.kickoff)
        except asyncio.CancelledError:
            for started_run in started:
                started_run.stop()
            raise

    async def asubmit(
        self,
        inputs: dict[str, Any] | None = None,
        *,
        run_id: str | None = None,
        run_here: bool = True,
    ) -> KickoffHandle:
        """Start a durable kickoff leased to this process; if the process dies, another with
        this crew on the pool takes it over and finishes it (tasks that finished are answered
        from the workers' result cache). ``await handle.result()`` gives its ``CrewOutput``.

        With ``run_here=False`` it is queued for the crew's coordinator processes instead
        (``nervenet serve app:crew``)."""
        run_id = run_id or crew_run_id(self.name) or uuid.uuid4().hex
        return await durable.submit(self, inputs, run_id, run_here=run_here)

    def handle(self, run_id: str) -> KickoffHandle:
        """The handle of a durable kickoff submitted anywhere, to await its result here."""
        pool = self.require_pool()
        return KickoffHandle(self, RunHandle(pool.workflows, run_id))

    async def akickoff(
        self, inputs: dict[str, Any] | None = None, *, run_id: str | None = None
    ) -> CrewOutput | CrewStreamingOutput:
        """Like ``Crew.akickoff``: CrewAI's native async kickoff, no thread per run. A process
        at its ``PoolSettings.max_runs`` waits here for a run slot."""
        return await self._in_own_slot(lambda: self.run(inputs, run_id=run_id).akickoff())

    def kickoff_for_each(
        self,
        inputs: Sequence[dict[str, Any]],
        *,
        run_ids: Sequence[str] | None = None,
        max_concurrency: int = 32,
    ) -> list[CrewOutput]:
        """Like ``Crew.kickoff_for_each``: one ``CrewOutput`` per input, in order, or the error
        of the first input whose run failed. Unlike it, the runs go on concurrently (at most
        ``max_concurrency``), so the error is raised once the runs in flight ended."""
        pool = self.require_pool()
        # Derived here: the coroutine below runs on the pool's loop, outside this context.
        ids = self._flow_run_ids(len(inputs)) if run_ids is None else run_ids
        results = pool.call_sync(
            lambda: self.kickoff_for_each_async(
                inputs, run_ids=ids, max_concurrency=max_concurrency, progress=False
            )
        )
        for result in results:
            if isinstance(result, Exception):
                raise result
        return [r for r in results if isinstance(r, CrewOutput)]

    async def kickoff_for_each_async(
        self,
        inputs: Sequence[dict[str, Any]],
        *,
        run_ids: Sequence[str] | None = None,
        max_concurrency: int = 32,
        progress: bool = True,
        native: bool = False,
    ) -> list[CrewOutput | Exception]:
        """One run per input, at most ``max_concurrency`` in flight, with a progress bar.

        Returns one entry per input, in order: its ``CrewOutput``, or the exception that ended
        its run (the other runs go on). ``run_ids`` make the batch resumable. ``native`` uses
        :meth:`akickoff` instead of a thread per run.
        """
        kickoff = self.akickoff if native else self.kickoff_async

        async def one(values: dict[str, Any], run_id: str) -> Any:
            return await kickoff(values, run_id=run_id)

        return await kickoff_each(
            one,
            inputs,
            run_ids=self._flow_run_ids(len(inputs)) if run_ids is None else run_ids,
            max_concurrency=max_concurrency,
            progress=progress,
            label=self.name,
        )

    def close(self) -> None:
        """Let the kickoff threads go (workers' threads end with the process)."""
        with self._lock:
            executor, self._kickoff_executor = self._kickoff_executor, None
        if executor is not None:
            executor.shutdown(wait=False)

    def _flow_run_ids(self, count: int) -> list[str] | None:
        """Inside a durable flow's method, run ids that are the same when the method runs
        again after a takeover (see :mod:`nervenet_crewai.flow_scope`); else None."""
        if current_method.get() is None:
            return None
        return [crew_run_id(self.name) or "" for _ in range(count)]

    def _own_slots(self) -> RunSlots | None:
        """The run slots a kickoff started here waits in (``PoolSettings.max_runs``); None when
        the pool is unbounded, or for a kickoff inside a durable run (a flow's method, a
        durable kickoff), which runs in that run's slot."""
        slots = self.require_pool().run_slots
        return slots if slots.bounded and not in_a_run() else None

    async def _in_own_slot(
        self, kickoff: Callable[[], Awaitable[CrewOutput | CrewStreamingOutput]]
    ) -> CrewOutput | CrewStreamingOutput:
        """``kickoff()`` in a run slot of its own, if it takes one (:meth:`_own_slots`): held
        while it runs, or, for a stream, while its chunks are read."""
        slots = self._own_slots()
        if slots is None:
            return await kickoff()
        async with slots.held():
            output = await kickoff()
            if isinstance(output, CrewOutput):
                return output
        return _read_in_a_slot(slots, output)

    def require_pool(self) -> Pool:
        if self.pool is None:
            raise ConfigurationError(
                f"crew {self.name!r} has no pool to kick off on; pass "
                "distribute_crew(..., pool=Pool.from_url(...)) (workers need none)"
            )
        return self.pool

    def _use_fast_locks(self) -> None:
        if self.fast_locks:
            locks.install()

    def _executor(self) -> ThreadPoolExecutor:
        # Not asyncio's default executor: its few threads would cap concurrent kickoffs.
        with self._lock:
            if self._kickoff_executor is None:
                self._kickoff_executor = ThreadPoolExecutor(
                    max_workers=self.kickoff_threads,
                    thread_name_prefix=f"nervenet-kickoff-{self.name}",
                )
            return self._kickoff_executor


def distribute_crew(
    factory: CrewFactory,
    *,
    name: str,
    pool: Pool | None = None,
    retries: int = 2,
    retry_errors: bool = False,
    task_timeout: float | None = None,
    backoff: Backoff = DEFAULT_BACKOFF,
    wait_for_worker: bool = False,
    worker_threads: int | None = None,
    kickoff_threads: int = 256,
    fast_locks: bool = True,
    agents: Mapping[str, Mapping[str, Any]] | None = None,
    llms: Mapping[str, Mapping[str, Any]] | None = None,
) -> DistributedCrew:
    """Register ``factory`` (a function returning a ``Crew``, optionally taking ``inputs``, or a
    ``@CrewBase`` class) under ``name``.

    ``retries``/``task_timeout``/``backoff`` govern each agent task's dispatch (after the retries
    the task is escalated and the kickoff raises ``TaskEscalated``). An agent's own error (its
    LLM failing after CrewAI's ``max_retry_limit``) fails the kickoff at once, as in plain
    CrewAI, unless ``retry_errors=True`` retries it too; ``worker_threads`` caps
    the threads running agent work in a worker process (default: as many as the worker's
    concurrency); ``kickoff_threads`` bounds concurrent
    ``kickoff_async`` runs in a coordinator process. ``fast_locks`` swaps CrewAI's polled file
    locks for queued ones in processes that build many crews (see :mod:`nervenet_crewai.locks`).
    ``agents`` (by role) and ``llms`` (by model name) take per-agent options as LangGraph nodes
    do: ``queue``, ``max_concurrency``, ``rate_limit``, ``limit_key`` (see
    :mod:`nervenet_crewai.routes`).
    """
    policy = DispatchPolicy(
        retries=retries,
        retry_errors=retry_errors,
        timeout=task_timeout,
        backoff=backoff,
        wait_for_worker=wait_for_worker,
    )
    return DistributedCrew(
        factory,
        name=name,
        pool=pool,
        policy=policy,
        worker_threads=worker_threads,
        kickoff_threads=kickoff_threads,
        fast_locks=fast_locks,
        routes=CrewRoutes(name, agents, llms),
    )


def _read_in_a_slot(slots: RunSlots, stream: CrewStreamingOutput) -> CrewStreamingOutput:
    """A streaming kickoff runs its crew as its chunks are read: it waits for a run slot when
    the first chunk is asked for (again, after the slot its crew was built in) and holds it
    until its chunks end or the stream is closed. CrewAI's streaming output reads its chunk
    source from ``_sync_iterator`` / ``_async_iterator`` as it is iterated and closes it on
    ``close()`` / ``aclose()`` (checked by ``_compat``)."""
    if stream._async_iterator is not None:
        stream._async_iterator = iterated_in_a_slot(slots, stream._async_iterator)
    if stream._sync_iterator is not None:
        stream._sync_iterator = iterated_in_a_slot_sync(slots, stream._sync_iterator)
    return stream
