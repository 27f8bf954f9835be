"""Coordinator side of a distributed node: stands in for the node's function inside Pregel.

Only the node's own function (``PregelNode.bound``) leaves the process. Everything around it stays
LangGraph's own code on the coordinator: the Pregel loop, the node's writers (state updates,
``Command`` routing, ``Send``), conditional edges reading state through real reducers,
``RetryPolicy`` handling, checkpoints, and the ``values``/``updates``/``debug``/``tasks`` streams.
What the function would have done to its surroundings on the worker comes back and is replayed
here: writes it sent (``interrupt()`` resume bookkeeping), the null-resume value it consumed,
custom stream chunks and LLM tokens (as frames, before the result), and its exception, rebuilt
as its own type.
"""

from __future__ import annotations

import functools
import hashlib
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from langchain_core.runnables import RunnableConfig
from langgraph.errors import GraphInterrupt, ParentCommand
from langgraph.types import Interrupt

from nervenet import Coordinator, RemoteTaskError

from ._compat import (
    CONF,
    CONFIG_KEY_CHECKPOINT_MAP,
    CONFIG_KEY_CHECKPOINT_NS,
    CONFIG_KEY_DURABILITY,
    CONFIG_KEY_NODE_ERROR,
    CONFIG_KEY_RESUMING,
    CONFIG_KEY_RUNTIME,
    CONFIG_KEY_SCRATCHPAD,
    CONFIG_KEY_SEND,
    CONFIG_KEY_TASK_ID,
    CONFIG_KEY_THREAD_ID,
    RunnableCallable,
    _mark_invalid_resume,
    peek_null_resume,
)
from .callbacks import describe_observers
from .records import WIRE_VERSION, NodeCall, check_wire
from .runs import RUN_ID_KEY
from .streams import FrameRelay, describe_streams
from .wire import exception_args, pack, qualified_name, revive_exception, unpack

if TYPE_CHECKING:
    from .graph import Distribution


def remote_runnable(distribution: Distribution, task_type: str, node: str, trace: bool) -> Any:
    """A ``RunnableCallable`` that runs node ``node`` on the pool as ``task_type``."""
    remote = RemoteNode(distribution, task_type, node)
    return RunnableCallable(remote.invoke, remote.ainvoke, name=node, trace=trace, recurse=False)


