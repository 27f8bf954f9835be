"""Timestamps at the steps of a dispatch's hops, for ``bench_hops.py``, in the process it runs in.

``install()`` wraps a few of nervenet's internal methods (which ones: :data:`STEPS`) so that each
call records ``(step, time.monotonic_ns())``; ``CLOCK_MONOTONIC`` is one clock for every process
of the machine, so the marks of the coordinator and of a worker interleave into one timeline.
This reaches into private methods on purpose: it is a diagnostic, and ``bench_hops.py`` fails
loudly (a step never seen) if a rename leaves a wrapper unused.

A worker with marks, as ``bench_hops.py`` starts it (the marks are written at exit):

    NERVENET_HOP_MARKS=/tmp/marks.json python hop_marks.py worker app:graph --redis URL
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

MARKS_FILE_VARIABLE = "NERVENET_HOP_MARKS"

#: What each mark means, by the name it is recorded under.
STEPS = {
    "node start": "coordinator: LangGraph calls the remote node (RemoteNode.ainvoke)",
    "node end": "coordinator: the remote node returns to LangGraph",
    "task write": "coordinator: the write that carries the task's XADD starts",
    "task written": "coordinator: that write returned",
    "reply read": "coordinator: a reply read returned entries",
    "reply read sent": "coordinator: the reply read (XREAD) was re-sent",
    "task read": "worker: a task read returned entries",
    "handler start": "worker: the handler is called",
    "handler end": "worker: the handler returned",
    "settle write": "worker: the write that carries the settlement starts",
    "settle written": "worker: that write returned",
    "task read sent": "worker: the task read (XREADGROUP) was re-sent",
}

#: Which mark the write of a batch of commands makes, by its first command.
_WRITES = {
    b"XADD": ("task write", "task written"),
    b"SET": ("settle write", "settle written"),
    b"XREAD": ("reply read sent", None),
    b"XREADGROUP": ("task read sent", None),
}

marks: list[tuple[str, int]] = []


def mark(step: str) -> None:
    marks.append((step, time.monotonic_ns()))


def install() -> None:
    """Wrap the methods whose calls are marked (the LangGraph adapter's only if it is
    importable); call before the pool starts."""
    from nervenet.resp import RespConnection
    from nervenet.transport import RedisTransport
    from nervenet.worker import Worker

    send = RespConnection.send

    @functools.wraps(send)
    def marked_send(self: RespConnection, commands: Any) -> Any:
        first = _command_name(commands[0][0]) if commands else b""
        before, after = _WRITES.get(first, (None, None))
        if before:
            mark(before)
        future = send(self, commands)
        if after:
            mark(after)
        return future

    RespConnection.send = marked_send  # type: ignore[method-assign]
    RedisTransport.read = _after_entries(RedisTransport.read, "reply read")  # type: ignore[method-assign]
    RedisTransport.read_group = _after_entries(RedisTransport.read_group, "task read")  # type: ignore[method-assign]
    Worker._call_handler = _around(Worker._call_handler, "handler start", "handler end")  # type: ignore[method-assign]
    try:
        from nervenet_langgraph.remote_node import RemoteNode
    except ImportError:
        return
    RemoteNode.ainvoke = _around(RemoteNode.ainvoke, "node start", "node end")  # type: ignore[method-assign]


def write(path: Path) -> None:
    path.write_text(json.dumps(marks))


def read(path: Path) -> list[tuple[str, int]]:
    return [(str(step), int(at)) for step, at in json.loads(path.read_text())]


def _command_name(name: Any) -> bytes:
    return name.encode() if isinstance(name, str) else bytes(name)


def _after_entries(
    read: Callable[..., Any], step: str
) -> Callable[..., Any]:  # a blocking read: marked when it returns something
    @functools.wraps(read)
    async def marked(*args: Any, **kwargs: Any) -> Any:
        batch = await read(*args, **kwargs)
        if batch:
            mark(step)
        return batch

    return marked


def _around(call: Callable[..., Any], start: str, end: str) -> Callable[..., Any]:
    @functools.wraps(call)
    async def marked(*args: Any, **kwargs: Any) -> Any:
        mark(start)
        try:
            return await call(*args, **kwargs)
        finally:
            mark(end)

    return marked


def main() -> None:
    """``nervenet ARGS`` with marks, written to ``$NERVENET_HOP_MARKS`` when it exits."""
    install()
    path = Path(os.environ[MARKS_FILE_VARIABLE])
    atexit.register(write, path)
    from nervenet.cli import main as nervenet_main

    sys.argv = ["nervenet", *sys.argv[1:]]
    nervenet_main()


if __name__ == "__main__":
    main()
