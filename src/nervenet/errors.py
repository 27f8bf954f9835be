"""The one exception tree of nervenet. Every message says what to do next.

::

    NervenetError
    ├── ConfigurationError        bad URL, namespace, option or ``module:attr``
    ├── PoolConnectionError       Redis unreachable or refused our credentials at start
    ├── EnvelopeError             a stream entry that is not a valid task or reply (dead-lettered)
    ├── NoLiveWorker              nobody serves the task type being dispatched
    ├── DispatchError             a dispatched task did not produce a result
    │   ├── TaskTimeout           no result within the attempt's timeout
    │   ├── RemoteTaskError       the handler raised; carries its type name, message, traceback
    │   └── TaskEscalated         retries exhausted; the task is on the escalation stream
    ├── LeaseLost                 another coordinator process took over this workflow run
    └── WorkflowFailed            a durable run ended with an error

    TaskFailure                   raised *by* a handler (an adapter's) to describe its failure
                                  exactly; the worker turns it into an error reply
"""

from __future__ import annotations


class NervenetError(Exception):
    """Base class of every error nervenet raises on purpose."""


class ConfigurationError(NervenetError, ValueError):
    """An option, URL or import target is wrong; the message names the fix."""


class PoolConnectionError(NervenetError, ConnectionError):
    """Redis could not be reached, or refused the credentials, when the pool started."""


class EnvelopeError(NervenetError, ValueError):
    """A stream entry failed validation. ``reason`` is short and goes to the dead-letter entry."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NoLiveWorker(NervenetError, LookupError):
    """No live worker has registered the task type."""

    def __init__(
        self, task_type: str, hint: str | None = None, *, queue: str | None = None
    ) -> None:
        if queue is None or queue == "default":
            message = (
                f"no live worker serves task type {task_type!r}; start one with "
                f"`nervenet worker MODULE:ATTR` (or dispatch with wait_for_worker=True)"
            )
        else:
            message = (
                f"no live worker serves task type {task_type!r} on queue {queue!r}; start one "
                f"with `nervenet worker MODULE:ATTR --queues {queue}` (or dispatch with "
                "wait_for_worker=True)"
            )
        super().__init__(message if hint is None else f"{message}. {hint}")
        self.task_type = task_type
        self.queue = queue


class DispatchError(NervenetError):
    """A dispatched task did not produce a result."""

    def __init__(self, message: str, *, task_id: str, task_type: str) -> None:
        super().__init__(message)
        self.task_id = task_id
        self.task_type = task_type


class TaskTimeout(DispatchError, TimeoutError):
    """No result arrived within the attempt's timeout."""


class RemoteTaskError(DispatchError):
    """The handler raised. The original exception's identity travels as text, never as code.

    ``error_data`` is optional adapter-defined bytes (e.g. a safely serialized exception) that an
    adapter can use to rebuild the original exception type on the coordinator side.
    """

    def __init__(
        self,
        *,
        task_id: str,
        task_type: str,
        error_type: str,
        error_message: str,
        traceback: str,
        error_data: bytes = b"",
    ) -> None:
        super().__init__(
            f"task {task_id!r} ({task_type}) raised {error_type}: {error_message}",
            task_id=task_id,
            task_type=task_type,
        )
        self.error_type = error_type
        self.error_message = error_message
        self.remote_traceback = traceback
        self.error_data = error_data


class TaskEscalated(DispatchError):
    """Retries are exhausted; the task was written to the escalation stream for an operator."""

    def __init__(
        self, *, task_id: str, task_type: str, reason: str, cause: BaseException | None
    ) -> None:
        super().__init__(
            f"task {task_id!r} ({task_type}) escalated: {reason}. Inspect it with "
            f"`nervenet escalations list`, replay it with `nervenet escalations retry ID`",
            task_id=task_id,
            task_type=task_type,
        )
        self.reason = reason
        self.__cause__ = cause


class LeaseLost(NervenetError):
    """This process no longer owns the workflow run; another coordinator resumed it."""


class WorkflowFailed(NervenetError):
    """A durable run ended with an error (seen from a process other than the one that ran it)."""


class TaskFailure(Exception):
    """Raised by a handler (usually an adapter's) to describe its failure exactly.

    Not a :class:`NervenetError`: nervenet never raises it, handlers do. ``data`` travels back as
    opaque bytes in the error reply, so an adapter can rebuild the original exception on the
    coordinator side with its own safe deserializer.
    """

    def __init__(self, message: str, *, type_name: str, data: bytes = b"", traceback: str = ""):
        super().__init__(message)
        self.type_name = type_name
        self.data = data
        self.traceback = traceback
