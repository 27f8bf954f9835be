"""The agent pool as seen from one process: connection, reply stream, heartbeat, in-process workers.

Build one per process from a URL (``Pool.from_url("redis://...")``) or embedded
(``Pool.local()``), then hand out coordinators, one per workflow run. There is no global pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from .batching import CommandBatcher
from .cancelling import cancel_and_wait
from .coordinator import DEFAULT_BACKOFF, Backoff, Coordinator
from .envelope import CancelRequest, Signer, TaskEnvelope, cached_result
from .errors import ConfigurationError
from .escalations import Escalations, escalation_fields
from .handlers import handlers_of
from .inbox import Inbox, PayloadSource
from .keys import WORKER_GROUP, Keys
from .limits import Limits
from .outages import TRANSIENT_ERRORS, Outages
from .portal import Portal
from .registry import Registry, WorkerInfo
from .run_slots import RunSlots, keeping_the_run_scope
from .runs import Runs
from .settings import PoolSettings
from .tracing import tracer_if_enabled
from .transport import EmbeddedTransport, RedisTransport, Transport, as_bytes, as_text
from .workflows import Workflows

if TYPE_CHECKING:
    from redis.asyncio.client import Pipeline

    from .status import PoolStatus
    from .worker import Worker

log = logging.getLogger("nervenet.pool")

HeartbeatHook = Callable[[], Awaitable[None]]
T = TypeVar("T")

#: How long closing waits for writes already queued (a dead Redis must not hang the close).
CLOSE_DRAIN_TIMEOUT = 5.0

#: Default task stream partitions per cluster primary: an equal share of every task type on
#: each shard (the tags sit on evenly spaced slots), and room for a shard count that doubles.
#: More would cost each worker more blocking reads (one per partition).
CLUSTER_PARTITIONS_PER_PRIMARY = 2


class Pool:
    """Shared agent pool handle for one process."""

    def __init__(
        self,
        transport: Transport,
        *,
        namespace: str = "nn",
        settings: PoolSettings | None = None,
        signing_secret: bytes | str | None = None,
    ) -> None:
        self.transport = transport
        self.keys = Keys(namespace)
        self.settings = settings or PoolSettings()
        if isinstance(signing_secret, str):
            signing_secret = signing_secret.encode()
        self.signer = Signer(signing_secret) if signing_secret else None
        self.process_id = uuid.uuid4().hex
        self.registry = Registry(transport, self.keys)
        self.escalations = Escalations(transport, self.keys, self.signer)
        self.outages = Outages(transport.description)
        self.inbox = Inbox(
            transport,
            self.keys.reply_stream(self.process_id),
            block_ms=self.settings.block_ms,
            outages=self.outages,
            signer=self.signer,
        )
        self.portal = Portal()
        self._batcher: CommandBatcher | None = None
        self._in_flight: asyncio.Semaphore | None = None
        self._started: asyncio.Future[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._heartbeat_hooks: list[HeartbeatHook] = []
        self._workers: list[Worker] = []
        self._closing = False
        self._local_workers: list[tuple[object, int, str | Iterable[str] | None]] = []
        self.run_slots = RunSlots(self.settings.max_runs)
        """The runs this process coordinates at once (``PoolSettings.max_runs``)."""
        self.workflows = Workflows(self)
        self.limits = Limits(self)
        """Concurrency caps and rates shared by every process: ``await pool.limits.set(...)``."""
        self.runs = Runs(self)
        """Run records: ``await pool.runs.list(status="running")``, ``pool.runs.get(run_id)``."""
        self.tracer: Any | None = None
        """OpenTelemetry tracer if the app configured a provider before the pool started (see
        :mod:`nervenet.tracing`); None: no spans at all."""

    # --- construction -----------------------------------------------------------------------
    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        namespace: str = "nn",
        settings: PoolSettings | None = None,
        signing_secret: bytes | str | None = None,
        max_connections: int = 64,
    ) -> Pool:
        """A pool on a real Redis/Valkey: ``redis://[[user]:password@]host:port/db``,
        ``rediss://`` for TLS (``?ssl_cert_reqs=none`` etc. as redis-py accepts)."""
        lean = (settings or PoolSettings()).lean_connections
        transport = RedisTransport(url, max_connections=max_connections, lean=lean)
        return cls(transport, namespace=namespace, settings=settings, signing_secret=signing_secret)

    @classmethod
    def local(
        cls,
        handlers: object | None = None,
        *,
        workers: int = 1,
        concurrency: int = 64,
        namespace: str = "nn",
        settings: PoolSettings | None = None,
    ) -> Pool:
        """An embedded pool: in-process fakeredis and in-process workers. No server needed.

        ``handlers`` (a :class:`~nervenet.handlers.Handlers`, a distributed graph or crew) are
        served by ``workers`` in-process workers once the pool starts; more can be added with
        :meth:`serve`. Works inside an already running event loop (Jupyter).
        """
        pool = cls(EmbeddedTransport(), namespace=namespace, settings=settings)
        if handlers is not None:
            pool.serve_locally(handlers, workers=workers, concurrency=concurrency)
        return pool

    def bound_runs(self, max_runs: int | None) -> None:
        """Set :attr:`PoolSettings.max_runs` of a pool that has run nothing yet (what
        ``nervenet serve --max-runs`` does to the pool of the app it serves)."""
        if self.run_slots.running or self.run_slots.waiting:
            raise ConfigurationError("bound_runs() must be called before the pool runs anything")
        self.settings = dataclasses.replace(self.settings, max_runs=max_runs)
        self.run_slots = RunSlots(max_runs)

    @property
    def is_embedded(self) -> bool:
        return isinstance(self.transport, EmbeddedTransport)

    def serve_locally(
        self,
        handlers: object,
        *,
        workers: int = 1,
        concurrency: int = 64,
        queues: str | Iterable[str] | None = None,
    ) -> None:
        """Run ``workers`` in-process workers for ``handlers`` when the pool starts."""
        handlers_of(handlers)  # fail now on what cannot be served
        for _ in range(workers):
            self._local_workers.append((handlers, concurrency, queues))
        if self._started is not None and self._started.done():
            raise ConfigurationError("call serve_locally before the pool starts, or use serve()")

    # --- lifecycle --------------------------------------------------------------------------
    async def ensure_started(self) -> None:
        """Connect, open the reply stream and start the heartbeat (once; concurrent-safe)."""
        if self._is_started():
            return  # every dispatch passes here: no shield (a future and callbacks) once up
        if self._started is None:
            self._started = asyncio.ensure_future(self._start())
        started = self._started
        try:
            await asyncio.shield(started)
        except BaseException:
            if started.done() and self._started is started:
                self._started = None  # let a later call try again (e.g. Redis came up)
            raise

    def _is_started(self) -> bool:
        started = self._started
        return (
            started is not None
            and started.done()
            and not started.cancelled()
            and started.exception() is None
        )

    async def _start(self) -> None:
        self._closing = False
        self.tracer = tracer_if_enabled()
        self.portal.adopt_running_loop()
        await self.transport.check()
        self.keys.partitions = await self._agree_partitions()
        self._batcher = CommandBatcher(
            self.transport.redis, self.transport.notify_written, self.transport.execute
        )
        self._in_flight = asyncio.Semaphore(self.settings.max_in_flight)
        await self.inbox.open(self.keys.reply_streams(self.process_id, self.transport.primaries))
        await self._renew_reply_stream()
        self._heartbeat = asyncio.ensure_future(self._heartbeat_loop())
        for target, concurrency, queues in self._local_workers:
            await self._start_worker(target, concurrency, queues)

    async def _agree_partitions(self) -> int:
        """The namespace's task stream partitions: what the first pool to start wrote, else
        this pool's setting (written for every later one)."""
        wanted = self.settings.task_partitions
        if wanted is None:
            wanted = CLUSTER_PARTITIONS_PER_PRIMARY * self.transport.primaries
            wanted = wanted if self.transport.is_cluster else 1
        redis = self.transport.redis
        await redis.hsetnx(self.keys.config, "task_partitions", wanted)
        stored = int(as_text(await redis.hget(self.keys.config, "task_partitions") or b"1"))
        if self.settings.task_partitions not in (None, stored):
            log.warning(
                "namespace %r already uses %d task stream partitions; this pool's setting "
                "(%d) is ignored so that its tasks reach the other processes' workers",
                self.keys.namespace,
                stored,
                self.settings.task_partitions,
            )
        return stored

    async def aclose(self) -> None:
        """Stop in-process workers and the heartbeat, delete the reply stream, disconnect."""
        self._closing = True
        await self.workflows.close()
        for worker in self._workers:
            await worker.stop(grace=5.0)
        self._workers.clear()
        await cancel_and_wait(self._heartbeat)
        self._heartbeat = None
        await self.registry.aclose()
        await self.inbox.close()
        if self._batcher is not None:
            await self._batcher.drain(timeout=CLOSE_DRAIN_TIMEOUT)
        if self._is_started():
            with contextlib.suppress(Exception):
                for address in self.inbox.addresses:
                    await self.transport.redis.delete(address)
        self._started = None
        await self.transport.aclose()

    def close(self) -> None:
        """Close a pool that was used from synchronous code (``graph.invoke``)."""
        if self.portal.loop is not None and not self.portal.loop.is_closed():
            self.portal.call(self.aclose)
        self.portal.close()

    def call_sync(self, make: Callable[[], Awaitable[T]]) -> T:
        """Run ``make()`` on the pool's loop from synchronous code; return its result."""
        return self.portal.call(keeping_the_run_scope(make))

    def on_home(self, make: Callable[[], Awaitable[T]]) -> Awaitable[T]:
        """Await ``make()`` on the pool's loop from whichever loop the caller runs on."""
        if self.portal.is_home():
            return make()  # no hand-off, and no coroutine frame kept per dispatch in flight
        # A cancelled caller waits for the dispatch's own bounded wait for its worker, and a bit.
        return self.portal.run(
            keeping_the_run_scope(make), cancel_grace=self.settings.cancel_wait + 1.0
        )

    async def __aenter__(self) -> Pool:
        await self.ensure_started()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- coordinators -----------------------------------------------------------------------
    def coordinator(self, workflow_id: str | None = None) -> Coordinator:
        """A coordinator for one workflow run (cheap; make one per run)."""
        return Coordinator(self, workflow_id)

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
        """One-off dispatch outside any workflow; the options are
        :meth:`Coordinator.dispatch`'s."""
        return await self.coordinator().dispatch(
            task_type,
            payload,
            task_id=task_id,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            escalate_errors=escalate_errors,
            wait_for_worker=wait_for_worker,
            on_frame=on_frame,
            trace=trace,
            first_run=first_run,
            queue=queue,
        )

    # --- workers ----------------------------------------------------------------------------
    async def serve(
        self,
        handlers: object,
        *,
        concurrency: int = 64,
        queues: str | Iterable[str] | None = None,
    ) -> Worker:
        """Start an in-process worker for ``handlers``; it stops when the pool closes.

        ``queues`` (e.g. ``["gpu", "default"]``) limits it to the task types on those queues.
        """
        await self.ensure_started()
        return await self._start_worker(handlers, concurrency, queues)

    async def _start_worker(
        self, target: object, concurrency: int, queues: str | Iterable[str] | None = None
    ) -> Worker:
        from .worker import Worker

        worker = Worker.for_target(self, target, concurrency=concurrency, queues=queues)
        await worker.start()
        self._workers.append(worker)
        self.registry.invalidate()
        return worker

    async def workers(self) -> list[WorkerInfo]:
        """Live workers of this pool (any process)."""
        await self.ensure_started()
        return await self.registry.workers()

    async def status(self) -> PoolStatus:
        """Queues, workers, workflows and escalations, for ``nervenet status``."""
        from .status import collect_status

        await self.ensure_started()
        return await collect_status(self)

    # --- plumbing shared by coordinators and workers ----------------------------------------
    @property
    def batcher(self) -> CommandBatcher:
        if self._batcher is None:
            raise RuntimeError("the pool is not started; use `async with pool:` or ensure_started")
        return self._batcher

    @property
    def in_flight(self) -> asyncio.Semaphore:
        if self._in_flight is None:
            raise RuntimeError("the pool is not started; use `async with pool:` or ensure_started")
        return self._in_flight

    async def publish(self, envelope: TaskEnvelope) -> bytes:
        """Put ``envelope`` on its task stream; return the stream entry id."""
        [entry_id] = await self.publish_soon(envelope)
        return as_bytes(entry_id)

    def publish_soon(self, envelope: TaskEnvelope) -> asyncio.Future[list[Any]]:
        """Queue the ``XADD`` of ``envelope`` (on the pool's loop); the future's result is
        ``[entry id]``. The write goes out even if nobody awaits the future."""
        fields = envelope.to_fields(self.signer)
        stream = self.keys.task_stream_for(envelope.task_type, envelope.task_id)
        return self.batcher.submit(lambda pipe: pipe.xadd(stream, fields))  # type: ignore[arg-type]

    def cancel_soon(
        self, envelope: TaskEnvelope, entry_id: bytes
    ) -> asyncio.Future[list[Any]] | None:
        """Withdraw a published task entry without waiting (call on the pool's loop).

        ``XDEL`` first: an entry no worker has read yet can then never be delivered (nor
        reclaimed: ``XAUTOCLAIM`` returns deleted entries without fields). Then the
        :class:`~nervenet.envelope.CancelRequest` on the cancel stream, for a worker that read the
        entry before the ``XDEL``; both keys share a hash tag, so one pipeline carries both.
        Nothing is sent while the pool closes: a process going away leaves its tasks to finish,
        so their cached results answer whichever process resumes its workflows.

        Returns the pipeline's replies, whose last says whether a worker had read the entry
        (it is still pending after the ``XDEL``: Redis keeps deleted ids in the pending list),
        so the caller knows whether a confirmation will come.
        """
        if self._closing:
            return None
        request = CancelRequest(as_text(entry_id), envelope.task_id, envelope.attempt)
        stream = self.keys.task_stream_for(envelope.task_type, envelope.task_id)
        cancels = self.keys.cancel_stream(stream)
        maxlen = self.settings.cancel_stream_maxlen

        def commands(pipe: Pipeline) -> None:
            pipe.xdel(stream, entry_id)
            pipe.xadd(cancels, request.to_fields(), maxlen=maxlen, approximate=True)  # type: ignore[arg-type]
            pipe.xpending_range(stream, WORKER_GROUP, entry_id, entry_id, 1)

        sent = self.batcher.submit(commands)
        sent.add_done_callback(_log_lost_cancel)
        return sent

    def add_escalation(self, pipe: Pipeline, fields: dict[bytes, bytes]) -> None:
        pipe.xadd(
            self.keys.escalations,
            fields,  # type: ignore[arg-type]
            maxlen=self.settings.escalation_stream_maxlen,
            approximate=True,
        )

    async def escalate(self, envelope: TaskEnvelope, reason: str, *, error: str = "") -> None:
        fields = escalation_fields(
            reason,
            source=self.keys.task_stream_for(envelope.task_type, envelope.task_id),
            envelope=envelope,
            error=error,
        )
        await self.batcher.run(lambda pipe: self.add_escalation(pipe, fields))

    def add_heartbeat_hook(self, hook: HeartbeatHook) -> None:
        """Run ``hook`` on every process heartbeat (used for workflow leases)."""
        self._heartbeat_hooks.append(hook)

    # --- heartbeat --------------------------------------------------------------------------
    async def _heartbeat_loop(self) -> None:
        interval = self.settings.heartbeat_interval
        while True:
            await asyncio.sleep(interval)
            started, cpu_started = asyncio.get_running_loop().time(), time.thread_time()
            try:
                await self._renew_reply_stream()
                await self.inbox.trim_read_entries()
                for hook in list(self._heartbeat_hooks):
                    await hook()
            except asyncio.CancelledError:
                raise
            except TRANSIENT_ERRORS as exc:
                self.outages.failed("the pool heartbeat", exc)
                continue
            except Exception:
                log.exception("pool heartbeat hook failed")
                continue
            took = asyncio.get_running_loop().time() - started
            if took > 2 * interval:
                self.outages.slow("a pool heartbeat", took, time.thread_time() - cpu_started)
            else:
                self.outages.on_time()

    async def _renew_reply_stream(self) -> None:
        """Keep our reply stream alive; if Redis lost it, recover the replies we were owed.

        The stream expires a while after this process stops heartbeating, so dead processes
        leave nothing behind. If it is gone while we live, the server lost data (a restart
        without persistence): results already cached are delivered from the cache and tasks
        not yet answered are published again (safe: task ids are idempotent).
        """
        ttl_ms = int(max(30.0, 10 * self.settings.heartbeat_interval) * 1000)
        redis = self.transport.redis
        lost = [a for a in self.inbox.addresses if not await redis.pexpire(a, ttl_ms)]
        if not lost:
            return
        # Worth a warning when dispatches wait on it; a process that waits for none (a worker)
        # only recreates it.
        log.log(
            logging.WARNING if self.inbox.waiting else logging.INFO,
            "reply stream %s was lost; recovering %d waiting dispatches",
            ", ".join(lost),
            self.inbox.waiting,
        )
        for address in lost:
            await redis.xadd(address, {b"open": b"1"})
            await redis.pexpire(address, ttl_ms)
            self.inbox.reset_position(address)
        waiters = self.inbox.pending()
        if not waiters:
            return
        cached = await self.transport.mget([self.keys.result(w.task_id) for w in waiters])
        for waiter, stored in zip(waiters, cached, strict=True):
            result = None
            if stored is not None:  # a forged entry counts as absent: the task is republished
                result = cached_result(self.signer, waiter.task_id, as_bytes(stored))
            if result is not None:
                self.inbox.resolve_from_cache(waiter.task_id, result)
            elif waiter.envelope is not None:
                waiter.entry_id = await self.publish(waiter.publishable())


def _log_lost_cancel(sent: asyncio.Future[list[Any]]) -> None:
    if not sent.cancelled() and sent.exception() is not None:
        log.warning("a task cancellation was not delivered: %s", sent.exception())