class RemoteNode:
    def __init__(self, distribution: Distribution, task_type: str, node: str) -> None:
        self.distribution = distribution
        self.task_type = task_type
        self.node = node

    def invoke(self, input: Any, config: RunnableConfig) -> Any:
        """Sync graphs run nodes in threads: hop onto the pool's loop and wait there."""
        pool = self.distribution.pool
        observers = describe_observers(config)  # here: the trace lives in the caller's context
        outcome = pool.call_sync(lambda: self._dispatch(input, config, observers))
        return self._settle(outcome, config)

    async def ainvoke(self, input: Any, config: RunnableConfig) -> Any:
        pool = self.distribution.pool
        observers = describe_observers(config)
        outcome = await pool.on_home(lambda: self._dispatch(input, config, observers))
        return self._settle(outcome, config)

    async def _dispatch(
        self, input: Any, config: RunnableConfig, observers: dict[str, Any] | None
    ) -> dict[str, Any]:
        serde = self.distribution.serde
        conf = config.get(CONF, {})
        payload, task_id = self._describe(input, config, conf, observers)
        pool = self.distribution.pool
        run_id = conf.get(RUN_ID_KEY)
        if run_id is not None:
            await pool.workflows.check_owned(run_id)  # a zombie coordinator stops here
        workflow_id = str(run_id or conf.get(CONFIG_KEY_THREAD_ID) or config.get("run_id") or "-")
        coordinator = Coordinator(pool, workflow_id)
        frames = _Frames(config, serde)
        try:
            raw = await coordinator.dispatch(
                self.task_type,
                payload,
                task_id=task_id,
                retries=0,  # the node's RetryPolicy runs here, in LangGraph's own retry loop
                escalate_errors=False,
                # A durable run (queued, taken over, or resumed after a deploy) waits for a
                # worker to register (PoolSettings.worker_wait_timeout) instead of failing: its
                # coordinator may well be up before the workers are.
                wait_for_worker=self.distribution.wait_for_worker or run_id is not None,
                on_frame=frames,
                # A task of a step LangGraph is not resuming runs for the first time: its id
                # comes from a checkpoint made for this step, so nothing can be cached for it.
                first_run=not conf.get(CONFIG_KEY_RESUMING, False),
                queue=self.distribution.queue_of(self.task_type),
            )
        except RemoteTaskError as exc:
            await frames.drained()
            if not exc.error_data:
                raise
            outcome = unpack(serde, exc.error_data)
            outcome["traceback"] = exc.remote_traceback
            outcome["type_name"] = exc.error_type
            return dict(outcome)
        await frames.drained()
        return dict(unpack(serde, raw))

    def _describe(
        self,
        input: Any,
        config: RunnableConfig,
        conf: dict[str, Any],
        observers: dict[str, Any] | None,
    ) -> tuple[Callable[[], bytes], str]:
        """What packs the call, and its task id. While the node runs, the call is kept (its
        values are the task's own, alive anyway) and its packed bytes are not: with the state
        as big as a document, they were most of a waiting run's memory."""
        call = describe_call(self.node, input, config, self.distribution.serde, observers)
        return functools.partial(_pack_call, self.node, self.distribution.serde, call), (
            self._task_id(call, conf)
        )

    def _task_id(self, call: NodeCall, conf: dict[str, Any]) -> str:
        """Deterministic per LangGraph task (checkpoint, step, node) and the resume values it
        was given, so a resumed run is answered from the worker's result cache."""
        lg_task_id = conf.get(CONFIG_KEY_TASK_ID) or uuid.uuid4().hex
        resume = pack(self.distribution.serde, [call["resume"], call["null_resume"]])
        digest = hashlib.blake2b(resume, digest_size=6).hexdigest()
        return f"{self.distribution.name}:{lg_task_id}:{digest}"

    def _settle(self, outcome: dict[str, Any], config: RunnableConfig) -> Any:
        """Replay the worker's side effects on this task's real context, then return or raise."""
        check_wire(outcome, "worker")  # type: ignore[arg-type]
        conf = config.get(CONF, {})
        writes = [tuple(w) for w in outcome.get("writes", ())]
        if writes:
            conf[CONFIG_KEY_SEND](writes)
        scratchpad = conf.get(CONFIG_KEY_SCRATCHPAD)
        if scratchpad is not None:
            scratchpad.resume[:] = outcome.get("resume", scratchpad.resume)
            if outcome.get("null_consumed"):
                scratchpad.get_null_resume(True)
        kind = outcome.get("kind", "value")
        if kind == "value":
            return outcome.get("value")
        if kind == "interrupt":
            raise GraphInterrupt(tuple(_as_interrupt(i) for i in outcome["interrupts"]))
        if kind == "parent":
            raise ParentCommand(outcome["command"])
        error = revive_exception(
            outcome.get("type_name", "builtins.Exception"),
            list(outcome.get("args", [])),
            outcome.get("traceback", ""),
        )
        if outcome.get("invalid_resume"):
            _mark_invalid_resume(error)  # read by LangGraph's runner: the resume was rejected
        raise error


def _pack_call(node: str, serde: Any, call: NodeCall) -> bytes:
    """The packed call, or a ``TypeError`` that names the node and the value that cannot go."""
    try:
        return pack(serde, call)
    except TypeError as exc:
        raise TypeError(
            f"{node!r} cannot be sent to a worker: {_unsendable(serde, call)} ({exc}). What a "
            "node is given travels through LangGraph's serializer; keep live objects (locks, "
            "clients, open files) in the module the workers import, not in state or config"
        ) from exc


def _unsendable(serde: Any, call: NodeCall) -> str:
    """Which part of a call the serializer refuses: a state field by name if it can tell."""
    parts: dict[str, Any] = dict(call)
    state = parts.pop("input", None)
    fields = state if isinstance(state, dict) else getattr(state, "__dict__", {}) or {}
    for name, value in fields.items():
        if not _packs(serde, value):
            return f"its input's field {name!r} holds a {type(value).__name__}"
    if state is not None and not _packs(serde, state):
        return f"its input, a {type(state).__name__},"
    for name, value in parts.items():
        if not _packs(serde, value):
            return f"its {name} ({type(value).__name__})"
    return "its call"


def _packs(serde: Any, value: Any) -> bool:
    try:
        pack(serde, value)
    except TypeError:
        return False
    return True


