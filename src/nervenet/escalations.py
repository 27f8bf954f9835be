"""The escalation (dead-letter) stream: tasks nobody could do, kept for an operator.

An entry holds the reason, the task's own fields when they could be read, and the raw fields when
they could not (a garbage entry is kept as it was, up to a size cap, so it can be inspected).
``retry`` puts a task back on its stream with a fresh attempt; ``drop`` deletes the entry.

What a retry achieves for the run the task belonged to: the coordinator that escalated it has
already given up (its dispatch raised :class:`~nervenet.errors.TaskEscalated`, and its run failed
unless it caught that). The retried task runs once more on a worker, which caches its result
under the same task id for ``result_ttl`` (a day by default); nobody is waiting for the reply.

* With a checkpointer (a durable graph run, ``RedisSaver``): resume the run, e.g.
  ``graph.ainvoke(None, {"configurable": {"thread_id": ...}})``. LangGraph re-runs the failed
  step, whose task id is the same, so the worker answers it from the cached result (a retry that
  has not finished yet is simply dispatched again).
* Without a checkpointer the run's state is gone: the retry only does the task's work (its side
  effects happen) and its result is cached for a dispatch of the same task id, if one comes.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from .envelope import Signer, TaskEnvelope
from .errors import ConfigurationError
from .keys import Keys
from .payloads import describe_payload
from .transport import Transport

RAW_FIELD_CAP = 4_096
_ENTRY_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")


def check_entry_id(entry_id: str) -> str:
    """``entry_id`` if it is a stream entry id (``1764050000000-0``), else a clear error (Redis
    would answer garbage with an opaque "Invalid stream ID")."""
    if not _ENTRY_ID.fullmatch(entry_id):
        raise ConfigurationError(
            f"{entry_id[:80]!r} is not an escalation id (they look like 1764050000000-0); "
            "list them with `nervenet escalations list`"
        )
    return entry_id


@dataclass(frozen=True, slots=True)
class Escalation:
    """One entry of the escalation stream."""

    entry_id: str
    """Stream entry id, what ``show``/``retry``/``drop`` take."""
    reason: str
    """Why it was escalated."""
    task_type: str
    """Task type, or ``?`` for an entry that could not be parsed."""
    task_id: str
    """Task id, or ``?``."""
    workflow_id: str
    """Workflow id, or ``?``."""
    source: str
    """Stream the task came from."""
    at: float
    """Epoch seconds of the escalation."""
    error: str
    """The last error's text, if any."""
    fields: dict[str, bytes]
    """All stored fields, for ``show``."""

    def readable_fields(self) -> list[tuple[str, str]]:
        """Every field as text, sorted by name: payloads decoded for people (see
        :func:`~nervenet.payloads.describe_payload`), other values as UTF-8."""
        shown = []
        for name, value in sorted(self.fields.items()):
            if name.endswith("payload") or name.startswith("raw."):
                text = describe_payload(value)
            else:
                text = value.decode(errors="replace")
            shown.append((name, text))
        return shown


def escalation_fields(
    reason: str,
    *,
    source: str,
    envelope: TaskEnvelope | None = None,
    raw: dict[bytes, bytes] | None = None,
    error: str = "",
) -> dict[bytes, bytes]:
    """Fields of an escalation entry. ``raw`` (unparseable fields) is capped, never trusted."""
    fields: dict[bytes, bytes] = {
        b"reason": reason.encode()[:1_000],
        b"source": source.encode(),
        b"at": repr(time.time()).encode(),
        b"error": error.encode()[:20_000],
    }
    if envelope is not None:
        fields.update({b"task." + k: v for k, v in envelope.to_fields().items()})
    elif raw is not None:
        for name, value in list(raw.items())[:32]:
            fields[b"raw." + bytes(name)[:64]] = bytes(value)[:RAW_FIELD_CAP]
    return fields


def parse_escalation(entry_id: bytes, fields: dict[bytes, bytes]) -> Escalation:
    def text(name: bytes, default: str = "?") -> str:
        return fields.get(name, default.encode()).decode(errors="replace")

    return Escalation(
        entry_id=entry_id.decode(),
        reason=text(b"reason"),
        task_type=text(b"task.type"),
        task_id=text(b"task.id"),
        workflow_id=text(b"task.wf"),
        source=text(b"source"),
        at=float(text(b"at", "0") or 0),
        error=text(b"error", ""),
        fields={k.decode(errors="replace"): v for k, v in fields.items()},
    )


class Escalations:
    """Operator view of the escalation stream."""

    def __init__(self, transport: Transport, keys: Keys, signer: Signer | None = None) -> None:
        self._transport = transport
        self._keys = keys
        self._signer = signer

    async def count(self) -> int:
        return int(await self._transport.redis.xlen(self._keys.escalations))

    async def list(self, limit: int = 50) -> list[Escalation]:
        """Newest first."""
        entries: Any = await self._transport.redis.xrevrange(self._keys.escalations, count=limit)
        return [parse_escalation(i, f) for i, f in entries]

    async def get(self, entry_id: str) -> Escalation:
        check_entry_id(entry_id)
        entries: Any = await self._transport.redis.xrange(
            self._keys.escalations, entry_id, entry_id
        )
        if not entries:
            raise ConfigurationError(
                f"no escalation {entry_id!r}; list them with `nervenet escalations list`"
            )
        return parse_escalation(*entries[0])

    async def retry(self, entry_id: str) -> str:
        """Put the escalated task back on its stream as a new attempt; return the new entry id.

        Its result lands in the result cache under the same task id, so a resumed run picks it
        up (see the module docstring for what that means with and without a checkpointer).
        """
        escalation = await self.get(entry_id)
        task_fields = {
            k[len(b"task.") :]: v
            for k, v in ((k.encode(), v) for k, v in escalation.fields.items())
            if k.startswith(b"task.")
        }
        if not task_fields:
            raise ConfigurationError(
                f"escalation {entry_id} holds no readable task (reason: {escalation.reason}); "
                "it can only be dropped"
            )
        attempt = int(task_fields.get(b"attempt", b"1")) + 1
        task_fields[b"attempt"] = str(min(attempt, 1_000)).encode()
        task_fields[b"deadline"] = b"0.0"
        task_fields.pop(b"sig", None)
        if self._signer is not None:
            task_fields[b"sig"] = self._signer.sign(task_fields)
        redis = self._transport.redis
        task_id = task_fields.get(b"id", b"").decode(errors="replace")
        stream = self._keys.task_stream_for(escalation.task_type, task_id)
        new_id = await redis.xadd(stream, task_fields)  # type: ignore[arg-type]
        await redis.xdel(self._keys.escalations, entry_id)
        self._transport.notify_written()
        return new_id.decode() if isinstance(new_id, bytes) else str(new_id)

    async def drop(self, entry_id: str) -> bool:
        check_entry_id(entry_id)
        return bool(await self._transport.redis.xdel(self._keys.escalations, entry_id))
