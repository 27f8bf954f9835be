"""A worker serves handlers for some task types from their streams, in one consumer group each.

Delivery is at-least-once and made safe by the result cache:

* read with ``XREADGROUP``: one blocking call covers every stream the worker serves on a single
  server; on a cluster, one per slot (a partition's streams share one, see :mod:`nervenet.keys`),
  each reading its share of the worker's free slots;
* a task whose result is already cached is answered from the cache, not run again;
* the result is written, the reply sent, and only then the entry is ``XACK``-ed and deleted;
* each heartbeat re-claims the worker's own in-flight entries (``XCLAIM ... JUSTID``) so their
  idle time stays near zero while the worker lives, however long a task runs;
* each heartbeat also ``XAUTOCLAIM``-s entries idle longer than the visibility timeout, which only
  a dead or stopped consumer leaves behind; an entry delivered too often is escalated instead;
* entries are deleted after acknowledgement, so a stream holds only work not yet done and never
  needs ``MAXLEN`` trimming (which would drop unread tasks);
* a coordinator whose dispatch is cancelled deletes the task entry (so no worker reads it any
  more) and adds a :class:`~nervenet.envelope.CancelRequest` to the type's cancel stream, which
  every worker of the type reads with ``XREAD``; the worker holding the entry cancels the
  handler's asyncio task, then acknowledges the entry without a reply or a cached result.

Cancellation reaches async handlers only: a sync function running in a thread (``Handlers.task``
on a plain ``def``) cannot be interrupted. Its dispatch is released at once, the worker's slot
too, but the thread runs to the end and its result is dropped (as LangGraph does with sync
nodes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
import traceback
import uuid
from asyncio import FIRST_COMPLETED
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis.exceptions import ResponseError

from . import tracing
from .batching import let_woken_writes_go_first
from .cancelling import cancel_and_wait
from .coordinator import ESCALATED_BY_WORKER
from .envelope import (
    CancelRequest,
    Reply,
    ReplyError,
    ReplyKind,
    ReplyRoute,
    TaskEnvelope,
    cached_result,
)
from .errors import ConfigurationError, EnvelopeError, TaskFailure
from .escalations import escalation_fields
from .handlers import Handler, TaskContext, handlers_of, validate_task_type
from .keys import WORKER_GROUP
from .limited_reads import PermitReads
from .limits import TaskLimits, merged
from .outages import TRANSIENT_ERRORS, backoff
from .read_slots import ReadSlots
from .registry import WorkerInfo
from .routing import TaskOptions, options_of, parse_queues
from .runs import node_fields
from .threads import release_threads, reserve_threads, runs_in_a_thread
from .transport import as_bytes

if TYPE_CHECKING:
    from redis.asyncio.client import Pipeline

    from .metrics import WorkerMetrics
    from .pool import Pool

log = logging.getLogger("nervenet.worker")


#: How long a cancellation of an entry this worker has not (yet) accepted is remembered: it may
#: have been read already, with the read's reply still on its way to the read loop.
EARLY_CANCEL_MEMORY = 30.0
EARLY_CANCEL_LIMIT = 10_000


@dataclass(slots=True)
class _InFlight:
    stream: str
    entry_id: bytes
    fields: dict[bytes, bytes]
    task: asyncio.Task[None] | None = None
    in_handler: bool = False
    """The handler is running: only then does a cancellation interrupt the task. Before, the
    task is skipped."""
    handled: bool = False
    """The handler returned: its result is on the way, and cancelling is a no-op."""
    cancelled: bool = False
    """Its coordinator cancelled it: acknowledge it, send no reply, cache no result."""
    permit: tuple[str, str] | None = None
    """(limit key, permit) it runs under, given back when it is released."""
    read_at: float = 0.0
    """Epoch seconds it was read, for its run's node history (recorded runs only)."""

    @property
    def queue_wait(self) -> float:
        """Seconds from the entry's XADD (its id's milliseconds) to this worker reading it."""
        return self.read_at - int(self.entry_id.partition(b"-")[0] or b"0") / 1000

    ran_ms: float = 0.0
    """Milliseconds in the handler, for the same."""


