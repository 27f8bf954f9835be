"""How a worker reads task types that run under a limit: permits first, then at most that many.

A blocking ``XREADGROUP`` would hand the worker entries it may not start (the cap is reached,
the rate has no token), and they would wait in its memory and slots, starving the task types it
could run. So for a limited task type the worker takes permits for its free slots first (one
script call, :mod:`nervenet.limits`), then reads without blocking at most that many entries, and
gives back the permits it did not use. When no permit is to be had it waits (the rate says how
long; a full cap is polled every :data:`CAP_POLL` seconds, with jitter so workers take turns).
When nothing is waiting it blocks in a plain ``XREAD`` from the newest entry, which claims
nothing, and takes permits once an entry is added. The price of waiting in Redis is a script
call and a read per start, and a look at the stream after a quiet spell.

Permits are renewed with the worker's heartbeat and given back when the task ends; a killed
worker's permits lapse after the visibility timeout, the time after which its tasks are
reclaimed (reclaiming a limited task takes a permit too).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
from typing import TYPE_CHECKING, Any

from .keys import WORKER_GROUP
from .limits import TaskLimits
from .outages import TRANSIENT_ERRORS, backoff

if TYPE_CHECKING:
    from redis.asyncio.client import Pipeline

    from .worker import Worker

log = logging.getLogger("nervenet.worker")

CAP_POLL = 0.02
"""Seconds between tries while a cap is full (jittered)."""

Permit = tuple[str, str]
"""(limit key, permit name)."""


class PermitReads:
    """The limited task types of one worker."""

    def __init__(self, worker: Worker) -> None:
        self._worker = worker
        self._names = itertools.count()

    def _new_names(self, count: int) -> list[str]:
        return [f"{self._worker.worker_id}:{next(self._names)}" for _ in range(count)]

    def _lease_ms(self) -> int:
        return int(self._worker.pool.settings.visibility_timeout * 1000)

    async def _take(self, limits: TaskLimits, count: int) -> tuple[list[Permit], float]:
        names = self._new_names(count)
        granted, wait = await self._worker.pool.limits.acquire(limits, names, self._lease_ms())
        return [(limits.key, name) for name in names[:granted]], wait

    async def read_loop(self, task_type: str) -> None:
        worker = self._worker
        limits = worker.limits[task_type]
        groups = worker.pool.transport.slot_groups(worker.pool.keys.task_streams(task_type))
        streams = worker.pool.keys.task_streams(task_type)
        what = f"worker {worker.worker_id}'s read of {task_type}"
        idle, failures, turn = 0, 0, 0
        while not worker._stopping.is_set():
            if idle:
                # Nothing was waiting last time. Taking permits now would spend rate tokens the
                # busy workers miss meanwhile, even if given back at once: look first, and if
                # nothing waits, block until an entry is added (an XREAD, which claims nothing).
                try:
                    waiting, newest = await self._anything_waiting(streams)
                    if not waiting and not await self._wait_for_new(groups, newest):
                        continue  # the block timed out: look again
                except TRANSIENT_ERRORS as exc:
                    failures += 1
                    await worker.pool.outages.wait_out(what, exc, failures)
                    continue
            count = await worker._slots.take()
            started = 0
            wait = 0.0
            try:
                permits, wait = await self._take(limits, count)
                if permits:
                    started = await self._read(groups[turn:] + groups[:turn], permits)
                    turn = (turn + 1) % len(groups)
                failures = 0
            except TRANSIENT_ERRORS as exc:
                failures += 1
                await worker.pool.outages.wait_out(what, exc, failures)
                continue
            except Exception:
                # A refused command (a lost group, a server without scripting): say it, and
                # keep the loop alive, as the other read loops do.
                failures += 1
                log.exception("worker %s: reading %s failed", worker.worker_id, task_type)
                await asyncio.sleep(backoff(failures))
                with contextlib.suppress(Exception):
                    await worker._ensure_groups()
                continue
            finally:
                worker._slots.give_back(count)
            if started:
                idle = 0
            elif wait:
                await asyncio.sleep(wait)
            elif not permits:
                await asyncio.sleep(CAP_POLL * random.uniform(0.5, 1.5))
            else:
                idle += 1  # nothing waited: the next turn looks, and blocks, first

    async def _anything_waiting(self, streams: list[str]) -> tuple[bool, dict[str, str]]:
        """Whether some stream holds an entry the consumer group has not been handed yet (its
        newest entry is past the group's last delivered one; two reads, nothing claimed), and
        each stream's newest entry id."""
        async with self._worker.pool.transport.redis.pipeline(transaction=False) as pipe:
            for stream in streams:
                pipe.xinfo_groups(stream)
                pipe.xrevrange(stream, count=1)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        waiting, newest = False, {}
        for stream, groups, last in zip(streams, replies[::2], replies[1::2], strict=True):
            if isinstance(groups, Exception) or isinstance(last, Exception) or not last:
                newest[stream] = "0-0"
                continue
            newest[stream] = _text(last[0][0])
            delivered = next(
                (g["last-delivered-id"] for g in groups if _text(g["name"]) == WORKER_GROUP),
                b"0-0",
            )
            waiting = waiting or _entry_id(last[0][0]) > _entry_id(delivered)
        return waiting, newest

    async def _wait_for_new(self, groups: list[list[str]], newest: dict[str, str]) -> bool:
        """Block (one ``block_ms``) until an entry is added to one of the streams after its
        newest one; whether one was. One read per slot on a cluster, the first to answer
        ends the others."""
        transport = self._worker.pool.transport
        block_ms = self._worker.pool.settings.block_ms
        reads = [
            asyncio.ensure_future(
                transport.read({s: newest[s] for s in group}, count=1, block_ms=block_ms)
            )
            for group in groups
        ]
        try:
            done, _ = await asyncio.wait(reads, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for read in reads:
                read.cancel()
            await asyncio.gather(*reads, return_exceptions=True)
        return any(read.result() for read in done)

    async def _read(self, groups: list[list[str]], permits: list[Permit]) -> int:
        """Read at most ``len(permits)`` entries, each with a permit; give back the rest."""
        worker = self._worker
        unused = list(permits)
        started = 0
        try:
            for streams in groups:
                if not unused:
                    break
                batch = await worker.pool.transport.read_group(
                    WORKER_GROUP,
                    worker.worker_id,
                    dict.fromkeys(streams, ">"),
                    count=len(unused),
                    block_ms=None,
                )
                for stream, entries in batch:
                    attached = {entry_id: unused.pop() for entry_id, _ in entries}
                    started += len(entries)
                    await worker._accept(
                        stream.decode(), entries, first_delivery=True, permits=attached
                    )
                    unused.extend(attached.values())  # entries it did not start
        finally:
            self.give_back(unused, unused=True)
        return started

    async def reclaim(self, min_idle_ms: int) -> None:
        """Take over abandoned entries of limited task types, each with a permit.

        ``XPENDING ... IDLE`` first, which claims nothing: a permit (and a rate token) is taken
        only for entries that are really abandoned.
        """
        worker = self._worker
        redis = worker.pool.transport.redis
        for task_type, limits in worker.limits.items():
            streams = worker.pool.keys.task_streams(task_type)
            free = worker.concurrency - len(worker._in_flight)
            if free <= 0:
                return
            async with redis.pipeline(transaction=False) as pipe:
                for stream in streams:
                    pipe.xpending_range(stream, WORKER_GROUP, "-", "+", free, idle=min_idle_ms)
                idle: list[Any] = await pipe.execute(raise_on_error=False)
            for stream, pending in zip(streams, idle, strict=True):
                if isinstance(pending, Exception) or not pending:
                    continue
                ids = [p["message_id"] for p in pending][:free]
                permits, _ = await self._take(limits, len(ids))
                if not permits:
                    continue
                claimed: Any = await redis.xclaim(
                    stream, WORKER_GROUP, worker.worker_id, min_idle_ms, ids[: len(permits)]
                )
                attached = {entry_id: permits.pop() for entry_id, _ in claimed if permits}
                self.give_back(permits)
                try:
                    await worker._take_reclaimed(stream, claimed, permits=attached)
                finally:
                    self.give_back(list(attached.values()))

    def renew(self, pipe: Pipeline, permits: list[Permit]) -> None:
        """Push the leases of the permits held forward (in the heartbeat's pipeline)."""
        if not permits:
            return
        keys = self._worker.pool.keys
        expiry = int(time.time() * 1000) + self._lease_ms()
        by_key: dict[str, list[str]] = {}
        for key, name in permits:
            by_key.setdefault(key, []).append(name)
        for key, names in by_key.items():
            pipe.zadd(keys.permits(key), dict.fromkeys(names, expiry), xx=True)

    def give_back(self, permits: list[Permit], *, unused: bool = False) -> None:
        """Release permits (queued with the next batch of writes, not awaited). Permits that
        started nothing (``unused``: nothing was waiting) also give their rate tokens back, or
        idle workers polling a quiet task type would spend the budget of the busy ones."""
        if not permits:
            return
        keys = self._worker.pool.keys
        by_key: dict[str, list[str]] = {}
        for key, name in permits:
            by_key.setdefault(key, []).append(name)

        def commands(pipe: Pipeline) -> None:
            for key, names in by_key.items():
                pipe.zrem(keys.permits(key), *names)
                if unused:  # the next grant caps the bucket at its burst again
                    pipe.hincrbyfloat(keys.limit(key), "tokens", len(names))

        released = self._worker.pool.batcher.submit(commands)
        released.add_done_callback(_log_unreleased)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _entry_id(value: Any) -> tuple[int, int]:
    milliseconds, _, sequence = _text(value).partition("-")
    return int(milliseconds), int(sequence or 0)


def _log_unreleased(released: asyncio.Future[list[Any]]) -> None:
    # A permit not given back lapses after the visibility timeout: nothing leaks for good.
    if not released.cancelled() and released.exception() is not None:
        log.warning("permits not given back (they lapse on their own): %s", released.exception())
