"""Redis outages: which errors are ridden out, how long to wait between tries, and what is logged.

An outage (a restart, a network cut, a cluster primary failing over to its replica) reaches every
loop of a process at once: the reply reader, a worker's reads, heartbeats and settlements. Each
keeps retrying on its own, but the process says it once: one line when the outage is first seen
(an error, or a heartbeat that took far longer than it should, which is how a failover looks
while redis-py's cluster client retries on its own) and one when it is over: a heartbeat on time
after :data:`QUIET_SECONDS` without any failure (during a failover the loops whose keys live on
healthy shards go on working, so one on-time heartbeat does not mean every loop is fine).
"""

from __future__ import annotations

import asyncio
import logging
import time

from redis.exceptions import (
    ClusterDownError,
    ReadOnlyError,
    RedisClusterUnreachableError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger("nervenet.outages")

#: Seconds without a failure before an outage counts as over (more than the longest backoff).
QUIET_SECONDS = 5.0

#: A late heartbeat whose thread ran this share of its time was late because the process was
#: busy running its own code, not because Redis was slow to answer: a wait on Redis costs its
#: thread no CPU.
BUSY_SHARE = 0.5

#: Seconds between two "too busy" warnings of one process (a saturated process would otherwise
#: say it on every heartbeat).
BUSY_WARNING_EVERY = 60.0

#: Errors that mean "Redis is not there right now", never "this command is wrong": a lost
#: connection, a cluster with uncovered slots or in the middle of a failover (CLUSTERDOWN,
#: TRYAGAIN, a write that reached a demoted primary: READONLY).
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    OSError,
    ClusterDownError,
    TryAgainError,
    ReadOnlyError,
    SlotNotCoveredError,
    RedisClusterUnreachableError,
)


def backoff(failures: int) -> float:
    """Seconds to wait after ``failures`` failures in a row of the same Redis call."""
    return float(min(0.05 * 2**failures, 2.0))


class Outages:
    """One process's view of Redis availability, for one log line per incident."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.since: float | None = None
        """Monotonic time the current incident was first seen, or None."""
        self.last_trouble = -1e9
        """Monotonic time of the last failure or slow heartbeat."""
        self.incidents = 0
        self._busy_told = -1e9

    @property
    def ongoing(self) -> bool:
        return self.since is not None

    def failed(self, what: str, exc: BaseException) -> None:
        """A Redis call of ``what`` failed with a transient error; it will be retried."""
        self.last_trouble = time.monotonic()
        if self.since is None:
            self._open(f"{what} failed ({type(exc).__name__}: {exc})")
        else:
            log.debug("%s failed again during the outage: %s", what, exc)

    async def wait_out(self, what: str, exc: BaseException, failures: int) -> None:
        """:meth:`failed`, then wait before the next try (``failures`` in a row so far)."""
        self.failed(what, exc)
        await asyncio.sleep(backoff(failures))

    def slow(self, what: str, seconds: float, busy: float = 0.0) -> None:
        """A heartbeat (``what``) took ``seconds``, far longer than it should, of which its
        thread spent ``busy`` running code (:func:`time.thread_time`). Mostly busy, it was
        this process that could not keep up, and that is what it says (at most once every
        :data:`BUSY_WARNING_EVERY`): before, an event loop busy with its own runs was
        reported as Redis being unavailable, and operators looked at the wrong server."""
        if busy >= BUSY_SHARE * seconds:
            now = time.monotonic()
            if now - self._busy_told >= BUSY_WARNING_EVERY:
                self._busy_told = now
                log.warning(
                    "%s took %.1f s, %.1f s of it running this process's own work: the process "
                    "is too busy to keep its heartbeats on time, and other processes may take "
                    "its runs or tasks for abandoned. Give it more CPU or less work "
                    "(PoolSettings.max_runs, a worker's concurrency), or longer lease_ttl and "
                    "visibility_timeout",
                    what,
                    seconds,
                    busy,
                )
            return
        self.last_trouble = time.monotonic()
        if self.since is None:
            self._open(f"{what} took {seconds:.1f} s", started=time.monotonic() - seconds)

    def on_time(self) -> None:
        """A heartbeat went through on time: an open incident is over if all was quiet since."""
        now = time.monotonic()
        if self.since is not None and now - self.last_trouble >= QUIET_SECONDS:
            log.warning(
                "Redis at %s is back; the outage lasted %.1f s",
                self.where,
                self.last_trouble - self.since,
            )
            self.since = None

    def _open(self, cause: str, started: float | None = None) -> None:
        self.since = started if started is not None else time.monotonic()
        self.incidents += 1
        log.warning(
            "Redis at %s is unavailable or failing over (%s); riding it out, retrying",
            self.where,
            cause,
        )
