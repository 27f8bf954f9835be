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
    TaskEscalated,
    TaskFailure,
    TaskTimeout,
    WorkflowFailed,
)
from .escalations import Escalation
from .handlers import Handler, Handlers, HandlerSource, TaskContext
from .keys import Keys
from .pool import Pool
from .registry import WorkerInfo
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
    "Pool",
    "PoolConnectionError",
    "PoolSettings",
    "PoolStatus",
    "QueueStatus",
    "RemoteError",
    "RemoteTaskError",
    "Reply",
    "RunHandle",
    "RunRecord",
    "TaskContext",
    "TaskEnvelope",
    "TaskEscalated",
    "TaskFailure",
    "TaskTimeout",
    "Worker",
    "WorkerInfo",
    "WorkflowFailed",
    "Workflows",
]
