"""CrewAI's ``FlowPersistence`` on Redis: ``@persist`` state shared by every process.

CrewAI's default (``SQLiteFlowPersistence``) is a file per machine: a flow persisted on one
coordinator cannot be restored on another. This one keeps each flow's latest state (and a
pending human-feedback context) in one Redis hash, so ``kickoff(inputs={"id": ...})`` and
``Flow.from_pending(flow_id, persistence)`` work from any process::

    from crewai.flow.persistence import persist
    from nervenet_crewai import RedisFlowPersistence

    @persist(RedisFlowPersistence(url="redis://cache:6379/0"))
    class ReviewFlow(Flow[Review]): ...

    # or for every flow that falls back to CrewAI's default:
    set_flow_persistence_factory(lambda: RedisFlowPersistence(url=url))

Keys: ``nn:crewai:flow:{<flow uuid>}`` (hash: ``state``, ``method``, ``pending``; one hash tag
per flow, so it works on Redis Cluster too), expiring ``ttl`` seconds after the last write.
CrewAI calls these methods synchronously (from a thread for ``save_state``, on its event loop
for ``load_state``), so the client is a synchronous one of its own, not the pool's.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import orjson
from crewai.flow.persistence.base import FlowPersistence
from pydantic import BaseModel, PrivateAttr

from nervenet.cluster import sync_client
from nervenet.errors import ConfigurationError

if TYPE_CHECKING:
    from crewai.flow.async_feedback.types import PendingFeedbackContext

DEFAULT_TTL = 7 * 24 * 3600


def flow_key(flow_uuid: str) -> str:
    """``nn:crewai:flow:{3f2a...}``: everything persisted for one flow, under one hash tag."""
    return f"nn:crewai:flow:{{{flow_uuid}}}"


class RedisFlowPersistence(FlowPersistence):
    """Flow state in Redis (plain Redis >= 6.2 or a cluster), readable by every process."""

    persistence_type: str = "redis"
    url: str
    """``redis://``, ``rediss://``, ``redis+cluster://`` or ``unix://`` URL."""
    ttl: int = DEFAULT_TTL
    """Seconds a flow's record lives after its last write."""

    _client: Any = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def init_db(self) -> None:
        self._redis()

    def _redis(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = sync_client(self.url)
            return self._client

    def save_state(
        self, flow_uuid: str, method_name: str, state_data: dict[str, Any] | BaseModel
    ) -> None:
        self._write(flow_uuid, {"state": _state_json(state_data), "method": method_name})

    def load_state(self, flow_uuid: str) -> dict[str, Any] | None:
        raw = self._redis().hget(flow_key(flow_uuid), "state")
        return _json_object(raw)

    def save_pending_feedback(
        self,
        flow_uuid: str,
        context: PendingFeedbackContext,
        state_data: dict[str, Any] | BaseModel,
    ) -> None:
        self._write(
            flow_uuid,
            {
                "state": _state_json(state_data),
                "method": context.method_name,
                "pending": orjson.dumps(context.to_dict()),
            },
        )

    def load_pending_feedback(
        self, flow_uuid: str
    ) -> tuple[dict[str, Any], PendingFeedbackContext] | None:
        from crewai.flow.async_feedback.types import PendingFeedbackContext

        state, pending = self._redis().hmget(flow_key(flow_uuid), ["state", "pending"])
        state_data, context = _json_object(state), _json_object(pending)
        if state_data is None or context is None:
            return None
        return state_data, PendingFeedbackContext.from_dict(context)

    def clear_pending_feedback(self, flow_uuid: str) -> None:
        self._redis().hdel(flow_key(flow_uuid), "pending")

    def _write(self, flow_uuid: str, fields: dict[str, Any]) -> None:
        key = flow_key(flow_uuid)
        with self._redis().pipeline(transaction=False) as pipe:
            pipe.hset(key, mapping=fields)
            pipe.expire(key, self.ttl)
            pipe.execute()


def _state_json(state_data: dict[str, Any] | BaseModel) -> bytes:
    try:
        if isinstance(state_data, BaseModel):
            return orjson.dumps(state_data.model_dump(mode="json"))
        return orjson.dumps(state_data)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(
            f"flow state must be JSON values (str, numbers, lists, dicts, pydantic models of "
            f"them) to be persisted in Redis: {exc}"
        ) from None


def _json_object(raw: Any) -> dict[str, Any] | None:
    """A stored JSON object, or None (missing, or not an object: never trusted blindly)."""
    if raw is None:
        return None
    value = orjson.loads(raw)
    return value if isinstance(value, dict) else None