class Worker:
    """Runs handlers for the task types it serves until stopped.

    Usually started by ``nervenet worker MODULE:ATTR``; in-process (embedded pool, tests) by
    ``pool.serve(target)`` or ``async with Worker.for_target(pool, target): ...``.
    """

    def __init__(
        self,
        pool: Pool,
        handlers: Mapping[str, Handler],
        *,
        concurrency: int = 64,
        worker_id: str | None = None,
        options: Mapping[str, TaskOptions] | None = None,
        queues: str | Iterable[str] | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.pool = pool
        options = dict(options or {})
        self.queues = parse_queues(queues)
        self.handlers = {
            validate_task_type(t): h
            for t, h in handlers.items()
            if self.queues is None or options.get(t, TaskOptions()).queue in self.queues
        }
        if not self.handlers:
            served = sorted({options.get(t, TaskOptions()).queue for t in handlers})
            raise ConfigurationError(
                f"no task type of this target is on queue(s) {sorted(self.queues or ())}; "
                f"its queues are {served}"
            )
        self.concurrency = concurrency
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.started_at = time.time()
        self.processed = 0
        self.answered_from_cache = 0
        self.dead_lettered = 0
        self.reclaimed = 0
        self.cancelled = 0
        self._streams = {s: t for t in self.handlers for s in pool.keys.task_streams(t)}
        # cancel stream -> the task stream whose entries it cancels
        self._cancel_streams = {pool.keys.cancel_stream(s): s for s in self._streams}
        # Task types under a limit are read only with permits (limited_reads.py); the others'
        # streams are covered by blocking reads: all at once, or on a cluster one read per slot.
        declared = {
            t: o.limits for t, o in options.items() if t in self.handlers and o.limits is not None
        }
        by_key: dict[str, list[TaskLimits]] = {}
        for limits in declared.values():
            by_key.setdefault(limits.key, []).append(limits)
        self.limits = {t: merged(by_key[limits.key]) for t, limits in declared.items()}
        self._unlimited_streams = [s for s, t in self._streams.items() if t not in self.limits]
        self._read_groups = (
            pool.transport.slot_groups(self._unlimited_streams) if self._unlimited_streams else []
        )
        self._cancel_groups = pool.transport.slot_groups(self._cancel_streams)
        self._slots = ReadSlots(
            concurrency,
            len(self._read_groups) + len(self.limits),
            in_flight=lambda: len(self._in_flight),
        )
        self._permits = PermitReads(self)
        self._cancel_positions: dict[str, str] = {}
        # (task stream, entry id) -> monotonic expiry of a cancellation that came first
        self._early_cancels: dict[tuple[str, bytes], float] = {}
        # Keyed by (stream, entry id): entry ids are unique only within one stream, and two
        # streams written in the same millisecond both get "<ms>-0".
        self._in_flight: dict[tuple[str, bytes], _InFlight] = {}
        self._stopping = asyncio.Event()
        self._hurry = asyncio.Event()
        self._readers: list[asyncio.Future[None]] = []
        self._cancellers: list[asyncio.Future[None]] = []
        self._beats: list[asyncio.Future[None]] = []
        self._threads_reserved = False
        self._unsteady_at = -1e9  # monotonic time of the last failed or late heartbeat
        self.metrics: WorkerMetrics | None = None
        """Prometheus metrics, if the worker was asked for them (``--metrics-port``)."""

    @classmethod
    def for_target(
        cls,
        pool: Pool,
        target: object,
        *,
        concurrency: int = 64,
        queues: str | Iterable[str] | None = None,
    ) -> Worker:
        """A worker for what ``target`` serves (a graph, a crew, :class:`Handlers`), routed and
        limited as it says (``nervenet worker MODULE:ATTR``, ``pool.serve``)."""
        return cls(
            pool,
            handlers_of(target),
            concurrency=concurrency,
            options=options_of(target),
            queues=queues,
        )

    # --- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        if not self._threads_reserved:  # sync handlers: --concurrency of them at once
            reserve_threads(self.concurrency)
            self._threads_reserved = True
        await self._ensure_groups()
        await self._find_cancel_positions()
        await self._heartbeat_once()
        if len(self._read_groups) > self.concurrency:
            log.warning(
                "worker %s: concurrency %d is below its %d blocking reads (one per cluster "
                "slot); some partitions wait for a free slot. Give it --concurrency %d or more",
                self.worker_id,
                self.concurrency,
                len(self._read_groups),
                len(self._read_groups),
            )
        for limits in {limits.key: limits for limits in self.limits.values()}.values():
            await self.pool.limits.declare(limits)
        self._readers = [
            *(asyncio.ensure_future(self._read_loop(group)) for group in self._read_groups),
            *(asyncio.ensure_future(self._permits.read_loop(t)) for t in self.limits),
        ]
        self._cancellers = [
            asyncio.ensure_future(self._cancel_loop(group)) for group in self._cancel_groups
        ]
        self._beats = [
            asyncio.ensure_future(self._heartbeat_loop()),
            asyncio.ensure_future(self._reclaim_loop()),
        ]

    async def stop(self, grace: float = 30.0) -> None:
        """Stop reading; let in-flight tasks finish for ``grace`` seconds (or until
        :meth:`hand_back_now`), hand back the rest.

        A task whose handler is running synchronous code in a thread is waited for instead,
        however long it takes: the thread cannot be interrupted, so a task handed back would run
        twice, to completion here and again on the worker that takes it.
        """
        self._stopping.set()
        heartbeat, reclaimer = self._beats or (None, None)
        for reader in self._readers:
            await cancel_and_wait(reader)
        await cancel_and_wait(reclaimer)
        running = [f.task for f in self._in_flight.values() if f.task is not None]
        if running:
            finished = asyncio.ensure_future(asyncio.wait(running))  # cancelling it cancels none
            hurry = asyncio.ensure_future(self._hurry.wait())
            await asyncio.wait([finished, hurry], timeout=grace, return_when=FIRST_COMPLETED)
            finished.cancel()
            hurry.cancel()
        in_threads = [t for t in running if not t.done() and runs_in_a_thread(t)]
        if in_threads:
            log.warning(
                "worker %s: %d task(s) run synchronous code, which cannot be interrupted; "
                "waiting for them to finish rather than handing them back to run twice",
                self.worker_id,
                len(in_threads),
            )
            await asyncio.wait(in_threads)
        await self._hand_back_unfinished()
        for canceller in self._cancellers:
            await cancel_and_wait(canceller)
        await cancel_and_wait(heartbeat)
        with contextlib.suppress(*TRANSIENT_ERRORS):
            await self.pool.registry.unregister(self.worker_id)
        if self._threads_reserved:
            release_threads(self.concurrency)
            self._threads_reserved = False

    def hand_back_now(self) -> None:
        """Cut a stopping worker's grace short: unfinished tasks go back to the pool at once
        (those running synchronous code in a thread are still waited for)."""
        self._hurry.set()

    async def run_until(self, stop: asyncio.Event, grace: float = 30.0) -> None:
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.stop(grace)

    async def __aenter__(self) -> Worker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def load(self) -> int:
        return len(self._in_flight)

    # --- reading ----------------------------------------------------------------------------
    async def _read_loop(self, streams: list[str]) -> None:
        failures = 0
        while not self._stopping.is_set():
            count = await self._slots.take()
            try:
                try:
                    batch = await self.pool.transport.read_group(
                        WORKER_GROUP,
                        self.worker_id,
                        dict.fromkeys(streams, ">"),
                        count=count,
                        block_ms=self._slots.block_ms(self.pool.settings.block_ms),
                    )
                    failures = 0
                except ResponseError as exc:
                    # The server lost our streams or groups (a restart without persistence, a
                    # deleted key): recreate them. Redis says NOGROUP or "UNBLOCKED ... no longer
                    # exists"; fakeredis says the key must exist. Never let the reader die.
                    failures += 1
                    log.warning(
                        "worker %s: read refused (%s); recreating groups", self.worker_id, exc
                    )
                    await asyncio.sleep(backoff(failures))
                    with contextlib.suppress(*TRANSIENT_ERRORS, ResponseError):
                        await self._ensure_groups()
                    continue
                except TRANSIENT_ERRORS as exc:
                    failures += 1
                    await self.pool.outages.wait_out(
                        f"worker {self.worker_id}'s read", exc, failures
                    )
                    continue
                # The entries read stay counted in this read's slots until they are in flight.
                for stream, entries in batch:
                    await self._accept(stream.decode(), entries, first_delivery=True)
            finally:
                self._slots.give_back(count)
            await let_woken_writes_go_first()  # the handlers' settlements go out first

    async def _accept(
        self,
        stream: str,
        entries: list[tuple[bytes, dict[bytes, bytes]]],
        *,
        first_delivery: bool,
        permits: dict[bytes, tuple[str, str]] | None = None,
    ) -> None:
        """Validate a batch, answer cached ones, start the rest. ``permits`` (entry id ->
        permit) go with their entries; the caller gives back the ones left in it."""
        runnable: list[tuple[_InFlight, TaskEnvelope]] = []
        for entry_id, fields in entries:
            if not fields:  # deleted while pending (XAUTOCLAIM can return those)
                continue
            if (stream, entry_id) in self._in_flight:  # ours, re-claimed after a stall
                continue
            flight = _InFlight(stream, entry_id, fields)
            if permits:
                flight.permit = permits.pop(entry_id, None)
            if self._early_cancels.pop((stream, entry_id), None) is not None:
                log.info("task entry %s on %s was cancelled before it started", entry_id, stream)
                self.cancelled += 1
                await self._settle(flight)
                continue
            try:
                envelope = self._parse(flight)
            except EnvelopeError as exc:
                await self._dead_letter(flight, exc.reason, route=self._route_of_invalid(fields))
                continue
            if envelope.recorded or self.metrics is not None:
                flight.read_at = time.time()
            if envelope.deadline and envelope.deadline < time.time():
                log.info("task %s expired before it started; dropped", envelope.task_id)
                await self._settle(flight)
                continue
            self._in_flight[(stream, entry_id)] = flight
            runnable.append((flight, envelope))
        if not runnable:
            return
        # A fresh id's first attempt, read for the first time (">"), cannot have a cached
        # result: nothing else dispatches that id, and a run of this entry would have been
        # a delivery already. Redeliveries, retries and deterministic ids are looked up.
        lookups = [env.task_id for _, env in runnable if not (first_delivery and _unseen(env))]
        found = iter(
            self._unsealed(lookups, await self._cached_results(lookups)) if lookups else ()
        )
        cached = [None if first_delivery and _unseen(env) else next(found) for _, env in runnable]
        for (flight, envelope), result in zip(runnable, cached, strict=True):
            if flight.cancelled:  # during the cache lookup
                await self._drop_cancelled(flight, envelope)
            elif result is not None:
                self.answered_from_cache += 1
                await self._finish(
                    flight,
                    envelope,
                    Reply(
                        envelope.task_id, envelope.attempt, ReplyKind.RESULT, body=as_bytes(result)
                    ),
                    cache=False,
                )
            else:
                flight.task = asyncio.ensure_future(self._run(flight, envelope))

    def _unsealed(self, task_ids: list[str], cached: list[Any]) -> list[bytes | None]:
        """Cached results, less those a signing pool did not seal itself (forged or altered:
        the task then runs, as if nothing were cached)."""
        results: list[bytes | None] = []
        for task_id, stored in zip(task_ids, cached, strict=True):
            result = None
            if stored is not None:
                result = cached_result(self.pool.signer, task_id, as_bytes(stored))
                if result is None:
                    log.warning(
                        "worker %s: ignored an unsealed cached result of %s",
                        self.worker_id,
                        task_id,
                    )
            results.append(result)
        return results

    async def _cached_results(self, task_ids: list[str]) -> list[Any]:
        """The result cache lookup, riding out a Redis outage: the batch is already ours (in
        flight), so giving up here would strand it with a live-looking worker."""
        failures = 0
        while True:
            try:
                return await self.pool.transport.mget([self.pool.keys.result(t) for t in task_ids])
            except TRANSIENT_ERRORS as exc:
                failures += 1
                what = f"worker {self.worker_id}'s result cache lookup"
                await self.pool.outages.wait_out(what, exc, failures)

    def _parse(self, flight: _InFlight) -> TaskEnvelope:
        envelope = TaskEnvelope.from_fields(
            flight.fields,
            max_payload_bytes=self.pool.settings.max_payload_bytes,
            reply_prefix=self.pool.keys.reply_stream_prefix,
            signer=self.pool.signer,
        )
        if envelope.task_type != self._streams[flight.stream]:
            raise EnvelopeError(
                f"task type {envelope.task_type!r} sent on the stream of "
                f"{self._streams[flight.stream]!r}"
            )
        return envelope

    # --- running ----------------------------------------------------------------------------
    async def _run(self, flight: _InFlight, envelope: TaskEnvelope) -> None:
        if flight.cancelled:  # between the cache lookup and this task's first step
            await self._drop_cancelled(flight, envelope)
            return
        flight.in_handler = True
        started = time.monotonic()
        try:
            if self.pool.tracer is not None and envelope.trace:
                reply = await self._traced_call(envelope)
            else:
                reply = await self._call_handler(envelope)
        except asyncio.CancelledError:
            if not flight.cancelled:
                raise  # the worker is stopping: _hand_back_unfinished puts the entry back
            reply = None
        finally:
            flight.in_handler = False
            flight.handled = True
            flight.ran_ms = (time.monotonic() - started) * 1000
        if reply is None or flight.cancelled:  # also if the handler swallowed the cancellation
            await self._drop_cancelled(flight, envelope)
            return
        self.processed += 1
        await self._finish(flight, envelope, reply, cache=reply.kind is ReplyKind.RESULT)

    async def _traced_call(self, envelope: TaskEnvelope) -> Reply:
        """The handler inside its CONSUMER span, child of the dispatch's (see tracing.py)."""
        with tracing.processing(
            self.pool.tracer,
            envelope.trace,
            envelope.task_type,
            envelope.task_id,
            envelope.workflow_id,
            envelope.attempt,
        ) as span:
            reply = await self._call_handler(envelope)
            if reply.error is not None:
                tracing.failed(span, f"{reply.error.type_name}: {reply.error.message}")
            return reply

    async def _call_handler(self, envelope: TaskEnvelope) -> Reply:
        handler = self.handlers[envelope.task_type]

        loop = asyncio.get_running_loop()
        loop_thread = threading.get_ident()

        def send_frame(frame: bytes) -> None:
            reply = Reply(envelope.task_id, envelope.attempt, ReplyKind.FRAME, body=frame)
            sent = self.pool.batcher.submit(
                lambda pipe: self._add_reply(pipe, envelope.reply_to, reply)
            )
            sent.add_done_callback(_log_lost_frame)

        def emit(frame: bytes) -> None:
            # Sync nodes run in threads; hop to the loop so frames keep their order.
            if threading.get_ident() == loop_thread:
                send_frame(frame)
            else:
                loop.call_soon_threadsafe(send_frame, frame)

        ctx = TaskContext(
            task_id=envelope.task_id,
            workflow_id=envelope.workflow_id,
            task_type=envelope.task_type,
            attempt=envelope.attempt,
            deadline=envelope.deadline,
            trace=envelope.trace,
            pool=self.pool,
            emit=emit,
        )
        try:
            body = await handler(envelope.payload, ctx)
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # cancelled from outside: by its coordinator, or the worker stops
            # The handler raised CancelledError itself (or awaited something another task
            # cancelled). Nobody cancelled this dispatch, so its coordinator still waits:
            # answer with an error, or a dispatch without a timeout would wait forever.
            return _error_reply(envelope, exc, _qualified_name(type(exc)), b"", "")
        except TaskFailure as exc:
            return _error_reply(envelope, exc, exc.type_name, exc.data, exc.traceback)
        except Exception as exc:
            return _error_reply(envelope, exc, _qualified_name(type(exc)), b"", "")
        return Reply(envelope.task_id, envelope.attempt, ReplyKind.RESULT, body=body)

    async def _finish(
        self, flight: _InFlight, envelope: TaskEnvelope, reply: Reply, *, cache: bool
    ) -> None:
        """Cache the result, answer, then acknowledge: never acknowledge unanswered work."""
        keys, settings, signer = self.pool.keys, self.pool.settings, self.pool.signer

        def commands(pipe: Pipeline) -> None:
            if cache:
                cached = reply.body if signer is None else signer.seal(envelope.task_id, reply.body)
                pipe.set(keys.result(envelope.task_id), cached, ex=int(settings.result_ttl))
            self._add_reply(pipe, envelope.reply_to, reply)
            _ack(pipe, flight)
            if envelope.recorded:
                self._add_node_history(pipe, flight, envelope, reply, cached=not cache)

        if self.metrics is not None:  # before the reply can reach anyone who reads them
            self._count(flight, envelope, reply, cached=not cache)
        await self._write_until_done(commands)
        self._release(flight)

    def _count(self, flight: _InFlight, envelope: TaskEnvelope, reply: Reply, cached: bool) -> None:
        assert self.metrics is not None
        self.metrics.settled(
            envelope.task_type,
            _outcome(reply, cached),
            envelope.attempt,
            flight.queue_wait,
            flight.ran_ms / 1000,
        )

    def _add_node_history(
        self, pipe: Pipeline, flight: _InFlight, envelope: TaskEnvelope, reply: Reply, cached: bool
    ) -> None:
        """The attempt's entry in its run's history, in the settle pipeline (no round trip of
        its own); capped and expiring with the run record (see :mod:`nervenet.runs`)."""
        outcome = _outcome(reply, cached)
        fields = node_fields(
            task_type=envelope.task_type,
            task_id=envelope.task_id,
            attempt=envelope.attempt,
            worker=self.worker_id,
            outcome=outcome,
            queue_wait_ms=flight.queue_wait * 1000,
            run_ms=0.0 if outcome == "cached" else flight.ran_ms,
            error=reply.error.message if reply.error is not None else "",
        )
        settings, history = self.pool.settings, self.pool.keys.run_nodes(envelope.workflow_id)
        pipe.xadd(history, fields, maxlen=settings.run_nodes_kept, approximate=True)  # type: ignore[arg-type]
        pipe.expire(history, int(settings.run_retention))

    def _add_reply(self, pipe: Pipeline, reply_to: str, reply: Reply) -> None:
        pipe.xadd(
            reply_to,
            reply.to_fields(self.pool.signer),  # type: ignore[arg-type]
            maxlen=self.pool.settings.reply_stream_maxlen,
            approximate=True,
            nomkstream=True,
        )

    async def _settle(self, flight: _InFlight) -> None:
        await self._write_until_done(lambda pipe: _ack(pipe, flight))
        self._release(flight)

    async def _drop_cancelled(self, flight: _InFlight, envelope: TaskEnvelope) -> None:
        """Acknowledge a cancelled task and confirm to its coordinator that the handler has
        stopped (it waits for that, as an awaiter of a cancelled asyncio task does). No cached
        result: a later dispatch of the same task id must run it, not get a cut-off run's."""
        log.info(
            "task %s attempt %d cancelled by its coordinator", envelope.task_id, envelope.attempt
        )
        self.cancelled += 1
        stopped = Reply(envelope.task_id, envelope.attempt, ReplyKind.CANCELLED)
        await self._finish(flight, envelope, stopped, cache=False)

    # --- cancellations ----------------------------------------------------------------------
    async def _find_cancel_positions(self) -> None:
        """Read cancel streams from their current end: older cancellations are for entries
        that were deleted before this worker could read them."""
        unknown = [s for s in self._cancel_streams if s not in self._cancel_positions]
        if not unknown:
            return
        async with self.pool.transport.redis.pipeline(transaction=False) as pipe:
            for stream in unknown:
                pipe.xrevrange(stream, count=1)
            lasts: list[Any] = await pipe.execute()
        for stream, last in zip(unknown, lasts, strict=True):
            self._cancel_positions[stream] = last[0][0].decode() if last else "0-0"

    async def _cancel_loop(self, streams: list[str]) -> None:
        failures = 0
        while True:
            try:
                batch = await self.pool.transport.read(
                    {s: self._cancel_positions[s] for s in streams},
                    count=1_000,
                    block_ms=self.pool.settings.block_ms,
                )
                failures = 0
            except TRANSIENT_ERRORS as exc:
                failures += 1
                what = f"worker {self.worker_id}'s cancel stream read"
                await self.pool.outages.wait_out(what, exc, failures)
                continue
            except ResponseError as exc:
                failures += 1
                if failures == 1:
                    log.warning("worker %s: cancel stream read failed (%s)", self.worker_id, exc)
                await asyncio.sleep(backoff(failures))
                continue
            for stream, entries in batch:
                cancel_stream = stream.decode()
                for entry_id, fields in entries:
                    self._cancel_positions[cancel_stream] = entry_id.decode()
                    self._on_cancel(self._cancel_streams[cancel_stream], fields)

    def _on_cancel(self, task_stream: str, fields: dict[bytes, bytes]) -> None:
        try:
            request = CancelRequest.from_fields(fields)
        except EnvelopeError as exc:
            log.debug("ignored a malformed cancellation on %s: %s", task_stream, exc.reason)
            return
        key = (task_stream, request.entry_id.encode())
        flight = self._in_flight.get(key)
        if flight is None:
            # Another worker's task, or ours with the read's reply still on its way to the
            # read loop (the cancel's XADD came after our read, but on another connection).
            self._remember_early_cancel(key)
            return
        if flight.cancelled or flight.handled:
            return
        flight.cancelled = True
        if flight.in_handler:
            assert flight.task is not None
            flight.task.cancel()
        # Not started yet: _accept (after the cache lookup) or _run (first step) drops it.

    def _remember_early_cancel(self, key: tuple[str, bytes]) -> None:
        now = time.monotonic()
        self._early_cancels[key] = now + EARLY_CANCEL_MEMORY
        if len(self._early_cancels) > EARLY_CANCEL_LIMIT:
            self._early_cancels.pop(next(iter(self._early_cancels)))
        self._forget_early_cancels(now)

    def _forget_early_cancels(self, now: float) -> None:
        for key, expiry in list(self._early_cancels.items()):
            if expiry > now:
                break  # insertion order is expiry order
            del self._early_cancels[key]

    async def _dead_letter(
        self,
        flight: _InFlight,
        reason: str,
        envelope: TaskEnvelope | None = None,
        *,
        route: ReplyRoute | None = None,
    ) -> None:
        """Move an entry to the escalation stream; tell its coordinator if it can be told."""
        self.dead_lettered += 1
        if self.metrics is not None:
            self.metrics.escalated.inc()
        log.warning("dead-lettered entry %s on %s: %s", flight.entry_id, flight.stream, reason)
        fields = escalation_fields(
            reason, source=flight.stream, envelope=envelope, raw=None if envelope else flight.fields
        )
        if envelope is not None:
            route = ReplyRoute(envelope.reply_to, envelope.task_id, envelope.attempt)

        def commands(pipe: Pipeline) -> None:
            self.pool.add_escalation(pipe, fields)
            if route is not None:
                error = ReplyError(ESCALATED_BY_WORKER, reason, "")
                reply = Reply(route.task_id, route.attempt, ReplyKind.ERROR, error=error)
                self._add_reply(pipe, route.reply_to, reply)
            _ack(pipe, flight)

        await self._write_until_done(commands)
        self._release(flight)

    def _route_of_invalid(self, fields: dict[bytes, bytes]) -> ReplyRoute | None:
        """Whom to tell that an invalid entry was dead-lettered, if anyone.

        A ``timeout=None`` dispatch whose entry a worker refuses (payload over this worker's
        limit, a task type the stream does not carry, an envelope version it does not know)
        would otherwise wait forever. But the reply address of an invalid entry is unverified,
        so the worker answers only when that cannot be turned against anyone:

        * the address must be a reply stream of this namespace exactly as pools name them, and
          the reply is an ``XADD NOMKSTREAM`` like every reply: no other key is ever written and
          no stream is created (a dead process's reply stream stays gone);
        * with signing on, never for an entry whose signature fails. A coordinator holding the
          secret never sends one, so nobody real waits for it, while answering would let
          whoever may write only to task streams (what signing defends against) inject error
          replies into live reply streams. Dead-letter and log only.
        * without signing, anyone who can write a task entry can already make a worker answer
          any reply stream by sending a valid one, so answering an invalid one adds nothing.
        """
        if self.pool.signer is not None:
            try:
                self.pool.signer.verify(fields)
            except EnvelopeError:
                return None
        try:
            return ReplyRoute.from_fields(fields, is_reply_stream=self.pool.keys.is_reply_stream)
        except EnvelopeError:
            return None

    async def _write_until_done(self, commands: Any) -> None:
        """Retry a settlement across a Redis outage; the entry stays pending until it lands."""
        failures = 0
        while True:
            try:
                await self.pool.batcher.run(commands)
                return
            except TRANSIENT_ERRORS as exc:
                failures += 1
                what = f"worker {self.worker_id} settling a task"
                await self.pool.outages.wait_out(what, exc, failures)

    def _release(self, flight: _InFlight) -> None:
        self._in_flight.pop((flight.stream, flight.entry_id), None)
        if flight.permit is not None:
            self._permits.give_back([flight.permit])
            flight.permit = None
        self._slots.wake()

    # --- heartbeat, reclaim, hand-back -------------------------------------------------------
    async def _heartbeat_loop(self) -> None:
        # A timer of its own: behind reclaim work (a burst of abandoned entries under load) the
        # registration lapsed and this worker's in-flight entries went stale while it was alive,
        # so dispatchers saw no worker and other workers reclaimed what it was running.
        interval = self.pool.settings.heartbeat_interval
        await self._every(interval, self._heartbeat_once, "heartbeat", late_is_outage=True)

    async def _reclaim_loop(self) -> None:
        # Entries are abandoned only after a whole visibility timeout idle: looking a few times
        # per timeout finds them soon enough, at a fraction of the XAUTOCLAIMs (one per stream,
        # and a cluster has a stream per partition).
        settings = self.pool.settings
        interval = max(settings.heartbeat_interval, settings.visibility_timeout / 4)
        await self._every(interval, self._reclaim_abandoned, "reclaim")

    async def _every(
        self,
        interval: float,
        step: Callable[[], Awaitable[None]],
        what: str,
        *,
        late_is_outage: bool = False,
    ) -> None:
        """Run ``step`` every ``interval`` seconds, riding out Redis outages; with
        ``late_is_outage``, a step that takes over twice its interval counts as one (a
        failover the cluster client retries through looks like that)."""
        while True:
            await asyncio.sleep(interval)
            started, cpu_started = time.monotonic(), time.thread_time()
            try:
                await step()
            except asyncio.CancelledError:
                raise
            except TRANSIENT_ERRORS as exc:
                self._unsteady_at = time.monotonic()
                self.pool.outages.failed(f"worker {self.worker_id}'s {what}", exc)
            except ResponseError as exc:
                if "NOGROUP" in str(exc):
                    await self._ensure_groups()
                else:
                    log.exception("worker %s: %s failed", self.worker_id, what)
            else:
                took = time.monotonic() - started
                if late_is_outage and took > 2 * interval:
                    self._unsteady_at = time.monotonic()
                    busy = time.thread_time() - cpu_started
                    self.pool.outages.slow(f"worker {self.worker_id}'s {what}", took, busy)

    def _steady(self) -> bool:
        """Whether this worker's own heartbeats went through on time for a whole visibility
        timeout. After an outage (a failover) every worker's in-flight entries look idle; a
        worker that reclaimed at once would take what live workers are still running, before
        their first heartbeat since the outage refreshed it."""
        settings = self.pool.settings
        grace = settings.visibility_timeout + settings.heartbeat_interval
        return time.monotonic() - self._unsteady_at > grace

    async def _heartbeat_once(self) -> None:
        settings = self.pool.settings
        await self.pool.registry.register(
            WorkerInfo(
                worker_id=self.worker_id,
                task_types=tuple(self.handlers),
                concurrency=self.concurrency,
                load=len(self._in_flight),
                started_at=self.started_at,
                host=f"{socket.gethostname()}:{os.getpid()}",
                processed=self.processed,
            ),
            ttl=settings.visibility_timeout,
        )
        by_stream: dict[str, list[bytes]] = {}
        permits: list[tuple[str, str]] = []
        for flight in self._in_flight.values():
            by_stream.setdefault(flight.stream, []).append(flight.entry_id)
            if flight.permit is not None:
                permits.append(flight.permit)
        if by_stream:
            async with self.pool.transport.redis.pipeline(transaction=False) as pipe:
                for stream, ids in by_stream.items():
                    # Claiming our own entries resets their idle time (JUSTID leaves the
                    # delivery counter alone): this is what tells XAUTOCLAIM we are alive.
                    pipe.xclaim(stream, WORKER_GROUP, self.worker_id, 0, list(ids), justid=True)
                self._permits.renew(pipe, permits)
                await pipe.execute(raise_on_error=False)

    async def _reclaim_abandoned(self) -> None:
        if not self._steady():
            return
        free = self.concurrency - len(self._in_flight)
        if free <= 0 or self._stopping.is_set():
            return
        settings = self.pool.settings
        min_idle_ms = int(settings.visibility_timeout * 1000)
        await self._permits.reclaim(min_idle_ms)
        streams = self._unlimited_streams
        if not streams:
            return
        # One pipeline for every stream (a cluster has one per partition and task type); each
        # claims its share of the free slots, at least one.
        share = max(1, free // len(streams))
        async with self.pool.transport.redis.pipeline(transaction=False) as pipe:
            for stream in streams:
                pipe.xautoclaim(
                    stream, WORKER_GROUP, self.worker_id, min_idle_ms, "0-0", count=share
                )
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        errors = [r for r in replies if isinstance(r, Exception)]
        for stream, claimed in zip(streams, replies, strict=True):
            if not isinstance(claimed, Exception) and claimed[1]:
                await self._take_reclaimed(stream, claimed[1])
        if errors:
            raise errors[0]  # after taking what was claimed; NOGROUP: _every recreates groups

    async def _take_reclaimed(
        self,
        stream: str,
        claimed: list[tuple[bytes, dict[bytes, bytes]]],
        permits: dict[bytes, tuple[str, str]] | None = None,
    ) -> None:
        redis = self.pool.transport.redis
        gone = [i for i, f in claimed if not f]
        if gone:
            # Deleted while pending (a cancelled dispatch withdrew it): Redis 6.2 keeps such
            # ids pending and hands them out again forever unless acknowledged.
            await redis.xack(stream, WORKER_GROUP, *gone)
        entries = [(i, f) for i, f in claimed if f and (stream, i) not in self._in_flight]
        if not entries:
            return
        self.reclaimed += len(entries)
        log.info(
            "worker %s reclaimed %d abandoned task(s) from %s", self.worker_id, len(entries), stream
        )
        # Delivery counts in one round trip (one per entry, in sequence, took seconds for a
        # burst on a loaded machine).
        async with redis.pipeline(transaction=False) as pipe:
            for entry_id, _ in entries:
                pipe.xpending_range(stream, WORKER_GROUP, entry_id, entry_id, 1)
            counts: list[Any] = await pipe.execute()
        retry = []
        for (entry_id, fields), pending in zip(entries, counts, strict=True):
            deliveries = int(pending[0]["times_delivered"]) if pending else 1
            # Counted as runs started: this claim is delivery number ``deliveries``, and every
            # earlier one started the task on a worker that died.
            if deliveries > self.pool.settings.max_deliveries:
                await self._dead_letter_poison(stream, entry_id, fields, deliveries)
            else:
                retry.append((entry_id, fields))
        await self._accept(stream, retry, first_delivery=False, permits=permits)

    async def _dead_letter_poison(
        self, stream: str, entry_id: bytes, fields: dict[bytes, bytes], deliveries: int
    ) -> None:
        flight = _InFlight(stream, entry_id, fields)
        # The delivery that brought it here is this claim, which does not run it.
        started = deliveries - 1
        reason = (
            f"started {started} time(s) (max_deliveries {self.pool.settings.max_deliveries}) and "
            "never finished: each time its worker died; it may crash workers"
        )
        try:
            envelope: TaskEnvelope | None = self._parse(flight)
        except EnvelopeError:
            envelope = None
        route = None if envelope else self._route_of_invalid(fields)
        await self._dead_letter(flight, reason, envelope, route=route)

    async def _hand_back_unfinished(self) -> None:
        """Give unfinished tasks back to the pool at once instead of after the visibility timeout.

        Redis Streams have no negative acknowledgement, so the entry is re-added to its stream
        (another worker reads it immediately) and the original acknowledged.
        """
        for flight in list(self._in_flight.values()):
            if flight.task is not None and not flight.task.done():
                flight.task.cancel()
                await asyncio.gather(flight.task, return_exceptions=True)

            def commands(pipe: Pipeline, flight: _InFlight = flight) -> None:
                if not flight.cancelled:  # nobody wants a cancelled one done
                    pipe.xadd(flight.stream, flight.fields)  # type: ignore[arg-type]
                _ack(pipe, flight)

            with contextlib.suppress(*TRANSIENT_ERRORS):
                await self.pool.batcher.run(commands)
                log.info("worker %s handed back task entry %s", self.worker_id, flight.entry_id)
            self._release(flight)

    async def _ensure_groups(self) -> None:
        async with self.pool.transport.redis.pipeline(transaction=False) as pipe:
            for stream in self._streams:
                # From id 0: tasks dispatched before any worker existed are served too.
                pipe.xgroup_create(stream, WORKER_GROUP, id="0", mkstream=True)
            replies = await pipe.execute(raise_on_error=False)
        for reply in replies:
            exists = isinstance(reply, ResponseError) and "BUSYGROUP" in str(reply)
            if isinstance(reply, Exception) and not exists:
                raise reply


def _log_lost_frame(sent: asyncio.Future[Any]) -> None:
    if not sent.cancelled() and sent.exception() is not None:
        log.warning("a streamed frame was lost: %s", sent.exception())


def _unseen(envelope: TaskEnvelope) -> bool:
    return envelope.fresh and envelope.attempt == 1


def _outcome(reply: Reply, cached: bool) -> str:
    if reply.kind is ReplyKind.ERROR:
        return "error"
    if reply.kind is ReplyKind.CANCELLED:
        return "cancelled"
    return "cached" if cached else "ok"


def _ack(pipe: Pipeline, flight: _InFlight) -> None:
    pipe.xack(flight.stream, WORKER_GROUP, flight.entry_id)
    pipe.xdel(flight.stream, flight.entry_id)


def _qualified_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _error_reply(
    envelope: TaskEnvelope, exc: BaseException, type_name: str, data: bytes, tb: str
) -> Reply:
    error = ReplyError(
        type_name=type_name,
        message=str(exc),
        traceback=tb or "".join(traceback.format_exception(exc)),
        data=data,
    )
    return Reply(envelope.task_id, envelope.attempt, ReplyKind.ERROR, error=error)
