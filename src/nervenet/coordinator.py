"""A coordinator drives one workflow run: it dispatches the run's tasks and waits for their results.

Coordinators are cheap (an id and a pool reference): thousands live in one process, share its
connection pool and reply stream, and never talk to each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from . import tracing
from .cancelling import outlast
from .envelope import Reply, ReplyKind, TaskEnvelope
from .errors import (
    DispatchError,
    NoLiveWorker,
    RemoteTaskError,
    TaskEscalated,
    TaskTimeout,
)
from .handlers import validate_task_type
from .outages import TRANSIENT_ERRORS, backoff
from .transport import as_bytes

if TYPE_CHECKING:
    from .inbox import PayloadSource, Waiter
    from .pool import Pool

PUBLISH_ATTEMPTS = 8  # about 6 s of backoff in all

#: Error type a worker reports when it escalated the task itself (poison, bad payload).
ESCALATED_BY_WORKER = "nervenet.escalated"


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter between attempts."""

    initial: float = 0.2
    """Upper bound of the first pause, seconds."""
    multiplier: float = 2.0
    """Growth of the bound per attempt."""
    maximum: float = 10.0
    """Cap of the bound, seconds."""
    jitter: bool = True
    """Draw uniformly below the bound, so retries of many workflows do not arrive together."""

    def pause(self, attempt: int) -> float:
        bound = min(self.maximum, self.initial * self.multiplier ** (attempt - 1))
        return random.uniform(0, bound) if self.jitter else bound


DEFAULT_BACKOFF = Backoff()


