"""Session-wide servers: a private redis-server and a private Redis Cluster
(:mod:`nervenet.testing`), skipped without the binaries locally and failed under ``CI=true``."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from nervenet.testing import RedisClusterServers, RedisServer, missing_binaries, servers_required

sys.path.insert(0, str(Path(__file__).parent))


def require_binaries(*names: str) -> None:
    """Skip the calling test if any of ``names`` is not on PATH; under CI, fail it instead."""
    missing = missing_binaries(*names)
    if not missing:
        return
    message = f"{', '.join(missing)} not on PATH (apt-get install redis-server redis-tools)"
    if servers_required():
        pytest.fail(f"{message}, but CI=true requires the real-server tests")
    pytest.skip(message)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A private redis-server for the whole session (tests flush it through ``redis_url``)."""
    require_binaries("redis-server")
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
def cluster_binaries() -> None:
    """Depend on this to start a private cluster of one's own: skips (fails under CI) without
    redis-server and redis-cli."""
    require_binaries("redis-server", "redis-cli")


@pytest.fixture(scope="session")
def redis_cluster(cluster_binaries: None) -> Iterator[RedisClusterServers]:
    """A private 3-primary Redis Cluster for the whole session (tests flush it through
    ``cluster_url``)."""
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
    require_binaries("redis-server")
    with RedisServer(appendonly=True) as server:
        yield server
