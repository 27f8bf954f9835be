"""Who is alive: worker registrations kept fresh by heartbeats, read by dispatchers and status.

A worker is a sorted-set member scored by the time its registration expires, plus a hash with its
task types and load. Nothing is ever "unregistered" by a timer on the reader's side: a member whose
score is in the past simply stopped heartbeating, and readers skip it (and prune it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

import orjson

from .keys import Keys
from .transport import Transport, as_text

log = logging.getLogger("nervenet.registry")


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """One live worker as published in the registry."""

    worker_id: str
    """Unique per worker process (also its consumer name in every consumer group)."""
    task_types: tuple[str, ...]
    """Task types it serves."""
    concurrency: int
    """How many tasks it runs at once at most."""
    load: int
    """Tasks in flight at its last heartbeat."""
    started_at: float
    """Epoch seconds when it started."""
    host: str
    """Host name and pid, to find the process."""
    processed: int
    """Tasks finished since start."""
    heartbeat_at: float = 0.0
    """Epoch seconds of its last heartbeat (0 from workers older than this field)."""


class Registry:
    """Reads and writes worker registrations; caches live task types for fast dispatch checks."""

    CACHE_SECONDS = 1.0
    STALE_SECONDS = 3.0
    """How old a cached "served" may be for a dispatch to rely on it while a refresh runs in the
    background (so dispatches never queue behind the refresh's round trip)."""

    def __init__(self, transport: Transport, keys: Keys) -> None:
        self._transport = transport
        self._keys = keys
        self._served: frozenset[str] = frozenset()
        self._last_seen: dict[str, float] = {}
        self._served_at = -1e9
        self._refreshing: asyncio.Lock | None = None
        self._background: asyncio.Task[None] | None = None
        self._waits_noted: dict[str, float] = {}

    async def register(self, info: WorkerInfo, ttl: float) -> None:
        """Publish or renew a worker's registration for ``ttl`` seconds."""
        expires_ms = int((time.time() + ttl) * 1000)
        record = orjson.dumps(
            {
                "task_types": list(info.task_types),
                "concurrency": info.concurrency,
                "load": info.load,
                "started_at": info.started_at,
                "host": info.host,
                "processed": info.processed,
                "beat": time.time(),
            }
        )
        async with self._transport.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(self._keys.workers, {info.worker_id: expires_ms})
            pipe.set(self._keys.worker(info.worker_id), record, px=int(ttl * 1000))
            await pipe.execute()

    async def unregister(self, worker_id: str) -> None:
        async with self._transport.redis.pipeline(transaction=False) as pipe:
            pipe.zrem(self._keys.workers, worker_id)
            pipe.delete(self._keys.worker(worker_id))
            await pipe.execute()
        self._served_at = -1e9

    async def workers(self) -> list[WorkerInfo]:
        """Live workers, pruning registrations whose heartbeat stopped."""
        redis = self._transport.redis
        now_ms = int(time.time() * 1000)
        await redis.zremrangebyscore(self._keys.workers, "-inf", now_ms)
        ids = [as_text(i) for i in await redis.zrange(self._keys.workers, 0, -1)]
        if not ids:
            return []
        records = await self._transport.mget([self._keys.worker(i) for i in ids])
        live: list[WorkerInfo] = []
        for worker_id, raw in zip(ids, records, strict=True):
            if raw is None:
                continue
            data = orjson.loads(raw)
            live.append(
                WorkerInfo(
                    worker_id=worker_id,
                    task_types=tuple(data["task_types"]),
                    concurrency=int(data["concurrency"]),
                    load=int(data["load"]),
                    started_at=float(data["started_at"]),
                    host=str(data["host"]),
                    processed=int(data.get("processed", 0)),
                    heartbeat_at=float(data.get("beat", 0.0)),
                )
            )
        now = time.monotonic()
        self._last_seen.update({t: now for w in live for t in w.task_types})
        return live

    async def served_task_types(self, *, fresh: bool = False) -> frozenset[str]:
        """Task types some live worker serves, cached for about a second."""
        if fresh or time.monotonic() - self._served_at > self.CACHE_SECONDS:
            if self._refreshing is None:
                self._refreshing = asyncio.Lock()
            async with self._refreshing:
                if fresh or time.monotonic() - self._served_at > self.CACHE_SECONDS:
                    workers = await self.workers()
                    self._served = frozenset(t for w in workers for t in w.task_types)
                    self._served_at = time.monotonic()
        return self._served

    def known_served(self, task_type: str) -> bool:
        """``task_type`` was served at the last registry read, at most :attr:`STALE_SECONDS`
        ago (older than :attr:`CACHE_SECONDS`: a refresh starts in the background). Synchronous:
        every dispatch asks."""
        age = time.monotonic() - self._served_at
        if age > self.STALE_SECONDS or task_type not in self._served:
            return False
        if age > self.CACHE_SECONDS and self._background is None:
            self._background = asyncio.ensure_future(self._refresh())
        return True

    async def _refresh(self) -> None:
        try:
            await self.served_task_types()
        except Exception as exc:  # Redis away: the next dispatch's own read will say so
            log.debug("background registry refresh failed: %s", exc)
        finally:
            self._background = None

    async def aclose(self) -> None:
        if self._background is not None:
            self._background.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._background

    async def note_waiting(self, process_id: str, task_type: str, *, renew_every: float) -> None:
        """Say that this process has dispatches waiting for a worker of ``task_type``, so
        ``nervenet status`` shows it; the mark lapses ``3 * renew_every`` seconds after the last
        call. At most one write per ``renew_every`` per task type, however many wait."""
        now = time.monotonic()
        if now - self._waits_noted.get(task_type, -1e9) < renew_every:
            return
        self._waits_noted[task_type] = now
        expires_ms = int((time.time() + 3 * renew_every) * 1000)
        await self._transport.redis.zadd(
            self._keys.worker_waits, {f"{process_id} {task_type}": expires_ms}
        )

    async def waiting_dispatches(self) -> dict[str, int]:
        """Task type -> processes whose dispatches wait for a worker of it (lapsed marks pruned)."""
        redis = self._transport.redis
        await redis.zremrangebyscore(self._keys.worker_waits, "-inf", int(time.time() * 1000))
        counts: dict[str, int] = {}
        for member in await redis.zrange(self._keys.worker_waits, 0, -1):
            _, _, task_type = as_text(member).partition(" ")
            counts[task_type] = counts.get(task_type, 0) + 1
        return counts

    def served_recently(self, task_type: str, within: float) -> bool:
        """A worker served ``task_type`` less than ``within`` seconds ago.

        After Redis lost its data (or during an outage) the registry is empty until workers'
        next heartbeat; their tasks wait in the stream meanwhile, so that is no reason to fail.
        """
        seen = self._last_seen.get(task_type)
        return seen is not None and time.monotonic() - seen < within

    def invalidate(self) -> None:
        self._served_at = -1e9
