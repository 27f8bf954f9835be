"""Run records: what every recorded run is doing, for ``nervenet runs`` and the dashboard.

A run record is a small hash (``nn:run:{run-1}``): kind, status, owning coordinator process,
times, error. Its node history is a capped stream beside it (``nn:run:{run-1}:nodes``), one entry
per attempt a worker settled: task type, worker, queue wait, run time, outcome, error. A sorted
set (``nn:{runs}``) lists the run ids, newest first, capped at ``runs_kept``.

Nothing here costs a round trip of its own on the hot path. The coordinator process writes the
record in the pipelines it already sends when a run starts, is taken over and ends; a worker adds
a node's entry to the settle pipeline that already caches the result, replies and acknowledges
(only for tasks whose envelope says their run is recorded). Records and histories expire
``run_retention`` after their last write (7 days by default), so Redis holds a bounded amount.

Everything read back is untrusted (anyone who can write to Redis can write these keys): fields
are decoded with replacement, numbers parsed defensively, strings bounded.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import orjson

from .errors import ConfigurationError
from .outages import TRANSIENT_ERRORS
from .transport import as_bytes, as_text

if TYPE_CHECKING:
    from redis.asyncio.client import Pipeline

    from .pool import Pool

log = logging.getLogger("nervenet.runs")

#: Longest error text stored for a run or a node.
MAX_ERROR = 2_000
#: Run ids scanned per page when listing with a filter.
LIST_PAGE = 500
_NODE_FIELDS = ("type", "id", "attempt", "worker", "outcome", "wait", "ran", "at", "error")
_RUN_FIELDS = ("kind", "status", "owner", "created", "started", "ended", "error", "thread")


class RunStatus(StrEnum):
    """Where a run is in its life."""

    PENDING = "pending"
    """Queued for a coordinator process, not started."""
    RUNNING = "running"
    """A coordinator process drives it (see :attr:`RunInfo.owner`)."""
    INTERRUPTED = "interrupted"
    """Stopped and resumable from its checkpoints (a LangGraph interrupt, a cancel with
    ``interrupt``)."""
    SUCCEEDED = "succeeded"
    """Ended with a result."""
    FAILED = "failed"
    """Ended with an error."""
    CANCELLED = "cancelled"
    """Cancelled with ``rollback``: its checkpoints are gone."""

    @property
    def finished(self) -> bool:
        return self in (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED)


@dataclass(frozen=True, slots=True)
class NodeRun:
    """One attempt of one node (task) of a run, as the worker that settled it recorded it."""

    task_type: str
    """The node's task type (``support/classify``)."""
    task_id: str
    """The task id (stable across retries and resumes)."""
    attempt: int
    """Attempt number (1 for the first dispatch)."""
    worker: str
    """Worker id that ran it."""
    outcome: str
    """``ok``, ``error``, ``cached`` (answered from the result cache) or ``cancelled``."""
    queue_wait_ms: float
    """From the dispatch's ``XADD`` to a worker reading it (server clock to worker clock)."""
    run_ms: float
    """Time in the handler (0 when answered from the cache)."""
    ended_at: float
    """Epoch seconds when the worker settled it."""
    error: str
    """Error text when the outcome is ``error``."""


@dataclass(frozen=True, slots=True)
class RunEvent:
    """One output event of a run (a stream chunk, framework-encoded)."""

    event_id: str
    """Its id: give it to :meth:`Runs.join` as ``last_event_id`` to resume after it."""
    data: bytes
    """The chunk as the framework's adapter encoded it."""


@dataclass(frozen=True, slots=True)
class RunInfo:
    """A run record as read from Redis."""

    run_id: str
    """The run id."""
    kind: str
    """The graph or crew name it runs."""
    status: RunStatus
    """Where it is (see :class:`RunStatus`)."""
    owner: str
    """Process id of the coordinator process driving it (empty while pending)."""
    created_at: float
    """Epoch seconds of the record's creation."""
    started_at: float
    """Epoch seconds when a coordinator process started it (0 while pending)."""
    ended_at: float
    """Epoch seconds when it finished (0 while not)."""
    error: str
    """The error of a failed run."""
    thread: str
    """Its thread id, when the framework has one."""
    nodes: list[NodeRun] = field(default_factory=list)
    """Node attempts, oldest first (only from :meth:`Runs.get`)."""

    @property
    def duration(self) -> float:
        """Seconds from start to end (or to now, while running)."""
        if not self.started_at:
            return 0.0
        return (self.ended_at or time.time()) - self.started_at


def _number(raw: Any) -> float:
    try:
        value = float(raw if isinstance(raw, int | float) else _text(raw) or 0)
    except (ValueError, TypeError):
        return 0.0
    return value if value == value and abs(value) < 1e13 else 0.0  # no NaN, no absurd values


