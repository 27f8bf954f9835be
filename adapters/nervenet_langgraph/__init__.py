"""Run a LangGraph StateGraph on a nervenet pool: ``distribute(builder, pool=pool, name=...)``.

Everything LangGraph does between nodes stays in the calling process (one coordinator per run);
each node's function runs as a task on whichever worker is free.
"""

from .checkpoint import RedisSaver
from .graph import DistributedGraph, Distribution, distribute
from .runs import GraphRun
from .serde import strict_serializer

__all__ = [
    "DistributedGraph",
    "Distribution",
    "GraphRun",
    "RedisSaver",
    "distribute",
    "strict_serializer",
]
