"""Tunables of a pool, with defaults that hold on a small machine and say why."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigurationError


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """Timing, size and safety limits shared by coordinators and workers of one process."""

    heartbeat_interval: float = 0.5
    """Seconds between heartbeats. A heartbeat renews worker registrations, coordinator leases
    and the idle time of every in-flight stream entry."""
    visibility_timeout: float = 5.0
    """An in-flight entry whose idle time exceeds this is presumed abandoned and reclaimed with
    XAUTOCLAIM. Live workers reset the idle time each heartbeat, so a long task is never taken
    from a live worker; only a dead (or stopped) one loses its tasks. Keep it several heartbeats
    long so an event-loop stall under load does not look like death."""
    lease_ttl: float = 1.5
    """Lifetime of a coordinator's lease on a workflow run without renewal; after it, another
    coordinator process resumes the run from its last checkpoint (recovery within about
    ``lease_ttl + heartbeat_interval / 4`` of a crash). A process whose event loop stalls longer
    than this may lose its runs to another process, which is safe (the stalled one asks Redis
    before its next dispatch, and stops) but repeats in-flight work: raise it for CPU-starved
    coordinators. Runs no other process claimed meanwhile go on where they are."""
    result_ttl: float = 24 * 3600.0
    """How long finished results stay cached to answer redeliveries and resumed workflows."""
    max_payload_bytes: int = 16 * 1024 * 1024
    """Larger task payloads are refused and dead-lettered."""
    max_deliveries: int = 5
    """How many times a task may be started on workers that die before finishing it: once it
    was started this many times, it is escalated (a poison task), not run again."""
    lean_connections: bool = True
    """On a single Redis server (``redis://`` or ``unix://``), run the hot path (blocking stream
    reads, batched writes) over nervenet's lean RESP connections (:mod:`nervenet.resp`) instead of
    redis-py's client, which costs several times the CPU per dispatch. False: every command
    through redis-py. A cluster and TLS always use redis-py."""
    max_in_flight: int = 10_000
    """Tasks one process may have dispatched and not yet answered; further dispatches wait.
    This is the backpressure that keeps task streams bounded without trimming unread tasks."""
    max_runs: int | None = None
    """Workflow runs this process coordinates at once: root graph runs and crew kickoffs started
    here, and durable runs it started, took from the queue or took over. Runs beyond it wait for
    a slot in the order they came, and a full process claims no queued or abandoned run (another
    one with room does). Past what the machine can finish, this keeps runs finishing at its full
    rate instead of all of them slowing down together (see :mod:`nervenet.run_slots`). None: no
    bound, the right default for an app's own process; ``nervenet serve --max-runs`` sets it for
    a coordinator process."""
    reply_stream_maxlen: int = 100_000
    """Approximate cap of a reply stream (entries are read within milliseconds)."""
    escalation_stream_maxlen: int = 10_000
    """Approximate cap of the escalation stream (oldest escalations are trimmed first)."""
    cancel_wait: float = 5.0
    """How long a cancelled dispatch waits for the worker running it to confirm that its handler
    stopped (its ``except``/``finally`` blocks ran), as the awaiter of a cancelled asyncio task
    does in one process. Bounded: a worker that died meanwhile confirms nothing. 0: don't wait."""
    cancel_stream_maxlen: int = 10_000
    """Approximate cap of a task type's cancel stream. Workers read it within milliseconds; a
    worker that fell further behind than this many cancellations misses some (those tasks then
    run to completion and their replies are dropped)."""
    block_ms: int = 1_000
    """How long one blocking read waits before the loop checks for shutdown."""
    worker_wait_timeout: float = 30.0
    """How long ``wait_for_worker=True`` waits for a worker of the task type to register."""
    task_partitions: int | None = None
    """Streams per task type (see :mod:`nervenet.keys`). Every process of a namespace must use
    the same number, so the first pool to start writes it to Redis and every later one adopts
    that (with a warning if its own setting differs). None: 1 on a single server, 2 per primary
    on a cluster (6 on 3 primaries), so that a hot task type spreads over every shard. On a
    cluster a worker reads each partition with its own blocking read: give workers a
    concurrency of at least this many."""

    record_runs: bool = True
    """Keep run records and node histories (:mod:`nervenet.runs`); False writes none (for a
    coordinator process that wants no per-run bookkeeping)."""
    run_retention: float = 7 * 24 * 3600.0
    """Seconds a run record and its node history are kept after the run's last change (see
    :mod:`nervenet.runs`)."""
    runs_kept: int = 100_000
    """Most run records listed (``nervenet runs list``, the dashboard): the oldest fall off
    the list at once, their records expire after :attr:`run_retention`."""
    join_retention: float = 600.0
    """Seconds a run's output events stay joinable after it ends (:meth:`nervenet.runs.Runs.join`;
    LangGraph Server keeps resumable streams 2 minutes by default)."""
    run_events_kept: int = 10_000
    """Most output events kept per run (the oldest are trimmed; a join resuming from before
    them is refused)."""
    run_nodes_kept: int = 1_000
    """Most node attempts kept in one run's history (the oldest are trimmed)."""

    def __post_init__(self) -> None:
        if self.heartbeat_interval <= 0:
            raise ConfigurationError("heartbeat_interval must be positive")
        if self.visibility_timeout < 2 * self.heartbeat_interval:
            raise ConfigurationError(
                "visibility_timeout must be at least two heartbeat intervals, or live workers "
                "would lose their in-flight tasks to XAUTOCLAIM"
            )
        if self.lease_ttl < 2 * self.heartbeat_interval:
            raise ConfigurationError("lease_ttl must be at least two heartbeat intervals")
        if self.task_partitions is not None and not 1 <= self.task_partitions <= 256:
            raise ConfigurationError("task_partitions must be 1..256")
        if self.max_runs is not None and self.max_runs < 1:
            raise ConfigurationError("max_runs must be at least 1 (or None: no bound)")
        if self.max_in_flight < 1 or self.max_deliveries < 1:
            raise ConfigurationError("max_in_flight and max_deliveries must be at least 1")
