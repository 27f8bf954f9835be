"""What nervenet's tests and benchmarks start around the code they exercise: a private
``redis-server``, a private Redis Cluster, and child processes that log to files.

One copy, imported by ``tests/`` and ``benchmarks/`` alike, so a fix (a port the cluster bus
cannot use, a pipe that filled up and froze a worker) is made once. The core's runtime modules
never import this package, and it imports neither LangGraph nor CrewAI: the framework fakes live
in each adapter's ``testing`` module (``nervenet_crewai.testing``).

Everything here is stopped by the PID it started, never by name, and removes its temporary
directories on ``close()``::

    from nervenet.testing import ChildProcesses, RedisServer

    with RedisServer() as redis, ChildProcesses(cwd=app_dir) as children:
        worker = children.worker("app:graph", redis.url)
        worker.wait_for_line("serving", timeout=30)
"""

from .children import Child, ChildProcesses, child_environment, nervenet_script
from .ports import free_cluster_port, free_port, wait_for_port
from .redis_cluster import ClusterNode, RedisClusterServers
from .redis_server import RedisServer, missing_binaries, servers_required

__all__ = [
    "Child",
    "ChildProcesses",
    "ClusterNode",
    "RedisClusterServers",
    "RedisServer",
    "child_environment",
    "free_cluster_port",
    "free_port",
    "missing_binaries",
    "nervenet_script",
    "servers_required",
    "wait_for_port",
]
