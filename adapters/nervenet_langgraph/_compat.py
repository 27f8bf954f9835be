"""Every private LangGraph name the adapter uses, in one place, checked when it is imported.

Distributing a node means rebuilding, on a worker, the per-task context LangGraph gives a node in
process (config keys, scratchpad, runtime) and replaying what the node did to it on the
coordinator. LangGraph exposes none of that publicly, so the adapter depends on names under
``langgraph._internal`` and ``langgraph.pregel._*`` and on a few behaviours (the closure a
scratchpad's null-resume getter keeps). A LangGraph release can rename any of them; a silent
fallback would then bring back the very bugs they exist to prevent (a resume value answering two
``interrupt()`` calls). So this module imports them all and checks the behaviours at import: on a
LangGraph that lacks one, importing ``nervenet_langgraph`` fails with :class:`LangGraphVersionError`
naming what is missing and the versions that are tested.
"""

from __future__ import annotations

import functools
import importlib.metadata
import inspect
from collections.abc import Callable
from types import CodeType
from typing import Any

from nervenet import ConfigurationError

#: The LangGraph versions this adapter is tested with (CI runs the oldest and the newest).
TESTED_LANGGRAPH = ">=1.2.15,<1.3"


class LangGraphVersionError(ConfigurationError):
    """The installed LangGraph lacks something the adapter relies on."""


def _version() -> str:
    try:
        return importlib.metadata.version("langgraph")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _incompatible(what: str, cause: BaseException | None = None) -> LangGraphVersionError:
    return LangGraphVersionError(
        f"nervenet_langgraph does not work with langgraph {_version()}: {what}. "
        f"Tested with langgraph{TESTED_LANGGRAPH}; install one of those "
        f"(pip install 'langgraph{TESTED_LANGGRAPH}')"
        + (f" ({type(cause).__name__}: {cause})" if cause else "")
    )


try:
    from langchain_core.tracers._streaming import (
        _StreamingCallbackHandler,
        _V2StreamingCallbackHandler,
    )
    from langgraph._internal._constants import (
        CONF,
        CONFIG_KEY_CALL,
        CONFIG_KEY_CHECKPOINT_ID,
        CONFIG_KEY_CHECKPOINT_MAP,
        CONFIG_KEY_CHECKPOINT_NS,
        CONFIG_KEY_CHECKPOINTER,
        CONFIG_KEY_DURABILITY,
        CONFIG_KEY_NODE_ERROR,
        CONFIG_KEY_READ,
        CONFIG_KEY_RESUMING,
        CONFIG_KEY_RUNTIME,
        CONFIG_KEY_SCRATCHPAD,
        CONFIG_KEY_SEND,
        CONFIG_KEY_STREAM,
        CONFIG_KEY_TASK_ID,
        CONFIG_KEY_THREAD_ID,
        PREVIOUS,
    )
    from langgraph._internal._runnable import (
        KWARGS_CONFIG_KEYS,
        RunnableCallable,
        is_async_callable,
    )
    from langgraph._internal._scratchpad import PregelScratchpad
    from langgraph.checkpoint.base import BaseCheckpointSaver
    from langgraph.checkpoint.serde import _msgpack as lg_msgpack
    from langgraph.checkpoint.serde import jsonplus
    from langgraph.errors import _mark_invalid_resume, is_invalid_resume
    from langgraph.func import _TaskFunction
    from langgraph.pregel._call import get_runnable_for_task, identifier
    from langgraph.pregel._messages import StreamMessagesHandler, StreamMessagesHandlerV2
    from langgraph.pregel._read import PregelNode
    from langgraph.pregel._tools import StreamToolCallHandler
    from langgraph.runtime import _no_op_heartbeat, _no_op_stream_writer
except ImportError as exc:  # pragma: no cover - depends on the installed LangGraph
    raise _incompatible("a private name it uses is gone", exc) from exc

# Private attributes serde.py reads off these modules (LangGraph's msgpack codec is reused as is).
_MODULE_ATTRIBUTES = {
    jsonplus: (
        "_option",
        "_msgpack_default",
        "_DeltaSnapshot",
        "_send_from_args",
        "_create_msgpack_ext_hook",
        "EXT_CONSTRUCTOR_SINGLE_ARG",
        "EXT_CONSTRUCTOR_POS_ARGS",
        "EXT_CONSTRUCTOR_KW_ARGS",
        "EXT_PYDANTIC_V1",
        "EXT_PYDANTIC_V2",
    ),
    lg_msgpack: ("SAFE_MSGPACK_TYPES",),
}
for _module, _names in _MODULE_ATTRIBUTES.items():
    _gone = [n for n in _names if not hasattr(_module, n)]
    if _gone:  # pragma: no cover - depends on the installed LangGraph
        raise _incompatible(f"{_module.__name__} no longer has {_gone}")

