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

Key: ``nn:crewai:flow-run:{<run id>}`` (hash: ``<method>#<call>`` -> entry), expiring with the
pool's result TTL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, get_type_hints

from crewai import CrewOutput
from pydantic import BaseModel, ConfigDict, ValidationError

from nervenet.errors import ConfigurationError

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
        redis, ttl = self.pool.transport.redis, int(self.pool.settings.result_ttl)

        async def write() -> None:
            async with redis.pipeline(transaction=False) as pipe:
                pipe.hset(self.key, f"{method}#{call}", entry.model_dump_json())
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
