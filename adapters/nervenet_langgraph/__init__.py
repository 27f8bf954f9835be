"""Run a LangGraph StateGraph on a nervenet pool: ``distribute(builder, pool=pool, name=...)``.

Everything LangGraph does between nodes stays in the calling process (one coordinator per run);
each node's function runs as a task on whichever worker is free. An ``@entrypoint`` workflow
(the functional API) is distributed the same way: its body stays, each ``@task`` call goes.
"""

from ._compat import LangGraphVersionError
from .checkpoint import RedisSaver
from .functional import DistributedEntrypoint
from .graph import DistributedGraph, Distribution, distribute
from .records import WireVersionError
from .runs import GraphRun
from .serde import strict_serializer

__all__ = [
    "DistributedEntrypoint",
    "DistributedGraph",
    "Distribution",
    "GraphRun",
    "LangGraphVersionError",
    "RedisSaver",
    "WireVersionError",
    "distribute",
    "strict_serializer",
]
