"""Every Redis key and stream name nervenet uses, built in one place.

Each key carries a Redis Cluster hash tag (the part in braces) chosen so that the keys one operation
touches together hash to one slot: everything about one thread's checkpoints shares ``{thread}``,
everything else is a single-key operation and gets its own tag so load spreads over the cluster.
Several apps can share one Redis by choosing different namespaces (default ``nn``).
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_NAMESPACE = "nn"

#: The one consumer group every worker of a task type joins (work is shared, not broadcast).
WORKER_GROUP = "workers"


@dataclass(frozen=True, slots=True)
class Keys:
    """Key builder for one namespace. Examples below are for the default namespace ``nn``."""

    namespace: str = DEFAULT_NAMESPACE

    def __post_init__(self) -> None:
        if not self.namespace or any(c in self.namespace for c in "{}: \t\n"):
            raise ValueError(
                f"namespace {self.namespace!r} must be non-empty and contain no braces, colons "
                "or white space"
            )

    # --- task traffic ------------------------------------------------------------------------
    def task_stream(self, task_type: str) -> str:
        """Stream of tasks of one type: ``nn:task:{support/classify}``."""
        return f"{self.namespace}:task:{{{task_type}}}"

    @property
    def task_stream_prefix(self) -> str:
        """Prefix of every task stream, for SCAN in the status view: ``nn:task:``."""
        return f"{self.namespace}:task:"

    def task_type_of(self, stream_key: str) -> str:
        """Inverse of :meth:`task_stream`."""
        return stream_key[len(self.task_stream_prefix) + 1 : -1]

    def reply_stream(self, process_id: str) -> str:
        """Where workers answer one coordinator process: ``nn:reply:{3f2a...}``."""
        return f"{self.namespace}:reply:{{{process_id}}}"

    @property
    def reply_stream_prefix(self) -> str:
        """Every reply address a worker may write to starts with this: ``nn:reply:{``.

        Workers refuse any other reply address, so a forged envelope cannot make them write
        into arbitrary keys.
        """
        return f"{self.namespace}:reply:{{"

    def cancel_stream(self, task_type: str) -> str:
        """Cancellations of dispatched tasks of one type, read (``XREAD``, no group) by every
        worker serving the type: ``nn:cancel:{support/classify}``.

        It shares the task stream's hash tag, so a coordinator's ``XDEL`` of the task entry and
        ``XADD`` of the cancellation go to one slot in one pipeline, also in a cluster.
        """
        return f"{self.namespace}:cancel:{{{task_type}}}"

    def is_reply_stream(self, key: str) -> bool:
        """Whether ``key`` is a reply stream of this namespace exactly as :meth:`reply_stream`
        names them for a pool (its process id is 32 lowercase hex digits)."""
        prefix = self.reply_stream_prefix
        process_id = key[len(prefix) : -1]
        return (
            key.startswith(prefix)
            and key.endswith("}")
            and len(process_id) == 32
            and all(c in "0123456789abcdef" for c in process_id)
        )

    def result(self, task_id: str) -> str:
        """Cached result of a finished task, answers redeliveries: ``nn:result:{<task id>}``."""
        return f"{self.namespace}:result:{{{task_id}}}"

    @property
    def escalations(self) -> str:
        """Dead-letter stream of tasks that could not be done: ``nn:{escalations}``."""
        return f"{self.namespace}:{{escalations}}"

    # --- registry ---------------------------------------------------------------------------
    @property
    def workers(self) -> str:
        """Sorted set of live worker ids scored by heartbeat expiry (ms): ``nn:{workers}``."""
        return f"{self.namespace}:{{workers}}"

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
    def workflows_done(self) -> str:
        """Stream with one entry per finished run, read by waiters in other processes:
        ``nn:{workflows}:done``."""
        return f"{self.workflows}:done"

    # --- checkpoints (all keys of a thread share the thread's hash tag) ------------------------
    def checkpoint_prefix(self, thread_id: str) -> str:
        """Common prefix of one thread's checkpoint keys: ``nn:cp:{thread-1}``."""
        return f"{self.namespace}:cp:{{{thread_id}}}"
