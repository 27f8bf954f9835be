"""A snapshot of the pool for operators: queues, workers, workflows, escalations.

What a queue holds is read from its consumer group, not from ``XLEN``: workers delete entries once
acknowledged, so a stream holds the entries nobody read yet (waiting) and the ones a worker read
and has not finished (in flight). The group's last-delivered id splits the two: every entry at or
below it was delivered, and one still present there is in flight; everything above it waits.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis.exceptions import ResponseError

from .keys import WORKER_GROUP
from .limits import LimitStatus
from .registry import WorkerInfo
from .run_slots import parse_load
from .transport import as_text

if TYPE_CHECKING:
    from .pool import Pool

#: In-flight entries counted one by one per stream (bounded by the workers' concurrency in
#: practice); past this the consumer group's pending count stands in.
IN_FLIGHT_SCAN_CAP = 10_000


@dataclass(frozen=True, slots=True)
class QueueStatus:
    """One task type's streams (all its partitions together)."""

    task_type: str
    """The task type."""
    waiting: int
    """Entries no worker has read yet."""
    in_flight: int
    """Entries a worker read and has not finished."""
    oldest_in_flight_ms: int
    """Idle time of the most idle in-flight entry; large values mean a stuck or dead worker."""
    served: bool
    """Some live worker serves the task type. Waiting entries of an unserved type wait until
    one starts (``nervenet worker app:target``)."""
    waiting_dispatches: int
    """Coordinator processes whose dispatches wait for a worker of this type to register
    (``wait_for_worker``); they publish nothing until one does."""
    delivered: int | None = None
    """Entries ever delivered to workers (the consumer group's ``entries-read``, Redis 7+;
    None on older servers): its growth over time is the type's rate."""


@dataclass(frozen=True, slots=True)
class RunLoad:
    """The runs one process runs (``PoolSettings.max_runs``, :mod:`nervenet.run_slots`)."""

    process_id: str
    running: int
    """Runs under way (each holds a slot)."""
    waiting: int
    """Runs waiting for a slot in the process (queued durable runs wait in Redis instead)."""
    max_runs: int | None
    """The process's bound; None: none."""


@dataclass(frozen=True, slots=True)
class PoolStatus:
    """Everything ``nervenet status`` shows."""

    target: str
    """Where the pool points (password masked)."""
    namespace: str
    """Key namespace."""
    queues: list[QueueStatus]
    """Task types with work waiting or in flight, a live worker, or a dispatch waiting for a
    worker; sorted by task type."""
    idle_task_types: list[str]
    """Task types with an empty stream and no live worker (their workers are gone): left out
    of :attr:`queues` so they do not clutter it forever."""
    workers: list[WorkerInfo]
    """Live workers."""
    running_workflows: int
    """Durable workflow runs holding a lease (started with ``submit``)."""
    queued_workflows: int
    """Durable runs queued for a coordinator process (``asubmit(..., run_here=False)``)."""
    stranded_workflows: int
    """Running runs whose lease expired: their coordinator process died and no live one has
    taken them over yet."""
    coordinators: int
    """Live coordinator processes (pools that can resume durable runs)."""
    run_loads: list[RunLoad]
    """Each live process that runs workflow runs: how many, how many wait for a slot."""
    partitions: int
    """Streams per task type."""
    primaries: int
    """Redis primaries (more than 1 on a cluster)."""
    limits: list[LimitStatus]
    """Every limit key: permits in use, the cap and rate in force, tokens left."""
    escalations: int
    """Entries on the escalation stream."""
    taken_at: float
    """Epoch seconds of the snapshot."""


@dataclass(slots=True)
class _Totals:
    waiting: int = 0
    in_flight: int = 0
    oldest_ms: int = 0
    delivered: int | None = None


