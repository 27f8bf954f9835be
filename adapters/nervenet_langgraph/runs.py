"""Durable graph runs: ``submit`` leases a run to this process; a survivor resumes it on a crash.

A run needs a thread (``configurable.thread_id``) and a checkpointer every coordinator process can
read (``RedisSaver``): the process that takes a run over continues it with
``ainvoke(None, config)`` from the last checkpoint. Nodes that had finished are not run again:
their writes are in the checkpoint, and a node that finished on a worker after the crash is
answered from the worker's result cache (its task id is the same on resume).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from langchain_core.runnables import RunnableConfig

from nervenet import ConfigurationError, RunHandle
from nervenet.outages import TRANSIENT_ERRORS

from ._compat import (
    CONF,
    CONFIG_KEY_CHECKPOINT_NS,
    CONFIG_KEY_THREAD_ID,
    INTERRUPT,
    BaseCheckpointSaver,
)
from .wire import pack, unpack

if TYPE_CHECKING:
    from .graph import DistributedRuns

log = logging.getLogger("nervenet.langgraph.runs")

TRANSIENT_REDIS_ERRORS: tuple[type[BaseException], ...] = (*TRANSIENT_ERRORS, ConnectionError)
MAX_OUTAGES = 20

#: Configurable key carrying the durable run id to the nodes (never shipped to workers).
RUN_ID_KEY = "__nervenet_run_id"

_REPLAYABLE_KWARGS = ("context", "durability", "interrupt_before", "interrupt_after")


class GraphRun:
    """Handle of a submitted graph run; ``await run.result()`` from any process."""

    def __init__(self, graph: DistributedRuns, handle: RunHandle) -> None:
        self._graph = graph
        self._handle = handle

    @property
    def run_id(self) -> str:
        return self._handle.run_id

    async def result(self, timeout: float | None = None) -> Any:
        """The run's final output (as ``ainvoke`` returns it), or its exception."""
        raw = await self._handle.result(timeout)
        return unpack(self._graph.nervenet.serde, raw)

    def join(self, last_event_id: str | None = None) -> AsyncIterator[tuple[str, Any]]:
        """The run's stream chunks from any process (see :func:`join`)."""
        return join(self._graph, self.run_id, last_event_id)


async def join(
    graph: DistributedRuns, run_id: str, last_event_id: str | None = None
) -> AsyncIterator[tuple[str, Any]]:
    """``(event id, chunk)`` of a durable run as it runs, from any process, until it ends.

    The chunks are what the run's ``ainvoke`` streams (``("updates", {...})`` and
    ``("values", {...})``). After a disconnect, pass the last event id seen to resume after it.
    A run that was taken over repeats the chunks of the step it resumed from. Events are kept
    ``PoolSettings.join_retention`` seconds after the run ends (10 minutes by default).
    """
    serde = graph.nervenet.serde
    async for event in graph.nervenet.pool.runs.join(run_id, last_event_id):
        yield event.event_id, unpack(serde, event.data)


def joinable_run(config: RunnableConfig | None) -> str | None:
    """The durable run whose root graph streams with ``config`` (subgraphs' chunks reach the
    root's stream anyway), or None."""
    conf = (config or {}).get(CONF, {})
    run_id = conf.get(RUN_ID_KEY)
    if run_id is None or conf.get(CONFIG_KEY_CHECKPOINT_NS):
        return None
    return str(run_id)


async def published(
    graph: DistributedRuns, run_id: str, stream: AsyncIterator[Any]
) -> AsyncIterator[Any]:
    """``stream``, each chunk also stored for joiners (without waiting for Redis)."""
    runs, serde = graph.nervenet.pool.runs, graph.nervenet.serde
    async for chunk in stream:
        runs.publish(run_id, pack(serde, chunk))
        yield chunk


