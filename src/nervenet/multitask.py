"""One run at a time per thread, across every coordinator process: the multitask strategies.

Two runs on one thread would interleave their checkpoints, so a thread is held by one run at a
time: ``nn:{workflows}:threads`` maps a thread to the run holding it. What happens to a second run
submitted while the thread is busy is the submitter's choice (LangGraph Server's "double texting"
strategies):

* ``enqueue`` (default): it waits, recorded ``pending``, and runs when the thread is free, in
  submission order as far as the holders' ends allow (each waiter claims when it sees the end);
* ``reject``: the submission raises :class:`~nervenet.errors.ThreadBusy`, nothing is recorded;
* ``interrupt`` / ``rollback``: the busy run is cancelled that way (see
  :meth:`nervenet.workflows.Workflows.cancel`), then the new one runs.

A run claims its thread right before it starts (also after a takeover: the new owner claims it
again, which succeeds since it is still the holder) and releases it when it ends. Claims and
releases are compare-and-set scripts on the one hash (one slot: fine on a cluster). A holder
whose run ended without releasing (its process died between the two) is recognized from its
record and replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .errors import ConfigurationError, ThreadBusy
from .transport import as_text

if TYPE_CHECKING:
    from .pool import Pool
    from .workflows import Workflows

STRATEGIES = ("enqueue", "reject", "interrupt", "rollback")

#: KEYS[1] threads hash; ARGV thread, run, expected holder ("" = none). Sets the holder to run
#: if the thread is free, already the run's, or held by the expected (stale) holder; returns the
#: holder after the call.
_CLAIM = """
local holder = redis.call('HGET', KEYS[1], ARGV[1])
if (not holder) or holder == ARGV[2] or (ARGV[3] ~= '' and holder == ARGV[3]) then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return ARGV[2]
end
return holder
"""
#: KEYS[1] threads hash; ARGV thread, run. Deletes the entry only if the run holds it.
_RELEASE = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"""


def check_strategy(multitask: str) -> str:
    if multitask not in STRATEGIES:
        raise ConfigurationError(
            f"multitask strategy {multitask[:40]!r} is not one of {', '.join(STRATEGIES)}"
        )
    return multitask


class ThreadGate:
    """Claims and releases threads for the runs of one process."""

    def __init__(self, pool: Pool, workflows: Workflows) -> None:
        self._pool = pool
        self._workflows = workflows
        self._claim: Any = None
        self._release: Any = None

    async def _call(self, which: str, *args: str) -> Any:
        redis = self._pool.transport.redis
        if self._claim is None:
            self._claim = redis.register_script(_CLAIM)
            self._release = redis.register_script(_RELEASE)
        script = self._claim if which == "claim" else self._release
        return await script(keys=[self._pool.keys.busy_threads], args=list(args))

    async def holder(self, thread: str) -> str | None:
        """The run holding ``thread``, if it is still running or queued."""
        raw = await self._pool.transport.redis.hget(self._pool.keys.busy_threads, thread)
        if raw is None:
            return None
        run_id = as_text(raw)
        record = await self._workflows.record(run_id)
        return run_id if record is not None and record.status in ("running", "queued") else None

    async def admit(self, run_id: str, thread: str, multitask: str) -> None:
        """Apply the strategy to a new run before anything of it is recorded."""
        busy = await self.holder(thread)
        if busy is None or busy == run_id:
            return
        if multitask == "reject":
            raise ThreadBusy(
                f"thread {thread!r} is busy with run {busy!r}; submit with multitask='enqueue' "
                "to wait for it, or 'interrupt'/'rollback' to cancel it"
            )
        if multitask in ("interrupt", "rollback"):
            with contextlib.suppress(ConfigurationError):  # it ended meanwhile
                await self._workflows.cancel(busy, multitask)

    async def acquire(
        self, run_id: str, thread: str, on_wait: Callable[[], Awaitable[None]]
    ) -> bool:
        """Wait until the run holds ``thread`` (``on_wait`` runs once if it is busy); True if
        it had to wait."""
        waited = False
        stale = ""
        while True:
            holder = as_text(await self._call("claim", thread, run_id, stale))
            if holder == run_id:
                return waited
            if not waited:
                waited = True
                await on_wait()
            ended = await self._workflows._watch_end(holder)
            try:
                if await self.holder(thread) is None:
                    stale = holder  # ended without releasing (or is releasing): take it
                    continue
                with contextlib.suppress(TimeoutError):
                    interval = self._pool.settings.heartbeat_interval
                    await asyncio.wait_for(asyncio.shield(ended), interval * 5)
            finally:
                self._workflows._forget_watch(holder, ended)

    async def release(self, run_id: str, thread: str) -> None:
        await self._call("release", thread, run_id)
