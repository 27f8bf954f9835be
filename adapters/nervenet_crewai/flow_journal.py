"""What each finished method of a durable flow run returned and changed: a flow's result cache.

A flow run that a dead coordinator left behind is run again from the start by another process,
by CrewAI's own engine; each method it reaches asks the journal first. A method that had
finished is answered from it — its return value, and the state fields it changed applied to
the state — without running, so routers take the same routes, loops go round the same number
of times, and only the method that was in flight (and those after it) runs again. Entries are
keyed by method name and call number (``route#2``: the third call of ``route`` in a loop), which
CrewAI's parallel listeners (``and_``/``or_``) cannot reorder.

Values cross Redis as JSON only: JSON values as they are; pydantic models and ``CrewOutput``
by model *name*, revived only with classes the flow declares (its state model, its methods'
return annotations, ``models=``), never imported from the record.

A run paused for human feedback keeps its journal: the pause (``@pause#<n>``: the pending
context, the state and call counts at the pause) and, once given, the feedback (``@feedback#<n>``,
written once: a second answer is refused). What a feedback step settled (the outcome CrewAI's
LLM collapsed the feedback to) is journaled as ``<method>@feedback#<n>``, so a run taken over
after it does not ask the provider or the LLM again.

Key: ``nn:crewai:flow-run:{<run id>}`` (hash: ``<method>#<call>`` -> entry, and the fields
above), expiring with the pool's result TTL after its last write.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal, get_type_hints

from crewai import CrewOutput
from pydantic import BaseModel, ConfigDict, ValidationError
from redis.exceptions import WatchError

from nervenet.errors import ConfigurationError
from nervenet.transport import as_bytes

from .outputs import dump_crew_output, load_crew_output, model_names
from .runner import model_name

if TYPE_CHECKING:
    from nervenet import Pool


def journal_key(run_id: str) -> str:
    """``nn:crewai:flow-run:{order-7}``: one hash per flow run, under its own hash tag."""
    return f"nn:crewai:flow-run:{{{run_id}}}"


class JournalEntry(BaseModel):
    """One finished method execution (read back as untrusted JSON)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    result: dict[str, Any]
    """The return value, as :class:`ValueCodec` encodes it."""
    changed: dict[str, Any]
    """State fields (top level) the method set, with their new JSON values."""
    removed: list[str]
    """Keys the method deleted from an unstructured (dict) state."""


class FeedbackEntry(BaseModel):
    """A settled feedback step: CrewAI's ``HumanFeedbackResult`` (read back as untrusted JSON)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    output: dict[str, Any]
    """The output the human reviewed, as :class:`ValueCodec` encodes it."""
    feedback: str
    outcome: str | None
    timestamp: str
    """ISO 8601."""
    method_name: str
    metadata: dict[str, Any]


class FeedbackClaim(BaseModel):
    """The feedback given for one pause, and when (read back as untrusted JSON)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    feedback: str
    at: float
    """Unix time of the claim (renewed when a stranded claim is taken over)."""


Claim = Literal["given", "restart", "taken"]
CLAIM_ATTEMPTS = 5


class PauseEntry(BaseModel):
    """A run paused for human feedback: what resuming it needs (read back as untrusted JSON)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    segment: int
    """1 for the first pause of the run, 2 for the next..."""
    inputs: dict[str, Any] | None
    """The run's ``kickoff`` inputs (its record, to resume it under)."""
    state_id: str
    context: dict[str, Any]
    """CrewAI's ``PendingFeedbackContext.to_dict()``."""
    callback_info: dict[str, Any]
    """``HumanFeedbackPending.callback_info``, as JSON values."""
    state: dict[str, Any]
    """The state at the pause, as JSON values."""
    calls: dict[str, int]
    """Executions per method (and feedback step) so far: journal keys go on from there."""


