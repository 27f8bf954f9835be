"""Interpreter settings for the processes nervenet owns: ``nervenet worker`` and ``nervenet serve``.

Only there: a coordinator embedded in an application's own process (a web server calling
``graph.ainvoke``) keeps the interpreter exactly as its owner set it up.

**The garbage collector.** A busy worker or coordinator allocates a few container objects per
message it reads and per task it runs, all short-lived, while holding everything it imported at
start-up (LangGraph, CrewAI, pydantic models, the compiled graph: hundreds of thousands of objects)
that never becomes garbage. CPython's default thresholds (700, 10, 10) then run a young
collection every 700 allocations and, every so often, a full one that walks all of start-up's
objects again. ``gc.freeze()`` after start-up moves them to a permanent generation that no
collection visits, and a larger first threshold makes young collections rarer but each no dearer
(the young generation is garbage by then). Reference cycles are still collected, only in bigger
batches: memory held by cyclic garbage grows by at most one threshold's worth of objects.
``NERVENET_GC=default`` keeps CPython's settings (to compare, or to rule this out).

**The event loop.** uvloop runs the same asyncio programs with its loop, transports and
callbacks in C (fewer instructions per wake-up and per socket write, which a process moving
thousands of small messages makes many of). It is an optional extra (``pip install
'nervenet[fast]'``); ``--loop asyncio`` keeps the standard loop.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import os
from collections.abc import Callable, Coroutine
from typing import Any, Literal

LoopChoice = Literal["auto", "asyncio", "uvloop"]

#: Young-generation threshold for owned processes; the older two stay CPython's (10, 10) so full
#: collections keep their relative rhythm. Measured in benchmarks/production (see README).
YOUNG_THRESHOLD = 50_000

GC_VARIABLE = "NERVENET_GC"


def tune_collector() -> bool:
    """Freeze what start-up built and make young collections rarer; returns whether it did.

    Call once the process has imported and built everything it serves, right before serving.
    """
    if os.environ.get(GC_VARIABLE, "").lower() == "default":
        return False
    gc.collect()  # start-up's garbage goes now, not into the permanent generation
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
    return True


def uvloop_available() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def loop_factory(choice: LoopChoice) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop to run on: ``None`` is asyncio's own. ``auto`` takes uvloop if installed."""
    if choice == "asyncio" or (choice == "auto" and not uvloop_available()):
        return None
    try:
        import uvloop
    except ImportError as exc:
        from .errors import ConfigurationError

        raise ConfigurationError(
            "--loop uvloop needs uvloop: pip install 'nervenet[fast]' (or --loop asyncio)"
        ) from exc
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(coro: Coroutine[Any, Any, None], choice: LoopChoice = "auto") -> None:
    """Run ``coro`` to completion on the chosen loop (``asyncio.run`` with a loop factory)."""
    with asyncio.Runner(loop_factory=loop_factory(choice)) as runner:
        runner.run(coro)


def loop_name() -> str:
    """The running loop's name, as the start-up banner prints it."""
    module = type(asyncio.get_running_loop()).__module__
    return "uvloop" if module.startswith("uvloop") else "asyncio"