def _text(raw: Any, limit: int = 500) -> str:
    """Any stored value as bounded text; bytes that are not UTF-8 are shown, not refused."""
    if isinstance(raw, bytes):
        text = raw.decode(errors="replace")
    elif raw is None:
        text = ""
    else:
        text = str(raw)
    return text[:limit]


def parse_run(run_id: str, values: Mapping[str, Any]) -> RunInfo | None:
    """A record from its hash fields, or None when there is none (expired)."""
    if not any(values.values()):
        return None
    try:
        status = RunStatus(_text(values.get("status")))
    except ValueError:
        status = RunStatus.FAILED  # an unreadable status is shown, not trusted
    return RunInfo(
        run_id=run_id,
        kind=_text(values.get("kind")),
        status=status,
        owner=_text(values.get("owner"), 64),
        created_at=_number(values.get("created")),
        started_at=_number(values.get("started")),
        ended_at=_number(values.get("ended")),
        error=_text(values.get("error"), MAX_ERROR),
        thread=_text(values.get("thread")),
    )


def parse_node(fields: Mapping[bytes, bytes]) -> NodeRun | None:
    """A history entry (one JSON array, see :func:`node_fields`), or None if unreadable."""
    try:
        values = orjson.loads(fields.get(b"n", b""))
    except orjson.JSONDecodeError:
        return None
    if not isinstance(values, list) or len(values) != len(_NODE_FIELDS):
        return None
    raw = dict(zip(_NODE_FIELDS, values, strict=True))
    return NodeRun(
        task_type=_text(raw["type"]),
        task_id=_text(raw["id"]),
        attempt=int(_number(raw["attempt"])),
        worker=_text(raw["worker"]),
        outcome=_text(raw["outcome"], 20),
        queue_wait_ms=_number(raw["wait"]),
        run_ms=_number(raw["ran"]),
        ended_at=_number(raw["at"]),
        error=_text(raw["error"], MAX_ERROR),
    )


def node_fields(
    *,
    task_type: str,
    task_id: str,
    attempt: int,
    worker: str,
    outcome: str,
    queue_wait_ms: float,
    run_ms: float,
    error: str = "",
) -> dict[bytes, bytes]:
    """A node history entry, as a worker adds it to its settle pipeline: one field holding a
    JSON array (one argument to pack instead of nine: this runs once per recorded dispatch)."""
    entry = [
        task_type,
        task_id,
        attempt,
        worker,
        outcome,
        round(max(0.0, queue_wait_ms), 1),
        round(run_ms, 1),
        round(time.time(), 3),
        error[:MAX_ERROR],
    ]
    return {b"n": orjson.dumps(entry)}