class MethodJournal:
    """The journal of one flow run, read and written on the pool's event loop."""

    def __init__(self, pool: Pool, run_id: str) -> None:
        self.pool = pool
        self.key = journal_key(run_id)

    async def is_empty(self) -> bool:
        """No method finished yet: a fresh run needs no lookup per method."""
        redis = self.pool.transport.redis
        return not await self.pool.on_home(lambda: redis.exists(self.key))

    async def get(self, method: str, call: int) -> JournalEntry | None:
        redis = self.pool.transport.redis
        raw = await self.pool.on_home(lambda: redis.hget(self.key, f"{method}#{call}"))
        return None if raw is None else JournalEntry.model_validate_json(raw)

    async def put(self, method: str, call: int, entry: JournalEntry) -> None:
        await self._write(f"{method}#{call}", entry.model_dump_json())

    async def get_feedback_step(self, method: str, call: int) -> FeedbackEntry | None:
        raw = await self._read(f"{method}@feedback#{call}")
        return None if raw is None else FeedbackEntry.model_validate_json(raw)

    async def put_feedback_step(self, method: str, call: int, entry: FeedbackEntry) -> None:
        await self._write(f"{method}@feedback#{call}", entry.model_dump_json())

    async def get_pause(self, segment: int) -> PauseEntry | None:
        raw = await self._read(f"@pause#{segment}")
        return None if raw is None else PauseEntry.model_validate_json(raw)

    async def put_pause(self, pause: PauseEntry) -> None:
        await self._write(f"@pause#{pause.segment}", pause.model_dump_json())

    async def get_feedback(self, segment: int) -> str | None:
        claim = await self._feedback_claim(segment)
        return None if claim is None else claim.feedback

    async def _feedback_claim(self, segment: int) -> FeedbackClaim | None:
        raw = await self._read(f"@feedback#{segment}")
        return None if raw is None else FeedbackClaim.model_validate_json(raw)

    async def last_feedback(self) -> str | None:
        """The feedback given for the run's latest pause, if any was given."""
        redis = self.pool.transport.redis
        fields = await self.pool.on_home(lambda: redis.hkeys(self.key))
        segments = []
        for field in fields:
            name = as_bytes(field).decode(errors="replace")
            head, _, number = name.partition("#")
            if head == "@feedback" and number.isdigit():
                segments.append(int(number))
        return await self.get_feedback(max(segments)) if segments else None

    async def claim_feedback(self, segment: int, feedback: str, stale_after: float) -> Claim:
        """Store the feedback for pause ``segment`` unless some was given (``taken``). A claim
        older than ``stale_after`` on a run still paused was left by a process that died
        between storing its feedback and starting the run: it is renewed (``restart``: start the
        run, with the feedback stored first)."""
        redis, ttl = self.pool.transport.redis, int(self.pool.settings.result_ttl)
        field = f"@feedback#{segment}"

        async def claim() -> Claim:
            async with redis.pipeline(transaction=True) as pipe:
                for _ in range(CLAIM_ATTEMPTS):
                    try:
                        await pipe.watch(self.key)
                        raw = await pipe.hget(self.key, field)
                        now = time.time()
                        outcome: Claim = "given"
                        if raw is not None:
                            stored = FeedbackClaim.model_validate_json(raw)
                            if now - stored.at < stale_after:
                                return "taken"
                            feedback_kept, outcome = stored.feedback, "restart"
                        else:
                            feedback_kept = feedback
                        pipe.multi()  # type: ignore[no-untyped-call]
                        value = FeedbackClaim(feedback=feedback_kept, at=now)
                        pipe.hset(self.key, field, value.model_dump_json())
                        pipe.expire(self.key, ttl)
                        await pipe.execute()
                        return outcome
                    except WatchError:
                        await asyncio.sleep(0.01)
            return "taken"  # others kept writing this run's journal: someone else resumes it

        return await self.pool.on_home(claim)

    async def unclaim_feedback(self, segment: int) -> None:
        """Take back feedback that could not start the run again (so it can be given again)."""
        redis = self.pool.transport.redis
        await self.pool.on_home(lambda: redis.hdel(self.key, f"@feedback#{segment}"))

    async def _read(self, field: str) -> bytes | None:
        redis = self.pool.transport.redis
        raw = await self.pool.on_home(lambda: redis.hget(self.key, field))
        return None if raw is None else as_bytes(raw)

    async def _write(self, field: str, value: str) -> None:
        redis, ttl = self.pool.transport.redis, int(self.pool.settings.result_ttl)

        async def write() -> None:
            async with redis.pipeline(transaction=False) as pipe:
                pipe.hset(self.key, field, value)
                pipe.expire(self.key, ttl)
                await pipe.execute()

        await self.pool.on_home(write)


class ValueCodec:
    """Method results (and a flow's final output) to JSON values and back."""

    def __init__(self, models: Iterable[type[BaseModel]]) -> None:
        self.models = {model_name(m): m for m in models}

    @classmethod
    def declared(cls, methods: Iterable[Callable[..., Any]], extra: Iterable[Any]) -> ValueCodec:
        """The models among ``extra`` and the return annotations of ``methods``."""
        candidates: list[Any] = list(extra)
        for method in methods:
            try:
                candidates.append(get_type_hints(method).get("return"))
            except Exception:  # an unresolvable annotation simply declares nothing
                continue
        return cls(c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel))

    def encode(self, value: Any, where: str) -> dict[str, Any]:
        if _is_json(value):
            return {"json": value}
        if isinstance(value, CrewOutput):
            unknown = model_names(value) - set(self.models)
            if unknown:
                raise ConfigurationError(
                    f"{where} returned a CrewOutput holding {sorted(unknown)}; declare them "
                    "with distribute_flow(..., models=[...]) so another process can revive them"
                )
            return {"crew_output": dump_crew_output(value)}
        if isinstance(value, BaseModel):
            name = model_name(type(value))
            if name not in self.models:
                raise ConfigurationError(
                    f"{where} returned a {name}, which the flow does not declare; annotate the "
                    "method's return type or pass distribute_flow(..., models=[...])"
                )
            return {"model": name, "value": value.model_dump(mode="json")}
        raise ConfigurationError(
            f"{where} returned a {type(value).__name__}, which a durable flow cannot store: "
            "return JSON values (str, numbers, lists, dicts), a declared pydantic model or a "
            "CrewOutput"
        )

    def decode(self, stored: Mapping[str, Any]) -> Any:
        try:
            if "json" in stored:
                return stored["json"]
            if "crew_output" in stored:
                return load_crew_output(stored["crew_output"], self.models)
            model = self.models.get(str(stored.get("model")))
            if model is None:
                raise ConfigurationError(
                    f"a stored flow value is a {stored.get('model')!r}, which this process does "
                    "not declare; deploy the same code to every process"
                )
            return model.model_validate(stored["value"])
        except (KeyError, ValidationError) as exc:
            raise ConfigurationError(f"a stored flow value is malformed: {exc}") from None


def _is_json(value: Any) -> bool:
    """Strictly JSON values: what comes back from JSON is what went in (no tuples, dates...)."""
    if value is None or isinstance(value, str | bool | int | float):
        return True
    if isinstance(value, list):
        return all(_is_json(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_json(v) for k, v in value.items())
    return False
