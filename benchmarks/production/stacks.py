"""Collapsed py-spy stacks (``py-spy record --format raw --full-filenames``) digested by group.

Each sample goes to the group of its innermost frame that belongs to one of :data:`GROUPS` (stdlib
and pydantic frames count for the code that called them); functions are ranked by self time and
by inclusive time (a function counted once per sample that has it anywhere on its stack).
``run.py`` and ``profile.py`` both digest their profiles here.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

#: (group, markers in a frame's "function (file:line)"), first match wins, innermost frame first.
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("workload's own node CPU", ("workload.py", "document_pipeline.py")),
    (
        "serialization (serde/msgpack/orjson)",
        (
            "langgraph/checkpoint/serde/",
            "ormsgpack",
            "msgpack",
            "orjson",
            "nervenet_langgraph/wire.py",
            "kombu/serialization",
        ),
    ),
    (
        "callbacks/tracing setup",
        (
            "langchain_core/callbacks/",
            "langchain_core/tracers/",
            "langchain_core/runnables/config.py",
            "langsmith/",
            "langgraph/pregel/_messages.py",
        ),
    ),
    ("nervenet adapter (describe_call, remote node, node runner)", ("nervenet_langgraph/",)),
    (
        "nervenet core (dispatch, batching, inbox, worker)",
        ("nervenet/",),
    ),
    ("redis-py / hiredis", ("redis/", "hiredis")),
    (
        "LangGraph Pregel machinery",
        ("langgraph/", "langchain_core/runnables/", "langchain_core/utils/"),
    ),
    ("celery / kombu / billiard", ("celery/", "kombu/", "billiard/", "vine/")),
    ("asyncio overhead (loop, tasks, futures, selectors)", ("asyncio/", "selectors.py")),
    ("threading / concurrent.futures", ("threading.py", "concurrent/futures")),
    ("benchmark harness (loadgen)", ("loadgen.py", "runner_")),
)
OTHER = "other (stdlib, interpreter)"
_LINE = re.compile(r":\d+\)$")


def group_of(frame: str) -> str | None:
    for name, marks in GROUPS:
        if any(m in frame for m in marks):
            return name
    return None


def _function(frame: str) -> str:
    """``name (path/file.py:123)`` -> ``name (file path without the line)``, site-packages cut."""
    frame = _LINE.sub(")", frame)
    frame = re.sub(r"\(.*?/site-packages/", "(", frame)
    frame = re.sub(r"\(/work/main/(src|adapters)/", "(", frame)
    frame = re.sub(r"\(.*?/lib/python3\.\d+/", "(", frame)
    return re.sub(r"\(.*?/benchmarks/production/", "(", frame)


def digest(path: Path, top: int = 25) -> dict[str, Any]:
    """Groups (self), and functions by self and by inclusive share of one collapsed-stack file."""
    groups: Counter[str] = Counter()
    selfs: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = [_function(f) for f in stack.split(";")]
        n = int(count)
        total += n
        owner = next((g for f in reversed(frames) if (g := group_of(f))), OTHER)
        groups[owner] += n
        selfs[frames[-1]] += n
        for f in set(frames):
            inclusive[f] += n
    if not total:
        return {"samples": 0, "groups": {}, "self": [], "inclusive": []}
    return {
        "samples": total,
        "groups": {g: n / total for g, n in groups.most_common()},
        "self": [(f, n / total) for f, n in selfs.most_common(top)],
        "inclusive": [(f, n / total) for f, n in inclusive.most_common(top * 3)],
    }
