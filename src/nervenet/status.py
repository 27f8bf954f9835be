"""A snapshot of the pool for operators: queues, workers, workflows, escalations."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis.exceptions import ResponseError

from .keys import WORKER_GROUP
from .limits import LimitStatus
from .registry import WorkerInfo

if TYPE_CHECKING:
    from .pool import Pool


@dataclass(frozen=True, slots=True)
class QueueStatus:
    """One task type's streams (all its partitions together)."""

    task_type: str
    """The task type."""
    depth: int
    """Entries in the stream: waiting plus in flight (done entries are deleted)."""
    pending: int
    """Delivered to a worker and not yet acknowledged (in flight)."""
    oldest_pending_idle_ms: int
    """Idle time of the most idle in-flight entry; large values mean a stuck or dead worker."""


@dataclass(frozen=True, slots=True)
class PoolStatus:
    """Everything ``nervenet status`` shows."""

    target: str
    """Where the pool points (password masked)."""
    namespace: str
    """Key namespace."""
    queues: list[QueueStatus]
    """One per task type, sorted by task type."""
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


async def collect_status(pool: Pool) -> PoolStatus:
    redis = pool.transport.redis
    keys = pool.keys
    by_type: dict[str, QueueStatus] = {}
    async for raw_key in redis.scan_iter(match=f"{keys.task_stream_prefix}*", count=500):
        stream = raw_key.decode()
        depth = int(await redis.xlen(stream))
        pending, idle = 0, 0
        try:
            summary: Any = await redis.xpending(stream, WORKER_GROUP)
            pending = int(summary["pending"])
            if pending:
                oldest = await redis.xpending_range(stream, WORKER_GROUP, "-", "+", 1)
                idle = int(oldest[0]["time_since_delivered"]) if oldest else 0
        except ResponseError:  # no consumer group yet: nobody ever served this type
            pass
        task_type = keys.task_type_of(stream)
        seen = by_type.get(task_type)
        if seen is not None:  # another partition of the type
            depth, pending = depth + seen.depth, pending + seen.pending
            idle = max(idle, seen.oldest_pending_idle_ms)
        by_type[task_type] = QueueStatus(task_type, depth, pending, idle)
    queues = sorted(by_type.values(), key=lambda q: q.task_type)
    workers = await pool.registry.workers()
    now_ms = int(time.time() * 1000)
    running = int(await redis.zcount(keys.workflows, "-inf", "+inf"))
    stranded = int(await redis.zcount(keys.workflows, "-inf", now_ms))
    queued = int(await redis.zcard(keys.workflows_queued))
    coordinators = int(await redis.zcount(keys.coordinators, now_ms, "+inf"))
    return PoolStatus(
        target=pool.transport.description,
        namespace=keys.namespace,
        queues=queues,
        workers=workers,
        running_workflows=running,
        queued_workflows=queued,
        stranded_workflows=stranded,
        coordinators=coordinators,
        partitions=keys.partitions,
        primaries=pool.transport.primaries,
        limits=await pool.limits.status(),
        escalations=await pool.escalations.count(),
        taken_at=time.time(),
    )
