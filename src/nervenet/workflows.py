"""Durable workflow runs: leases held by coordinator processes, taken over when a process dies.

A run started with :meth:`Workflows.start` is recorded in Redis (kind, input, status) and leased
to the starting process. Every heartbeat the process renews the leases of the runs it owns in one
pipeline. A few times per heartbeat it also looks for runs of kinds it can resume whose lease
expired (their process stopped heartbeating: crashed, killed, partitioned, stopped) and claims
them atomically (``WATCH``/``MULTI``, so two survivors never both win); the claimed run is resumed
by the kind's resume function, from its last checkpoint.

A process that cannot renew (Redis unreachable) or was stopped longer than the lease treats all its
leases as lost at once, without a round trip (:meth:`Workflows.owns`), so a "zombie" that wakes up
after its runs were taken over stops dispatching instead of racing the new owner. Liveness is
heartbeats, never a run's elapsed time: a run may take hours.

A run can also be queued (:meth:`Workflows.enqueue`) instead of run where it was submitted: it
then waits, unleased, until a process that takes queued runs (``nervenet serve app:graph``, see
:meth:`Workflows.take_queued_runs`) claims it in the same transaction that claims expired leases.
So K coordinator processes share the runs of an app, and each takes over the others' runs.

Every pool that can resume some kind of run announces itself on each heartbeat, so the status
view can say when runs wait and no coordinator process is alive to run them (workers never do).
Every process that runs workflow runs also says how many, and how many wait for a slot
(``PoolSettings.max_runs``, :mod:`nervenet.run_slots`).

Keys (all under one hash tag, so the claim transaction works on Redis Cluster):
``nn:{workflows}`` (sorted set: run id -> lease expiry ms), ``nn:{workflows}:queued`` (sorted
set: run id -> submission ms), ``nn:{workflows}:owner`` and ``nn:{workflows}:kind`` (hashes: run
id -> owner process / kind), ``nn:{workflows}:coordinators`` and ``nn:{workflows}:loads``
(sorted sets: process -> heartbeat expiry ms) with ``nn:{workflows}:load:<process>`` (string,
expiring: runs running, waiting, bound), ``nn:{workflows}:done`` (stream: one entry per finished
run, so one reader per process serves every remote waiter); per run ``nn:wf:{run}`` (hash: kind,
input, status, result, error).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from redis.exceptions import WatchError

from . import tracing
from .cancelling import cancel_and_wait
from .errors import ConfigurationError, LeaseLost, RunCancelled, WorkflowFailed
from .multitask import ThreadGate, check_strategy
from .outages import TRANSIENT_ERRORS
from .run_slots import in_a_run, mark_in_a_run
from .runs import RunStatus
from .transport import as_bytes, as_text

if TYPE_CHECKING:
    from redis.asyncio.client import Pipeline

    from .pool import Pool

log = logging.getLogger("nervenet.workflows")

RunFunction = Callable[[], Awaitable[bytes]]
ResumeFunction = Callable[[str, bytes], Awaitable[bytes]]
"""``resume(run_id, input)`` continues a run another process started; returns result bytes."""
RollbackFunction = Callable[[str, bytes], Awaitable[None]]
"""``rollback(run_id, input)`` removes what a cancelled run left (its checkpoints)."""

#: What cancelling a run does: ``interrupt`` stops it and keeps its checkpoints (it can be
#: resumed on its thread), ``rollback`` stops it and removes them.
CANCEL_ACTIONS = ("interrupt", "rollback")

MAX_CLAIMS_PER_SCAN = 500
#: Queued runs one scan claims: small, so that the coordinator processes of an app share them
#: (each scans a few times per heartbeat) instead of the first scanner taking all.
QUEUED_PER_SCAN = 50
TAKEOVER_SCANS_PER_BEAT = 4
CLAIM_ATTEMPTS = 3
DONE_STREAM_MAXLEN = 100_000
_RUN_STATUS = {
    "done": RunStatus.SUCCEEDED,
    "failed": RunStatus.FAILED,
    "interrupted": RunStatus.INTERRUPTED,
    "cancelled": RunStatus.CANCELLED,
}


@runtime_checkable
class RunSource(Protocol):
    """Anything ``nervenet serve MODULE:ATTR`` can coordinate (a distributed graph)."""

    def nervenet_pool(self) -> Pool:
        """The pool whose durable runs of the source's kinds this process runs."""
        ...


