"""nervenet: per-workflow coordinators and a shared agent pool over Redis Streams.

::

    pool = Pool.from_url("redis://localhost:6379/0")   # or Pool.local() for an embedded pool
    coordinator = pool.coordinator("run-42")
    result = await coordinator.dispatch("docs/classify", payload, timeout=30)

Workers serve handlers with ``nervenet worker MODULE:ATTR``. The core imports neither LangGraph
nor CrewAI; their adapters are ``nervenet_langgraph`` and ``nervenet_crewai``.
"""

from .coordinator import Backoff, Coordinator
from .envelope import RemoteError, Reply, TaskEnvelope
from .errors import (
    ConfigurationError,
    DispatchError,
    EnvelopeError,
    LeaseLost,
    NervenetError,
    NoLiveWorker,
    PoolConnectionError,
    RemoteTaskError,
    RunCancelled,
    TaskEscalated,
    TaskFailure,
    TaskTimeout,
    ThreadBusy,
    WorkflowFailed,
)
from .escalations import Escalation
from .handlers import Handler, Handlers, HandlerSource, TaskContext
from .keys import Keys
from .pool import Pool
from .registry import WorkerInfo
from .runs import NodeRun, RunInfo, RunStatus
from .settings import PoolSettings
from .status import PoolStatus, QueueStatus
from .worker import Worker
from .workflows import RunHandle, RunRecord, Workflows

__all__ = [
    "Backoff",
    "ConfigurationError",
    "Coordinator",
    "DispatchError",
    "EnvelopeError",
    "Escalation",
    "Handler",
    "HandlerSource",
    "Handlers",
    "Keys",
    "LeaseLost",
    "NervenetError",
    "NoLiveWorker",
    "NodeRun",
    "Pool",
    "PoolConnectionError",
    "PoolSettings",
    "PoolStatus",
    "QueueStatus",
    "RemoteError",
    "RemoteTaskError",
    "Reply",
    "RunCancelled",
    "RunHandle",
    "RunInfo",
    "RunRecord",
    "RunStatus",
    "TaskContext",
    "TaskEnvelope",
    "TaskEscalated",
    "TaskFailure",
    "TaskTimeout",
    "ThreadBusy",
    "Worker",
    "WorkerInfo",
    "WorkflowFailed",
    "Workflows",
]