class Runs:
    """Run records of one namespace: written by coordinator processes and workers, read by
    operators (``pool.runs.list()``, ``nervenet runs``, the dashboard)."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self.recorded: set[str] = set()
        """Runs this process drives and records: their dispatches ask workers to add their
        node history (a set lookup per dispatch, no round trip)."""

    # --- writing (into pipelines the caller already sends) --------------------------------------
    def add_begin(
        self,
        pipe: Pipeline,
        run_id: str,
        kind: str,
        *,
        status: RunStatus,
        thread: str = "",
    ) -> None:
        """Create (or restart) a run's record; run ids already listed keep their place."""
        keys, settings = self._pool.keys, self._pool.settings
        if not settings.record_runs:
            return
        now = time.time()
        record: dict[str, str] = {
            "kind": kind,
            "status": status.value,
            "created": repr(now),
            "ended": "0",
            "error": "",
        }
        if status is RunStatus.RUNNING:
            record.update(owner=self._pool.process_id, started=repr(now))
            self.recorded.add(run_id)
        if thread:
            record["thread"] = thread
        pipe.hset(keys.run(run_id), mapping=record)  # type: ignore[arg-type]
        pipe.expire(keys.run(run_id), int(settings.run_retention))
        pipe.zadd(keys.runs, {run_id: int(now * 1000)})
        # Keep the newest runs_kept: one cheap trim per run start (log N).
        pipe.zremrangebyrank(keys.runs, 0, -settings.runs_kept - 1)

    def add_owner(self, pipe: Pipeline, run_id: str) -> None:
        """This process drives the run from now on (started from the queue, or taken over)."""
        keys = self._pool.keys
        if not self._pool.settings.record_runs:
            return
        pipe.hset(
            keys.run(run_id),
            mapping={
                "status": RunStatus.RUNNING.value,
                "owner": self._pool.process_id,
                "started": repr(time.time()),
            },
        )
        pipe.expire(keys.run(run_id), int(self._pool.settings.run_retention))
        self.recorded.add(run_id)

    def add_end(self, pipe: Pipeline, run_id: str, status: RunStatus, error: str = "") -> None:
        """The run ended (or stopped resumably, ``interrupted``)."""
        keys, retention = self._pool.keys, int(self._pool.settings.run_retention)
        self.recorded.discard(run_id)
        if not self._pool.settings.record_runs:
            return
        pipe.hset(
            keys.run(run_id),
            mapping={
                "status": status.value,
                "ended": repr(time.time()),
                "error": error[:MAX_ERROR],
            },
        )
        pipe.expire(keys.run(run_id), retention)
        pipe.expire(keys.run_nodes(run_id), retention)
        self._add_event_end(pipe, run_id, status)

    def _add_event_end(self, pipe: Pipeline, run_id: str, status: RunStatus) -> None:
        """Tell joiners the run ended; its events stay ``join_retention`` from now."""
        settings, events = self._pool.settings, self._pool.keys.run_events(run_id)
        pipe.xadd(
            events,
            {b"end": status.value.encode()},
            maxlen=settings.run_events_kept,
            approximate=True,
        )
        pipe.expire(events, int(settings.join_retention))

    def publish(self, run_id: str, data: bytes) -> None:
        """Add one output event (a stream chunk) of a run this process drives, without waiting
        (the pool's write batcher sends it, in order with the run's other writes)."""
        if not self._pool.settings.record_runs:
            return
        settings, events = self._pool.settings, self._pool.keys.run_events(run_id)

        def commands(pipe: Pipeline) -> None:
            pipe.xadd(events, {b"data": data}, maxlen=settings.run_events_kept, approximate=True)
            pipe.expire(events, int(settings.run_retention))

        sent = self._pool.batcher.submit(commands)
        sent.add_done_callback(self._lost_event)

    def _lost_event(self, sent: Any) -> None:
        """Events are best effort: one lost to an outage is said once per outage (a joiner
        misses it; the run itself goes on)."""
        if sent.cancelled() or sent.exception() is None:
            return
        exc = sent.exception()
        if isinstance(exc, TRANSIENT_ERRORS):
            self._pool.outages.failed("storing a run's output events", exc)
        else:
            log.warning("a run's output event was not stored: %s", exc)

    async def join(self, run_id: str, last_event_id: str | None = None) -> AsyncIterator[RunEvent]:
        """A run's output events from any process, as they come, until it ends.

        ``last_event_id`` resumes after that event (what a client that lost its connection
        saw last). Events stay ``join_retention`` seconds after the run ends (10 minutes by
        default) and at most ``run_events_kept`` per run: joining a run whose events expired,
        or resuming from an event already trimmed, raises :class:`ConfigurationError`.
        """
        run = await self.get(run_id, nodes=False)
        keys, redis = self._pool.keys, self._pool.transport.redis
        events = keys.run_events(run_id)
        position = check_event_id(last_event_id) if last_event_id else "0-0"
        first: Any = await redis.xrange(events, count=1)
        if not first and run.status.finished:
            raise ConfigurationError(
                f"the events of run {run_id!r} expired (kept "
                f"{self._pool.settings.join_retention:g} s after a run ends)"
            )
        if (
            last_event_id
            and first
            and _entry_order(as_text(first[0][0])) > _entry_order(last_event_id)
            and not await redis.xrange(events, last_event_id, last_event_id)
        ):
            raise ConfigurationError(
                f"events of run {run_id!r} after {last_event_id} were trimmed (at most "
                f"{self._pool.settings.run_events_kept} kept); join from the start instead"
            )
        while True:
            batch = await self._pool.transport.read(
                {events: position}, count=500, block_ms=self._pool.settings.block_ms
            )
            for _, entries in batch:
                for entry_id, fields in entries:
                    position = as_text(entry_id)
                    if b"end" in fields:
                        return
                    yield RunEvent(position, as_bytes(fields.get(b"data", b"")))
            if not batch and not await redis.exists(keys.run(run_id)):
                return  # the record itself expired: nothing more will come

    async def begin(self, run_id: str, kind: str, *, thread: str = "") -> None:
        """Record a run this process drives outside durable workflows (an adapter's own kind
        of run): ``running``, owned here; its dispatches add node history from now on."""
        _check_run_id(run_id)
        async with self._pool.transport.redis.pipeline(transaction=False) as pipe:
            self.add_begin(pipe, run_id, kind, status=RunStatus.RUNNING, thread=thread)
            await pipe.execute()

    async def end(self, run_id: str, status: RunStatus, error: str = "") -> None:
        """The end of a run recorded with :meth:`begin`."""
        async with self._pool.transport.redis.pipeline(transaction=False) as pipe:
            self.add_end(pipe, run_id, status, error)
            await pipe.execute()

    async def set_status(self, run_id: str, status: RunStatus, error: str = "") -> None:
        """Change a run's status in a round trip of its own (framework-level events: a
        LangGraph interrupt), refusing unknown runs."""
        await self.get(run_id, nodes=False)
        async with self._pool.transport.redis.pipeline(transaction=False) as pipe:
            self.add_end(pipe, run_id, status, error)
            await pipe.execute()

    async def cancel(self, run_id: str, action: str = "interrupt") -> str:
        """Cancel a run from any process: ``interrupt`` keeps its checkpoints, ``rollback``
        removes them; see :meth:`nervenet.workflows.Workflows.cancel`."""
        _check_run_id(run_id)
        return await self._pool.workflows.cancel(run_id, action)

    # --- reading --------------------------------------------------------------------------------
    async def get(self, run_id: str, *, nodes: bool = True) -> RunInfo:
        """One run with its node history; :class:`ConfigurationError` for an unknown run."""
        _check_run_id(run_id)
        keys, redis = self._pool.keys, self._pool.transport.redis
        async with redis.pipeline(transaction=False) as pipe:
            pipe.hmget(keys.run(run_id), list(_RUN_FIELDS))
            if nodes:
                pipe.xrange(keys.run_nodes(run_id), count=self._pool.settings.run_nodes_kept)
            replies: list[Any] = await pipe.execute()
        run = parse_run(run_id, dict(zip(_RUN_FIELDS, replies[0], strict=True)))
        if run is None:
            raise ConfigurationError(
                f"no run {run_id[:200]!r} (never recorded, or older than the run retention); "
                "list runs with `nervenet runs list`"
            )
        if not nodes:
            return run
        history = [n for n in (parse_node(fields) for _, fields in replies[1]) if n is not None]
        return dataclasses.replace(run, nodes=history)

    async def _read(self, run_ids: list[str]) -> list[RunInfo | None]:
        keys = self._pool.keys
        async with self._pool.transport.redis.pipeline(transaction=False) as pipe:
            for run_id in run_ids:
                pipe.hmget(keys.run(run_id), list(_RUN_FIELDS))
            replies: list[Any] = await pipe.execute()
        return [
            parse_run(run_id, dict(zip(_RUN_FIELDS, values, strict=True)))
            for run_id, values in zip(run_ids, replies, strict=True)
        ]

    async def list(
        self,
        *,
        status: RunStatus | str | None = None,
        kind: str | None = None,
        newer_than: float | None = None,
        limit: int = 50,
    ) -> list[RunInfo]:
        """Runs newest first, filtered by status, kind and age (``newer_than`` seconds)."""
        wanted = RunStatus(status) if status is not None else None
        keys, redis = self._pool.keys, self._pool.transport.redis
        since_ms = int((time.time() - newer_than) * 1000) if newer_than is not None else None
        found: list[RunInfo] = []
        start = 0
        while len(found) < limit:
            if since_ms is None:
                page = await redis.zrevrange(keys.runs, start, start + LIST_PAGE - 1)
            else:
                page = await redis.zrevrangebyscore(
                    keys.runs, "+inf", since_ms, start=start, num=LIST_PAGE
                )
            if not page:
                break
            start += len(page)
            run_ids = [as_text(r) for r in page]
            for run in await self._read(run_ids):
                if run is None:
                    continue
                if wanted is not None and run.status is not wanted:
                    continue
                if kind is not None and run.kind != kind:
                    continue
                found.append(run)
                if len(found) == limit:
                    break
        return found

    async def live_owners(self) -> set[str]:
        """Process ids of live coordinator processes: a running run owned by none of them is
        stuck until one takes it over (its lease expired) or, if none can, forever."""
        keys = self._pool.keys
        now_ms = int(time.time() * 1000)
        alive = await self._pool.transport.redis.zrangebyscore(keys.coordinators, now_ms, "+inf")
        return {as_text(p) for p in alive}

    async def count(self) -> int:
        """Run ids listed (records may have expired under the newest, see ``run_retention``)."""
        return int(await self._pool.transport.redis.zcard(self._pool.keys.runs))


def check_event_id(event_id: str) -> str:
    """``event_id`` if it is a stream entry id (``1764050000000-0``), else a clear error."""
    ms, dash, seq = event_id.partition("-")
    if not (dash and ms.isdigit() and seq.isdigit() and len(event_id) <= 41):
        raise ConfigurationError(f"{event_id[:80]!r} is not an event id (like 1764050000000-0)")
    return event_id


def _entry_order(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _check_run_id(run_id: str) -> None:
    if (
        not run_id
        or len(run_id) > 256
        or not run_id.isprintable()
        or any(c in run_id for c in "{}")
    ):
        raise ConfigurationError(
            f"{run_id[:80]!r} is not a run id; list runs with `nervenet runs list`"
        )
