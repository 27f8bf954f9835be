from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from redis_cluster import RedisClusterServers, require_cluster_binaries
from redis_server import RedisServer, redis_required


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A private redis-server for the whole session (tests flush it through ``redis_url``)."""
    if shutil.which("redis-server") is None:
        if redis_required():
            pytest.fail("redis-server is not on PATH but CI requires the real-Redis tests")
        pytest.skip("redis-server is not on PATH")
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """URL of a clean database on the session's private server."""
    import redis

    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    yield redis_server.url


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterServers]:
    """A private 3-primary Redis Cluster for the whole session (tests flush it through
    ``cluster_url``)."""
    require_cluster_binaries()
    with RedisClusterServers(primaries=3) as cluster:
        yield cluster


@pytest.fixture
def cluster_url(redis_cluster: RedisClusterServers) -> Iterator[str]:
    """URL of one node of the session's private cluster, every primary flushed."""
    import redis.cluster

    client = redis.cluster.RedisCluster.from_url(redis_cluster.url)
    client.flushall(target_nodes=redis.cluster.RedisCluster.PRIMARIES)
    client.close()
    yield redis_cluster.url


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A private redis-server for one test that kills or restarts it (appendonly on)."""
    if shutil.which("redis-server") is None:
        if redis_required():
            pytest.fail("redis-server is not on PATH but CI requires the real-Redis tests")
        pytest.skip("redis-server is not on PATH")
    with RedisServer(appendonly=True) as server:
        yield server
