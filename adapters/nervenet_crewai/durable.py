"""Durable kickoffs: leased to the coordinator process that submits them, taken over on a crash.

``await crew.asubmit(inputs, run_id=...)`` records the kickoff as a durable run of the pool
(:mod:`nervenet.workflows`, kind = the crew's name) and leases it to this process. When the
process dies, any other process with the same crew on the same pool (``distribute_crew(...,
pool=...)``, e.g. ``nervenet serve app:crew``) claims the expired lease within about a lease and
kicks the crew off again under the same run id: its agent tasks ask for the same task ids, so
the ones that had finished are answered from the workers' result cache, not run again.

The final ``CrewOutput`` is stored as JSON and revived by :meth:`KickoffHandle.result` in any
process. ``output_pydantic`` models are revived by *name*, looked up only among the classes the
crew itself declares (built from the same factory and inputs), never imported from the record.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from crewai import CrewOutput
from pydantic import BaseModel, ConfigDict, ValidationError

from nervenet import RunHandle
from nervenet.errors import ConfigurationError
from nervenet.outages import TRANSIENT_ERRORS

from .outputs import dump_crew_output, load_crew_output
from .runner import declared_models

if TYPE_CHECKING:
    from .crew import DistributedCrew

log = logging.getLogger("nervenet.crewai.durable")

TRANSIENT_REDIS_ERRORS: tuple[type[BaseException], ...] = (*TRANSIENT_ERRORS, ConnectionError)
MAX_OUTAGES = 20


class KickoffRecord(BaseModel):
    """What a durable kickoff stores to be resumed (read back as untrusted JSON)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    inputs: dict[str, Any] | None
    """The kickoff's inputs, as given."""


class KickoffResult(BaseModel):
    """A finished durable kickoff, as stored (read back as untrusted JSON)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    inputs: dict[str, Any] | None
    """The kickoff's inputs: the reader builds the crew from them to find its models."""
    output: dict[str, Any]
    """The ``CrewOutput`` as :func:`~nervenet_crewai.outputs.dump_crew_output` stores it."""


class KickoffHandle:
    """A durable kickoff; ``await handle.result()`` from any process with the crew."""

    def __init__(self, crew: DistributedCrew, handle: RunHandle) -> None:
        self._crew = crew
        self._handle = handle

    @property
    def run_id(self) -> str:
        return self._handle.run_id

    async def result(self, timeout: float | None = None) -> CrewOutput:
        """The kickoff's ``CrewOutput`` (``output_pydantic`` models revived), or its error as
        :class:`nervenet.WorkflowFailed` when it ran in another process."""
        pool = self._crew.require_pool()
        raw = await pool.on_home(lambda: self._handle.result(timeout))
        return revive(self._crew, raw)


async def submit(
    crew: DistributedCrew,
    inputs: dict[str, Any] | None,
    run_id: str,
    *,
    run_here: bool,
) -> KickoffHandle:
    pool = crew.require_pool()
    payload = KickoffRecord(inputs=inputs).model_dump_json().encode()

    async def start() -> RunHandle:
        if run_here:
            return await pool.workflows.start(
                crew.name, run_id, payload, lambda: run(crew, inputs, run_id)
            )
        return await pool.workflows.enqueue(crew.name, run_id, payload)

    return KickoffHandle(crew, await pool.on_home(start))


async def resume(crew: DistributedCrew, run_id: str, payload: bytes) -> bytes:
    """Kick off again a run a dead coordinator started (finished tasks come from the cache)."""
    try:
        record = KickoffRecord.model_validate_json(payload)
    except ValidationError as exc:
        raise ConfigurationError(f"crew {crew.name!r}, run {run_id!r}: bad record: {exc}") from None
    return await run(crew, record.inputs, run_id)


async def run(crew: DistributedCrew, inputs: dict[str, Any] | None, run_id: str) -> bytes:
    """The kickoff to its end; a Redis outage pauses it and it is kicked off again (same run
    id: what finished is answered from the result cache, at most the tasks in flight rerun)."""
    outages = 0
    while True:
        try:
            output = await crew.kickoff_async(inputs, run_id=run_id)
            if not isinstance(output, CrewOutput):  # a stream=True crew's stream
                await output.aclose()  # never iterated: let CrewAI drop its chunk handler
                raise ConfigurationError(
                    f"crew {crew.name!r} streams (stream=True): its chunks go to whoever "
                    "iterates the kickoff, so it cannot be a durable run; use kickoff_async()"
                )
            return dump(crew, inputs, output)
        except TRANSIENT_REDIS_ERRORS as exc:
            outages += 1
            if outages > MAX_OUTAGES:
                raise
            log.warning("kickoff %s paused by a Redis outage (%s); kicking off again", run_id, exc)
            await asyncio.sleep(min(0.1 * 2**outages, 5.0))


def dump(crew: DistributedCrew, inputs: dict[str, Any] | None, output: CrewOutput) -> bytes:
    return KickoffResult(inputs=inputs, output=dump_crew_output(output)).model_dump_json().encode()


def revive(crew: DistributedCrew, raw: bytes) -> CrewOutput:
    result = KickoffResult.model_validate_json(raw)
    models: dict[str, type[BaseModel]] = {}
    if _holds_models(result.output):
        models = declared_models(crew.blueprint.build(result.inputs))
    return load_crew_output(result.output, models)


def _holds_models(stored: dict[str, Any]) -> bool:
    return stored.get("pydantic") is not None or any(stored.get("task_models") or [])