async def _stream_totals(pool: Pool, stream: str) -> _Totals:
    redis = pool.transport.redis
    length = int(await redis.xlen(stream))
    try:
        groups: Any = await redis.xinfo_groups(stream)
    except ResponseError:  # the key is gone (deleted between SCAN and here)
        return _Totals(waiting=length)
    group = next((g for g in groups if as_text(g["name"]) == WORKER_GROUP), None)
    if group is None:  # nobody ever served this type: everything waits
        return _Totals(waiting=length)
    last = as_text(group["last-delivered-id"])
    present: Any = await redis.xrange(stream, "-", last, count=IN_FLIGHT_SCAN_CAP)
    in_flight = len(present)
    if in_flight >= IN_FLIGHT_SCAN_CAP:
        in_flight = max(in_flight, int(group["pending"]))
    oldest = 0
    if in_flight:
        first: Any = await redis.xpending_range(stream, WORKER_GROUP, "-", "+", 1)
        oldest = int(first[0]["time_since_delivered"]) if first else 0
    read = group.get("entries-read")
    delivered = int(read) if isinstance(read, int) else None
    return _Totals(max(0, length - in_flight), in_flight, oldest, delivered)


async def collect_status(pool: Pool) -> PoolStatus:
    redis = pool.transport.redis
    keys = pool.keys
    totals: dict[str, _Totals] = {}
    async for raw_key in redis.scan_iter(match=f"{keys.task_stream_prefix}*", count=500):
        stream = as_text(raw_key)
        part = await _stream_totals(pool, stream)
        seen = totals.setdefault(keys.task_type_of(stream), _Totals())
        seen.waiting += part.waiting
        seen.in_flight += part.in_flight
        seen.oldest_ms = max(seen.oldest_ms, part.oldest_ms)
        if part.delivered is not None:
            seen.delivered = (seen.delivered or 0) + part.delivered
    workers = await pool.registry.workers()
    served = {t for w in workers for t in w.task_types}
    waits = await pool.registry.waiting_dispatches()
    queues, idle = [], []
    for task_type in sorted(totals.keys() | served | waits.keys()):
        t = totals.get(task_type, _Totals())
        if not (t.waiting or t.in_flight or task_type in served or task_type in waits):
            idle.append(task_type)
            continue
        queues.append(
            QueueStatus(
                task_type,
                t.waiting,
                t.in_flight,
                t.oldest_ms,
                served=task_type in served,
                waiting_dispatches=waits.get(task_type, 0),
                delivered=t.delivered,
            )
        )
    now_ms = int(time.time() * 1000)
    running = int(await redis.zcount(keys.workflows, "-inf", "+inf"))
    stranded = int(await redis.zcount(keys.workflows, "-inf", now_ms))
    queued = int(await redis.zcard(keys.workflows_queued))
    coordinators = int(await redis.zcount(keys.coordinators, now_ms, "+inf"))
    return PoolStatus(
        target=pool.transport.description,
        namespace=keys.namespace,
        queues=queues,
        idle_task_types=idle,
        workers=workers,
        running_workflows=running,
        queued_workflows=queued,
        stranded_workflows=stranded,
        coordinators=coordinators,
        run_loads=await _run_loads(pool, now_ms),
        partitions=keys.partitions,
        primaries=pool.transport.primaries,
        limits=await pool.limits.status(),
        escalations=await pool.escalations.count(),
        taken_at=time.time(),
    )


async def _run_loads(pool: Pool, now_ms: int) -> list[RunLoad]:
    redis, keys = pool.transport.redis, pool.keys
    processes = [as_text(p) for p in await redis.zrangebyscore(keys.run_loads, now_ms, "+inf")]
    if not processes:
        return []
    # One slot ({workflows}), so one MGET on a cluster too.
    loads = await redis.mget([keys.run_load(p) for p in processes])
    found = []
    for process, load in zip(processes, loads, strict=True):
        if load is None:  # expired between the two reads
            continue
        found.append(RunLoad(process, *parse_load(as_text(load))))
    return sorted(found, key=lambda r: r.process_id)