class Coordinator:
    """Dispatches the tasks of one workflow run."""

    def __init__(self, pool: Pool, workflow_id: str | None = None) -> None:
        self.pool = pool
        self.workflow_id = workflow_id or uuid.uuid4().hex

    async def dispatch(
        self,
        task_type: str,
        payload: bytes | PayloadSource,
        *,
        task_id: str | None = None,
        timeout: float | None = None,
        retries: int = 2,
        backoff: Backoff = DEFAULT_BACKOFF,
        escalate_errors: bool = True,
        wait_for_worker: bool = False,
        on_frame: Callable[[bytes], None] | None = None,
        trace: str = "",
        first_run: bool = False,
        queue: str | None = None,
    ) -> bytes:
        """Run ``payload`` on a worker serving ``task_type``; return the result bytes.

        ``task_id`` should be deterministic for the work (e.g. derived from the workflow step)
        so a retried or resumed dispatch is answered from the result cache. ``timeout`` bounds
        each attempt; after ``retries`` more attempts (timeouts and handler errors alike) the
        task is escalated and :class:`TaskEscalated` raised. With ``escalate_errors=False`` a
        handler error is raised at once as :class:`RemoteTaskError` (the caller has its own
        retry policy); timeouts still retry and escalate. Frames the handler emits are passed
        to ``on_frame`` in order.

        Cancelling the task that awaits this call withdraws the task: a worker that has not read
        it never will, and the handler of one that has is cancelled (see
        :mod:`nervenet.handlers`). An attempt's own ``timeout`` cancels nothing: that attempt may
        still answer while the next one runs. Without ``task_id`` the id is made up here and the
        worker skips its result-cache lookup for the first attempt; ``first_run=True`` asks the
        same for a given ``task_id`` the caller knows was never dispatched before (a workflow step
        run for the first time, not resumed), saving the lookup's round trip. ``queue`` (the
        task type's, if the app routes it) only makes the error of a missing worker precise.

        ``payload`` may be a function that builds the bytes: it is called for each publish (each
        attempt, a republish after Redis lost data, an escalation), and no copy of the bytes is
        kept while the task runs. Callers that hold what the payload is made of anyway (a graph
        node's input) save a payload's worth of memory per waiting dispatch.
        """
        validate_task_type(task_type)
        if retries < 0:
            raise ValueError("retries must be >= 0")
        await self.pool.ensure_started()
        if not self.pool.registry.known_served(task_type):
            await self._require_worker(task_type, wait_for_worker, queue)
        fresh = first_run or not task_id
        recorded = self.workflow_id in self.pool.runs.recorded
        task_id = task_id or uuid.uuid4().hex
        source = payload if callable(payload) else _constant(payload)
        last_error: DispatchError | None = None
        envelope = None
        for attempt in range(1, retries + 2):
            envelope = TaskEnvelope(  # its payload is made when it is published
                task_id=task_id,
                workflow_id=self.workflow_id,
                task_type=task_type,
                attempt=attempt,
                deadline=time.time() + timeout if timeout else 0.0,
                reply_to=self.pool.inbox.address_for(task_id),
                payload=b"",
                trace=trace,
                fresh=fresh,
                recorded=recorded,
            )
            try:
                reply = await self._attempt(envelope, source, timeout, on_frame)
            except TaskTimeout as exc:
                last_error = exc
            else:
                if reply.kind is ReplyKind.RESULT:
                    return reply.body
                error = self._remote_error(reply, envelope)
                if isinstance(error, TaskEscalated) or not escalate_errors:
                    raise error
                last_error = error
            if attempt <= retries:
                await asyncio.sleep(backoff.pause(attempt))
        assert envelope is not None and last_error is not None
        reason = f"no result after {retries + 1} attempt(s): {last_error}"
        await self.pool.escalate(replace(envelope, payload=source()), reason, error=str(last_error))
        raise TaskEscalated(task_id=task_id, task_type=task_type, reason=reason, cause=last_error)

    async def _attempt(
        self,
        envelope: TaskEnvelope,
        payload: PayloadSource,
        timeout: float | None,
        on_frame: Callable[[bytes], None] | None,
    ) -> Reply:
        if self.pool.tracer is not None and not envelope.trace:
            return await self._traced_attempt(envelope, payload, timeout, on_frame)
        return await self._publish_and_wait(envelope, payload, timeout, on_frame)

    async def _publish_and_wait(
        self,
        envelope: TaskEnvelope,
        payload: PayloadSource,
        timeout: float | None,
        on_frame: Callable[[bytes], None] | None,
    ) -> Reply:
        inbox = self.pool.inbox
        async with self.pool.in_flight:
            waiter = inbox.expect(envelope.task_id, envelope.attempt, on_frame)
            waiter.envelope, waiter.payload = envelope, payload
            try:
                await self._publish(waiter)
                if timeout is None:
                    return await waiter.future
                try:
                    return await asyncio.wait_for(waiter.future, timeout)
                except TimeoutError:
                    # No cancellation here: the attempt may still finish, and a late success
                    # is accepted (the inbox matches it) while the next attempt is under way.
                    raise TaskTimeout(
                        f"task {envelope.task_id!r} ({envelope.task_type}) attempt "
                        f"{envelope.attempt} gave no result within {timeout:g} s",
                        task_id=envelope.task_id,
                        task_type=envelope.task_type,
                    ) from None
            except asyncio.CancelledError:
                # (Cancelling this task cancelled the future it awaited: a cancelled future
                # means no reply came, a finished one that the task is already done.)
                answered = waiter.future.done() and not waiter.future.cancelled()
                if waiter.entry_id is not None and not answered:
                    withdrawn = self.pool.cancel_soon(envelope, waiter.entry_id)
                    if withdrawn is not None and self.pool.settings.cancel_wait > 0:
                        inbox.forget(waiter)
                        await self._until_stopped(envelope, withdrawn)
                raise
            finally:
                inbox.forget(waiter)

    async def _traced_attempt(
        self,
        envelope: TaskEnvelope,
        payload: PayloadSource,
        timeout: float | None,
        on_frame: Callable[[bytes], None] | None,
    ) -> Reply:
        """An attempt inside its PRODUCER span, whose context the envelope carries."""
        span, traceparent = tracing.start_send(
            self.pool.tracer,
            envelope.task_type,
            envelope.task_id,
            self.workflow_id,
            envelope.attempt,
        )
        try:
            traced = replace(envelope, trace=traceparent)
            # Straight to the attempt: a tracer that makes no context (no traceparent) must
            # not send it round again.
            reply = await self._publish_and_wait(traced, payload, timeout, on_frame)
            if reply.error is not None:
                tracing.failed(span, f"{reply.error.type_name}: {reply.error.message}")
            return reply
        except BaseException as exc:
            tracing.failed(span, exc)
            raise
        finally:
            span.end()

    async def _until_stopped(
        self, envelope: TaskEnvelope, withdrawn: asyncio.Future[list[Any]]
    ) -> None:
        """Wait (bounded) until the worker that read a withdrawn attempt says its handler
        stopped: in one process, the awaiter of a cancelled task resumes only after the task's
        ``except``/``finally`` blocks ran, and callers rely on that (e.g. to release what the
        task held). Nothing to wait for if no worker had read the entry."""
        confirmation = self.pool.inbox.expect(
            envelope.task_id, envelope.attempt, None, confirms_cancel=True
        )

        async def stopped() -> None:
            *_, pending = await asyncio.shield(withdrawn)  # the batch's, shared with others
            if pending:
                await confirmation.future

        waiting = asyncio.ensure_future(stopped())
        try:
            await outlast(waiting, self.pool.settings.cancel_wait)
        finally:
            waiting.cancel()  # a dead worker confirms nothing; the cancel request stands anyway
            self.pool.inbox.forget(confirmation)
        if waiting.done() and not waiting.cancelled():
            waiting.exception()  # retrieved: Redis gone meanwhile means no confirmation, no error

    async def _publish(self, waiter: Waiter) -> None:
        """Publish, riding out a short Redis outage (a restart, a failover) before giving up."""
        envelope = waiter.envelope
        assert envelope is not None
        for outage in range(PUBLISH_ATTEMPTS):
            sent = self.pool.publish_soon(waiter.publishable())
            try:
                [entry_id] = await asyncio.shield(sent)
            except asyncio.CancelledError:
                # Cancelled while the XADD is on its way: it still lands, so withdraw it
                # once its entry id is known.
                sent.add_done_callback(lambda done: self._withdraw(envelope, done))
                raise
            except TRANSIENT_ERRORS:
                if outage == PUBLISH_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(backoff(outage))
            else:
                waiter.entry_id = as_bytes(entry_id)
                return

    def _withdraw(self, envelope: TaskEnvelope, sent: asyncio.Future[list[Any]]) -> None:
        if not sent.cancelled() and sent.exception() is None:
            self.pool.cancel_soon(envelope, as_bytes(sent.result()[0]))

    async def _require_worker(self, task_type: str, wait: bool, queue: str | None) -> None:
        registry = self.pool.registry
        grace = 2 * self.pool.settings.visibility_timeout
        try:
            if task_type in await registry.served_task_types():
                return
            if task_type in await registry.served_task_types(fresh=True):
                return
        except TRANSIENT_ERRORS:
            if registry.served_recently(task_type, grace):
                return  # Redis is down: publishing rides the outage out; the check cannot
            raise
        if registry.served_recently(task_type, grace):
            return
        if not wait:
            raise NoLiveWorker(task_type, queue=queue)
        started = time.monotonic()
        deadline = started + self.pool.settings.worker_wait_timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(*TRANSIENT_ERRORS):  # only for the status view
                await registry.note_waiting(
                    self.pool.process_id,
                    task_type,
                    renew_every=self.pool.settings.heartbeat_interval,
                )
            await asyncio.sleep(self.pool.settings.heartbeat_interval / 2)
            # The cached read: hundreds of waiting dispatches share one registry read a second
            # (each forcing its own, behind one lock, made each check rarely). A registration
            # seen at any moment of the wait counts, even if it lapsed before this waiter looked.
            with contextlib.suppress(*TRANSIENT_ERRORS):
                if task_type in await registry.served_task_types():
                    return
            if registry.served_recently(task_type, time.monotonic() - started):
                return
        raise NoLiveWorker(
            task_type,
            hint=f"waited {self.pool.settings.worker_wait_timeout:g} s for one to register",
            queue=queue,
        )

    @staticmethod
    def _remote_error(reply: Reply, envelope: TaskEnvelope) -> DispatchError:
        assert reply.error is not None
        if reply.error.type_name == ESCALATED_BY_WORKER:
            return TaskEscalated(
                task_id=envelope.task_id,
                task_type=envelope.task_type,
                reason=reply.error.message,
                cause=None,
            )
        return RemoteTaskError(
            task_id=envelope.task_id,
            task_type=envelope.task_type,
            error_type=reply.error.type_name,
            error_message=reply.error.message,
            traceback=reply.error.traceback,
            error_data=reply.error.data,
        )


def _constant(payload: bytes) -> PayloadSource:
    """A payload given as bytes: the caller holds them anyway, so keeping them costs nothing."""
    return lambda: payload
