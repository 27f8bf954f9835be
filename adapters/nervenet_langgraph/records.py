"""What crosses Redis for one node (or ``@task``) call, both ways: typed, versioned records.

A coordinator describes the call (:class:`NodeCall`), a worker answers with its outcome
(:class:`NodeOutcome`). Both are plain ``TypedDict`` s packed by the strict serializer
(``wire.pack``): no object is built per field on the hot path, and the type checker sees every
key. Each carries :data:`WIRE_VERSION`; a coordinator and a worker of nervenet versions that
describe calls differently refuse each other's records with :class:`WireVersionError` instead
of misreading them.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

from nervenet import ConfigurationError

#: Bumped whenever a field of NodeCall or NodeOutcome changes meaning or becomes required.
WIRE_VERSION = 1


class WireVersionError(ConfigurationError):
    """A coordinator and a worker speak different versions of the node-call records."""


class NodeCall(TypedDict):
    """A node call as the coordinator describes it (no live objects)."""

    wire: int
    """:data:`WIRE_VERSION` of the coordinator."""
    node: str
    """The node's (or task's) name."""
    input: Any
    """The node's input (a task's: ``(args, kwargs)``)."""
    conf: dict[str, Any]
    """User keys of ``configurable`` (``thread_id``...), not LangGraph's internals."""
    task_id: str | None
    """LangGraph's task id."""
    checkpoint_ns: str
    """The task's checkpoint namespace (interrupt ids derive from it)."""
    checkpoint_map: dict[str, Any]
    """Checkpoint ids by namespace, for graphs the node runs."""
    resuming: bool
    """LangGraph's ``resuming`` flag for this attempt."""
    durability: str | None
    """The run's durability mode, if set."""
    metadata: dict[str, Any]
    """The task config's plain metadata (``langgraph_node``...)."""
    tags: list[str]
    """The task config's tags."""
    run_name: str | None
    """The task config's run name."""
    recursion_limit: int | None
    """The run's recursion limit."""
    resume: list[Any]
    """Resume values for this task's ``interrupt()`` calls, in order."""
    null_resume: Any
    """The run-wide resume value if no task consumed it yet."""
    step: int
    """The superstep."""
    stop: int
    """The superstep the run stops at."""
    context: Any
    """The run's ``context``."""
    previous: Any
    """The entrypoint's ``previous`` value."""
    execution: dict[str, Any] | None
    """``Runtime.execution_info`` fields (attempt number, ids)."""
    server_info: dict[str, Any] | None
    """``Runtime.server_info`` fields, when run by a LangGraph server."""
    node_error: dict[str, Any] | None
    """The failure an error-handler node handles."""
    streams: Any
    """Which stream modes the caller listens to (``streams.describe_streams``)."""
    observers: dict[str, Any] | None
    """The caller's callbacks, as the worker relays them (``callbacks.describe_observers``)."""


class NodeOutcome(TypedDict, total=False):
    """A worker's answer: what the node did to its context, then its value or its failure."""

    wire: int
    """:data:`WIRE_VERSION` of the worker."""
    kind: Literal["value", "interrupt", "parent", "error"]
    """How the node ended."""
    writes: list[list[Any]]
    """Writes it sent (``interrupt()`` resume bookkeeping), replayed on the task."""
    resume: list[Any]
    """The task's resume values after the call."""
    null_consumed: bool
    """Whether it consumed the run-wide resume value."""
    value: Any
    """Its return value (``kind="value"``)."""
    interrupts: list[Any]
    """Its interrupts (``kind="interrupt"``)."""
    command: Any
    """The ``Command`` it sent to a parent graph (``kind="parent"``)."""
    args: list[Any]
    """Its exception's arguments (``kind="error"``)."""
    invalid_resume: bool
    """Whether the exception rejects a resume value (LangGraph's marker)."""
    type_name: str
    """The exception's qualified type name (set from the task failure, coordinator side)."""
    traceback: str
    """The worker's traceback (set from the task failure, coordinator side)."""


def check_wire(record: NodeCall | NodeOutcome, sender: str) -> None:
    """Refuse a record from a nervenet that describes calls differently."""
    version = record.get("wire", 0)
    if version != WIRE_VERSION:
        raise WireVersionError(
            f"this process reads LangGraph node-call records v{WIRE_VERSION}, the {sender} sent "
            f"v{version}: run the same nervenet version on coordinators and workers"
        )