__all__ = [
    "CONF",
    "CONFIG_KEY_CALL",
    "CONFIG_KEY_CHECKPOINTER",
    "CONFIG_KEY_CHECKPOINT_ID",
    "CONFIG_KEY_CHECKPOINT_MAP",
    "CONFIG_KEY_CHECKPOINT_NS",
    "CONFIG_KEY_DURABILITY",
    "CONFIG_KEY_NODE_ERROR",
    "CONFIG_KEY_READ",
    "CONFIG_KEY_RESUMING",
    "CONFIG_KEY_RUNTIME",
    "CONFIG_KEY_SCRATCHPAD",
    "CONFIG_KEY_SEND",
    "CONFIG_KEY_STREAM",
    "CONFIG_KEY_TASK_ID",
    "CONFIG_KEY_THREAD_ID",
    "PREVIOUS",
    "TESTED_LANGGRAPH",
    "BaseCheckpointSaver",
    "LangGraphVersionError",
    "PregelNode",
    "PregelScratchpad",
    "RunnableCallable",
    "StreamMessagesHandler",
    "StreamMessagesHandlerV2",
    "StreamToolCallHandler",
    "_StreamingCallbackHandler",
    "_TaskFunction",
    "_V2StreamingCallbackHandler",
    "_mark_invalid_resume",
    "_no_op_heartbeat",
    "_no_op_stream_writer",
    "identifier",
    "injectable_kwargs",
    "is_async_callable",
    "is_invalid_resume",
    "jsonplus",
    "lg_msgpack",
    "peek_null_resume",
    "task_callable",
]


@functools.cache
def injectable_kwargs() -> frozenset[str]:
    """Parameter names LangGraph fills in for a node or task (``config``, ``writer``...)."""
    return frozenset(entry[0] for entry in KWARGS_CONFIG_KEYS)


def task_callable(func: Callable[..., Any]) -> Any:
    """The runnable LangGraph runs for a ``@task`` function, without its RETURN write: what a
    worker runs (the coordinator's stand-in makes the write)."""
    return get_runnable_for_task(func).steps[0]  # type: ignore[attr-defined]


# -- the null-resume getter's closure ---------------------------------------------------------
# LangGraph's `_scratchpad` builds `get_null_resume(consume=False)` as a closure over these
# variables. Its return value cannot tell whether another task already consumed the value (only
# `consume=True` notices), and a coordinator must *peek* to ship it; so it reads the closure.
_NULL_RESUME_CELLS = ("null_resume_write", "pending_writes", "parent_scratchpad")


@functools.lru_cache(maxsize=8)
def _closure_cells(code: CodeType) -> dict[str, int]:
    """Where each variable the getter closes over sits in its closure (once per code object:
    this runs for every dispatch)."""
    return {name: index for index, name in enumerate(code.co_freevars)}


def peek_null_resume(scratchpad: PregelScratchpad) -> Any:
    """The run-wide resume value (``Command(resume=...)`` with no interrupt id) if still unused.

    LangGraph's getter returns its captured value even after another task consumed it (only
    ``consume=True`` notices); in-process nobody peeks, so LangGraph never shows this. A peek
    that ships a consumed value would answer a second ``interrupt()``, so read what the getter
    closes over: its pending write, and whether it is still among the pending writes. A getter
    that is not LangGraph's closure (a worker's, a test's) is simply asked.
    """
    getter = scratchpad.get_null_resume
    code = getattr(getter, "__code__", None)
    if code is None or code is not _NULL_RESUME_CODE:
        return getter(False)
    cells = _closure_cells(code)
    closure = getter.__closure__ or ()
    write = closure[cells["null_resume_write"]].cell_contents
    if write is None:
        parent = closure[cells["parent_scratchpad"]].cell_contents
        return peek_null_resume(parent) if parent is not None else None
    return write[2] if write in closure[cells["pending_writes"]].cell_contents else None


def _null_resume_code() -> CodeType:
    """The code of LangGraph's null-resume getter, checked to close over what we read."""
    from langgraph._internal._constants import NULL_TASK_ID, RESUME
    from langgraph.pregel._algo import _scratchpad

    write = (NULL_TASK_ID, RESUME, "probe")
    pending = [write]
    try:
        pad = _scratchpad(None, pending, "task", "ns", None, 0, 0)
    except Exception as exc:  # pragma: no cover - depends on the installed LangGraph
        raise _incompatible("pregel._algo._scratchpad changed signature", exc) from exc
    getter = pad.get_null_resume
    code = getattr(getter, "__code__", None)
    missing = [c for c in _NULL_RESUME_CELLS if code is None or c not in code.co_freevars]
    if code is None or missing:  # pragma: no cover - depends on the installed LangGraph
        raise _incompatible(f"the scratchpad's null-resume getter no longer keeps {missing}")
    assert isinstance(code, CodeType)
    # Behaviour, not only names: peeking sees the value, consuming removes it, then peek is None.
    global _NULL_RESUME_CODE
    _NULL_RESUME_CODE = code
    if peek_null_resume(pad) != "probe" or getter(True) != "probe" or peek_null_resume(pad):
        raise _incompatible(  # pragma: no cover - depends on the installed LangGraph
            "the scratchpad's null-resume getter behaves differently"
        )
    return code


_NULL_RESUME_CODE: CodeType | None = None
_NULL_RESUME_CODE = _null_resume_code()


def _check_signatures() -> None:
    """Call shapes the adapter relies on (beyond the names existing)."""
    params = inspect.signature(PregelScratchpad).parameters
    needed = {"step", "stop", "call_counter", "interrupt_counter", "get_null_resume", "resume"}
    if not needed <= set(params):  # pragma: no cover - depends on the installed LangGraph
        raise _incompatible(f"PregelScratchpad lacks {sorted(needed - set(params))}")
    if not all(len(entry) == 4 for entry in KWARGS_CONFIG_KEYS):  # pragma: no cover
        raise _incompatible("KWARGS_CONFIG_KEYS changed shape")


_check_signatures()
