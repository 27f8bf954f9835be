"""nervenet: per-workflow coordinators and a shared agent pool over Redis Streams.

::

    pool = Pool.from_url("redis://localhost:6379/0")   # or Pool.local() for an embedded pool
    coordinator = pool.coordinator("run-42")
    result = await coordinator.dispatch("docs/classify", payload, timeout=30)

Workers serve handlers with ``nervenet worker MODULE:ATTR``. The core imports neither LangGraph
nor CrewAI; their adapters are ``nervenet_langgraph`` and ``nervenet_crewai``.

This top level is what an app uses: the pool and its settings, coordinators, handlers and workers,
a durable run's handle, and the exception tree (``errors.py``). What the pool's methods return
(``status``, ``escalations``, ``runs``) lives in those modules, and what crosses the wire (task
envelopes and replies) in ``nervenet.envelope``.
"""

from .coordinator import Backoff, Coordinator
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
from .handlers import Handlers, TaskContext
from .pool import Pool
from .runs import RunStatus
from .settings import PoolSettings
from .worker import Worker
from .workflows import RunHandle

__all__ = [
    "Backoff",
    "ConfigurationError",
    "Coordinator",
    "DispatchError",
    "EnvelopeError",
    "Handlers",
    "LeaseLost",
    "NervenetError",
    "NoLiveWorker",
    "Pool",
    "PoolConnectionError",
    "PoolSettings",
    "RemoteTaskError",
    "RunCancelled",
    "RunHandle",
    "RunStatus",
    "TaskContext",
    "TaskEscalated",
    "TaskFailure",
    "TaskTimeout",
    "ThreadBusy",
    "Worker",
    "WorkflowFailed",
]