class _Frames:
    """A dispatch's frames, replayed on the task's real stream objects (built at the first
    frame: most nodes send none)."""

    def __init__(self, config: RunnableConfig, serde: Any) -> None:
        self._config = config
        self._serde = serde
        self._relay: FrameRelay | None = None

    def __call__(self, raw: bytes) -> None:
        if self._relay is None:
            self._relay = FrameRelay(self._config)
        self._relay(unpack(self._serde, raw))

    async def drained(self) -> None:
        if self._relay is not None:
            await self._relay.drained()


def describe_call(
    node: str,
    input: Any,
    config: RunnableConfig,
    serde: Any = None,
    observers: dict[str, Any] | None = None,
) -> NodeCall:
    """The parts of a task's context a worker needs to rebuild it (no live objects)."""
    conf = config.get(CONF, {})
    scratchpad = conf.get(CONFIG_KEY_SCRATCHPAD)
    runtime = conf.get(CONFIG_KEY_RUNTIME)
    info = getattr(runtime, "execution_info", None)
    return {
        "wire": WIRE_VERSION,
        "node": node,
        "input": input,
        "conf": _user_configurable(conf),
        "task_id": conf.get(CONFIG_KEY_TASK_ID),
        "checkpoint_ns": conf.get(CONFIG_KEY_CHECKPOINT_NS, ""),
        "checkpoint_map": conf.get(CONFIG_KEY_CHECKPOINT_MAP, {}),
        "resuming": bool(conf.get(CONFIG_KEY_RESUMING, False)),
        "durability": conf.get(CONFIG_KEY_DURABILITY),
        "metadata": _plain(config.get("metadata", {})),
        "tags": list(config.get("tags", [])),
        "run_name": config.get("run_name"),
        "recursion_limit": config.get("recursion_limit"),
        "resume": list(scratchpad.resume) if scratchpad is not None else [],
        "null_resume": peek_null_resume(scratchpad) if scratchpad is not None else None,
        "step": getattr(scratchpad, "step", 0),
        "stop": getattr(scratchpad, "stop", 0),
        "context": getattr(runtime, "context", None),
        "previous": getattr(runtime, "previous", None),
        "execution": _execution_info(info),
        "server_info": _server_info(getattr(runtime, "server_info", None)),
        "node_error": _node_error(conf.get(CONFIG_KEY_NODE_ERROR), serde),
        "streams": describe_streams(config),
        "observers": observers,
    }


def _user_configurable(conf: dict[str, Any]) -> dict[str, Any]:
    """User keys of ``configurable`` (``thread_id``, ``user_id``...), not LangGraph's internals."""
    return {
        k: v
        for k, v in conf.items()
        if not k.startswith("__") and k not in (CONFIG_KEY_CHECKPOINT_MAP,) and _plain_value(v)
    }


def _plain_value(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool, list, tuple, dict))


def _plain(mapping: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if _plain_value(v)}


def _execution_info(info: Any) -> dict[str, Any] | None:
    if info is None:
        return None
    return {
        "checkpoint_id": info.checkpoint_id,
        "checkpoint_ns": info.checkpoint_ns,
        "task_id": info.task_id,
        "thread_id": info.thread_id,
        "run_id": info.run_id,
        "node_attempt": info.node_attempt,
        "node_first_attempt_time": info.node_first_attempt_time,
    }


def _server_info(info: Any) -> dict[str, Any] | None:
    if info is None:
        return None
    user = info.user
    if user is not None and not isinstance(user, dict):
        user = {
            k: user[k]
            for k in ("identity", "display_name", "is_authenticated", "permissions")
            if _has(user, k)
        }
    return {"assistant_id": info.assistant_id, "graph_id": info.graph_id, "user": user}


def _has(user: Any, key: str) -> bool:
    try:
        user[key]
    except Exception:
        return False
    return True


def _node_error(error: Any, serde: Any) -> dict[str, Any] | None:
    """The failure an error-handler node is given (``NodeError``), as data."""
    if error is None:
        return None
    if isinstance(error.error, BaseException):
        return {
            "node": error.node,
            "type_name": qualified_name(type(error.error)),
            "args": exception_args(serde, error.error) if serde else [str(error.error)],
        }
    return {"node": error.node, "error": error.error}


def _as_interrupt(value: Any) -> Interrupt:
    return value if isinstance(value, Interrupt) else Interrupt(**value)
