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
from typing import TYPE_CHECKING, Any

from langchain_core.runnables import RunnableConfig

from nervenet import ConfigurationError, RunHandle
from nervenet.outages import TRANSIENT_ERRORS

from ._compat import CONF, CONFIG_KEY_THREAD_ID
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


async def submit(
    graph: DistributedRuns,
    input: Any,
    config: RunnableConfig | None,
    kwargs: dict[str, Any],
    *,
    run_here: bool = True,
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
        return pack(distribution.serde, output)

    workflows = distribution.pool.workflows
    if run_here:
        handle = await workflows.start(distribution.name, run_id, payload, run)
    else:
        handle = await workflows.enqueue(distribution.name, run_id, payload)
    return GraphRun(graph, handle)


async def resume(graph: DistributedRuns, run_id: str, payload: bytes) -> bytes:
    """Continue a run a dead coordinator started, from its last checkpoint."""
    serde = graph.nervenet.serde
    record = unpack(serde, payload)
    conf, kwargs = record["configurable"], record["kwargs"]
    output = await _ainvoke_resiliently(
        graph, run_id, record["input"], conf, kwargs, from_checkpoint=True
    )
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
