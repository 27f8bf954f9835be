"""Every Redis key and stream name nervenet uses, built in one place.

Each key carries a Redis Cluster hash tag (the part in braces) chosen so that the keys one operation
touches together hash to one slot: everything about one thread's checkpoints shares ``{thread}``,
everything else is a single-key operation and gets its own tag so load spreads over the cluster.
Several apps can share one Redis by choosing different namespaces (default ``nn``).

Task streams can be partitioned: one stream is one slot and so one shard, so a hot task type
would cap a whole cluster at one shard's throughput. With ``P`` partitions every task type has
``P`` streams; a task goes to the one its task id hashes to (no ordering across partitions). The
streams of every task type in partition ``p`` share that partition's hash tag, so a worker reads
all the types it serves in one ``XREADGROUP`` per partition, whatever their number; the ``P`` tags
are chosen to fall on evenly spaced slots, so a cluster made with ``redis-cli --cluster create``
(contiguous, equal slot ranges) gives each primary an equal share. With one partition (a single
server's default) a task stream keeps its own tag: ``nn:task:{support/classify}``.
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass, field

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

DEFAULT_NAMESPACE = "nn"

#: The one consumer group every worker of a task type joins (work is shared, not broadcast).
WORKER_GROUP = "workers"


#: Most partitions a namespace may have (each is one blocking read per worker on a cluster).
MAX_PARTITIONS = 256


def spaced_tags(prefix: str, count: int) -> tuple[str, ...]:
    """``count`` hash tags ``<prefix><k>``, the ``n``-th on a slot in the ``n``-th of ``count``
    equal slot ranges (``k`` found by trying: about ``count`` tries each). A cluster made with
    ``redis-cli --cluster create`` gives each primary a contiguous equal range, so keys on these
    tags load every primary alike."""
    tags = []
    for n in range(count):
        low = n * REDIS_CLUSTER_HASH_SLOTS // count
        high = (n + 1) * REDIS_CLUSTER_HASH_SLOTS // count
        k = 0
        while not low <= key_slot(f"{prefix.format(n=n)}{k}".encode()) < high:
            k += 1
        tags.append(f"{prefix.format(n=n)}{k}")
    return tuple(tags)


@functools.cache
def partition_tags(partitions: int) -> tuple[str, ...]:
    """Hash tags of ``partitions`` task stream partitions: ``p<n>.<k>``."""
    return spaced_tags("p{n}.", partitions)


def partition_of(task_id: str, partitions: int) -> int:
    """The partition a task id goes to: stable across retries and redeliveries."""
    return zlib.crc32(task_id.encode()) % partitions if partitions > 1 else 0


@dataclass(slots=True)
class Keys:
    """Key builder for one namespace. Examples below are for the default namespace ``nn``."""

    namespace: str = DEFAULT_NAMESPACE
    partitions: int = field(default=1)
    """Partitions of every task stream; a pool sets it once, as agreed with the server at start
    (see :meth:`nervenet.pool.Pool.ensure_started`), before any task traffic."""

    def __post_init__(self) -> None:
        if not self.namespace or any(c in self.namespace for c in "{}: \t\n"):
            raise ValueError(
                f"namespace {self.namespace!r} must be non-empty and contain no braces, colons "
                "or white space"
            )
        if not 1 <= self.partitions <= MAX_PARTITIONS:
            raise ValueError(f"partitions must be 1..{MAX_PARTITIONS}, not {self.partitions}")

    # --- task traffic ------------------------------------------------------------------------
    def task_stream(self, task_type: str, partition: int = 0) -> str:
        """Stream of tasks of one type: ``nn:task:{support/classify}``, or with partitions
        ``nn:task:{p3.41}:support/classify`` for partition 3."""
        if self.partitions == 1:
            return f"{self.namespace}:task:{{{task_type}}}"
        return f"{self.namespace}:task:{{{partition_tags(self.partitions)[partition]}}}:{task_type}"

    def task_streams(self, task_type: str) -> list[str]:
        """Every partition's stream of one task type."""
        return [self.task_stream(task_type, p) for p in range(self.partitions)]

    def task_stream_for(self, task_type: str, task_id: str) -> str:
        """The stream a task goes to."""
        return self.task_stream(task_type, partition_of(task_id, self.partitions))

    @property
    def task_stream_prefix(self) -> str:
        """Prefix of every task stream, for SCAN in the status view: ``nn:task:``."""
        return f"{self.namespace}:task:"

    def task_type_of(self, stream_key: str) -> str:
        """Inverse of :meth:`task_stream` (either form)."""
        rest = stream_key[len(self.task_stream_prefix) :]
        if rest.endswith("}"):
            return rest[1:-1]
        return rest[rest.index("}:") + 2 :]

    def reply_stream(self, process_id: str) -> str:
        """Where workers answer one coordinator process: ``nn:reply:{3f2a...}``."""
        return f"{self.namespace}:reply:{{{process_id}}}"

    def reply_streams(self, process_id: str, count: int) -> list[str]:
        """A process's ``count`` reply streams (one per cluster primary, so that its replies
        load every shard alike), on tags at evenly spaced slots:
        ``nn:reply:{3f2a....17}``; one stream is :meth:`reply_stream`."""
        if count == 1:
            return [self.reply_stream(process_id)]
        tags = spaced_tags(f"{process_id}.", count)
        return [f"{self.namespace}:reply:{{{tag}}}" for tag in tags]

    @property
    def reply_stream_prefix(self) -> str:
        """Every reply address a worker may write to starts with this: ``nn:reply:{``.

        Workers refuse any other reply address, so a forged envelope cannot make them write
        into arbitrary keys.
        """
        return f"{self.namespace}:reply:{{"

    def cancel_stream(self, task_stream: str) -> str:
        """Cancellations of the tasks dispatched on one task stream, read (``XREAD``, no group)
        by every worker serving it: ``nn:cancel:{support/classify}``.

        It shares the task stream's hash tag, so a coordinator's ``XDEL`` of the task entry and
        ``XADD`` of the cancellation go to one slot in one pipeline, also in a cluster.
        """
        return f"{self.namespace}:cancel:{task_stream[len(self.task_stream_prefix) :]}"

    @property
    def config(self) -> str:
        """Hash of settings every process of the namespace must share (the number of task
        stream partitions), written by the first pool to start: ``nn:{config}``."""
        return f"{self.namespace}:{{config}}"

    def is_reply_stream(self, key: str) -> bool:
        """Whether ``key`` is a reply stream of this namespace exactly as :meth:`reply_stream`
        and :meth:`reply_streams` name them for a pool (its process id is 32 lowercase hex
        digits, maybe followed by a dot and a number)."""
        prefix = self.reply_stream_prefix
        process_id, dot, index = key[len(prefix) : -1].partition(".")
        return (
            key.startswith(prefix)
            and key.endswith("}")
            and len(process_id) == 32
            and all(c in "0123456789abcdef" for c in process_id)
            and (not dot or (index.isdigit() and len(index) <= 6))
        )

    def result(self, task_id: str) -> str:
        """Cached result of a finished task, answers redeliveries: ``nn:result:{<task id>}``."""
        return f"{self.namespace}:result:{{{task_id}}}"

    @property
    def escalations(self) -> str:
        """Dead-letter stream of tasks that could not be done: ``nn:{escalations}``."""
        return f"{self.namespace}:{{escalations}}"

    # --- limits -----------------------------------------------------------------------------
    def limit(self, key: str) -> str:
        """Hash of one limit key: caps set at run time and its rate's token bucket:
        ``nn:limit:{openai}``."""
        return f"{self.namespace}:limit:{{{key}}}"

    def permits(self, key: str) -> str:
        """Sorted set of the permits held under a limit key, scored by lease expiry (ms); the
        same slot as :meth:`limit`, for the grant script: ``nn:limit:{openai}:permits``."""
        return f"{self.limit(key)}:permits"

    @property
    def limit_keys(self) -> str:
        """Set of every limit key declared, for the status view: ``nn:{limits}``."""
        return f"{self.namespace}:{{limits}}"

    # --- registry ---------------------------------------------------------------------------
    @property
    def workers(self) -> str:
        """Sorted set of live worker ids scored by heartbeat expiry (ms): ``nn:{workers}``."""
        return f"{self.namespace}:{{workers}}"

    @property
    def worker_waits(self) -> str:
        """Sorted set of ``"<process id> <task type>"``: a process has dispatches waiting for a
        worker of that type to register, scored by when that stops being true unless renewed
        (ms): ``nn:{workers}:waits``."""
        return f"{self.workers}:waits"

    def worker(self, worker_id: str) -> str:
        """Hash describing one worker (task types, concurrency, load): ``nn:worker:{w-1a2b}``."""
        return f"{self.namespace}:worker:{{{worker_id}}}"

    # --- durable workflows ------------------------------------------------------------------
    @property
    def workflows(self) -> str:
        """Sorted set of running workflow ids scored by lease expiry (ms): ``nn:{workflows}``."""
        return f"{self.namespace}:{{workflows}}"

    def workflow(self, workflow_id: str) -> str:
        """Hash of one workflow run (kind, input, status, owner, result): ``nn:wf:{run-1}``."""
        return f"{self.namespace}:wf:{{{workflow_id}}}"

    def lease(self, workflow_id: str) -> str:
        """Lease naming the coordinator process that owns a run: ``nn:lease:{run-1}``."""
        return f"{self.namespace}:lease:{{{workflow_id}}}"

    @property
    def workflow_owners(self) -> str:
        """Hash: run id -> process that holds its lease: ``nn:{workflows}:owner``."""
        return f"{self.workflows}:owner"

    @property
    def workflow_kinds(self) -> str:
        """Hash: run id -> registered kind that can resume it: ``nn:{workflows}:kind``."""
        return f"{self.workflows}:kind"

    @property
    def workflows_queued(self) -> str:
        """Sorted set of runs waiting for any coordinator process, scored by submission time
        (ms): ``nn:{workflows}:queued``."""
        return f"{self.workflows}:queued"

    @property
    def coordinators(self) -> str:
        """Sorted set of live coordinator processes (pools that can resume durable runs),
        scored by heartbeat expiry (ms): ``nn:{workflows}:coordinators``."""
        return f"{self.workflows}:coordinators"

    @property
    def run_loads(self) -> str:
        """Sorted set of processes that run workflow runs, scored by heartbeat expiry (ms):
        ``nn:{workflows}:loads``; each one's load is under :meth:`run_load`."""
        return f"{self.workflows}:loads"

    def run_load(self, process_id: str) -> str:
        """A process's runs under way, waiting for a slot, and its bound (``max_runs``), as
        ``"running waiting bound"`` (bound ``-``: none), expiring unless renewed:
        ``nn:{workflows}:load:<process>``."""
        return f"{self.workflows}:load:{process_id}"

    @property
    def workflows_cancel(self) -> str:
        """Hash: run id -> cancel action (``interrupt``/``rollback``) its owner is asked to
        carry out at its next lease renewal: ``nn:{workflows}:cancel``."""
        return f"{self.workflows}:cancel"

    @property
    def busy_threads(self) -> str:
        """Hash: thread id -> the run that holds it (one run at a time per thread, see
        multitask.py): ``nn:{workflows}:threads``."""
        return f"{self.workflows}:threads"

    @property
    def workflows_done(self) -> str:
        """Stream with one entry per finished run, read by waiters in other processes:
        ``nn:{workflows}:done``."""
        return f"{self.workflows}:done"

    # --- run records (see runs.py) -----------------------------------------------------------
    def run(self, run_id: str) -> str:
        """Hash of one run's record (status, kind, owner, times, error): ``nn:run:{run-1}``."""
        return f"{self.namespace}:run:{{{run_id}}}"

    def run_nodes(self, run_id: str) -> str:
        """Stream of one run's node (task) history, one entry per attempt a worker settled;
        beside :meth:`run` in its slot: ``nn:run:{run-1}:nodes``."""
        return f"{self.run(run_id)}:nodes"

    def run_events(self, run_id: str) -> str:
        """Stream of one run's output events (stream chunks), for joining it from any process;
        beside :meth:`run` in its slot: ``nn:run:{run-1}:events``."""
        return f"{self.run(run_id)}:events"

    @property
    def runs(self) -> str:
        """Sorted set of recorded run ids scored by creation time (ms), newest kept, for
        listing: ``nn:{runs}``."""
        return f"{self.namespace}:{{runs}}"

    @property
    def dashboard_samples(self) -> str:
        """Stream of queue samples the dashboard takes (waiting, in flight, delivered per task
        type), capped, so that its sparklines survive a restart: ``nn:{dashboard}:samples``."""
        return f"{self.namespace}:{{dashboard}}:samples"

    # --- checkpoints (all keys of a thread share the thread's hash tag) ------------------------
    def checkpoint_prefix(self, thread_id: str) -> str:
        """Common prefix of one thread's checkpoint keys: ``nn:cp:{thread-1}``."""
        return f"{self.namespace}:cp:{{{thread_id}}}"