@dataclass(frozen=True, slots=True)
class RunRecord:
    """A durable run as stored in Redis."""

    run_id: str
    """Unique per run."""
    kind: str
    """Which registered graph or crew can resume it."""
    status: str
    """``queued`` (waiting for a coordinator process), ``running``, ``done``, ``failed``,
    ``interrupted`` or ``cancelled`` (see :meth:`Workflows.cancel`)."""
    result: bytes
    """Result bytes when done."""
    error: str
    """``Type: message`` when failed."""


class RunHandle:
    """A durable run's result, awaitable from any process."""

    def __init__(self, workflows: Workflows, run_id: str) -> None:
        self._workflows = workflows
        self.run_id = run_id

    async def result(self, timeout: float | None = None) -> bytes:
        """Wait for the run to end; return its result or raise its error."""
        return await asyncio.wait_for(self._workflows.wait(self.run_id), timeout)

    async def record(self) -> RunRecord | None:
        return await self._workflows.record(self.run_id)


class Workflows:
    """The durable runs of one pool process: starting, leasing, taking over, waiting."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._kinds: dict[str, ResumeFunction] = {}
        self._rollbacks: dict[str, RollbackFunction] = {}
        self._cancelling: dict[str, str] = {}  # run id -> action being carried out here
        self._interrupted: set[str] = set()
        self._threads: dict[str, str] = {}  # run id -> thread, for runs that hold one
        self._gate = ThreadGate(pool, self)
        self._owned: dict[str, asyncio.Task[bytes]] = {}
        self._last_renewal = time.monotonic()
        self._done_waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._done_reader: asyncio.Task[None] | None = None
        self._done_reader_ready: asyncio.Future[None] | None = None
        self._takeover: asyncio.Future[None] | None = None
        self._done_last = "0-0"
        self._takes_queued = False
        self._unsteady_at = -1e9  # monotonic time of the last failed or late lease renewal
        self._confirming: asyncio.Future[None] | None = None  # what late runs wait on
        self.takeovers = 0
        self.queued_taken = 0
        pool.add_heartbeat_hook(self._heartbeat)

    def register(
        self, kind: str, resume: ResumeFunction, rollback: RollbackFunction | None = None
    ) -> None:
        """This process can resume runs of ``kind`` that a dead process left behind, and
        (with ``rollback``) remove what a run cancelled with ``rollback`` left."""
        self._kinds[kind] = resume
        if rollback is not None:
            self._rollbacks[kind] = rollback

    def take_queued_runs(self) -> None:
        """Also run queued runs (:meth:`enqueue`) of the registered kinds: what a coordinator
        process started by ``nervenet serve`` does."""
        self._takes_queued = True

    @property
    def kinds(self) -> list[str]:
        """Kinds of run this process can resume."""
        return sorted(self._kinds)

    # --- starting and owning ------------------------------------------------------------------
    async def start(
        self,
        kind: str,
        run_id: str,
        payload: bytes,
        run: RunFunction,
        *,
        thread: str = "",
        multitask: str = "enqueue",
    ) -> RunHandle:
        """Record a run, lease it to this process and run ``run()`` here.

        With a ``thread``, the run holds it while it runs: a thread runs one run at a time, and
        ``multitask`` says what to do when it is busy (see :mod:`nervenet.multitask`)."""
        await self._pool.ensure_started()
        if thread:
            await self._gate.admit(run_id, thread, check_strategy(multitask))
        # Leased once it holds a slot: a run waiting for one has no lease to renew, and a
        # lease that waited would expire under it. Started by a run of ours, it shares that
        # run's slot (see nervenet.run_slots).
        slotted = not in_a_run()
        if slotted:
            await self._pool.run_slots.acquire()
        keys, redis = self._pool.keys, self._pool.transport.redis
        try:
            leased_at, expires = time.monotonic(), self._expiry_ms()
            async with redis.pipeline(transaction=False) as pipe:
                self._add_record(pipe, kind, run_id, payload, "running", thread)
                pipe.zadd(keys.workflows, {run_id: expires})
                pipe.hset(keys.workflow_owners, run_id, self._pool.process_id)
                self._pool.runs.add_begin(
                    pipe, run_id, kind, status=RunStatus.RUNNING, thread=thread
                )
                await pipe.execute()
        except BaseException:
            if slotted:
                self._pool.run_slots.release()
            raise
        if not self._owned:
            # Its lease, just pushed, is the only one: fresh as of now, whenever the last
            # renewal was (a pool made at import time starts its first run long after).
            self._last_renewal = max(self._last_renewal, leased_at)
        self._run_here(run_id, run, thread, kind, slotted=slotted)
        return RunHandle(self, run_id)

    async def enqueue(
        self,
        kind: str,
        run_id: str,
        payload: bytes,
        *,
        thread: str = "",
        multitask: str = "enqueue",
    ) -> RunHandle:
        """Record a run for any coordinator process that takes queued runs; run nothing here.

        ``payload`` is what the kind's resume function gets, as after a takeover. ``thread`` and
        ``multitask`` as for :meth:`start`."""
        await self._pool.ensure_started()
        if thread:
            await self._gate.admit(run_id, thread, check_strategy(multitask))
        keys = self._pool.keys
        async with self._pool.transport.redis.pipeline(transaction=False) as pipe:
            self._add_record(pipe, kind, run_id, payload, "queued", thread)
            pipe.zadd(keys.workflows_queued, {run_id: int(time.time() * 1000)})
            self._pool.runs.add_begin(pipe, run_id, kind, status=RunStatus.PENDING, thread=thread)
            await pipe.execute()
        return RunHandle(self, run_id)

    def _add_record(
        self, pipe: Pipeline, kind: str, run_id: str, payload: bytes, status: str, thread: str
    ) -> None:
        """A new run's record and kind (started here, or queued for another process)."""
        keys = self._pool.keys
        pipe.hset(
            keys.workflow(run_id),
            mapping={
                "kind": kind,
                "input": payload,
                "status": status,
                "started": time.time(),
                "thread": thread,
            },
        )
        # A run id started again after it ended (a flow resumed after human feedback) must not
        # keep the expiry its end set.
        pipe.persist(keys.workflow(run_id))
        pipe.hset(keys.workflow_kinds, run_id, kind)

    def report_interrupted(self, run_id: str) -> None:
        """The run's function is about to return because the run stopped to wait for input
        (a LangGraph interrupt): its record says ``interrupted`` instead of ``succeeded``; its
        result is returned all the same."""
        if run_id in self._owned:
            self._interrupted.add(run_id)

    def owns(self, run_id: str) -> bool:
        """Whether this process still holds the run's lease, judged locally (no round trip)."""
        fresh = time.monotonic() - self._last_renewal < self._pool.settings.lease_ttl
        return fresh and run_id in self._owned

    async def still_owns(self, run_id: str) -> bool:
        """Whether this process still holds the run's lease. When its renewals are late (its
        event loop stalled, under load or in a long collection), Redis says, not the clock:
        a run nobody claimed meanwhile is still ours, and the renewal that asks keeps it so.

        Judged by the clock alone, a stall longer than a lease dropped every run of the
        process although no process had taken them. The process then took them over itself
        from their checkpoints, repeating their nodes on a loop already too busy to renew:
        the crash-recovery test, CPU-starved, never finished."""
        if self.owns(run_id):
            return True
        if run_id not in self._owned:
            return False
        # One renewal for every run that asks at once (after a stall, all of them do), per
        # event loop (a run started from another loop than the pool's awaits its own).
        confirming, loop = self._confirming, asyncio.get_running_loop()
        if confirming is None or confirming.done() or confirming.get_loop() is not loop:
            confirming = self._confirming = asyncio.ensure_future(self._renew())
        try:
            await asyncio.shield(confirming)
        except TRANSIENT_ERRORS:  # Redis cannot say: assume the worst, as the clock did
            return False
        return self.owns(run_id)

    async def check_owned(self, run_id: str) -> None:
        """Raise :class:`LeaseLost` if another process took the run over (see
        :meth:`still_owns`)."""
        if run_id in self._owned and not await self.still_owns(run_id):
            raise LeaseLost(
                f"run {run_id!r}: this process missed its lease renewals (stopped or cut off "
                "from Redis); another coordinator resumes the run"
            )

    def _run_here(
        self, run_id: str, run: RunFunction, thread: str = "", kind: str = "", *, slotted: bool
    ) -> None:
        """Run a run here. A ``slotted`` one holds a slot (:attr:`Pool.run_slots`), given back
        when the run's task ends, however it ends (even cancelled before its first step)."""
        if thread:
            self._threads[run_id] = thread
        task = asyncio.ensure_future(self._run_and_record(run_id, run, kind))
        # The handle re-raises the run's error; unawaited runs must not log "never retrieved".
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        if slotted:
            task.add_done_callback(lambda _: self._pool.run_slots.release())
        self._owned[run_id] = task

    async def _run_and_record(self, run_id: str, run: RunFunction, kind: str = "") -> bytes:
        mark_in_a_run()  # in this task's own context: what the run starts shares its slot
        try:
            thread = self._threads.get(run_id)
            if thread is not None:
                await self._hold_thread(run_id, thread)
            if self._pool.tracer is None:
                result = await run()
            else:
                with tracing.running_workflow(self._pool.tracer, kind, run_id):
                    result = await run()
        except asyncio.CancelledError:
            action = self._cancelling.pop(run_id, None)
            if action is None or not await self.still_owns(run_id):
                raise
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()  # the cancel was ours, to stop the run; record how it ended
            await self._end_cancelled(run_id, action)
            raise RunCancelled(f"run {run_id!r} was cancelled ({action})") from None
        except LeaseLost:
            raise
        except BaseException as exc:
            if await self.still_owns(run_id):
                await self._finish(run_id, status="failed", error=f"{type(exc).__name__}: {exc}")
            raise
        else:
            if not await self.still_owns(run_id):
                raise LeaseLost(f"run {run_id!r} was taken over before it finished here")
            interrupted = run_id in self._interrupted
            await self._finish(
                run_id,
                status="done",
                result=result,
                run_status=RunStatus.INTERRUPTED if interrupted else None,
            )
            return result
        finally:
            # Unless the run id was started again here meanwhile (a flow resumed after human
            # feedback): its new run is not this one's to forget.
            if self._owned.get(run_id) in (None, asyncio.current_task()):
                self._owned.pop(run_id, None)
                self._pool.runs.recorded.discard(run_id)  # moved or ended: dispatches stop
                self._interrupted.discard(run_id)
                self._threads.pop(run_id, None)

    async def _hold_thread(self, run_id: str, thread: str) -> None:
        """Wait until the run holds its thread (``pending`` meanwhile, in its record)."""
        keys, redis = self._pool.keys, self._pool.transport.redis

        async def pending() -> None:  # rather than two "running" runs on one thread
            if self._pool.settings.record_runs:
                await redis.hset(keys.run(run_id), "status", RunStatus.PENDING.value)

        if await self._gate.acquire(run_id, thread, pending):
            async with redis.pipeline(transaction=False) as pipe:
                self._pool.runs.add_owner(pipe, run_id)
                await pipe.execute()

    async def _finish(
        self,
        run_id: str,
        *,
        status: str,
        result: bytes = b"",
        error: str = "",
        run_status: RunStatus | None = None,
    ) -> None:
        """Record how the run ended (``done``, ``failed``, ``interrupted``, ``cancelled``),
        release it, announce it."""
        keys, redis = self._pool.keys, self._pool.transport.redis
        ttl = int(self._pool.settings.result_ttl)
        # The run's own keys first: a crash between the two steps leaves a finished record that
        # a claimer recognizes (status is not "running") and merely un-leases.
        async with redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                keys.workflow(run_id), mapping={"status": status, "result": result, "error": error}
            )
            pipe.expire(keys.workflow(run_id), ttl)
            pipe.hget(keys.workflow(run_id), "thread")
            *_, thread = await pipe.execute()
        if thread:  # after the status: a waiter that sees the end finds the record ended too
            await self._gate.release(run_id, as_text(thread))
        # Stop renewing before unleasing: a renewal that read the owners after the unlease would
        # take the run for one lost to another process and cancel it here, cutting off the
        # announcement below. Unrenewed meanwhile is safe: the record already says it ended, so
        # a claimer of the expired lease only unleases it.
        self._owned.pop(run_id, None)
        await self._unlease(run_id)
        ended = run_status or _RUN_STATUS[status]

        def announce(pipe: Pipeline) -> None:
            pipe.xadd(
                keys.workflows_done,
                {"run": run_id, "status": status},
                maxlen=DONE_STREAM_MAXLEN,
                approximate=True,
            )
            self._pool.runs.add_end(pipe, run_id, ended, error)

        # Through the batcher: after the run's output events it queued (joiners stop at the end).
        await self._pool.batcher.run(announce)
        self._pool.transport.notify_written()

    async def _unlease(self, run_id: str) -> None:
        keys = self._pool.keys
        async with self._pool.transport.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(keys.workflows, run_id)
            pipe.hdel(keys.workflow_owners, run_id)
            pipe.hdel(keys.workflow_kinds, run_id)
            pipe.hdel(keys.workflows_cancel, run_id)
            await pipe.execute()

    # --- cancelling -----------------------------------------------------------------------------
    async def cancel(self, run_id: str, action: str = "interrupt") -> str:
        """Cancel a run from any process; returns what happened.

        ``interrupt`` stops it and keeps its checkpoints (a graph run can be resumed on its
        thread), ``rollback`` stops it and has its kind remove its checkpoints. A queued run is
        cancelled at once (``"cancelled"``). A running one is asked to stop: its owner sees the
        request at its next lease renewal (within a heartbeat), cancels the run's dispatches
        (workers cancel the handlers in flight) and records it ``interrupted`` or ``cancelled``
        (``"requested"``). A run whose owner died is cancelled by the coordinator process that
        takes it over, instead of resumed (``"requested"`` too). A finished run is refused.
        """
        if action not in CANCEL_ACTIONS:
            raise ConfigurationError(
                f"cancel action {action[:40]!r} is not one of {', '.join(CANCEL_ACTIONS)}"
            )
        await self._pool.ensure_started()
        run = await self._pool.runs.get(run_id, nodes=False)
        if run.status.finished or run.status is RunStatus.INTERRUPTED:
            raise ConfigurationError(
                f"run {run_id!r} already ended ({run.status.value}); nothing to cancel"
            )
        if await self._cancel_queued(run_id, action):
            return "cancelled"
        keys, redis = self._pool.keys, self._pool.transport.redis
        await redis.hset(keys.workflows_cancel, run_id, action)
        record = await self.record(run_id)
        if record is None or record.status not in ("running", "queued"):
            # It ended meanwhile: its unlease may have run before our request landed.
            await redis.hdel(keys.workflows_cancel, run_id)
            raise ConfigurationError(f"run {run_id!r} already ended; nothing to cancel")
        task = self._owned.get(run_id)
        if task is not None and run_id not in self._cancelling:
            self._cancelling[run_id] = action
            task.cancel()
        return "requested"

    async def _cancel_queued(self, run_id: str, action: str) -> bool:
        """Take a run off the queue before any coordinator process claims it."""
        keys, redis = self._pool.keys, self._pool.transport.redis
        async with redis.pipeline(transaction=True) as pipe:
            for _ in range(CLAIM_ATTEMPTS):
                try:
                    await pipe.watch(keys.workflows_queued)
                    if await pipe.zscore(keys.workflows_queued, run_id) is None:
                        return False
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.zrem(keys.workflows_queued, run_id)
                    pipe.hdel(keys.workflow_kinds, run_id)
                    await pipe.execute()
                    break
                except WatchError:
                    await asyncio.sleep(0.01)
            else:
                return False
        status = "interrupted" if action == "interrupt" else "cancelled"
        await self._finish(run_id, status=status, error=f"cancelled ({action}) while queued")
        return True

    async def _end_cancelled(self, run_id: str, action: str) -> None:
        """Carry out a cancel request for a run this process owns (its task has stopped)."""
        keys, redis = self._pool.keys, self._pool.transport.redis
        if action == "rollback":
            kind = as_text(await redis.hget(keys.workflow(run_id), "kind") or b"")
            rollback = self._rollbacks.get(kind)
            if rollback is not None:
                payload = await redis.hget(keys.workflow(run_id), "input")
                await rollback(run_id, as_bytes(payload or b""))
        status = "interrupted" if action == "interrupt" else "cancelled"
        await self._finish(run_id, status=status, error=f"cancelled ({action})")

    # --- waiting ----------------------------------------------------------------------------
    async def wait(self, run_id: str) -> bytes:
        """The run's result, from the local task when it runs here, else from Redis."""
        while True:
            local = self._owned.get(run_id)
            if local is not None:
                try:
                    return await asyncio.shield(local)
                except (LeaseLost, asyncio.CancelledError):
                    moved = local.done() and (
                        local.cancelled() or isinstance(local.exception(), LeaseLost)
                    )
                    if not moved:
                        raise  # we were cancelled ourselves
                    continue  # the run moved to another process: follow it there
            ended = await self._watch_end(run_id)
            try:
                record = await self.record(run_id)
                if record is None:
                    raise WorkflowFailed(f"no run {run_id!r} (never started, or it expired)")
                if record.status == "done":
                    return record.result
                if record.status == "failed":
                    raise WorkflowFailed(f"run {run_id!r} failed: {record.error}")
                if record.status in ("interrupted", "cancelled"):
                    raise RunCancelled(f"run {run_id!r} was {record.status}: {record.error}")
                # Running elsewhere; a heartbeat may also hand it to us: check again then.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        asyncio.shield(ended), self._pool.settings.heartbeat_interval * 5
                    )
            finally:
                self._forget_watch(run_id, ended)

    async def _watch_end(self, run_id: str) -> asyncio.Future[None]:
        """A future resolved when the done stream announces ``run_id`` (registered before the
        caller reads the record, so an end between the two is not missed)."""
        if self._done_reader is None or self._done_reader.done():
            self._done_reader_ready = asyncio.get_running_loop().create_future()
            self._done_reader = asyncio.ensure_future(self._read_done(self._done_reader_ready))
        assert self._done_reader_ready is not None
        await asyncio.shield(self._done_reader_ready)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._done_waiters.setdefault(run_id, []).append(future)
        return future

    def _forget_watch(self, run_id: str, future: asyncio.Future[None]) -> None:
        waiters = self._done_waiters.get(run_id, [])
        if future in waiters:
            waiters.remove(future)
        if not waiters:
            self._done_waiters.pop(run_id, None)

    async def _read_done(self, ready: asyncio.Future[None]) -> None:
        stream = self._pool.keys.workflows_done
        last = await self._pool.transport.redis.xrevrange(stream, count=1)
        self._done_last = as_text(last[0][0]) if last else "0-0"
        ready.set_result(None)
        while True:
            try:
                batch = await self._pool.transport.read(
                    {stream: self._done_last}, count=1_000, block_ms=self._pool.settings.block_ms
                )
            except TRANSIENT_ERRORS:
                await asyncio.sleep(self._pool.settings.heartbeat_interval)
                continue
            for _, entries in batch:
                for entry_id, fields in entries:
                    self._done_last = entry_id.decode()
                    for future in self._done_waiters.get(fields.get(b"run", b"").decode(), []):
                        if not future.done():
                            future.set_result(None)

    async def owner(self, run_id: str) -> str | None:
        """The process holding the run's lease, or None (queued, or ended and released)."""
        raw = await self._pool.transport.redis.hget(self._pool.keys.workflow_owners, run_id)
        return None if raw is None else as_text(raw)

    async def record(self, run_id: str) -> RunRecord | None:
        raw = await self._pool.transport.redis.hgetall(self._pool.keys.workflow(run_id))
        if not raw:
            return None
        return RunRecord(
            run_id=run_id,
            kind=as_text(raw.get(b"kind", b"")),
            status=as_text(raw.get(b"status", b"")),
            result=as_bytes(raw.get(b"result", b"")),
            error=as_text(raw.get(b"error", b"")),
        )

    # --- heartbeat: renew what we own, take over what others abandoned -----------------------
    def _expiry_ms(self) -> int:
        return int((time.time() + self._pool.settings.lease_ttl) * 1000)

    async def _heartbeat(self) -> None:
        started = time.monotonic()
        try:
            if self._owned:
                await self._renew()
                if time.monotonic() - started > self._pool.settings.heartbeat_interval:
                    # Stuck behind an outage (a failover): the leases just pushed were computed
                    # before it and may have lapsed meanwhile. Push them again while we still
                    # hold them, before anyone may claim them (see _steady).
                    self._unsteady_at = time.monotonic()
                    await self._renew()
            else:
                self._last_renewal = time.monotonic()
        except TRANSIENT_ERRORS:
            self._unsteady_at = time.monotonic()
            raise
        slots = self._pool.run_slots
        if self._kinds or self._owned or slots.running or slots.waiting:
            # A process driving runs is a live owner (for `runs`), and says how busy it is.
            await self._announce()
        # Taking runs over can take a while; it must never delay the next renewal.
        if self._kinds and (self._takeover is None or self._takeover.done()):
            self._takeover = asyncio.ensure_future(self._take_over_abandoned())

    async def _renew(self) -> None:
        """Push the leases of our runs forward, then drop the ones another process claimed.

        No transaction: a claim needs a lease that went a whole ``lease_ttl`` without renewal,
        so the only race is a claim landing between our read of the owners and our push; we
        see it at the next beat. (An optimistic WATCH here aborted under load whenever any
        process started or finished a run, and the missed renewals caused false takeovers.)
        """
        keys, redis = self._pool.keys, self._pool.transport.redis
        run_ids = list(self._owned)
        started = time.monotonic()
        if not run_ids:  # all ended meanwhile (the second push after a slow one)
            self._last_renewal = started
            return
        async with redis.pipeline(transaction=False) as pipe:
            pipe.zadd(keys.workflows, dict.fromkeys(run_ids, self._expiry_ms()), xx=True)
            pipe.hmget(keys.workflow_owners, run_ids)
            # Cancel requests ride along (same slot, same round trip): nothing to poll.
            pipe.hmget(keys.workflows_cancel, run_ids)
            _, owners, cancels = await pipe.execute()
        self._last_renewal = started
        for run_id, action in zip(run_ids, cancels, strict=True):
            task = self._owned.get(run_id)
            if action is not None and task is not None and run_id not in self._cancelling:
                self._cancelling[run_id] = as_text(action)
                task.cancel()
        for run_id, owner in zip(run_ids, owners, strict=True):
            if owner is not None and as_text(owner) == self._pool.process_id:
                continue
            task = self._owned.pop(run_id, None)
            if task is not None:
                log.warning("lost the lease of run %s to another process; stopping it here", run_id)
                task.cancel()

    async def _announce(self) -> None:
        """Say this process can resume runs (if it can), and how many it runs and how many
        wait for a slot, until a few heartbeats after it stops saying so."""
        keys, process = self._pool.keys, self._pool.process_id
        now_ms = int(time.time() * 1000)
        lasts_ms = int(3 * self._pool.settings.heartbeat_interval * 1000)
        load = self._pool.run_slots.load()
        async with self._pool.transport.redis.pipeline(transaction=False) as pipe:
            if self._kinds or self._owned:
                pipe.zadd(keys.coordinators, {process: now_ms + lasts_ms})
                pipe.zremrangebyscore(keys.coordinators, "-inf", now_ms)
            pipe.zadd(keys.run_loads, {process: now_ms + lasts_ms})
            pipe.zremrangebyscore(keys.run_loads, "-inf", now_ms)
            pipe.set(keys.run_load(process), load, px=lasts_ms)
            await pipe.execute()

    async def _take_over_abandoned(self) -> None:
        # A lease expires at any instant between two beats: scanning only on the beat would add
        # up to a whole heartbeat interval to the recovery time, so scan a few times per beat
        # (an expired-lease scan is one ZRANGEBYSCORE when nothing expired).
        between_scans = self._pool.settings.heartbeat_interval / TAKEOVER_SCANS_PER_BEAT
        for scan in range(TAKEOVER_SCANS_PER_BEAT):
            if scan:
                await asyncio.sleep(between_scans)
            try:
                await self._claim_and_resume()
            except asyncio.CancelledError:
                raise
            except TRANSIENT_ERRORS as exc:  # the next scan tries again
                self._unsteady_at = time.monotonic()
                self._pool.outages.failed("looking for abandoned runs", exc)
            except Exception as exc:  # the next scan tries again
                log.warning("could not take over abandoned runs: %s", exc)

    async def _claim_and_resume(self) -> None:
        """Claim as many expired or queued runs as this process has free slots for, and run
        them. A full process claims nothing: the runs stay in Redis for one with room."""
        slots = self._pool.run_slots
        room = slots.take(MAX_CLAIMS_PER_SCAN)
        if not room:
            return
        claims: list[tuple[str, str]] = []
        try:
            claims = await self._claim_expired(room, expired_too=self._steady())
        finally:
            slots.release(room - len(claims))
        for started, (run_id, kind) in enumerate(claims):
            try:
                resumed = await self._resume(run_id, kind)
            except BaseException:
                slots.release(len(claims) - started)  # this run and the rest never started
                raise
            if not resumed:
                slots.release()

    def _steady(self) -> bool:
        """Whether this process's own renewals went through on time for a whole lease. After an
        outage longer than a lease every lease looks expired: the first process to reach Redis
        again would claim the runs of every other live one (a takeover storm, seen after a
        cluster failover). Waiting one lease lets their owners renew first."""
        settings = self._pool.settings
        return (
            time.monotonic() - self._unsteady_at > settings.lease_ttl + settings.heartbeat_interval
        )

    async def _claim_expired(self, most: int, *, expired_too: bool = True) -> list[tuple[str, str]]:
        """Claim up to ``most`` expired runs of a kind we serve (and queued ones, oldest first,
        if we take them), in one optimistic transaction."""
        keys, redis = self._pool.keys, self._pool.transport.redis
        async with redis.pipeline(transaction=True) as pipe:
            for _ in range(CLAIM_ATTEMPTS):
                try:
                    asked = time.monotonic()
                    await pipe.watch(keys.workflows, keys.workflow_owners, keys.workflows_queued)
                    now_ms = int(time.time() * 1000)
                    expired = []
                    if expired_too:
                        expired = [
                            as_text(r)
                            for r in await pipe.zrangebyscore(
                                keys.workflows, "-inf", now_ms, start=0, num=most
                            )
                        ]
                    if time.monotonic() - asked > self._pool.settings.heartbeat_interval:
                        # This scan waited out an outage (a failover): every lease looks expired
                        # now, also those of live processes that could not renew either.
                        self._unsteady_at = time.monotonic()
                        expired = []
                    queued = []
                    queued_room = min(QUEUED_PER_SCAN, most - len(expired))
                    if self._takes_queued and queued_room > 0:
                        queued = [
                            as_text(r)
                            for r in await pipe.zrange(keys.workflows_queued, 0, queued_room - 1)
                        ]
                    if not expired and not queued:
                        return []
                    kinds = await pipe.hmget(keys.workflow_kinds, expired + queued)
                    claims = [
                        (run_id, as_text(kind))
                        for run_id, kind in zip(expired + queued, kinds, strict=True)
                        if kind is not None
                        and as_text(kind) in self._kinds
                        and run_id not in self._owned
                    ]
                    if not claims:
                        return []
                    pipe.multi()  # type: ignore[no-untyped-call]
                    expires = self._expiry_ms()
                    pipe.zadd(keys.workflows, {run_id: expires for run_id, _ in claims})
                    pipe.hset(
                        keys.workflow_owners,
                        mapping={run_id: self._pool.process_id for run_id, _ in claims},
                    )
                    from_queue = set(queued)
                    taken = [run_id for run_id, _ in claims if run_id in from_queue]
                    if taken:
                        pipe.zrem(keys.workflows_queued, *taken)
                    await pipe.execute()
                    return claims
                except WatchError:
                    await asyncio.sleep(0.01)
        return []

    async def _resume(self, run_id: str, kind: str) -> bool:
        """Run a claimed run here (True), or end it if there is nothing to run (False)."""
        record = await self.record(run_id)
        if record is None or record.status not in ("running", "queued"):
            await self._unlease(run_id)  # finished (or expired) before its lease was released
            return False
        redis = self._pool.transport.redis
        action = await redis.hget(self._pool.keys.workflows_cancel, run_id)
        if action is not None:  # cancelled while its owner was dead: carry it out, not resume
            await self._end_cancelled(run_id, as_text(action))
            return False
        payload, thread = await redis.hmget(self._pool.keys.workflow(run_id), ["input", "thread"])
        resume = self._kinds[kind]
        async with redis.pipeline(transaction=False) as pipe:
            if record.status == "queued":
                pipe.hset(self._pool.keys.workflow(run_id), "status", "running")
            self._pool.runs.add_owner(pipe, run_id)
            await pipe.execute()
        if record.status == "queued":
            self.queued_taken += 1
            log.debug("running queued run %s (%s)", run_id, kind)
        else:
            self.takeovers += 1
            log.warning(
                "taking over run %s (%s) from a coordinator that stopped heartbeating", run_id, kind
            )
        self._run_here(
            run_id,
            lambda: resume(run_id, as_bytes(payload or b"")),
            as_text(thread or b""),
            kind,
            slotted=True,  # the scan that claimed it took its slot
        )
        return True

    async def close(self) -> None:
        await cancel_and_wait(self._takeover)
        await cancel_and_wait(self._done_reader)
        self._done_reader = None
        for task in list(self._owned.values()):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._owned.values(), return_exceptions=True)
        self._owned.clear()
