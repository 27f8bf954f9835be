"""Per task type options: which workers run it (its queue) and the limit it runs under.

Adapters read them from the app (LangGraph: ``add_node(..., metadata={"nervenet": {...}})`` and
``distribute(..., nodes={...})``) and hand them to workers with the handlers
(:meth:`TaskSource.nervenet_task_options`). A worker serves only the task types of the queues it
was started for (``nervenet worker app:graph --queues gpu,default``); the registry then knows
which task types have live workers, so a node whose queue nobody serves fails fast with an error
that names the queue.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from .errors import ConfigurationError
from .limits import TaskLimits

DEFAULT_QUEUE = "default"

#: The keys an app may spell in a node's options.
OPTION_KEYS = frozenset({"queue", "max_concurrency", "rate_limit", "limit_key", "burst"})


@dataclass(frozen=True, slots=True)
class TaskOptions:
    """How one task type is routed and limited."""

    queue: str = DEFAULT_QUEUE
    """The class of workers that runs it."""
    limits: TaskLimits | None = None
    """The limit its starts take a permit of, if any."""

    @classmethod
    def parse(cls, task_type: str, spelled: Mapping[str, Any]) -> TaskOptions:
        """Options as an app spells them: ``{"queue": "gpu", "max_concurrency": 5,
        "rate_limit": "10/s", "limit_key": "openai", "burst": 1}``."""
        unknown = set(spelled) - OPTION_KEYS
        if unknown:
            raise ConfigurationError(
                f"unknown nervenet option(s) {sorted(unknown)} for {task_type!r}; "
                f"known: {sorted(OPTION_KEYS)}"
            )
        queue = str(spelled.get("queue") or DEFAULT_QUEUE)
        if not queue or any(c in queue for c in ",{} \t\n"):
            raise ConfigurationError(f"queue name {queue!r} may not contain commas or spaces")
        limited = any(spelled.get(k) is not None for k in ("max_concurrency", "rate_limit"))
        key = spelled.get("limit_key")
        limits = None
        if limited or key is not None:
            limits = TaskLimits(
                key=str(key or task_type),
                max_concurrency=spelled.get("max_concurrency"),
                rate_limit=spelled.get("rate_limit"),
                burst=int(spelled.get("burst") or 1),
            )
        return cls(queue, limits)


@runtime_checkable
class TaskSource(Protocol):
    """A handler source that also says how its task types are routed and limited."""

    def nervenet_task_options(self) -> Mapping[str, TaskOptions]:
        """Task type -> options (types not listed run on the default queue, unlimited)."""
        ...


def options_of(target: object) -> dict[str, TaskOptions]:
    if isinstance(target, TaskSource):
        return dict(target.nervenet_task_options())
    return {}


def parse_queues(queues: str | Iterable[str] | None) -> frozenset[str] | None:
    """``"gpu,default"`` or ``["gpu", "default"]`` as a set; None: every queue."""
    if queues is None:
        return None
    names = queues.split(",") if isinstance(queues, str) else list(queues)
    parsed = frozenset(q.strip() for q in names if q.strip())
    if not parsed:
        raise ConfigurationError("--queues names no queue; e.g. --queues gpu,default")
    return parsed