async def submit(
    graph: DistributedRuns,
    input: Any,
    config: RunnableConfig | None,
    kwargs: dict[str, Any],
    *,
    run_here: bool = True,
    multitask: str = "enqueue",
) -> GraphRun:
    conf = dict((config or {}).get(CONF, {}))
    if not conf.get(CONFIG_KEY_THREAD_ID):
        raise ConfigurationError(
            "a durable run needs config={'configurable': {'thread_id': ...}} so another "
            "coordinator can resume it from its checkpoints"
        )
    if graph.checkpointer in (None, False, True):
        raise ConfigurationError(
            "a durable run needs a checkpointer shared by every coordinator process, e.g. "
            "distribute(builder, ..., checkpointer=RedisSaver.from_url(url))"
        )
    unknown = set(kwargs) - set(_REPLAYABLE_KWARGS)
    if unknown:
        raise ConfigurationError(f"submit() cannot replay these options after a crash: {unknown}")
    run_id = str(conf.get(RUN_ID_KEY) or uuid.uuid4())
    plain_conf = {k: v for k, v in conf.items() if not k.startswith("__")}
    record = {"input": input, "configurable": plain_conf, "kwargs": kwargs}
    distribution = graph.nervenet
    payload = pack(distribution.serde, record)

    async def run() -> bytes:
        output = await _ainvoke_resiliently(graph, run_id, input, plain_conf, kwargs)
        _report_interrupt(graph, run_id, output)
        return pack(distribution.serde, output)

    workflows = distribution.pool.workflows
    thread = str(conf[CONFIG_KEY_THREAD_ID])
    if run_here:
        handle = await workflows.start(
            distribution.name, run_id, payload, run, thread=thread, multitask=multitask
        )
    else:
        handle = await workflows.enqueue(
            distribution.name, run_id, payload, thread=thread, multitask=multitask
        )
    return GraphRun(graph, handle)


def _report_interrupt(graph: DistributedRuns, run_id: str, output: Any) -> None:
    """A run that stopped at an interrupt (waiting for a human) is recorded ``interrupted``."""
    if isinstance(output, dict) and INTERRUPT in output:
        graph.nervenet.pool.workflows.report_interrupted(run_id)


async def rollback(graph: DistributedRuns, run_id: str, payload: bytes) -> None:
    """Remove a run cancelled with ``rollback``: its thread's checkpoints (LangGraph Server's
    ``rollback`` deletes the run and its checkpoints the same way)."""
    record = unpack(graph.nervenet.serde, payload)
    thread = record["configurable"].get(CONFIG_KEY_THREAD_ID)
    checkpointer = graph.checkpointer
    if thread is not None and isinstance(checkpointer, BaseCheckpointSaver):
        await checkpointer.adelete_thread(str(thread))
        log.info("run %s rolled back: checkpoints of thread %s removed", run_id, thread)


async def resume(graph: DistributedRuns, run_id: str, payload: bytes) -> bytes:
    """Continue a run a dead coordinator started, from its last checkpoint."""
    serde = graph.nervenet.serde
    record = unpack(serde, payload)
    conf, kwargs = record["configurable"], record["kwargs"]
    output = await _ainvoke_resiliently(
        graph, run_id, record["input"], conf, kwargs, from_checkpoint=True
    )
    _report_interrupt(graph, run_id, output)
    return pack(serde, output)


async def _ainvoke_resiliently(
    graph: DistributedRuns,
    run_id: str,
    input: Any,
    conf: dict[str, Any],
    kwargs: dict[str, Any],
    *,
    from_checkpoint: bool = False,
) -> Any:
    """Run to the end; a Redis outage pauses the run and it continues from its last checkpoint.

    A lost connection is not the run's fault: finished nodes are in the checkpoint or the
    workers' result cache, so continuing costs at most the nodes that were in flight.
    """
    outages = 0
    while True:
        try:
            if from_checkpoint:
                state = await graph.aget_state({CONF: conf})
                # No checkpoint yet: the input was never saved, so start from it again.
                if state.created_at is not None:
                    input = None
            config: RunnableConfig = {CONF: {**conf, RUN_ID_KEY: run_id}}
            return await graph.direct_ainvoke(input, config, **kwargs)
        except TRANSIENT_REDIS_ERRORS as exc:
            outages += 1
            if outages > MAX_OUTAGES:
                raise
            log.warning(
                "run %s paused by a Redis outage (%s); continuing from its checkpoint", run_id, exc
            )
            await asyncio.sleep(min(0.1 * 2**outages, 5.0))
            from_checkpoint = True
